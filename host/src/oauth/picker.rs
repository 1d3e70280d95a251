//! The consent page's patient picker: the patients an account may choose for
//! `launch/patient`, as its rights say. An account confined to its own records has only
//! itself; an account whose Patient read grants carry a search criterion has the Patients
//! that criterion finds (run through the FHIR search engine, as the resource server runs it
//! on every request); an account with an unrestricted Patient read grant has them all; any
//! other has none.

use serde_json::Value;

use super::{AuthServer, OAuthError};
use crate::fhir::access::Access;
use crate::fhir::definitions::ResourceType;
use crate::fhir::search::value::normalize_string;
use crate::fhir::searchset::{self, Handling, SearchScope};
use crate::rights::Rights;

/// The most patients the picker lists at once; a name search narrows the list.
pub const PICKER_LIMIT: i64 = 50;

/// The patient picker's choices: the Patients the account may access, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientList {
    /// The name search that chose them (`patient_search`), empty for all.
    pub search: String,
    pub patients: Vec<PatientChoice>,
    /// How many match in all (more than shown when above [`PICKER_LIMIT`]).
    pub total: i64,
    /// The account's rights leave out some of this server's Patients.
    pub limited: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientChoice {
    pub id: String,
    pub name: String,
    pub birth_date: Option<String>,
}

/// Which Patients an account may choose, from its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientReach {
    /// Every Patient: a Patient read grant without a criterion.
    Every,
    /// The Patients any of these searches finds (the criteria of its Patient read grants,
    /// or `_id` of its own patient for a confined account).
    Matching(Vec<Vec<(String, String)>>),
    /// None: no grant reads Patients.
    Nothing,
}

impl PatientReach {
    pub fn of(rights: &Rights) -> PatientReach {
        let reads: Vec<_> = rights
            .grants
            .iter()
            .filter(|g| g.permits("Patient", 'r'))
            .collect();
        if reads.is_empty() {
            PatientReach::Nothing
        } else if let Some(own) = &rights.fhir_user_compartment {
            PatientReach::Matching(vec![vec![("_id".into(), own.clone())]])
        } else if reads.iter().any(|g| g.query.is_none()) {
            PatientReach::Every
        } else {
            PatientReach::Matching(reads.iter().map(|g| g.params()).collect())
        }
    }
}

/// A person's name as the picker shows it: `text`, else given names and family.
fn display_name(patient: &Value) -> String {
    let names = patient["name"].as_array().cloned().unwrap_or_default();
    let name = names
        .iter()
        .find(|n| n["use"] == "official")
        .or_else(|| names.first());
    let Some(name) = name else {
        return "(no name)".into();
    };
    if let Some(text) = name["text"].as_str().filter(|t| !t.trim().is_empty()) {
        return text.to_string();
    }
    let mut parts: Vec<&str> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str())
        .collect();
    if let Some(family) = name["family"].as_str() {
        parts.push(family);
    }
    if parts.is_empty() {
        "(no name)".into()
    } else {
        parts.join(" ")
    }
}

fn choice(id: String, patient: &Value) -> PatientChoice {
    PatientChoice {
        name: display_name(patient),
        birth_date: patient["birthDate"].as_str().map(str::to_string),
        id,
    }
}

/// The picker's order, as [`crate::store::Store::picker_patients`] sorts: the first family
/// name (normalized as string search does), patients without one last, then the id.
fn order_key(patient: &Value) -> (bool, String) {
    let family = patient["name"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["family"].as_str())
        .map(normalize_string)
        .min();
    (family.is_none(), family.unwrap_or_default())
}

impl AuthServer {
    /// The Patients of `reach` whose name starts with `search` (all when empty): at most
    /// [`PICKER_LIMIT`], by name, and how many there are. With several criteria, a Patient
    /// two of them find beyond the first page of each is counted twice in `total`.
    pub(super) async fn picker_list(
        &self,
        reach: &PatientReach,
        search: String,
    ) -> Result<PatientList, OAuthError> {
        let prefix = normalize_string(&search);
        let queries = match reach {
            PatientReach::Nothing => {
                return Ok(PatientList {
                    search,
                    limited: true,
                    ..PatientList::default()
                });
            }
            PatientReach::Every => {
                let (rows, total) = self
                    .store()
                    .picker_patients(
                        (!prefix.is_empty()).then_some(prefix.as_str()),
                        PICKER_LIMIT,
                    )
                    .await?;
                let patients = rows
                    .into_iter()
                    .map(|(id, content)| {
                        choice(id, &serde_json::from_str(&content).unwrap_or_default())
                    })
                    .collect();
                return Ok(PatientList {
                    search,
                    patients,
                    total,
                    limited: false,
                });
            }
            PatientReach::Matching(queries) => queries,
        };
        let mut found: Vec<(String, Value)> = Vec::new();
        let mut total = 0;
        for query in queries {
            let mut params = query.clone();
            if !prefix.is_empty() {
                params.push(("name".into(), search.trim().to_string()));
            }
            params.push(("_sort".into(), "family".into()));
            params.push(("_count".into(), PICKER_LIMIT.to_string()));
            let (matches, count) = self.patients_matching(&params).await?;
            let mut repeats = 0;
            for (id, patient) in matches {
                if found.iter().any(|(seen, _)| *seen == id) {
                    repeats += 1;
                } else {
                    found.push((id, patient));
                }
            }
            total += count - repeats;
        }
        found.sort_by_cached_key(|(id, patient)| (order_key(patient), id.clone()));
        found.truncate(PICKER_LIMIT as usize);
        Ok(PatientList {
            search,
            patients: found.into_iter().map(|(id, p)| choice(id, &p)).collect(),
            total,
            limited: true,
        })
    }

