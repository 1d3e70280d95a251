//! What an account may access: roles, access policies and the rights they add up to.
//!
//! An access policy is a small TOML document: a name, a description, grants in SMART v2
//! scope syntax without the `patient/`, `user/` or `system/` prefix (`Observation.rs`,
//! `*.cruds`, `Patient.rs?organization=Organization/a`; v1 `read`, `write` and `*` are
//! accepted and normalised), and optionally `compartment = "fhir-user"` (the grants hold
//! only within the Patient compartment of the account's fhirUser). Policies are attached to
//! roles and to accounts; the roles `patient`, `practitioner` and `admin` also have built-in
//! policies. [`Rights::compute`] adds up what applies to one account.
//!
//! Plain types only (no SQL, no HTTP): the store loads the rows, plugins and the resource
//! server get [`Rights`] (serde-serialisable, grants as their text).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fhir::definitions::ResourceType;
use crate::fhir::search::{ResultParams, SearchQuery};
use crate::oauth::scopes::{PERMS, parse_resource_part, permission_letters};

/// The role of a patient's own account: its built-in policy reads and searches that
/// patient's compartment.
pub const ROLE_PATIENT: &str = "patient";
/// The role of clinical staff: its built-in policy reads and writes all clinical data.
pub const ROLE_PRACTITIONER: &str = "practitioner";
/// The role of administrators (console and management APIs): no FHIR data by itself.
pub const ROLE_ADMIN: &str = "admin";

/// Longest role or policy name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a role or policy name: 1 to 64 letters, digits, `-` and `_`. `what` names it in
/// the error ("role", "policy name").
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, - and _"
        ))
    }
}

/// One permission: a resource type (or `*`), SMART v2 permission letters, and optionally a
/// search the resources must match. Written and serialised as its text, `Observation.rs?category=laboratory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Grant {
    /// A FHIR R4 resource type, or `*` for every type.
    pub resource: String,
    /// Bits of the letters `cruds` (bit 0 is `c`, bit 4 is `s`), as in SMART scopes.
    pub perms: u8,
    /// A search the resources must match (`organization=Organization/a`), percent-encoded
    /// as in a URL; only with a resource type.
    pub query: Option<String>,
}

impl Grant {
    /// Whether this grant allows `permission` (one of `c r u d s`) on `resource_type`,
    /// possibly only for the resources its query matches.
    pub fn permits(&self, resource_type: &str, permission: char) -> bool {
        let bit = PERMS
            .iter()
            .position(|p| *p as char == permission)
            .map_or(0, |i| 1u8 << i);
        bit != 0
            && self.perms & bit != 0
            && (self.resource == "*" || self.resource == resource_type)
    }

    /// The query's parameters, decoded, in order (empty without a query).
    pub fn params(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Whether everything `other` allows, this allows too.
    pub fn covers(&self, other: &Grant) -> bool {
        (self.resource == "*" || self.resource == other.resource)
            && other.perms & !self.perms == 0
            && (self.query.is_none() || self.query == other.query)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.resource, permission_letters(self.perms))?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

impl FromStr for Grant {
    type Err = String;

    /// Parses and checks a grant: a known R4 type or `*`, permissions, and a query of known
    /// search parameters of that type (criteria only: no `_include`, `_sort`, ...).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("patient/") || s.starts_with("user/") || s.starts_with("system/") {
            return Err(
                "write grants without the patient/, user/ or system/ prefix (e.g. Observation.rs)"
                    .into(),
            );
        }
        let (resource, perms, query) = parse_resource_part(s)?;
        let grant = Grant {
            resource,
            perms,
            query,
        };
        if grant.resource == "*" {
            if grant.query.is_some() {
                return Err("a query needs one resource type, not *".into());
            }
            return Ok(grant);
        }
        let Some(ty) = ResourceType::parse(&grant.resource) else {
            return Err(format!("{} is not a FHIR R4 resource type", grant.resource));
        };
        if let Some(q) = &grant.query {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
                .map_err(|e| format!("the query {q:?} is not URL-encoded: {e}"))?;
            let parsed = SearchQuery::parse(ty, pairs).map_err(|e| e.to_string())?;
            if parsed.result != ResultParams::default() {
                return Err(
                    "only search criteria may restrict a grant (no _include, _sort, _count, ...)"
                        .into(),
                );
            }
        }
        Ok(grant)
    }
}

