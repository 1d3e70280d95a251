//! The rights of the account behind a token (contract 0.3.0's `user-rights`), and the
//! intersection of a requested scope with them.

use crate::smart::{Context, ResourceAccess, ResourceScope, ScopeError};

/// What the account behind a token may access: its roles and the grants of its access
/// policies, resolved for this account. See [`crate::Claims::user`] and
/// [`crate::TokenRequest::user`].
///
/// ```
/// use hestia_sdk::{UserGrant, UserRights};
///
/// // A patient's account: its own records, read and search.
/// let amy = UserRights::new(["patient"], [UserGrant::new("*.rs", Some("amy"))]);
/// let asked = "user/*.read".parse().unwrap();
/// let narrowed = amy.narrow(&asked, None);
/// assert_eq!(narrowed[0].scope.to_string(), "patient/*.read");
/// assert_eq!(narrowed[0].patient.as_deref(), Some("amy"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRights {
    roles: Vec<String>,
    grants: Vec<UserGrant>,
}

impl UserRights {
    pub fn new<R: Into<String>>(
        roles: impl IntoIterator<Item = R>,
        grants: impl IntoIterator<Item = UserGrant>,
    ) -> UserRights {
        UserRights {
            roles: roles.into_iter().map(Into::into).collect(),
            grants: grants.into_iter().collect(),
        }
    }

    /// Roles of the account: `patient`, `practitioner`, `admin`, or the operator's own.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Each grant of the account's access policies.
    pub fn grants(&self) -> &[UserGrant] {
        &self.grants
    }

    /// `requested` (a `user/` or `patient/` scope) narrowed to each grant that overlaps it
    /// ([`UserGrant::narrow`]), without those another result already covers. Empty when
    /// the account may access nothing of it, and always for a `system/` scope: user rights
    /// never reach system level.
    pub fn narrow(&self, requested: &ResourceScope, launch_patient: Option<&str>) -> Vec<Narrowed> {
        let all: Vec<Narrowed> = self
            .grants
            .iter()
            .filter_map(|g| g.narrow(requested, launch_patient))
            .collect();
        let covered = |i: usize, n: &Narrowed| {
            all.iter().enumerate().any(|(j, other)| {
                j != i
                    && other.patient == n.patient
                    && other.scope.covers(&n.scope)
                    && (other.scope != n.scope || j < i)
            })
        };
        all.iter()
            .enumerate()
            .filter(|(i, n)| !covered(*i, n))
            .map(|(_, n)| n.clone())
            .collect()
    }
}

/// One grant of an account's access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGrant {
    text: String,
    scope: Result<ResourceAccess, ScopeError>,
    patient_compartment: Option<String>,
}

impl UserGrant {
    /// `scope` in SMART v2 syntax without the context (`Patient.rs?organization=…`,
    /// `*.cruds`); `patient_compartment` confines it to that patient's records.
    pub fn new(scope: &str, patient_compartment: Option<&str>) -> UserGrant {
        UserGrant {
            text: scope.to_string(),
            scope: scope.parse(),
            patient_compartment: patient_compartment.map(String::from),
        }
    }

    /// The granted scope, parsed as a resource scope without context. A grant that does not
    /// parse grants nothing.
    pub fn scope(&self) -> Result<&ResourceAccess, &ScopeError> {
        self.scope.as_ref()
    }

    /// The scope as the host passed it.
    pub fn scope_str(&self) -> &str {
        &self.text
    }

    /// When set, the grant holds only within this patient's compartment (the account's own
    /// records): the patient id.
    pub fn patient_compartment(&self) -> Option<&str> {
        self.patient_compartment.as_deref()
    }

    /// What of `requested` this grant allows ([`ResourceAccess::intersect`]), in the
    /// context it is allowed in: a grant confined to a compartment gives a `patient/` scope
    /// for that patient, whether `user/` or `patient/` was requested, and nothing when
    /// another patient was launched; an unconfined grant keeps the requested context (and
    /// the launch patient for `patient/`). `None` for `system/` scopes.
    pub fn narrow(
        &self,
        requested: &ResourceScope,
        launch_patient: Option<&str>,
    ) -> Option<Narrowed> {
        if requested.context() == Context::System {
            return None;
        }
        let access = requested.access().intersect(self.scope.as_ref().ok()?)?;
        let (context, patient) = match &self.patient_compartment {
            Some(own) if launch_patient.is_some_and(|p| p != own) => return None,
            Some(own) => (Context::Patient, Some(own.clone())),
            None if requested.context() == Context::Patient => {
                (Context::Patient, launch_patient.map(String::from))
            }
            None => (requested.context(), None),
        };
        Some(Narrowed {
            scope: ResourceScope::new(context, access),
            patient,
        })
    }
}

/// A requested scope narrowed to one grant of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    /// `user/…` or `patient/…`.
    pub scope: ResourceScope,
    /// Whose compartment a `patient/` scope reaches: the grant's compartment, else the
    /// launch patient (none when there is none). `None` for `user/` scopes.
    pub patient: Option<String>,
}
