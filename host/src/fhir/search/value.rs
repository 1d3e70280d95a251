//! Scalar building blocks shared by parsing and extraction: date ranges, numbers with
//! their implicit precision, comparison prefixes, range predicates, string
//! normalization and the escaping rules of search values.
//!
//! Dates are represented as **inclusive ranges of milliseconds since
//! 1970-01-01T00:00:00Z** (`i64`). Every FHIR date has an implicit range given by its
//! precision (`2020` is the whole year, `2020-03-01T10:00Z` the whole minute), so both
//! index rows and search values carry `low` and `high`. Integers sort the same way in
//! SQLite and PostgreSQL, compare exactly, and make prefix semantics plain integer
//! comparisons. A date or dateTime without a time zone is taken as UTC.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::fhir::types::ResourceType;

/// The smallest date Hestia represents: 0001-01-01T00:00:00.000Z, used for an open
/// start (a `Period` without `start`).
pub const DATE_MIN: i64 = -62_135_596_800_000;
/// The largest date Hestia represents: 9999-12-31T23:59:59.999Z, used for an open end.
pub const DATE_MAX: i64 = 253_402_300_799_999;

/// An inclusive range of milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

/// The comparison prefixes of number, date and quantity search values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Splits a leading prefix off `value`. No prefix means `eq`.
    pub fn split(value: &str) -> (Prefix, &str) {
        let table = [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("gt", Prefix::Gt),
            ("lt", Prefix::Lt),
            ("ge", Prefix::Ge),
            ("le", Prefix::Le),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ];
        for (text, prefix) in table {
            if let Some(rest) = value.strip_prefix(text) {
                return (prefix, rest);
            }
        }
        (Prefix::Eq, value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Eq => "eq",
            Prefix::Ne => "ne",
            Prefix::Gt => "gt",
            Prefix::Lt => "lt",
            Prefix::Ge => "ge",
            Prefix::Le => "le",
            Prefix::Sa => "sa",
            Prefix::Eb => "eb",
            Prefix::Ap => "ap",
        }
    }

    /// The condition a target range `[low, high]` must meet for this prefix against
    /// the parameter range `[param.0, param.1]` (FHIR R4 search, section 3.1.1.4.1:
    /// both sides are ranges). `ap` expects an already widened parameter range.
    pub fn range_predicate<T: Copy>(self, param: (T, T)) -> RangePredicate<T> {
        use Bound::{High, Low};
        use CompareOp::{Ge, Gt, Le, Lt};
        let (p_low, p_high) = param;
        let cmp = |column, op, value| RangePredicate::Compare { column, op, value };
        let eq = || RangePredicate::All(vec![cmp(Low, Ge, p_low), cmp(High, Le, p_high)]);
        match self {
            Prefix::Eq => eq(),
            Prefix::Ne => RangePredicate::Any(vec![cmp(Low, Lt, p_low), cmp(High, Gt, p_high)]),
            Prefix::Gt => cmp(High, Gt, p_high),
            Prefix::Lt => cmp(Low, Lt, p_low),
            Prefix::Ge => RangePredicate::Any(vec![cmp(High, Gt, p_high), eq()]),
            Prefix::Le => RangePredicate::Any(vec![cmp(Low, Lt, p_low), eq()]),
            Prefix::Sa => cmp(Low, Gt, p_high),
            Prefix::Eb => cmp(High, Lt, p_low),
            Prefix::Ap => RangePredicate::All(vec![cmp(Low, Le, p_high), cmp(High, Ge, p_low)]),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which column of a range-valued index row a comparison reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bound {
    Low,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition over the `low`/`high` columns of an index row, ready to be turned into
/// SQL (`low >= ? AND high <= ?`) or evaluated in memory with [`RangePredicate::matches`].
/// For point values (numbers, quantities) both columns are the value itself.
#[derive(Debug, Clone, PartialEq)]
pub enum RangePredicate<T> {
    Compare {
        column: Bound,
        op: CompareOp,
        value: T,
    },
    All(Vec<RangePredicate<T>>),
    Any(Vec<RangePredicate<T>>),
}

impl<T: PartialOrd + Copy> RangePredicate<T> {
    pub fn matches(&self, low: T, high: T) -> bool {
        match self {
            RangePredicate::Compare { column, op, value } => {
                let actual = match column {
                    Bound::Low => low,
                    Bound::High => high,
                };
                match op {
                    CompareOp::Lt => actual < *value,
                    CompareOp::Le => actual <= *value,
                    CompareOp::Gt => actual > *value,
                    CompareOp::Ge => actual >= *value,
                }
            }
            RangePredicate::All(parts) => parts.iter().all(|p| p.matches(low, high)),
            RangePredicate::Any(parts) => parts.iter().any(|p| p.matches(low, high)),
        }
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

const MS_PER_DAY: i64 = 86_400_000;

fn digits(text: &str, len: usize, what: &str) -> Result<i64, String> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} must be {len} digits"));
    }
    text.parse().map_err(|_| format!("{what} is not a number"))
}

/// Parses a FHIR date, dateTime or instant (also the partial forms allowed in search:
/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm]`) into the
/// range of milliseconds it covers.
pub fn parse_date(text: &str) -> Result<DateRange, String> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = digits(parts.next().unwrap_or(""), 4, "year")?;
    let month = parts.next().map(|m| digits(m, 2, "month")).transpose()?;
    let day = parts.next().map(|d| digits(d, 2, "day")).transpose()?;
    if parts.next().is_some() {
        return Err("too many date components".into());
    }
    if let Some(m) = month
        && !(1..=12).contains(&m)
    {
        return Err(format!("month {m} is out of range"));
    }
    if let (Some(m), Some(d)) = (month, day)
        && !(1..=days_in_month(year, m)).contains(&d)
    {
        return Err(format!("day {d} is out of range"));
    }
    let Some(time) = time else {
        return Ok(date_range(year, month, day));
    };
    let (Some(month), Some(day)) = (month, day) else {
        return Err("a time needs a full date".into());
    };
    let (clock, offset_ms) = split_zone(time)?;
    let Clock {
        hour,
        minute,
        second,
        fraction_ms,
        unit,
    } = parse_clock(clock)?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time out of range".into());
    }
    let low = days_from_civil(year, month, day) * MS_PER_DAY
        + hour * 3_600_000
        + minute * 60_000
        + second.min(59) * 1_000
        + fraction_ms
        - offset_ms;
    Ok(DateRange {
        low,
        high: low + unit - 1,
    })
}

/// The range of whole days a date without a time covers (a year, a month or a day).
fn date_range(year: i64, month: Option<i64>, day: Option<i64>) -> DateRange {
    let (low, high) = match (month, day) {
        (None, _) => (days_from_civil(year, 1, 1), days_from_civil(year + 1, 1, 1)),
        (Some(m), None) => {
            let (ny, nm) = if m == 12 {
                (year + 1, 1)
            } else {
                (year, m + 1)
            };
            (days_from_civil(year, m, 1), days_from_civil(ny, nm, 1))
        }
        (Some(m), Some(d)) => {
            let start = days_from_civil(year, m, d);
            (start, start + 1)
        }
    };
    DateRange {
        low: low * MS_PER_DAY,
        high: high * MS_PER_DAY - 1,
    }
}

/// Splits the zone off a time: `Z`, or the last `+`/`-` (the time itself has none); the
/// clock and the zone's offset in milliseconds.
fn split_zone(time: &str) -> Result<(&str, i64), String> {
    Ok(if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..]
            .split_once(':')
            .ok_or("time zone must be ±hh:mm")?;
        let (h, m) = (digits(h, 2, "zone hour")?, digits(m, 2, "zone minute")?);
        if h > 14 || m > 59 {
            return Err("time zone out of range".into());
        }
        (clock, sign * (h * 3_600_000 + m * 60_000))
    } else {
        (time, 0)
    })
}

/// `hh:mm[:ss[.fff]]`, and the unit its precision leaves open (a minute, a second, ...).
struct Clock {
    hour: i64,
    minute: i64,
    second: i64,
    fraction_ms: i64,
    unit: i64,
}

fn parse_clock(clock: &str) -> Result<Clock, String> {
    let mut fields = clock.split(':');
    let hour = digits(fields.next().unwrap_or(""), 2, "hour")?;
    let minute = digits(fields.next().ok_or("time needs minutes")?, 2, "minute")?;
    let (second, fraction_ms, unit) = match fields.next() {
        None => (0, 0, 60_000),
        Some(sec) => {
            let (whole, fraction) = match sec.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sec, None),
            };
            let second = digits(whole, 2, "second")?;
            match fraction {
                None => (second, 0, 1_000),
                Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                    return Err("fraction of a second must be digits".into());
                }
                Some(f) => {
                    let ms: String = f.chars().chain("000".chars()).take(3).collect();
                    let unit = match f.len() {
                        1 => 100,
                        2 => 10,
                        _ => 1,
                    };
                    (second, ms.parse::<i64>().map_err(|e| e.to_string())?, unit)
                }
            }
        }
    };
    if fields.next().is_some() {
        return Err("too many time components".into());
    }
    Ok(Clock {
        hour,
        minute,
        second,
        fraction_ms,
        unit,
    })
}

/// Renders milliseconds since the epoch as an ISO 8601 instant
/// (`2020-03-01T10:00:00.000Z`), for messages and debugging.
pub fn format_instant(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A decimal with the range its written precision implies: `100` is `[99.5, 100.5]`,
/// `100.0` is `[99.95, 100.05]`, `1e2` is `[50, 150]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decimal {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(pos) => (&text[..pos], Some(&text[pos + 1..])),
        None => (text, None),
    };
    let unsigned = mantissa.strip_prefix(['+', '-']).unwrap_or(mantissa);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || unsigned.ends_with('.') {
        return Err(format!("'{text}' is not a decimal number"));
    }
    let exponent: i32 = match exponent {
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 3 || !all_digits(digits) {
                return Err(format!("'{text}' has a malformed exponent"));
            }
            e.parse()
                .map_err(|_| format!("'{text}' has a malformed exponent"))?
        }
        None => 0,
    };
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a decimal number"))?;
    if !value.is_finite() {
        return Err(format!("'{text}' is out of range"));
    }
    let scale = exponent - fraction.len() as i32;
    let half = 0.5 * 10f64.powi(scale);
    Ok(Decimal {
        value,
        low: value - half,
        high: value + half,
    })
}

