//! FHIR search without a database: parameters parsed into a [`SearchQuery`]
//! ([`params`]), index rows extracted from resources ([`extract`]), and the scalar
//! types both share ([`value`]). The storage layer turns the first into SQL and
//! stores the second; nothing here knows SQL.

pub mod extract;
pub mod params;
pub mod value;

pub use extract::{
    DateIndex, ExtractError, IndexRows, NumberIndex, QuantityIndex, ReferenceIndex, StringIndex,
    TokenIndex, UriIndex, extract,
};
pub use params::{
    ChainTarget, ConstraintError, Criterion, DateValue, Include, NumberValue, Problem,
    QuantityValue, ResultParams, SearchError, SearchLimits, SearchQuery, SearchValue, SortKey,
    StringMatch, Summary, TokenSystem, TokenValue, Total, UriMatch,
};
pub use value::{
    Bound, CompareOp, DATE_MAX, DATE_MIN, DateRange, Prefix, RangePredicate, ReferenceValue,
};