    /// Why the account may not choose Patient `id`, if it may not.
    pub(super) async fn pick_problem(
        &self,
        reach: &PatientReach,
        id: &str,
    ) -> Result<Option<String>, OAuthError> {
        let not_yours = || {
            format!(
                "Patient “{id}” is not one of the patients your account may access; choose one from the list."
            )
        };
        match reach {
            PatientReach::Nothing => Ok(Some(
                "Your account may not access any patient's records here, so it cannot choose a patient for this app; untick that permission.".into(),
            )),
            PatientReach::Every if !self.holds_patients() => Ok(None),
            PatientReach::Every => Ok((!self.store().patient_exists(id).await?).then(|| {
                format!("There is no patient with id “{id}” on this server; choose one from the list.")
            })),
            PatientReach::Matching(_) if !self.holds_patients() => Ok(Some(format!(
                "This server does not hold the patient records, so it cannot check that your account may access Patient “{id}”; only an account that may access every patient can enter an id here."
            ))),
            PatientReach::Matching(queries) => {
                for query in queries {
                    let mut params = query.clone();
                    params.push(("_id".into(), id.to_string()));
                    params.push(("_count".into(), "1".into()));
                    if self.patients_matching(&params).await?.1 > 0 {
                        return Ok(None);
                    }
                }
                Ok(Some(not_yours()))
            }
        }
    }

    /// A Patient search of this server's FHIR data: the matches (id, resource) of its first
    /// page and how many match in all.
    async fn patients_matching(
        &self,
        params: &[(String, String)],
    ) -> Result<(Vec<(String, Value)>, i64), OAuthError> {
        let Some(base) = &self.fhir_base else {
            return Ok((Vec::new(), 0));
        };
        let patient = ResourceType::parse("Patient").expect("Patient is an R4 type");
        // The criterion is the operator's policy, so what it reaches is not the caller's
        // to restrict: it runs unrestricted, as the resource server applies it.
        let bundle = searchset::search(
            self.store(),
            base,
            SearchScope::Type(patient),
            params,
            Handling::Strict,
            &Access::Unrestricted,
            &|_, _| Ok(Access::Unrestricted),
            &self.search_limits,
        )
        .await
        .map_err(OAuthError::server)?;
        let total = bundle["total"].as_i64().unwrap_or_default();
        let matches = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "match")
            .filter_map(|e| {
                let id = e["resource"]["id"].as_str()?.to_string();
                Some((id, e["resource"].clone()))
            })
            .collect();
        Ok((matches, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rights::Policy;

    fn reach(roles: &[&str], fhir_user: Option<&str>, grants: &str) -> PatientReach {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let policies = if grants.is_empty() {
            Vec::new()
        } else {
            let text = format!("name = \"p\"\ngrants = [{grants}]");
            vec![Policy::parse("p.toml", &text).unwrap()]
        };
        PatientReach::of(&Rights::compute(&roles, fhir_user, &policies))
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_reach_follows_the_patient_read_grants() {
        assert_eq!(
            reach(&["patient"], Some("Patient/amy"), ""),
            PatientReach::Matching(vec![params(&[("_id", "amy")])])
        );
        assert_eq!(reach(&["practitioner"], None, ""), PatientReach::Every);
        assert_eq!(
            reach(
                &["staff"],
                None,
                "\"Patient.rs?organization=Organization/a\", \"Patient.r?organization=Organization/b\""
            ),
            PatientReach::Matching(vec![
                params(&[("organization", "Organization/a")]),
                params(&[("organization", "Organization/b")]),
            ])
        );
        // A criterion beside an unrestricted grant restricts nothing.
        assert_eq!(
            reach(
                &["practitioner"],
                None,
                "\"Patient.rs?organization=Organization/a\""
            ),
            PatientReach::Every
        );
        // Search without read, other types, no role: no patient.
        assert_eq!(
            reach(&["staff"], None, "\"Patient.s\", \"Observation.rs\""),
            PatientReach::Nothing
        );
        assert_eq!(reach(&[], None, ""), PatientReach::Nothing);
        assert_eq!(reach(&["admin"], None, ""), PatientReach::Nothing);
    }
}