/// What a reference string names: `Patient/1`, `Patient/1/_history/2`,
/// `http://example.org/fhir/Patient/1`, `urn:uuid:...`, a canonical URL, or a bare id
/// (`1`, in search only). Absolute forms keep their text in `url` and also yield the
/// type and id when the URL ends in `Type/id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ReferenceValue {
    pub target_type: Option<ResourceType>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
}

/// Whether `id` is a valid FHIR resource id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl ReferenceValue {
    /// Reads a reference string. A relative reference whose first segment is not a
    /// resource type, or whose id is invalid, is `Err`; absolute URLs always parse
    /// (their type/id are filled only when recognisable).
    pub fn parse_literal(text: &str) -> Result<ReferenceValue, String> {
        if text.contains("://") || text.starts_with("urn:") {
            let path = text.split(['|', '?', '#']).next().unwrap_or(text);
            let segments: Vec<&str> = path.split('/').collect();
            let mut value = ReferenceValue {
                url: Some(text.to_owned()),
                ..ReferenceValue::default()
            };
            let tail = match segments.as_slice() {
                [.., t, id, "_history", v] => Some((*t, *id, Some(*v))),
                [.., t, id] => Some((*t, *id, None)),
                _ => None,
            };
            if let Some((t, id, version)) = tail
                && let Some(t) = ResourceType::parse(t)
                && is_valid_id(id)
            {
                value.target_type = Some(t);
                value.id = Some(id.to_owned());
                value.version = version.map(str::to_owned);
            }
            return Ok(value);
        }
        let segments: Vec<&str> = text.split('/').collect();
        let (t, id, version) = match segments.as_slice() {
            [id] => (None, *id, None),
            [t, id] => (Some(*t), *id, None),
            [t, id, "_history", v] if !v.is_empty() => (Some(*t), *id, Some(*v)),
            _ => return Err(format!("'{text}' is not Type/id, an id or an absolute URL")),
        };
        let target_type = t
            .map(|t| ResourceType::parse(t).ok_or_else(|| format!("'{t}' is not a resource type")))
            .transpose()?;
        if !is_valid_id(id) {
            return Err(format!("'{id}' is not a valid resource id"));
        }
        Ok(ReferenceValue {
            target_type,
            id: Some(id.to_owned()),
            version: version.map(str::to_owned),
            url: None,
        })
    }
}

