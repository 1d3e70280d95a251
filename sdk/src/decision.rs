/// What a scope policy answers for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed, but only within every one of these constraints.
    AllowWithin(Vec<Constraint>),
    /// Refused; the reason reaches the client in `WWW-Authenticate` and an
    /// OperationOutcome, so say what is missing.
    Deny(String),
}

impl Decision {
    pub fn allow() -> Decision {
        Decision::Allow
    }

    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision::Deny(reason.into())
    }

    /// Allowed within these constraints; with none it is a plain allow.
    pub fn allow_within(constraints: impl IntoIterator<Item = Constraint>) -> Decision {
        let constraints: Vec<Constraint> = constraints.into_iter().collect();
        if constraints.is_empty() {
            Decision::Allow
        } else {
            Decision::AllowWithin(constraints)
        }
    }

    /// Allow and AllowWithin.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Decision::Deny(_))
    }

    pub fn deny_reason(&self) -> Option<&str> {
        match self {
            Decision::Deny(reason) => Some(reason),
            _ => None,
        }
    }

    pub fn constraints(&self) -> &[Constraint] {
        match self {
            Decision::AllowWithin(constraints) => constraints,
            _ => &[],
        }
    }
}

/// Narrows what an allowed request may see or change; the host applies it inside the
/// store query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// Only resources in the compartment of this patient id.
    PatientCompartment(String),
    /// Only resources of this type that also match these search parameters.
    Search {
        resource_type: String,
        parameters: Vec<(String, String)>,
    },
}

impl Constraint {
    pub fn patient_compartment(patient_id: impl Into<String>) -> Constraint {
        Constraint::PatientCompartment(patient_id.into())
    }

    pub fn search<N, V>(
        resource_type: impl Into<String>,
        parameters: impl IntoIterator<Item = (N, V)>,
    ) -> Constraint
    where
        N: Into<String>,
        V: Into<String>,
    {
        Constraint::Search {
            resource_type: resource_type.into(),
            parameters: parameters
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}