impl From<Grant> for String {
    fn from(g: Grant) -> String {
        g.to_string()
    }
}

impl TryFrom<String> for Grant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Where the grants of a policy hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compartment {
    /// Only within the Patient compartment of the account's fhirUser (nothing when the
    /// fhirUser is not a Patient).
    FhirUser,
}

/// An access policy, as its TOML document says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub grants: Vec<Grant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment: Option<Compartment>,
}

/// A policy document that cannot be used, naming the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub message: String,
}

/// The document as written, before each grant is checked (so an error names the grant).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    name: String,
    description: Option<String>,
    grants: Vec<String>,
    compartment: Option<String>,
}

impl Policy {
    /// Parses and checks a policy document; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let err = |message: String| PolicyError {
            file: file.to_string(),
            message,
        };
        let doc: PolicyFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        check_name("policy name", &doc.name).map_err(err)?;
        if is_built_in(&doc.name) {
            return Err(err(format!(
                "{:?} is the name of a built-in policy; choose another name",
                doc.name
            )));
        }
        let compartment = match doc.compartment.as_deref() {
            None => None,
            Some("fhir-user") => Some(Compartment::FhirUser),
            Some(other) => {
                return Err(err(format!(
                    "compartment {other:?} is not supported; the one supported is \"fhir-user\""
                )));
            }
        };
        let grants = doc
            .grants
            .iter()
            .map(|g| g.parse().map_err(|e| err(format!("grant {g:?}: {e}"))))
            .collect::<Result<Vec<Grant>, _>>()?;
        Ok(Policy {
            name: doc.name,
            description: doc.description,
            grants,
            compartment,
        })
    }

    /// The built-in policy of a role (`patient`, `practitioner`, `admin`), if it has one.
    pub fn built_in(role: &str) -> Option<Policy> {
        let (description, grants, compartment) = match role {
            ROLE_PATIENT => (
                "Read and search the account's own records (the Patient compartment of its fhirUser)",
                vec!["*.rs"],
                Some(Compartment::FhirUser),
            ),
            ROLE_PRACTITIONER => (
                "Read, search, create, update and delete all clinical data",
                vec!["*.cruds"],
                None,
            ),
            ROLE_ADMIN => (
                "The console and the management APIs; no FHIR data by itself",
                vec![],
                None,
            ),
            _ => return None,
        };
        Some(Policy {
            name: role.to_string(),
            description: Some(description.to_string()),
            grants: grants
                .into_iter()
                .map(|g| g.parse().expect("built-in grants parse"))
                .collect(),
            compartment,
        })
    }

    /// Every built-in policy, each attached to the role of its name.
    pub fn built_ins() -> Vec<Policy> {
        [ROLE_PATIENT, ROLE_PRACTITIONER, ROLE_ADMIN]
            .into_iter()
            .filter_map(Policy::built_in)
            .collect()
    }
}

/// Whether `name` is the name of a built-in policy (and so cannot be stored).
pub fn is_built_in(name: &str) -> bool {
    Policy::built_in(name).is_some()
}

/// What one account may access, all its roles and policies added up. Plugins and the
/// resource server intersect a token's scopes with this.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rights {
    /// The account's roles, sorted.
    pub roles: Vec<String>,
    /// The policies that apply (built-in ones by their role's name), in the order applied.
    pub policies: Vec<String>,
    /// What the account may do; any grant that permits an interaction allows it. None
    /// covers another; grants of the same type and query are merged.
    pub grants: Vec<Grant>,
    /// When set (a Patient id), every grant holds only within that patient's compartment.
    /// An account whose fhirUser is `Patient/X` is always confined to X.
    pub fhir_user_compartment: Option<String>,
    /// Why a policy that applies adds nothing (a compartment the account has no patient
    /// for, a stored policy that no longer parses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The patient id of a `Patient/X` fhirUser.
fn patient_of(fhir_user: Option<&str>) -> Option<&str> {
    fhir_user?
        .strip_prefix("Patient/")
        .filter(|id| !id.is_empty())
}

