//! Scopes: SMART App Launch v1 (`patient/Observation.read`) and v2
//! (`patient/Observation.rs?category=laboratory`) resource scopes, and the plain ones
//! (`openid`, `fhirUser`, `launch/patient`, `offline_access`, ...).

use std::fmt::Write;

/// Scopes this server knows by name (besides SMART resource scopes).
pub const KNOWN: &[&str] = &[
    "openid",
    "fhirUser",
    "launch/patient",
    "offline_access",
    "online_access",
];

/// Splits a space-separated scope string, dropping empty parts and duplicates, keeping order.
pub fn split(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(' ').filter(|p| !p.is_empty()) {
        if !out.iter().any(|o| o == part) {
            out.push(part.to_string());
        }
    }
    out
}

pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Patient,
    User,
    System,
}

/// A SMART resource scope: `context/Type.permissions[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartScope {
    pub context: Context,
    /// A resource type, or `*`.
    pub resource: String,
    /// Bits of [`PERMS`]: c r u d s.
    pub perms: u8,
    pub query: Option<String>,
}

/// SMART v2 permission letters, in their required order.
pub const PERMS: &[u8; 5] = b"cruds";

fn bit(letter: u8) -> Option<u8> {
    PERMS.iter().position(|p| *p == letter).map(|i| 1 << i)
}

/// The part of a resource scope after `context/`: `Type.permissions[?query]`, as (resource
/// type or `*`, bits of [`PERMS`], query). v1 `read`, `write` and `*` become their v2
/// letters. Scopes and the grants of access policies share it; the error says what is wrong.
pub fn parse_resource_part(s: &str) -> Result<(String, u8, Option<String>), String> {
    let (body, query) = match s.split_once('?') {
        Some((b, q)) if !q.is_empty() => (b, Some(q.to_string())),
        Some(_) => return Err("the query after '?' is empty".into()),
        None => (s, None),
    };
    let Some((resource, perms)) = body.split_once('.') else {
        return Err("expected TYPE.PERMISSIONS, e.g. Observation.rs or *.read".into());
    };
    let type_ok = resource == "*"
        || (resource.starts_with(|c: char| c.is_ascii_uppercase())
            && resource.chars().all(|c| c.is_ascii_alphanumeric()));
    if !type_ok {
        return Err(format!(
            "resource type {resource:?} must be * or a type name such as Observation"
        ));
    }
    let bits = match perms {
        "read" => v2_permissions("rs"),
        "write" => v2_permissions("cud"),
        "*" => v2_permissions("cruds"),
        letters => v2_permissions(letters),
    };
    let perms = bits.ok_or_else(|| {
        format!(
            "permissions {perms:?} must be read, write, * or letters of cruds in that order (e.g. rs)"
        )
    })?;
    Ok((resource.to_string(), perms, query))
}

/// v2 permissions: a non-empty subsequence of "cruds", in that order.
fn v2_permissions(letters: &str) -> Option<u8> {
    if letters.is_empty() {
        return None;
    }
    let mut last = None;
    let mut bits = 0;
    for l in letters.bytes() {
        let pos = PERMS.iter().position(|p| *p == l)?;
        if last.is_some_and(|p| pos <= p) {
            return None;
        }
        last = Some(pos);
        bits |= 1 << pos;
    }
    Some(bits)
}

/// The letters of permission bits, in SMART v2 order (`0b10010` is `rs`).
pub fn permission_letters(perms: u8) -> String {
    PERMS
        .iter()
        .enumerate()
        .filter(|(i, _)| perms & (1 << i) != 0)
        .map(|(_, l)| *l as char)
        .collect()
}

impl SmartScope {
    pub fn parse(s: &str) -> Option<Self> {
        let (context, rest) = s.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (resource, perms, query) = parse_resource_part(rest).ok()?;
        Some(Self {
            context,
            resource,
            perms,
            query,
        })
    }
}

/// The scope in plain words, for the consent page.
pub fn describe(scope: &str) -> String {
    match scope {
        "openid" => return "Confirm who you are to the app (sign in with this account)".into(),
        "fhirUser" => return "Know which person record (patient, practitioner…) is yours".into(),
        "launch/patient" => {
            return "Work with one patient's record, chosen when the app starts".into();
        }
        "offline_access" => {
            return "Keep access after you close the app, until you revoke it".into();
        }
        "online_access" => return "Keep access while you are using the app".into(),
        _ => {}
    }
    let Some(s) = SmartScope::parse(scope) else {
        return format!("Permission “{scope}”");
    };
    let mut verbs = Vec::new();
    for (letter, word) in [
        (b'r', "read"),
        (b's', "search"),
        (b'c', "create"),
        (b'u', "update"),
        (b'd', "delete"),
    ] {
        if s.perms & bit(letter).unwrap_or(0) != 0 {
            verbs.push(word);
        }
    }
    let mut out = String::new();
    let verbs = match verbs.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    let mut chars = verbs.chars();
    if let Some(first) = chars.next() {
        out.push(first.to_ascii_uppercase());
        out.push_str(chars.as_str());
    }
    let what = if s.resource == "*" {
        "all kinds of records".to_string()
    } else {
        format!("{} records", s.resource)
    };
    let whose = match s.context {
        Context::Patient => "of the selected patient",
        Context::User => "that you are allowed to see",
        Context::System => "of the whole system",
    };
    let _ = write!(out, " {what} {whose}");
    if let Some(q) = &s.query {
        let _ = write!(out, ", limited to {q}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_scopes_are_not_smart() {
        for s in [
            "patient/observation.read",
            "patient/Observation.sr",
            "patient/Observation.",
            "practitioner/*.read",
            "patient/Observation.rs?",
            "patient/Obs-x.read",
        ] {
            assert!(SmartScope::parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn plain_words() {
        assert_eq!(
            describe("patient/Observation.rs"),
            "Read and search Observation records of the selected patient"
        );
        assert_eq!(
            describe("user/*.cruds"),
            "Read, search, create, update and delete all kinds of records that you are allowed to see"
        );
        assert!(describe("offline_access").contains("after you close"));
    }

    #[test]
    fn split_drops_duplicates() {
        assert_eq!(split(" a  b a "), vec!["a", "b"]);
    }
}
