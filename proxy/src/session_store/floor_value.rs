//! How a floor is written in Redis, and the Lua script that raises it atomically.
//!
//! A floor is stored as fixed-width upper-case hex, `TTTTTTTT/HHHHHHHH/LLLLLLLL` (timeline,
//! then the LSN's high and low 32 bits), which reads like PostgreSQL's `X/Y` notation. The
//! script compares the three parts as numbers below 2^32, which Lua's doubles hold exactly:
//! a whole 64-bit LSN would lose precision above 2^53.

use crate::lsn::{Lsn, Position};

/// Length of an encoded floor.
pub const ENCODED_LEN: usize = 26;

/// Raise `KEYS[1]` to `ARGV[1]` unless it already holds a higher floor, and (re)start its
/// TTL of `ARGV[2]` milliseconds. Returns the floor now stored. A value that is not a floor
/// (corrupt, or written by something else) is replaced.
pub const RAISE_SCRIPT: &str = r"
local new = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if type(cur) == 'string' and string.len(cur) == 26
    and string.find(cur, '^%x%x%x%x%x%x%x%x/%x%x%x%x%x%x%x%x/%x%x%x%x%x%x%x%x$') then
  for i = 1, 19, 9 do
    local have = tonumber(string.sub(cur, i, i + 7), 16)
    local want = tonumber(string.sub(new, i, i + 7), 16)
    if have > want then
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      return cur
    end
    if have < want then
      break
    end
  end
end
redis.call('SET', KEYS[1], new, 'PX', ARGV[2])
return new
";

/// The stored form of `floor`.
pub fn encode(floor: Position) -> String {
    let lsn = floor.lsn.as_u64();
    format!(
        "{:08X}/{:08X}/{:08X}",
        floor.timeline,
        lsn >> 32,
        lsn & 0xFFFF_FFFF
    )
}

/// Parse a stored floor; `None` for anything that is not exactly the stored form.
pub fn decode(value: &[u8]) -> Option<Position> {
    if value.len() != ENCODED_LEN || value[8] != b'/' || value[17] != b'/' {
        return None;
    }
    let part = |range: std::ops::Range<usize>| -> Option<u32> {
        let text = std::str::from_utf8(value.get(range)?).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    };
    let timeline = part(0..8)?;
    let high = part(9..17)?;
    let low = part(18..26)?;
    Some(Position {
        timeline,
        lsn: Lsn::new((u64::from(high) << 32) | u64::from(low)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pos(timeline: u32, lsn: u64) -> Position {
        Position {
            timeline,
            lsn: Lsn::new(lsn),
        }
    }

    #[test]
    fn round_trips_exactly_beyond_two_to_the_53() {
        for p in [
            pos(1, 0),
            pos(1, 0x0300_0060),
            pos(7, (1 << 53) + 1),
            pos(u32::MAX, u64::MAX),
            pos(2, 0xFFFF_FFFF),
        ] {
            let text = encode(p);
            assert_eq!(text.len(), ENCODED_LEN);
            assert_eq!(decode(text.as_bytes()), Some(p), "{text}");
        }
        assert_eq!(encode(pos(1, 0x1_0300_0060)), "00000001/00000001/03000060");
    }

    #[test]
    fn encoded_order_is_position_order() {
        let mut positions = vec![
            pos(2, 5),
            pos(1, u64::MAX),
            pos(1, (1 << 53) + 1),
            pos(1, 1 << 53),
            pos(1, 0xFFFF_FFFF),
            pos(1, 0x1_0000_0000),
        ];
        let mut texts: Vec<String> = positions.iter().copied().map(encode).collect();
        positions.sort();
        texts.sort();
        let decoded: Vec<Position> = texts
            .iter()
            .map(|t| decode(t.as_bytes()).unwrap())
            .collect();
        assert_eq!(decoded, positions);
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            &b""[..],
            b"0/3000060",
            b"00000001/00000000/0300006",
            b"00000001/00000000/030000600",
            b"00000001-00000000/03000060",
            b"0000000g/00000000/03000060",
            b"+0000001/00000000/03000060",
            b"00000001/00000000/0300006\xff",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
