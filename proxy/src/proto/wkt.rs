//! The proto3 JSON text forms of the well-known types whose JSON is not an object:
//! Duration (`"0.250s"`), Timestamp (RFC 3339) and FieldMask (`"fooBar,baz"`).

/// The largest Duration protobuf allows: 10,000 years.
pub(crate) const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// Names of the well-known types the JSON mapping treats specially.
pub(crate) const ANY: &str = "google.protobuf.Any";
pub(crate) const DURATION: &str = "google.protobuf.Duration";
pub(crate) const TIMESTAMP: &str = "google.protobuf.Timestamp";
pub(crate) const FIELD_MASK: &str = "google.protobuf.FieldMask";
pub(crate) const STRUCT: &str = "google.protobuf.Struct";
pub(crate) const VALUE: &str = "google.protobuf.Value";
pub(crate) const LIST_VALUE: &str = "google.protobuf.ListValue";
pub(crate) const NULL_VALUE: &str = "google.protobuf.NullValue";

/// Whether `name` is a wrapper type (`google.protobuf.UInt32Value`, ...), whose JSON form is
/// the bare wrapped value.
pub(crate) fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Whether an Any holding `name` carries its JSON under a `"value"` key rather than inline.
pub(crate) fn has_value_key_in_any(name: &str) -> bool {
    is_wrapper(name)
        || matches!(
            name,
            DURATION | TIMESTAMP | FIELD_MASK | STRUCT | VALUE | LIST_VALUE
        )
}

/// Parses `"1.5s"`: optional `-`, digits, up to 9 fractional digits, `s`. Returns
/// `(seconds, nanos)` with both carrying the sign, or `None` if malformed or out of range.
pub(crate) fn parse_duration(text: &str) -> Option<(i64, i32)> {
    let body = text.strip_suffix('s')?;
    let (negative, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (whole, fraction) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let nanos = match fraction {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return None;
        }
        Some(f) => format!("{f:0<9}").parse::<i32>().ok()?,
    };
    if seconds > MAX_DURATION_SECONDS {
        return None;
    }
    Some(if negative {
        (-seconds, -nanos)
    } else {
        (seconds, nanos)
    })
}

/// Formats a Duration as protobuf does: `"1s"`, `"0.250s"`, `"1.000001s"`.
pub(crate) fn format_duration(seconds: i64, nanos: i32) -> String {
    let negative = seconds < 0 || nanos < 0;
    let (seconds, nanos) = (seconds.unsigned_abs(), nanos.unsigned_abs());
    let sign = if negative { "-" } else { "" };
    format!("{sign}{seconds}{}s", fraction(nanos))
}

/// Parses an RFC 3339 timestamp (`1972-01-01T10:00:20.021Z`, `...+01:00`) into seconds since
/// the Unix epoch and nanos, for years 1 to 9999.
pub(crate) fn parse_timestamp(text: &str) -> Option<(i64, i32)> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = format!("{:0<9}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let (sign, hhmm) = match rest.as_bytes().first()? {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return None,
            };
            let (h, m) = hhmm.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((seconds, nanos))
}

/// Formats a Timestamp as protobuf does: UTC, `Z`, 0/3/6/9 fractional digits.
pub(crate) fn format_timestamp(seconds: i64, nanos: i32) -> String {
    let (date, time) = utc(seconds);
    let (y, mo, d) = date;
    let (h, mi, s) = time;
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}Z",
        fraction(nanos.unsigned_abs())
    )
}

/// Splits seconds since the Unix epoch into a UTC `(year, month, day)` and
/// `(hour, minute, second)`.
pub(crate) fn utc(seconds: i64) -> ((i64, i64, i64), (i64, i64, i64)) {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    (
        civil_from_days(days),
        (secs / 3600, secs % 3600 / 60, secs % 60),
    )
}

/// `"fooBar,baz.quxQux"` to `["foo_bar", "baz.qux_qux"]`.
pub(crate) fn parse_field_mask(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|path| {
            let mut out = String::with_capacity(path.len() + 4);
            for c in path.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// `["foo_bar", "baz"]` to `"fooBar,baz"`.
pub(crate) fn format_field_mask(paths: &[String]) -> String {
    let camel: Vec<String> = paths
        .iter()
        .map(|path| {
            let mut out = String::with_capacity(path.len());
            let mut upper = false;
            for c in path.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect();
    camel.join(",")
}

/// `.250`, `.000001`, `.000000001` or nothing, as protobuf prints fractions.
fn fraction(nanos: u32) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos.is_multiple_of(1_000_000) {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_protobuf() {
        assert_eq!(parse_duration("0.250s"), Some((0, 250_000_000)));
        assert_eq!(parse_duration("30s"), Some((30, 0)));
        assert_eq!(parse_duration("1.000000001s"), Some((1, 1)));
        assert_eq!(parse_duration("-1.5s"), Some((-1, -500_000_000)));
        // Envoy rejects all of these.
        for bad in [
            "5",
            "1m",
            ".5s",
            "1.s",
            "+1s",
            "1S",
            " 1s",
            "1.0000000001s",
            "",
            "s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration("315576000001s"), None);
    }

    #[test]
    fn durations_format_like_protobuf() {
        assert_eq!(format_duration(0, 250_000_000), "0.250s");
        assert_eq!(format_duration(1, 0), "1s");
        assert_eq!(format_duration(1, 1_000), "1.000001s");
        assert_eq!(format_duration(0, 1), "0.000000001s");
        assert_eq!(format_duration(-1, -500_000_000), "-1.500s");
    }

    #[test]
    fn timestamps_round_trip() {
        let (s, n) = parse_timestamp("1972-01-01T10:00:20.021Z").unwrap();
        assert_eq!((s, n), (63_108_020, 21_000_000));
        assert_eq!(format_timestamp(s, n), "1972-01-01T10:00:20.021Z");
        assert_eq!(
            parse_timestamp("1972-01-01T11:00:20.021+01:00"),
            Some((s, n))
        );
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_timestamp("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn field_masks_convert_case() {
        assert_eq!(
            parse_field_mask("fooBar,baz.quxQux"),
            ["foo_bar", "baz.qux_qux"]
        );
        assert_eq!(
            format_field_mask(&["foo_bar".into(), "baz".into()]),
            "fooBar,baz"
        );
    }
}
