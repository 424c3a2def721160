//! WAL positions: [`Lsn`] (a byte position in the WAL), [`Position`] (an LSN on a timeline,
//! the unit of a session floor, DESIGN.md §1) and [`normalize_insert_lsn`] (the WAL
//! page-header trap of `pg_current_wal_insert_lsn()`, research/consistency-design.md §1.1).
//!
//! Pure code, no I/O.

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, PgLsn, ToSql, Type};

/// Length of the long WAL page header at the start of every segment
/// (`SizeOfXLogLongPHD` on 64-bit builds).
pub const LONG_PAGE_HEADER_BYTES: u64 = 40;

/// Length of the short WAL page header at the start of every other page
/// (`SizeOfXLogShortPHD` on 64-bit builds).
pub const SHORT_PAGE_HEADER_BYTES: u64 = 24;

/// A WAL log sequence number, written `X/Y` (high and low 32 bits in hex) like PostgreSQL.
///
/// Ordered like the WAL; the difference of two LSNs is a number of WAL bytes.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

/// Why a string is not an `X/Y` LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {text:?}: expected two hex numbers of up to 8 digits each, like 0/16B3748")]
pub struct LsnParseError {
    text: String,
}

// === impl Lsn ===

impl Lsn {
    /// The start of the WAL (`0/0`), below every real position.
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN at byte `value`.
    pub const fn new(value: u64) -> Lsn {
        Lsn(value)
    }

