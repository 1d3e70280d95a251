//! JSON type and format of the FHIR R4 primitive types, after the regular expressions of
//! the R4 specification (written out by hand: no regex engine in the plugin).

use crate::json::Json;

pub type Check = fn(&Json<'_>) -> Result<(), String>;

/// The R4 primitive types the validator checks. The generated tables name them by variant,
/// so that a check costs no string comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    Boolean,
    Integer,
    UnsignedInt,
    PositiveInt,
    Decimal,
    String,
    Markdown,
    Code,
    Id,
    Uri,
    Url,
    Canonical,
    Oid,
    Uuid,
    Date,
    DateTime,
    Instant,
    Time,
    Base64Binary,
    Xhtml,
}

impl Prim {
    /// The primitive type of a type code, `None` for complex types.
    pub fn of(ty: &str) -> Option<Prim> {
        Some(match ty {
            "boolean" => Prim::Boolean,
            "integer" => Prim::Integer,
            "unsignedInt" => Prim::UnsignedInt,
            "positiveInt" => Prim::PositiveInt,
            "decimal" => Prim::Decimal,
            "string" => Prim::String,
            "markdown" => Prim::Markdown,
            "code" => Prim::Code,
            "id" => Prim::Id,
            "uri" => Prim::Uri,
            "url" => Prim::Url,
            "canonical" => Prim::Canonical,
            "oid" => Prim::Oid,
            "uuid" => Prim::Uuid,
            "date" => Prim::Date,
            "dateTime" => Prim::DateTime,
            "instant" => Prim::Instant,
            "time" => Prim::Time,
            "base64Binary" => Prim::Base64Binary,
            "xhtml" => Prim::Xhtml,
            _ => return None,
        })
    }

    /// The JSON type and format check of this type.
    pub fn check(self) -> Check {
        match self {
            Prim::Boolean => |v| expect(v.is_boolean(), v, "a JSON boolean"),
            Prim::Integer => |v| integer(v, i64::from(i32::MIN), "an integer"),
            Prim::UnsignedInt => |v| integer(v, 0, "an integer ≥ 0"),
            Prim::PositiveInt => |v| integer(v, 1, "an integer ≥ 1"),
            Prim::Decimal => |v| expect(v.is_number(), v, "a JSON number"),
            Prim::String | Prim::Markdown => |v| text(v, |s| !s.is_empty(), "a non-empty string"),
            Prim::Code => |v| {
                text(
                    v,
                    is_code,
                    "a code (no leading, trailing or double whitespace)",
                )
            },
            Prim::Id => |v| text(v, is_id, "an id ([A-Za-z0-9-.]{1,64})"),
            Prim::Uri | Prim::Url | Prim::Canonical => {
                |v| text(v, is_uri, "a URI without whitespace")
            }
            Prim::Oid => |v| text(v, is_oid, "an OID (urn:oid:1.2.3)"),
            Prim::Uuid => |v| text(v, is_uuid, "a UUID (urn:uuid:…, lower case)"),
            Prim::Date => |v| text(v, is_date, "a date (YYYY, YYYY-MM or YYYY-MM-DD)"),
            Prim::DateTime => |v| text(v, is_date_time, DATE_TIME),
            Prim::Instant => |v| {
                text(
                    v,
                    is_instant,
                    "an instant (YYYY-MM-DDThh:mm:ss(.sss)Z or ±hh:mm)",
                )
            },
            Prim::Time => |v| text(v, is_time, "a time (hh:mm:ss)"),
            Prim::Base64Binary => |v| text(v, is_base64, "base64"),
            Prim::Xhtml => |v| text(v, |s| !s.is_empty(), "XHTML"),
        }
    }
}

fn expect(ok: bool, value: &Json<'_>, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not {what}", short(value)))
    }
}

fn text(value: &Json<'_>, valid: fn(&str) -> bool, what: &str) -> Result<(), String> {
    match value.as_str() {
        Some(s) if valid(s) => Ok(()),
        _ => Err(format!("{} is not {what}", short(value))),
    }
}

fn integer(value: &Json<'_>, min: i64, what: &str) -> Result<(), String> {
    let ok = value
        .as_i64()
        .is_some_and(|n| n >= min && n <= i64::from(i32::MAX));
    expect(ok, value, what)
}

/// The value for a message, cut short.
fn short(value: &Json<'_>) -> String {
    let s = value.to_value().to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

const DATE_TIME: &str = "a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)";

// Whitespace as the R4 regular expressions mean it (`\s` of XML Schema and Java: space, tab,
// line feed, form feed, carriage return), not Unicode's: a no-break space (U+00A0) is
// part of a code, as in the R4 `CodeSystem/v2-0550` codes `CHEST\u{a0}`.
fn is_uri(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_ascii_whitespace())
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.split(' ')
            .all(|w| !w.is_empty() && !w.chars().any(|c| c.is_ascii_whitespace()))
}

pub fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut arcs = rest.split('.');
    let first_ok = arcs.next().is_some_and(|a| matches!(a, "0" | "1" | "2"));
    let rest: Vec<&str> = arcs.collect();
    first_ok
        && !rest.is_empty()
        && rest.iter().all(|a| {
            !a.is_empty()
                && a.bytes().all(|b| b.is_ascii_digit())
                && (a == &"0" || !a.starts_with('0'))
        })
}

fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD`; year 0001–9999.
fn is_date(s: &str) -> bool {
    let mut parts = s.splitn(3, '-');
    let year_ok = parts
        .next()
        .and_then(|y| digits(y, 4))
        .is_some_and(|y| y >= 1);
    let month = parts.next();
    let day = parts.next();
    let month_ok = month.is_none_or(|m| digits(m, 2).is_some_and(|m| (1..=12).contains(&m)));
    let day_ok = day.is_none_or(|d| digits(d, 2).is_some_and(|d| (1..=31).contains(&d)));
    year_ok && month_ok && day_ok
}

fn is_full_date(s: &str) -> bool {
    s.len() == 10 && is_date(s)
}

/// `hh:mm:ss` with optional fraction; seconds up to 60 (leap second).
fn is_time(s: &str) -> bool {
    let (main, fraction) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    let mut parts = main.split(':');
    let (Some(h), Some(m), Some(sec), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    digits(h, 2).is_some_and(|h| h <= 23)
        && digits(m, 2).is_some_and(|m| m <= 59)
        && digits(sec, 2).is_some_and(|s| s <= 60)
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `Z`, or `+hh:mm` / `-hh:mm` up to 14:00.
fn is_zone(s: &str) -> bool {
    if s == "Z" {
        return true;
    }
    let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) else {
        return false;
    };
    let Some((h, m)) = rest.split_once(':') else {
        return false;
    };
    match (digits(h, 2), digits(m, 2)) {
        (Some(14), Some(0)) => true,
        (Some(h), Some(m)) => h <= 13 && m <= 59,
        _ => false,
    }
}

/// A full date, `T`, a time and a zone.
fn is_instant(s: &str) -> bool {
    let Some((date, rest)) = s.split_once('T') else {
        return false;
    };
    let zone_at = rest.find(['Z', '+', '-']);
    is_full_date(date) && zone_at.is_some_and(|i| is_time(&rest[..i]) && is_zone(&rest[i..]))
}

/// A partial date, or an instant-like full date and time with a zone.
fn is_date_time(s: &str) -> bool {
    if s.contains('T') {
        is_instant(s)
    } else {
        is_date(s)
    }
}

fn is_base64(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    compact.len().is_multiple_of(4)
        && compact
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

#[cfg(test)]
mod tests {
    use hestia_sdk::json;

    use super::{Check, Prim};

    /// The check for a primitive type code, `None` for complex types.
    fn check(ty: &str) -> Option<Check> {
        Prim::of(ty).map(Prim::check)
    }

    fn check_value(ty: &str, value: hestia_sdk::Value, ok: bool) {
        let result = check(ty).expect("a primitive type")(&crate::json::Json::from(&value));
        assert_eq!(result.is_ok(), ok, "{ty} {value}: {result:?}");
    }

    #[test]
    fn formats() {
        let cases = [
            ("date", json!("2024"), true),
            ("date", json!("2024-02"), true),
            ("date", json!("2024-02-29"), true),
            ("date", json!("2024-13-01"), false),
            ("date", json!("2024-1-01"), false),
            ("date", json!("0000"), false),
            ("date", json!("2024-02-29T10:00:00Z"), false),
            ("date", json!(2024), false),
            ("dateTime", json!("2024"), true),
            ("dateTime", json!("2015-02-07T13:28:17-05:00"), true),
            ("dateTime", json!("2017-01-01T00:00:00.000Z"), true),
            ("dateTime", json!("2015-02-07T13:28:17"), false),
            ("dateTime", json!("2015-02-07T25:28:17Z"), false),
            ("dateTime", json!("2015-02T13:28:17Z"), false),
            ("instant", json!("2015-02-07T13:28:17.239+02:00"), true),
            ("instant", json!("2015-02-07T13:28:17+14:00"), true),
            ("instant", json!("2015-02-07T13:28:17+14:30"), false),
            ("instant", json!("2015-02-07"), false),
            ("time", json!("23:59:60"), true),
            ("time", json!("24:00:00"), false),
            ("time", json!("12:00"), false),
            ("code", json!("final"), true),
            ("code", json!("two words"), true),
            ("code", json!(" final"), false),
            ("code", json!("a  b"), false),
            ("code", json!(""), false),
            ("id", json!("example-1.2"), true),
            ("id", json!("a_b"), false),
            ("id", json!("x".repeat(65)), false),
            ("uri", json!("http://loinc.org"), true),
            ("uri", json!("urn:oid:1.2"), true),
            ("uri", json!("http://a b"), false),
            ("uri", json!(""), false),
            ("oid", json!("urn:oid:2.16.840.1.113883"), true),
            ("oid", json!("urn:oid:3.1"), false),
            ("oid", json!("urn:oid:1.02"), false),
            (
                "uuid",
                json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
                true,
            ),
            (
                "uuid",
                json!("urn:uuid:C757873D-EC9A-4326-A141-556F43239520"),
                false,
            ),
            ("boolean", json!(true), true),
            ("boolean", json!("true"), false),
            ("integer", json!(-5), true),
            ("integer", json!(1.5), false),
            ("integer", json!(3_000_000_000_i64), false),
            ("positiveInt", json!(0), false),
            ("unsignedInt", json!(0), true),
            ("decimal", json!(1.5), true),
            ("decimal", json!("1.5"), false),
            ("string", json!("x"), true),
            ("string", json!(""), false),
            ("base64Binary", json!("aGVsbG8="), true),
            ("base64Binary", json!("aGVsbG8"), false),
        ];
        for (ty, value, ok) in cases {
            check_value(ty, value, ok);
        }
        assert!(check("HumanName").is_none());
    }
}
