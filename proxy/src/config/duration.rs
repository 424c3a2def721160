//! Duration strings in the config file ("50ms", "5s", "1m30s") and their serde glue.
//!
//! Grammar: one or more `<number><unit>` parts, optionally separated by spaces, where the
//! number may have a decimal fraction ("1.5s") and the unit is one of `ns`, `us` (or `µs`),
//! `ms`, `s`, `m` (or `min`), `h`, `d`. The bare string `"0"` means zero. A number without a
//! unit is rejected, because `"10"` could mean seconds or milliseconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Units accepted after a number, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("min", 60_000_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a duration string was rejected; the message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}; write e.g. \"50ms\", \"5s\", \"1m\" or \"1h30m\"")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

impl DurationError {
    fn new(text: &str, reason: &'static str) -> Self {
        DurationError {
            text: text.to_owned(),
            reason,
        }
    }
}

/// Parses a duration string such as `"50ms"`, `"1.5s"` or `"1h30m"`.
///
/// # Errors
/// Returns a [`DurationError`] naming the text when it is empty, negative, has a number
/// without a unit, an unknown unit, or overflows.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::new(text, "it is empty"));
    }
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if trimmed.starts_with('-') {
        return Err(DurationError::new(text, "durations cannot be negative"));
    }
    let mut rest = trimmed;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (nanos, after) = parse_part(rest).map_err(|reason| DurationError::new(text, reason))?;
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| DurationError::new(text, "it is too large"))?;
        rest = after.trim_start();
    }
    nanos_to_duration(total_nanos).ok_or_else(|| DurationError::new(text, "it is too large"))
}

/// Parses one `<number><unit>` part; returns its length in nanoseconds and the remaining text.
fn parse_part(text: &str) -> Result<(u128, &str), &'static str> {
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, after_number) = text.split_at(number_len);
    if number.is_empty() {
        return Err("expected a number");
    }
    let unit_len = after_number
        .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
        .unwrap_or(after_number.len());
    let (unit, rest) = after_number.split_at(unit_len);
    if unit.is_empty() {
        return Err("a number needs a unit (ns, us, ms, s, m, h, d)");
    }
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or("unknown unit (use ns, us, ms, s, m, h or d)")?;
    Ok((scale_decimal(number, scale)?, rest))
}

/// Multiplies a decimal string like `"1.25"` by `scale` nanoseconds, rejecting precision
/// below one nanosecond instead of rounding it away silently.
fn scale_decimal(number: &str, scale: u128) -> Result<u128, &'static str> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err("malformed number");
    }
    let too_large = "it is too large";
    let whole: u128 = whole.parse().map_err(|_| too_large)?;
    let mut nanos = whole.checked_mul(scale).ok_or(too_large)?;
    let mut place = scale;
    for digit in fraction.bytes() {
        if place % 10 != 0 {
            return Err("more precision than one nanosecond");
        }
        place /= 10;
        nanos = nanos
            .checked_add(u128::from(digit - b'0') * place)
            .ok_or(too_large)?;
    }
    Ok(nanos)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, subsec))
}

/// Serde visitor that reads a duration string.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a duration string such as \"50ms\", \"5s\" or \"1m\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse_duration(value).map_err(E::custom)
    }
}

/// Serde `deserialize_with` helper for `Duration` fields.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

/// Serde `deserialize_with` helper for `Option<Duration>` fields (use with `default`).
pub(crate) fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500us", Duration::from_micros(500)),
            ("500µs", Duration::from_micros(500)),
            ("250ns", Duration::from_nanos(250)),
            ("20ms", Duration::from_millis(20)),
            ("50ms", Duration::from_millis(50)),
            ("5s", Duration::from_secs(5)),
            ("60s", Duration::from_secs(60)),
            ("1m", Duration::from_secs(60)),
            ("2min", Duration::from_secs(120)),
            ("2h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25ms", Duration::from_micros(250)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            (" 5s ", Duration::from_secs(5)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn rejects_garbage_naming_the_text() {
        let cases = [
            ("", "empty"),
            ("10", "needs a unit"),
            ("5 s", "needs a unit"),
            ("ms", "expected a number"),
            ("5sec", "unknown unit"),
            ("5 parsecs", "needs a unit"),
            ("-5s", "negative"),
            ("1.s", "malformed"),
            (".5s", "malformed"),
            ("1.2.3s", "malformed"),
            ("1.5ns", "precision"),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("9999999999999999999h", "too large"),
            ("fast", "expected a number"),
        ];
        for (text, reason) in cases {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
        }
    }
}