impl Rights {
    /// Adds up the rights of an account with `roles` and `fhir_user` from `policies` (the
    /// stored policies attached to one of its roles or to it); built-in policies of its
    /// roles are added here.
    pub fn compute(roles: &[String], fhir_user: Option<&str>, policies: &[Policy]) -> Rights {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let patient = patient_of(fhir_user);
        let mut rights = Rights {
            fhir_user_compartment: patient.map(str::to_string),
            ..Rights::default()
        };
        let built_ins: Vec<Policy> = roles.iter().filter_map(|r| Policy::built_in(r)).collect();
        for policy in built_ins.iter().chain(policies) {
            if rights.policies.contains(&policy.name) {
                continue;
            }
            rights.policies.push(policy.name.clone());
            if policy.compartment == Some(Compartment::FhirUser) && patient.is_none() {
                if !policy.grants.is_empty() {
                    rights.notes.push(format!(
                        "policy {} grants only within the Patient compartment of the account's fhirUser, and its fhirUser is {}",
                        policy.name,
                        fhir_user.map_or("not set".to_string(), |f| format!("{f}, not a Patient"))
                    ));
                }
                continue;
            }
            for grant in &policy.grants {
                rights.add(grant.clone());
            }
        }
        rights.roles = roles;
        rights
    }

