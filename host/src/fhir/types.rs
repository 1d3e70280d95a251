//! The FHIR R4 types by name: the resource types ([`ResourceType`]) and the data types as
//! they appear in choice elements. Nothing else of `fhir/` is needed here, so the
//! definitions, FHIRPath and search values all build on this module and not on each other.
//!
//! The names come from `host/fhir-defs/r4-search.json` (see [`super::definitions`]),
//! compiled in and indexed once, on first use.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::LazyLock;

use serde::Deserialize;

/// The R4 table the names are read from; [`super::definitions`] reads its parameters.
pub(super) const TABLE: &str = include_str!("../../fhir-defs/r4-search.json");

/// A FHIR R4 resource type, known to exist (`ResourceType::parse` is the only way in).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(u16);

impl ResourceType {
    /// The type with this exact (case-sensitive) name.
    pub fn parse(name: &str) -> Option<ResourceType> {
        NAMES.type_index.get(name).copied()
    }

    /// Every concrete R4 resource type, in alphabetical order.
    pub fn all() -> impl Iterator<Item = ResourceType> {
        (0..NAMES.types.len() as u16).map(ResourceType)
    }

    pub fn as_str(self) -> &'static str {
        &NAMES.types[self.index()]
    }

    /// Everything but Bundle, Binary and Parameters (they lack text, contained,
    /// extensions).
    pub fn is_domain_resource(self) -> bool {
        !NAMES.not_domain.contains(&self)
    }

    /// The position of this type in [`ResourceType::all`]: what tables per type index by.
    pub(super) fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` is a FHIR data type, as it appears capitalized in a choice element
/// (`valueQuantity`, `effectiveDateTime`, `valueReference`).
pub fn is_data_type_name(name: &str) -> bool {
    NAMES.choice_suffixes.contains(name)
}

struct Names {
    types: Vec<String>,
    type_index: HashMap<String, ResourceType>,
    not_domain: HashSet<ResourceType>,
    choice_suffixes: HashSet<String>,
}

static NAMES: LazyLock<Names> = LazyLock::new(load);

/// The parts of the table that name types (serde skips the rest).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNames {
    resource_types: Vec<String>,
    not_domain_resources: Vec<String>,
    data_types: Vec<String>,
}

fn load() -> Names {
    let raw: RawNames = serde_json::from_str(TABLE).expect("embedded table parses");
    let type_index: HashMap<String, ResourceType> = raw
        .resource_types
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), ResourceType(i as u16)))
        .collect();
    let not_domain = raw
        .not_domain_resources
        .iter()
        .filter_map(|name| type_index.get(name).copied())
        .collect();
    let choice_suffixes = raw
        .data_types
        .iter()
        .map(|t| {
            let mut chars = t.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
                .collect()
        })
        .collect();
    Names {
        types: raw.resource_types,
        type_index,
        not_domain,
        choice_suffixes,
    }
}
