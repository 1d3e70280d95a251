//! The authorization decision as the FHIR layer sees it: everything, or only what a
//! list of constraints lets through. The authorization layer builds an [`Access`] from
//! the scope-policy plugins' decisions; the repository applies it **inside the store
//! query** of every search, include, chain, `_has`, count and read, so nothing outside
//! it is returned, counted or paged through.
//!
//! Every constraint must hold (they are ANDed). A constraint about another resource
//! type does not restrict this type.

use super::definitions::ResourceType;
use super::search::{ConstraintError, Criterion, SearchQuery};

/// What a request may see. There is no default: every `Access` is a decision someone
/// made, and `Unrestricted` is written out where it is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No restriction (a system-level grant, or the server's own tasks such as the demo data).
    Unrestricted,
    /// Only resources that satisfy every constraint that applies to their type.
    Within(Vec<AccessConstraint>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessConstraint {
    /// Only resources in the compartment of `Patient/{0}` (the patient itself, and
    /// resources whose compartment parameters refer to it). Types that have no place in
    /// the Patient compartment (Practitioner, Organization, ...) are not visible at all.
    PatientCompartment(String),
    /// Resources of `resource_type` must also match this search (a SMART v2 scope such
    /// as `patient/Observation.rs?category=laboratory`). Other types are unaffected.
    Search {
        resource_type: ResourceType,
        params: Vec<(String, String)>,
    },
}

/// Which resources of one type an [`Access`] lets through.
#[derive(Debug, Clone, PartialEq)]
pub enum Visible {
    /// Every resource of the type.
    All,
    /// None: the type is outside the constraints altogether, with the reason.
    Nothing(String),
    /// Those matching every criterion.
    Matching(Vec<Criterion>),
}

/// A constraint that cannot be applied (a malformed scope query or patient id). The
/// request is refused rather than answered without the constraint: fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the authorization constraint cannot be applied: {0}")]
pub struct AccessError(pub String);

impl Access {
    pub fn is_unrestricted(&self) -> bool {
        matches!(self, Access::Unrestricted)
    }

    /// Both restrictions at once: constraints accumulate, as plugin decisions do.
    pub fn and(self, other: Access) -> Access {
        match (self, other) {
            (Access::Unrestricted, other) | (other, Access::Unrestricted) => other,
            (Access::Within(mut a), Access::Within(b)) => {
                a.extend(b);
                Access::Within(a)
            }
        }
    }

    /// The criteria a resource of `resource_type` must satisfy to be visible.
    pub fn visible(&self, resource_type: ResourceType) -> Result<Visible, AccessError> {
        let Access::Within(constraints) = self else {
            return Ok(Visible::All);
        };
        let mut query = SearchQuery::all(resource_type);
        for constraint in constraints {
            match constraint {
                AccessConstraint::PatientCompartment(patient) => {
                    match query.restrict_to_patient_compartment(patient) {
                        Ok(()) => {}
                        Err(ConstraintError::NotInPatientCompartment(_)) => {
                            return Ok(Visible::Nothing(format!(
                                "{resource_type} resources are outside the patient compartment of Patient/{patient}"
                            )));
                        }
                        Err(e) => return Err(AccessError(e.to_string())),
                    }
                }
                AccessConstraint::Search {
                    resource_type: constrained,
                    params,
                } if *constrained == resource_type => {
                    let extra = SearchQuery::parse(resource_type, params.iter().cloned())
                        .map_err(|e| AccessError(format!("{resource_type} scope query: {e}")))?;
                    if !extra.result.include.is_empty() || !extra.result.revinclude.is_empty() {
                        return Err(AccessError(format!(
                            "{resource_type} scope query: only search criteria may constrain access"
                        )));
                    }
                    query = query.and(extra).map_err(|e| AccessError(e.to_string()))?;
                }
                AccessConstraint::Search { .. } => {}
            }
        }
        Ok(if query.criteria.is_empty() {
            Visible::All
        } else {
            Visible::Matching(query.criteria)
        })
    }

    /// Why `Type/id` is refused, for the 403 of a read: names the first constraint
    /// that excludes it.
    pub fn refusal(&self, resource_type: ResourceType, id: &str) -> String {
        let Access::Within(constraints) = self else {
            return format!("{resource_type}/{id} is not accessible");
        };
        let patient = constraints.iter().find_map(|c| match c {
            AccessConstraint::PatientCompartment(p) => Some(p),
            _ => None,
        });
        let scoped = constraints.iter().find_map(|c| match c {
            AccessConstraint::Search {
                resource_type: t,
                params,
            } if *t == resource_type => Some(params),
            _ => None,
        });
        match (patient, scoped) {
            (Some(p), None) => {
                format!("{resource_type}/{id} is outside the patient compartment of Patient/{p}")
            }
            (None, Some(params)) => format!(
                "{resource_type}/{id} does not match the granted search {resource_type}?{}",
                render_params(params)
            ),
            (Some(p), Some(params)) => format!(
                "{resource_type}/{id} is outside the patient compartment of Patient/{p} or does not match the granted search {resource_type}?{}",
                render_params(params)
            ),
            (None, None) => format!("{resource_type}/{id} is not accessible"),
        }
    }
}

fn render_params(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(name: &str) -> ResourceType {
        ResourceType::parse(name).unwrap()
    }

    #[test]
    fn unrestricted_sees_everything() {
        assert_eq!(
            Access::Unrestricted.visible(rt("Patient")),
            Ok(Visible::All)
        );
    }

    #[test]
    fn compartment_hides_types_outside_it_but_not_the_patient() {
        let access = Access::Within(vec![AccessConstraint::PatientCompartment("p1".into())]);
        assert!(matches!(
            access.visible(rt("Practitioner")),
            Ok(Visible::Nothing(_))
        ));
        assert!(matches!(
            access.visible(rt("Patient")),
            Ok(Visible::Matching(c)) if c.len() == 1
        ));
        assert!(matches!(
            access.visible(rt("Observation")),
            Ok(Visible::Matching(_))
        ));
    }

    #[test]
    fn search_constraints_apply_to_their_type_only() {
        let access = Access::Within(vec![AccessConstraint::Search {
            resource_type: rt("Observation"),
            params: vec![("category".into(), "laboratory".into())],
        }]);
        assert!(matches!(
            access.visible(rt("Observation")),
            Ok(Visible::Matching(c)) if c.len() == 1
        ));
        assert_eq!(access.visible(rt("Condition")), Ok(Visible::All));
    }

    #[test]
    fn malformed_constraints_fail_closed() {
        let access = Access::Within(vec![AccessConstraint::Search {
            resource_type: rt("Observation"),
            params: vec![("no-such-param".into(), "x".into())],
        }]);
        assert!(access.visible(rt("Observation")).is_err());
        let access = Access::Within(vec![AccessConstraint::PatientCompartment("bad id!".into())]);
        assert!(access.visible(rt("Observation")).is_err());
    }
}
