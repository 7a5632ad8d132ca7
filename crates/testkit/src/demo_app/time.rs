//! Timestamps and durations in the forms fake-service prints, without a
//! date library: the app needs only UTC formatting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-01-02T15:04:05.123456Z` (UTC, microseconds).
pub(crate) fn format_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        since_epoch.subsec_micros(),
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01, computed in
/// 400-year eras (each exactly 146,097 days) starting on March 1st, so the
/// leap day falls at the end of the era's year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March ... 11 = February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A duration as Go prints one (`850ns`, `12.5µs`, `1.234567ms`, `2.5s`,
/// `1m30s`), because tools reading fake-service output expect that form.
pub(crate) fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 6));
    }
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let (hours, minutes, secs) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&decimal(secs * 1_000_000_000 + frac, 9));
    out.push('s');
    out
}

/// `value / 10^scale` with trailing zeros (and a bare point) dropped.
fn decimal(value: u128, scale: u32) -> String {
    let unit = 10u128.pow(scale);
    let fraction = format!("{:0width$}", value % unit, width = scale as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", value / unit)
    } else {
        format!("{}.{fraction}", value / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 0, "2000-02-29T00:00:00.000000Z"),
            (1_709_251_199, 999_999_000, "2024-02-29T23:59:59.999999Z"),
            (4_107_542_400, 1_000, "2100-03-01T00:00:00.000001Z"),
            (1_767_225_599, 0, "2025-12-31T23:59:59.000000Z"),
        ];
        for (secs, nanos, want) in cases {
            let time = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(format_timestamp(time), want);
        }
    }

    #[test]
    fn durations_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(12_500), "12.5µs"),
            (Duration::from_nanos(1_234_567), "1.234567ms"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::new(3723, 1), "1h2m3.000000001s"),
        ];
        for (duration, want) in cases {
            assert_eq!(format_duration(duration), want, "{duration:?}");
        }
    }
}
