//! Duration strings of the CRDs: timeouts (`250ms`, `5s`, `1m`) and rate periods (`30s`, `1m`, `1h`).
//!
//! The CRD's CEL rules check the same syntax at `kubectl apply` time; standalone mode has no API
//! server, so the compiler parses strictly instead of trusting the schema.

/// Parse a timeout: a positive whole number followed by `ms`, `s` or `m` (CEL `^[1-9][0-9]*(ms|s|m)$`).
pub(crate) fn parse_timeout_ms(text: &str) -> Option<u64> {
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else {
        return None;
    };
    positive_number(digits, usize::MAX)?.checked_mul(unit_ms)
}

/// Parse a rate-limit period: 1–6 digits, no leading zero, then `s`, `m` or `h`
/// (CEL `^[1-9][0-9]{0,5}[smh]$`).
pub(crate) fn parse_period_ms(text: &str) -> Option<u64> {
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = text.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        return None;
    };
    positive_number(digits, 6)?.checked_mul(unit_ms)
}

/// ASCII digits without a leading zero, at most `max_digits` of them, as a number ≥ 1.
fn positive_number(digits: &str, max_digits: usize) -> Option<u64> {
    let well_formed = !digits.is_empty()
        && digits.len() <= max_digits
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !well_formed {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout_ms("250ms"), Some(250));
        assert_eq!(parse_timeout_ms("5s"), Some(5_000));
        assert_eq!(parse_timeout_ms("1m"), Some(60_000));
        for bad in [
            "",
            "0s",
            "05s",
            "5",
            "5h",
            "-5s",
            "5 s",
            "s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_timeout_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn periods() {
        assert_eq!(parse_period_ms("1s"), Some(1_000));
        assert_eq!(parse_period_ms("1m"), Some(60_000));
        assert_eq!(parse_period_ms("2h"), Some(7_200_000));
        assert_eq!(parse_period_ms("999999s"), Some(999_999_000));
        for bad in ["", "0s", "1ms", "1d", "1000000s", "m", "01m", "1M"] {
            assert_eq!(parse_period_ms(bad), None, "{bad}");
        }
    }
}