    /// The byte position as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// WAL bytes from `earlier` to `self`; 0 when `earlier` is not before `self`.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    /// Parses `X/Y` exactly as PostgreSQL prints a `pg_lsn`: two hexadecimal numbers of 1 to
    /// 8 digits each (either case), the upper and lower 32 bits. Nothing else is accepted: no
    /// surrounding spaces, signs or `0x` prefixes, so hints and server output share one
    /// grammar. Stricter than [`PgLsn`]'s parser: a half that does not fit in 32 bits is an
    /// error rather than a wrong value.
    fn from_str(text: &str) -> Result<Lsn, LsnParseError> {
        let error = || LsnParseError {
            text: text.to_owned(),
        };
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |part: &str| {
            let valid =
                (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
            valid
                .then(|| u32::from_str_radix(part, 16).ok())
                .flatten()
                .ok_or_else(error)
        };
        Ok(Lsn((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Lsn {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> u64 {
        lsn.0
    }
}

impl From<PgLsn> for Lsn {
    fn from(lsn: PgLsn) -> Lsn {
        Lsn(u64::from(lsn))
    }
}

impl From<Lsn> for PgLsn {
    fn from(lsn: Lsn) -> PgLsn {
        PgLsn::from(lsn.0)
    }
}

/// Reads a `pg_lsn` column.
impl<'a> FromSql<'a> for Lsn {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Lsn, Box<dyn StdError + Sync + Send>> {
        PgLsn::from_sql(ty, raw).map(Lsn::from)
    }

    fn accepts(ty: &Type) -> bool {
        <PgLsn as FromSql>::accepts(ty)
    }
}

/// Binds a `pg_lsn` parameter.
impl ToSql for Lsn {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        PgLsn::from(*self).to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <PgLsn as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A WAL position on a timeline. Ordered by timeline first, then LSN: timelines only grow
/// (a promotion starts a new one), so positions stay totally ordered across failovers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Timeline ID (1 until the first promotion).
    pub timeline: u32,
    /// Byte position in the WAL.
    pub lsn: Lsn,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on timeline {}", self.lsn, self.timeline)
    }
}

/// Maps an insert LSN that points just past a WAL page header back to the page start.
///
/// When the last WAL record ends exactly on a page boundary, `pg_current_wal_insert_lsn()`
/// points past the next page's header: 40 bytes into a segment's first page, 24 bytes into
/// any other page. Write, flush and every replica's replay position stay at the boundary
/// until more WAL arrives, possibly many seconds later. No record can end inside a page
/// header, so the page start is an equally safe bound. Sizes of 0 disable the check.
pub fn normalize_insert_lsn(lsn: Lsn, wal_segment_size: u64, wal_block_size: u64) -> Lsn {
    let value = lsn.as_u64();
    let in_segment = value.checked_rem(wal_segment_size);
    if in_segment == Some(LONG_PAGE_HEADER_BYTES) {
        return Lsn(value - LONG_PAGE_HEADER_BYTES);
    }
    // Offset 24 of a segment's first page lies inside its long header: not a short header.
    let segment_start = in_segment == Some(SHORT_PAGE_HEADER_BYTES);
    if value.checked_rem(wal_block_size) == Some(SHORT_PAGE_HEADER_BYTES) && !segment_start {
        return Lsn(value - SHORT_PAGE_HEADER_BYTES);
    }
    lsn
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 16 * 1024 * 1024;
    const BLOCK: u64 = 8192;

    #[test]
    fn parses_and_formats_like_postgres() {
        let cases = [
            ("0/0", 0),
            ("0/16B3748", 0x16B_3748),
            ("1/0", 1 << 32),
            ("A/FF", (10 << 32) | 0xFF),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ];
        for (text, value) in cases {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.as_u64(), value, "{text}");
            assert_eq!(lsn.to_string(), text);
            assert_eq!(PgLsn::from(lsn).to_string(), text, "agrees with PgLsn");
            let lower: Lsn = text.to_ascii_lowercase().parse().unwrap();
            assert_eq!(lower, lsn, "either case: {text}");
        }
        assert_eq!("00000000/0000000A".parse::<Lsn>().unwrap(), Lsn::new(10));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "0",
            "/",
            "0/",
            "/0",
            "0/0/0",
            "g/0",
            "0/-1",
            "+1/0",
            "123456789/0",
            "0/123456789",
            " 0/0",
            "0/0 ",
            "0x1/0",
            "-1/0",
            "0\\0",
            "é/0",
        ] {
            let err = text.parse::<Lsn>().unwrap_err();
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn orders_and_subtracts() {
        let a: Lsn = "0/3000000".parse().unwrap();
        let b: Lsn = "0/3000028".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.bytes_since(a), 0x28);
        assert_eq!(a.bytes_since(b), 0, "never negative");
        assert_eq!(Lsn::from(PgLsn::from(42)), Lsn::new(42));
    }

    #[test]
    fn positions_order_by_timeline_then_lsn() {
        let pos = |timeline, lsn: &str| Position {
            timeline,
            lsn: lsn.parse().unwrap(),
        };
        assert!(pos(1, "0/5000000") < pos(1, "0/5000001"));
        assert!(pos(1, "9/0") < pos(2, "0/1"), "a newer timeline wins");
        assert_eq!(pos(2, "0/1"), pos(2, "0/1"));
        assert_eq!(pos(2, "0/1").to_string(), "0/1 on timeline 2");
    }

    #[test]
    fn normalizes_only_positions_just_past_a_page_header() {
        let cases = [
            // (insert LSN, normalized)
            (SEGMENT * 3 + 40, SEGMENT * 3), // segment start, long header
            (SEGMENT * 3 + BLOCK + 24, SEGMENT * 3 + BLOCK), // page start, short header
            (SEGMENT * 3 + 24, SEGMENT * 3 + 24), // inside a long header: keep
            (SEGMENT * 3, SEGMENT * 3),      // exactly on the boundary
            (SEGMENT * 3 + 41, SEGMENT * 3 + 41),
            (SEGMENT * 3 + BLOCK + 25, SEGMENT * 3 + BLOCK + 25),
            (SEGMENT * 3 + BLOCK + 40, SEGMENT * 3 + BLOCK + 40), // +40 mid-segment: a record
            (0x3000028, 0x3000000), // seen on PG 15 after initdb + basebackup
        ];
        for (lsn, expected) in cases {
            assert_eq!(
                normalize_insert_lsn(Lsn::new(lsn), SEGMENT, BLOCK),
                Lsn::new(expected),
                "{}",
                Lsn::new(lsn)
            );
        }
    }

    #[test]
    fn normalization_honours_other_sizes_and_ignores_zero() {
        let segment = 64 * 1024 * 1024;
        let block = 32 * 1024;
        let lsn = Lsn::new(segment + block + 24);
        assert_eq!(
            normalize_insert_lsn(lsn, segment, block),
            Lsn::new(segment + block)
        );
        assert_eq!(normalize_insert_lsn(lsn, 0, 0), lsn);
    }
}
