//! Times as policies, headers and logs write them: parsing RFC 3339 dates (key and route
//! lifecycles), formatting RFC 3339 (audit lines) and IMF-fixdate (`Sunset`). No calendar crate
//! for three formats.

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DD` (UTC) to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        part.bytes().all(|c| c.is_ascii_digit()).then_some(())?;
        part.parse().ok()
    };
    let (date_len, time) = match s.len() {
        10 => (10, (0, 0, 0)),
        20 if s.get(10..11) == Some("T") && s.get(19..20) == Some("Z") => {
            (10, (num(11, 13)?, num(14, 16)?, num(17, 19)?))
        }
        _ => return None,
    };
    if s.get(4..5) != Some("-") || s.get(7..8) != Some("-") || date_len != 10 {
        return None;
    }
    if s.len() == 20 && (s.get(13..14) != Some(":") || s.get(16..17) != Some(":")) {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = time;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates like 2026-02-31 that roll over.
    let month_days = days_from_civil(
        if m == 12 { y + 1 } else { y },
        if m == 12 { 1 } else { m + 1 },
        1,
    ) - days_from_civil(y, m, 1);
    if d > month_days {
        return None;
    }
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// `(year, month, day)` of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// `2026-11-23T03:27:15.123Z`.
pub fn rfc3339_millis(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX / 2);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        ms % 1000
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2);
    let days = secs.div_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let s = secs.rem_euclid(86_400);
    let weekday = usize::try_from(days.rem_euclid(7)).unwrap_or(0);
    let month = usize::try_from(mo).unwrap_or(1).saturating_sub(1);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS.get(weekday).unwrap_or(&"Thu"),
        MONTHS.get(month).unwrap_or(&"Jan"),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(784_111_777_042), "1994-11-06T08:49:37.042Z");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert!(!http_date(u64::MAX).is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips_with_the_parser() {
        for text in [
            "2026-11-23T03:27:15Z",
            "2024-02-29T23:59:59Z",
            "2100-03-01T00:00:00Z",
        ] {
            let secs = parse_rfc3339(text).unwrap();
            let back = rfc3339_millis(secs * 1000);
            assert_eq!(back, text.replace('Z', ".000Z"));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_rfc3339("2026-11-23T01:02:03Z"), Some(1_795_395_723));
        assert_eq!(parse_rfc3339("2024-02-29"), Some(1_709_164_800));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "26-01-01",
            "2026/01/01",
            "2026-01-01T00:00:00+01:00",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
