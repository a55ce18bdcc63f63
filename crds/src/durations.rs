//! Duration strings of the CRDs: timeouts (`250ms`, `5s`, `1m`) and rate periods (`30s`, `1m`, `1h`),
//! and the Gateway API's (`1h30m`, `500ms`, `0s`).
//!
//! The CRD's CEL rules check the same syntax at `kubectl apply` time; standalone mode has no API
//! server, so the compiler parses strictly instead of trusting the schema.
//!
//! A leaf module at the crate root, not under `compile/`: the Gateway API translation
//! (`gateway/`) parses HTTPRoute timeouts too, and `compile` runs `gateway`, so `gateway`
//! importing from `compile` would make an import circle.

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

/// Parse a Gateway API duration (GEP-2257): one to four parts of 1–5 digits followed by `h`,
/// `m`, `s` or `ms`, each unit at most once, largest first (`1h30m`, `500ms`, `0s`), in
/// milliseconds.
pub(crate) fn parse_gateway_duration_ms(text: &str) -> Option<u64> {
    let units: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let mut rest = text;
    let mut total = 0u64;
    let mut next_unit = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let (number, tail) = rest.split_at(digits);
        // `ms` before `m`, or "5ms" would read as 5 minutes followed by garbage.
        let unit_len = if tail.starts_with("ms") {
            2
        } else {
            tail.chars().next().map_or(0, char::len_utf8)
        };
        let unit = &tail[..unit_len.min(tail.len())];
        let index = units.iter().position(|(u, _)| *u == unit)?;
        if index < next_unit {
            return None;
        }
        total = total.checked_add(number.parse::<u64>().ok()?.checked_mul(units[index].1)?)?;
        next_unit = index + 1;
        parts += 1;
        rest = &tail[unit_len..];
    }
    (parts > 0).then_some(total)
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
    fn gateway_durations() {
        for (text, ms) in [
            ("0s", Some(0)),
            ("500ms", Some(500)),
            ("1s", Some(1_000)),
            ("1h30m", Some(5_400_000)),
            ("1h2m3s4ms", Some(3_723_004)),
            ("99999ms", Some(99_999)),
            ("", None),
            ("1", None),
            ("1d", None),
            ("100000s", None),
            ("1s1h", None),
            ("1s1s", None),
            ("-1s", None),
            ("1.5s", None),
        ] {
            assert_eq!(parse_gateway_duration_ms(text), ms, "{text:?}");
        }
    }

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