    /// Adds a grant: merged into one of the same type and query, dropped when another
    /// covers it, and dropping those it covers.
    fn add(&mut self, grant: Grant) {
        if let Some(same) = self
            .grants
            .iter_mut()
            .find(|g| g.resource == grant.resource && g.query == grant.query)
        {
            same.perms |= grant.perms;
        } else {
            self.grants.push(grant);
        }
        // A merge may now cover others; keep the first of two that cover each other.
        let mut kept: Vec<Grant> = Vec::with_capacity(self.grants.len());
        for g in std::mem::take(&mut self.grants) {
            if !kept.iter().any(|k| k.covers(&g)) {
                kept.retain(|k| !g.covers(k));
                kept.push(g);
            }
        }
        self.grants = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> Grant {
        s.parse().unwrap()
    }

    fn texts(rights: &Rights) -> Vec<String> {
        rights.grants.iter().map(|g| g.to_string()).collect()
    }

    fn policy(text: &str) -> Policy {
        Policy::parse("test.toml", text).unwrap()
    }

    #[test]
    fn grants_parse_v2_and_normalise_v1() {
        assert_eq!(grant("Observation.rs").to_string(), "Observation.rs");
        assert_eq!(grant("*.read").to_string(), "*.rs");
        assert_eq!(grant("Patient.write").to_string(), "Patient.cud");
        assert_eq!(grant("Patient.*").to_string(), "Patient.cruds");
        let g =
            grant("Observation.rs?category=laboratory&subject:Patient.organization=Organization/a");
        assert_eq!(
            g.params(),
            vec![
                ("category".to_string(), "laboratory".to_string()),
                (
                    "subject:Patient.organization".to_string(),
                    "Organization/a".to_string()
                )
            ]
        );
        assert!(g.permits("Observation", 'r') && g.permits("Observation", 's'));
        assert!(!g.permits("Observation", 'u') && !g.permits("Patient", 'r'));
        assert!(grant("*.cruds").permits("Encounter", 'd'));
    }

    #[test]
    fn bad_grants_say_what_is_wrong() {
        for (text, expected) in [
            ("Observation.sr", "letters of cruds in that order"),
            ("Observation", "TYPE.PERMISSIONS"),
            ("Observation.", "permissions"),
            ("Obs-x.rs", "must be * or a type name"),
            ("Observations.rs", "not a FHIR R4 resource type"),
            (
                "user/Observation.rs",
                "without the patient/, user/ or system/ prefix",
            ),
            ("*.rs?category=x", "needs one resource type"),
            ("Observation.rs?", "is empty"),
            ("Observation.rs?colour=red", "'colour'"),
            (
                "Observation.rs?_include=Observation:subject",
                "only search criteria",
            ),
            ("Observation.rs?_sort=date", "only search criteria"),
            ("Observation.rs?date=yesterday", "'date'"),
        ] {
            let err = text.parse::<Grant>().unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn policy_documents_parse_strictly() {
        let p = policy(
            r#"
            name = "clinic-a"
            description = "Clinic A"
            grants = ["Patient.cruds?organization=Organization/clinic-a", "Observation.read"]
            "#,
        );
        assert_eq!(p.name, "clinic-a");
        assert_eq!(p.description.as_deref(), Some("Clinic A"));
        assert_eq!(p.grants[1].to_string(), "Observation.rs");
        assert_eq!(p.compartment, None);
        let own = policy("name = \"own\"\ngrants = [\"*.rs\"]\ncompartment = \"fhir-user\"");
        assert_eq!(own.compartment, Some(Compartment::FhirUser));

        for (text, expected) in [
            (
                "name = \"a\"\ngrants = []\nscope = \"x\"",
                "unknown field `scope`",
            ),
            ("grants = []", "missing field `name`"),
            ("name = \"a\"", "missing field `grants`"),
            ("name = \"a b\"\ngrants = []", "policy name \"a b\""),
            ("name = \"practitioner\"\ngrants = []", "built-in policy"),
            (
                "name = \"a\"\ngrants = [\"*.rs\"]\ncompartment = \"organization\"",
                "compartment \"organization\" is not supported",
            ),
            (
                "name = \"a\"\ngrants = [\"Patient.rs\", \"Patient.xyz\"]",
                "grant \"Patient.xyz\": permissions",
            ),
            ("name = \"a\"\ngrants = \"*.rs\"", "invalid type"),
        ] {
            let err = Policy::parse("bad.toml", text).unwrap_err().to_string();
            assert!(err.starts_with("bad.toml: "), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn no_role_and_no_policy_grants_nothing() {
        let rights = Rights::compute(&[], None, &[]);
        assert!(rights.grants.is_empty());
        let rights = Rights::compute(&["nurse".into()], Some("Practitioner/1"), &[]);
        assert!(rights.grants.is_empty());
        assert_eq!(rights.roles, ["nurse"]);
    }

    #[test]
    fn built_in_roles() {
        let p = Rights::compute(&["patient".into()], Some("Patient/amy"), &[]);
        assert_eq!(texts(&p), ["*.rs"]);
        assert_eq!(p.fhir_user_compartment.as_deref(), Some("amy"));
        let d = Rights::compute(&["practitioner".into()], Some("Practitioner/d"), &[]);
        assert_eq!(texts(&d), ["*.cruds"]);
        assert_eq!(d.fhir_user_compartment, None);
        let a = Rights::compute(&["admin".into()], None, &[]);
        assert!(a.grants.is_empty());
        assert_eq!(a.policies, ["admin"]);
    }

    #[test]
    fn a_patient_account_is_confined_whatever_its_roles() {
        let auditor = policy("name = \"auditor\"\ngrants = [\"*.rs\"]");
        let r = Rights::compute(
            &["practitioner".into(), "patient".into()],
            Some("Patient/amy"),
            &[auditor],
        );
        assert_eq!(texts(&r), ["*.cruds"]);
        assert_eq!(r.fhir_user_compartment.as_deref(), Some("amy"));
        assert_eq!(r.policies, ["patient", "practitioner", "auditor"]);
    }

    #[test]
    fn a_compartment_policy_without_a_patient_adds_nothing() {
        let r = Rights::compute(&["patient".into()], Some("Practitioner/d"), &[]);
        assert!(r.grants.is_empty());
        assert_eq!(r.fhir_user_compartment, None);
        assert!(
            r.notes[0].contains("Practitioner/d, not a Patient"),
            "{:?}",
            r.notes
        );
        let r = Rights::compute(&["patient".into()], None, &[]);
        assert!(r.grants.is_empty() && r.notes[0].contains("not set"));
    }

    #[test]
    fn grants_add_up_without_repeats() {
        let clinic = policy(
            "name = \"clinic\"\ngrants = [\"Patient.r?organization=Organization/a\", \"Patient.s?organization=Organization/a\", \"Observation.rs\"]",
        );
        let audit = policy("name = \"audit\"\ngrants = [\"Observation.read\", \"Encounter.r\"]");
        let r = Rights::compute(&["staff".into()], None, &[clinic.clone(), audit]);
        assert_eq!(
            texts(&r),
            [
                "Patient.rs?organization=Organization/a",
                "Observation.rs",
                "Encounter.r"
            ]
        );
        // A wider grant replaces those it covers.
        let all = policy("name = \"all\"\ngrants = [\"*.rs\"]");
        let r = Rights::compute(&[], None, &[clinic, all]);
        assert_eq!(texts(&r), ["*.rs"]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["grants"], serde_json::json!(["*.rs"]));
        let back: Rights = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}
