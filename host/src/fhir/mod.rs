//! FHIR R4 without HTTP or SQL: the R4 definitions ([`definitions`]), a FHIRPath
//! subset ([`fhirpath`]) and the database-independent core of search ([`search`]).
//! Plain types in, plain types out; the HTTP layer and the store build on these.

pub mod access;
pub mod bulk;
mod bulk_associated;
pub mod bulk_import;
pub mod bulk_worker;
pub mod bundle;
pub mod capabilities;
pub mod clock;
pub mod definitions;
pub mod error;
pub mod fhirpath;
pub mod import;
pub mod limits;
pub mod operations;
pub mod outcome;
pub mod reindex;
pub mod repository;
pub mod search;
pub mod searchset;
pub mod types;

pub use definitions::{SearchParamDef, SearchParamType};
pub use types::ResourceType;