impl fmt::Display for ReferenceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(url) = &self.url {
            return write!(f, "{url}");
        }
        match &self.target_type {
            Some(t) => write!(f, "{t}/")?,
            None => write!(f, "*/")?,
        }
        write!(f, "{}", self.id.as_deref().unwrap_or("*"))?;
        if let Some(v) = &self.version {
            write!(f, "/_history/{v}")?;
        }
        Ok(())
    }
}

/// Lowercases and strips diacritics, for string search (`name=muller` finds `Müller`).
pub fn normalize_string(text: &str) -> String {
    text.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_combining_mark(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Splits `text` at every `separator` not preceded by a backslash; the pieces keep
/// their escapes (unescape each with [`unescape`] once it is split completely).
pub fn split_escaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Removes the backslash of `\,` `\|` `\$` and `\\`; any other backslash is kept.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, ',' | '|' | '$' | '\\')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        parse_date(text).unwrap().low
    }

    #[test]
    fn date_ranges() {
        fn check(input: &str, low: &str, high_plus_one: &str) {
            let range = parse_date(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(range.low, ms(low), "{input} low");
            assert_eq!(range.high + 1, ms(high_plus_one), "{input} high");
        }
        check(
            "2020",
            "2020-01-01T00:00:00.000Z",
            "2021-01-01T00:00:00.000Z",
        );
        check(
            "2020-02",
            "2020-02-01T00:00:00.000Z",
            "2020-03-01T00:00:00.000Z",
        );
        check(
            "2020-12",
            "2020-12-01T00:00:00.000Z",
            "2021-01-01T00:00:00.000Z",
        );
        check(
            "2020-02-29",
            "2020-02-29T00:00:00.000Z",
            "2020-03-01T00:00:00.000Z",
        );
        check(
            "2020-03-01T10:00",
            "2020-03-01T10:00:00.000Z",
            "2020-03-01T10:01:00.000Z",
        );
        check(
            "2020-03-01T10:00:05",
            "2020-03-01T10:00:05.000Z",
            "2020-03-01T10:00:06.000Z",
        );
        check(
            "2020-03-01T10:00:05.1Z",
            "2020-03-01T10:00:05.100Z",
            "2020-03-01T10:00:05.200Z",
        );
        check(
            "2020-03-01T12:00:00+02:00",
            "2020-03-01T10:00:00.000Z",
            "2020-03-01T10:00:01.000Z",
        );
        check(
            "2020-03-01T00:30:00-01:00",
            "2020-03-01T01:30:00.000Z",
            "2020-03-01T01:30:01.000Z",
        );
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("1969-12-31T23:59:59Z"), -1000);
        assert_eq!(ms("0001-01-01T00:00:00Z"), DATE_MIN);
        assert_eq!(parse_date("9999-12-31").unwrap().high, DATE_MAX);
        for text in [
            "1970-01-01T00:00:00.000Z",
            "2020-02-29T23:59:59.999Z",
            "1969-07-20T20:17:40.000Z",
            "0001-01-01T00:00:00.000Z",
        ] {
            assert_eq!(format_instant(ms(text)), text);
        }
    }

    #[test]
    fn malformed_dates() {
        for bad in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2021-02-29",
            "2020-1-01",
            "2020-01-01T",
            "2020-01-01T25:00",
            "2020-01-01T10",
            "2020-01-01T10:00:00+2",
            "2020-01-01T10:00:00.Z",
            "2020-01-01-01",
            "2020T10:00",
            "abcd",
            "2020-01-01T10:00:00+15:00",
        ] {
            assert!(parse_date(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn decimals_with_precision() {
        fn check(input: &str, value: f64, low: f64, high: f64) {
            let d = parse_decimal(input).unwrap();
            assert!((d.value - value).abs() < 1e-9, "{input} value {}", d.value);
            assert!((d.low - low).abs() < 1e-9, "{input} low {}", d.low);
            assert!((d.high - high).abs() < 1e-9, "{input} high {}", d.high);
        }
        check("100", 100.0, 99.5, 100.5);
        check("100.00", 100.0, 99.995, 100.005);
        check("-2.5", -2.5, -2.55, -2.45);
        check("1e2", 100.0, 50.0, 150.0);
        check("1.5E-1", 0.15, 0.145, 0.155);
        for bad in [
            "", "abc", "1.", ".5", "1e", "--1", "1,5", "NaN", "inf", "1e99999",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prefixes_over_ranges() {
        // Target ranges against the parameter range [10, 20].
        fn check(prefix: Prefix, target: (i64, i64), expected: bool) {
            let predicate = prefix.range_predicate((10, 20));
            assert_eq!(
                predicate.matches(target.0, target.1),
                expected,
                "{prefix} {target:?}"
            );
        }
        check(Prefix::Eq, (12, 15), true);
        check(Prefix::Eq, (5, 15), false);
        check(Prefix::Ne, (5, 15), true);
        check(Prefix::Ne, (10, 20), false);
        check(Prefix::Gt, (15, 25), true);
        check(Prefix::Gt, (12, 18), false);
        check(Prefix::Lt, (5, 12), true);
        check(Prefix::Lt, (10, 12), false);
        check(Prefix::Ge, (10, 20), true);
        check(Prefix::Ge, (5, 9), false);
        check(Prefix::Le, (5, 9), true);
        check(Prefix::Le, (21, 30), false);
        check(Prefix::Sa, (21, 30), true);
        check(Prefix::Sa, (20, 30), false);
        check(Prefix::Eb, (1, 9), true);
        check(Prefix::Eb, (1, 10), false);
        check(Prefix::Ap, (19, 40), true);
        check(Prefix::Ap, (21, 40), false);
        assert_eq!(Prefix::split("ge2020"), (Prefix::Ge, "2020"));
        assert_eq!(Prefix::split("2020"), (Prefix::Eq, "2020"));
    }

    #[test]
    fn normalization_and_escapes() {
        assert_eq!(
            normalize_string("Müller-Lüdenscheidt ÉÈ"),
            "muller-ludenscheidt ee"
        );
        assert_eq!(normalize_string("Øre Straße"), "øre straße");
        assert_eq!(
            split_escaped(r"a,b\,c,,d", ','),
            vec!["a", r"b\,c", "", "d"]
        );
        assert_eq!(unescape(r"b\,c\|d\$e\\f\g"), r"b,c|d$e\f\g");
        assert_eq!(split_escaped(r"x\\,y", ','), vec![r"x\\", "y"]);
    }
}
