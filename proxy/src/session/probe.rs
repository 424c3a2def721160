//! The causal probe: a statement Causeway appends behind a client's request on the same
//! server connection, so its answer comes with no extra round trip. On the primary it reads
//! the WAL insert position after the request committed (read-your-writes floor, DESIGN.md §1
//! rule 1); on a replica it reads the replay position after the read completed (an upper
//! bound of what the read saw: the monotonic-reads floor, rule 2).

use bytes::BytesMut;

use crate::lsn::{normalize_insert_lsn, Lsn, Position};

/// Which probe a server connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Primary,
    /// A replica on this timeline (from the monitor).
    Replica {
        timeline: u32,
    },
}

const PRIMARY_SQL: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn(), \
     pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8), \
     pg_catalog.current_setting('wal_segment_size'), \
     pg_catalog.current_setting('wal_block_size')";
const REPLICA_SQL: &str = "SELECT pg_catalog.pg_last_wal_replay_lsn()";

impl ProbeKind {
    /// Append the probe as a simple Query.
    pub fn encode(self, out: &mut BytesMut) {
        let sql = match self {
            ProbeKind::Primary => PRIMARY_SQL,
            ProbeKind::Replica { .. } => REPLICA_SQL,
        };
        // A fixed statement without NUL bytes cannot fail to encode.
        let _ = postgres_protocol::message::frontend::query(sql, out);
    }

    /// The position a probe's DataRow reports, if it is well formed.
    pub fn position(self, data_row_body: &[u8]) -> Option<Position> {
        let columns = columns(data_row_body)?;
        match self {
            ProbeKind::Primary => {
                let [lsn, timeline, segment, block] = columns.as_slice() else {
                    return None;
                };
                let lsn: Lsn = text(lsn)?.parse().ok()?;
                let timeline = u32::from_str_radix(text(timeline)?, 16).ok()?;
                let segment = size_setting(text(segment)?)?;
                let block = size_setting(text(block)?)?;
                Some(Position {
                    timeline,
                    lsn: normalize_insert_lsn(lsn, segment, block),
                })
            }
            ProbeKind::Replica { timeline } => {
                let [lsn] = columns.as_slice() else {
                    return None;
                };
                Some(Position {
                    timeline,
                    lsn: text(lsn)?.parse().ok()?,
                })
            }
        }
    }
}

/// The columns of a DataRow body (`None` for SQL NULL); `None` when malformed.
fn columns(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = i16::from_be_bytes(*count);
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?);
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            out.push(None);
            rest = tail;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        out.push(Some(tail.get(..len)?));
        rest = tail.get(len..)?;
    }
    rest.is_empty().then_some(out)
}

fn text<'a>(column: &Option<&'a [u8]>) -> Option<&'a str> {
    std::str::from_utf8((*column)?).ok()
}

/// `wal_segment_size` ("16MB") or `wal_block_size` ("8192") in bytes.
fn size_setting(value: &str) -> Option<u64> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body
    }

    #[test]
    fn primary_probe_normalizes_page_header_positions() {
        let row = data_row(&[
            Some("0/4000028"),
            Some("00000001"),
            Some("16MB"),
            Some("8192"),
        ]);
        let p = ProbeKind::Primary.position(&row);
        assert_eq!(
            p,
            Some(Position {
                timeline: 1,
                lsn: Lsn::new(0x400_0000)
            })
        );
        let row = data_row(&[
            Some("1/2002018"),
            Some("0000000A"),
            Some("16MB"),
            Some("8192"),
        ]);
        let p = ProbeKind::Primary.position(&row);
        assert_eq!(
            p,
            Some(Position {
                timeline: 10,
                lsn: Lsn::new(0x1_0200_2000)
            })
        );
    }

    #[test]
    fn replica_probe_and_malformed_rows() {
        let kind = ProbeKind::Replica { timeline: 3 };
        assert_eq!(
            kind.position(&data_row(&[Some("0/16B3748")])),
            Some(Position {
                timeline: 3,
                lsn: Lsn::new(0x16B_3748)
            })
        );
        assert_eq!(kind.position(&data_row(&[None])), None);
        assert_eq!(kind.position(&data_row(&[Some("x")])), None);
        let row = data_row(&[
            Some("0/4000028"),
            Some("00000001"),
            Some("16MB"),
            Some("8192"),
        ]);
        for cut in 0..row.len() {
            assert_eq!(ProbeKind::Primary.position(&row[..cut]), None);
        }
        assert_eq!(size_setting("16MB"), Some(16 << 20));
        assert_eq!(size_setting("8192"), Some(8192));
        assert_eq!(size_setting("x"), None);
    }
}
