//! Durations as Kubernetes users write them (Go syntax: `90s`, `5m`, `1h30m`, `500ms`).
//! Owns parsing with an upper bound so a typo cannot schedule a requeue years away.

use std::time::Duration;

/// Longest duration accepted anywhere in a spec: a day is already far longer than any
/// sensible interval or timeout.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DurationError {
    #[error(
        "{input:?} is not a duration: use a number with a unit (ms, s, m, h), e.g. 30s, 5m, 1h30m"
    )]
    Invalid { input: String },
    #[error("{input:?} is longer than the maximum of 24h")]
    TooLong { input: String },
}

/// Parses `1h30m`, `45s`, `250ms`. A bare `0` is zero; anything else needs a unit.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid {
        input: input.to_string(),
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        let part = n
            .checked_mul(millis_per_unit)
            .ok_or_else(|| DurationError::TooLong {
                input: input.to_string(),
            })?;
        total = total.saturating_add(Duration::from_millis(part));
    }
    if total > MAX_DURATION {
        return Err(DurationError::TooLong {
            input: input.to_string(),
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_missing_units_and_absurd_lengths() {
        assert!(matches!(parse("30"), Err(DurationError::Invalid { .. })));
        assert!(matches!(
            parse("5 minutes"),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(parse("m"), Err(DurationError::Invalid { .. })));
        assert!(matches!(parse("25h"), Err(DurationError::TooLong { .. })));
    }
}
