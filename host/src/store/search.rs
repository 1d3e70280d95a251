//! FHIR search in SQL: a parsed [`SearchQuery`]'s criteria, sort keys and the caller's
//! [`Access`] become one query text with `$n` placeholders, the same for SQLite and
//! PostgreSQL (both read `$n`, `||`, `LIKE ... ESCAPE`, correlated `EXISTS`).
//!
//! Shape of a search (alias `r` is the resource, `i` an index row; `rk` is a resource's
//! integer key, in creation order, which index rows name it by):
//!
//! ```sql
//! SELECT p.*, c.content FROM (
//!   SELECT q.* FROM (
//!     SELECT r.rk, r.resource_type, r.id, r.version_id, r.last_updated,
//!            (SELECT MIN(i.normalized) FROM fhir_idx_string i WHERE i.rk = r.rk ...) AS s0
//!     FROM fhir_resources r                                               -- s0: a _sort key
//!     WHERE r.deleted = 0 AND r.last_updated <= $snapshot
//!       AND ((r.resource_type = $t AND <criteria> AND <access>) OR ...)  -- one branch per type
//!   ) q ORDER BY q.s0 ASC NULLS LAST, q.rk LIMIT n
//! ) p JOIN fhir_resources c ON c.rk = p.rk                 -- content of the page's rows only
//! ```
//!
//! Each criterion is an `rk IN (...)` over the index table of its parameter's type (`NOT`
//! for `:not` and `:missing=true`); the comma-separated values of one parameter
//! are ORed inside it, repeated parameters are ANDed. Chains and `_has` join
//! `fhir_idx_reference` to `fhir_resources` and recurse with fresh aliases. The access
//! decision is compiled the same way and ANDed into the query for the searched types,
//! for chain targets, for `_has` sources and for included resources, so that a resource
//! outside it is never returned, counted, included, used to match, or paged through.
//!
//! Paging is by keyset under a snapshot: the first page fixes `snapshot` (the time of
//! the request) and every link carries it with the [`Position`] (sort-key values, key)
//! of the row the page continues after (`next`) or before (`previous`); the order always
//! ends in the key, which makes it total (without `_sort`, matches come in the order they
//! were created). A later page
//! ([`SearchSpec::as_of_snapshot`]) takes the resources as they were at the snapshot:
//! those created since are left out, and those updated or deleted since are still in,
//! each answered with its version of the snapshot from history (deleted resources keep
//! their last index rows for this). So writes between pages neither shift the pages nor
//! lose or repeat a resource. Criteria and sort keys are evaluated on the index rows of
//! each resource's latest version (past versions have none): a resource changed since the
//! snapshot in a way that changes whether it matches or where it sorts is judged as it
//! is now.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::fhir::{HistoryFilter, StoredVersion};
use super::{Backend, Conn, Store, StoreError};
use crate::fhir::access::{Access, AccessError, Visible};
use crate::fhir::definitions::{ResourceType, SearchParamDef, SearchParamType};
use crate::fhir::search::extract::composite_row_prefix;
use crate::fhir::search::{
    Bound, ChainTarget, CompareOp, Criterion, QuantityValue, RangePredicate, ReferenceValue,
    SearchValue, SortKey, StringMatch, TokenSystem, TokenValue, UriMatch,
};

/// A current resource as a search finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub content: String,
}

/// One resource type's part of a search: `criteria` all hold. `None` is every type
/// (a system search without `_type`), allowed only with [`Access::Unrestricted`].
#[derive(Debug, Clone)]
pub struct Branch {
    pub resource_type: Option<ResourceType>,
    pub criteria: Vec<Criterion>,
}

/// Per resource type, what the caller may see of it where a search reaches into it: the
/// targets of chained parameters and the sources of `_has`; `None`: nothing (a chain
/// without a type modifier may name target types the caller has no access to). A search
/// whose criteria reach into a type missing here is refused (fail closed).
pub type Reach = HashMap<ResourceType, Option<Access>>;

/// What a search asks of the database.
#[derive(Debug, Clone, Copy)]
pub struct SearchSpec<'a> {
    /// ORed: a resource matches when it matches one branch.
    pub branches: &'a [Branch],
    pub sort: &'a [SortKey],
    /// Only resources whose current version is at or before this time (ms).
    pub snapshot: i64,
    /// A later page of a search: resources as they were at `snapshot`, including those
    /// updated or deleted since (see the module documentation).
    pub as_of_snapshot: bool,
    /// What the searched types' matches must be within.
    pub access: &'a Access,
    /// What chain targets and `_has` sources of the criteria must be within.
    pub reach: &'a Reach,
    /// The server's FHIR base URL: absolute references to it match by type and id.
    pub base_url: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    Unsupported(String),
}

impl From<sqlx::Error> for SearchStoreError {
    fn from(e: sqlx::Error) -> Self {
        SearchStoreError::Store(StoreError::Sql(e))
    }
}

type Result<T> = std::result::Result<T, SearchStoreError>;

/// Chains and `_has` inside access criteria inside chains ...: a backstop above what the
/// parser lets through (a request's chains are at most
/// `SearchLimits::CHAIN_DEPTH_CEILING` links, an access decision's criteria nest a few
/// more), which bounds the recursion of the SQL compiler whatever the criteria.
const MAX_DEPTH: usize = crate::fhir::search::SearchLimits::CHAIN_DEPTH_CEILING + 8;

#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
}

/// Rows that name the resources a criterion matches: `SELECT owner FROM from WHERE
/// conditions` (the owner's type is not among the conditions; [`Sql::semi_join`] adds it).
struct Owners {
    from: String,
    owner: Owner,
    conditions: Vec<String>,
}

/// Which columns of the rows name their resource.
enum Owner {
    /// `resource_type` and `rk` of this alias: an index row's own resource, by its key.
    Row(String),
    /// `target_type` and `target_id` of this alias: the resource a reference row names,
    /// by its id.
    Target(String),
}

impl Owner {
    /// The owner's type column, and its key (`rk`) or id column.
    fn columns(&self) -> (String, String) {
        match self {
            Owner::Row(a) => (format!("{a}.resource_type"), format!("{a}.rk")),
            Owner::Target(a) => (format!("{a}.target_type"), format!("{a}.target_id")),
        }
    }
}

/// Whose criteria are being compiled, which decides what a chain or `_has` inside them
/// reaches into.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// The request's own: another type is seen only as far as [`Reach`] says, so that a
    /// criterion cannot test resources the caller may not see.
    Query,
    /// An access decision's (a scope query such as `category=laboratory`): part of
    /// what the grant defines, evaluated under the access it came from.
    Grant(&'a Access),
}

/// A query under construction: its bind values and an alias counter.
struct Sql<'a> {
    binds: Vec<Bind>,
    aliases: usize,
    access: &'a Access,
    reach: &'a Reach,
    base_url: &'a str,
    /// Whether the text is for SQLite (see [`Sql::on_sqlite`]).
    sqlite: bool,
    /// Whether the text holds a list of values whose length varies from call to call
    /// (ids of includes, say): such a text is not kept prepared ([`super::rows_query`]).
    sized_list: bool,
    /// Whether criteria on a resource of a known type are correlated `EXISTS` probes of
    /// its own index rows instead of `IN` lists of every match: for the few resources
    /// that the count's corrections look at ([`Sql::count`]).
    correlated: bool,
    /// Aliases of index rows that criteria are compiled on in place of their resource's
    /// row ([`Sql::count_owners`]): they have its type and key, not its id.
    row_aliases: Vec<String>,
}

/// For queries whose criteria have no chain or `_has` of the caller's.
static NO_REACH: std::sync::LazyLock<Reach> = std::sync::LazyLock::new(Reach::new);

impl<'a> Sql<'a> {
    fn new(access: &'a Access, reach: &'a Reach, base_url: &'a str) -> Self {
        Sql {
            binds: Vec::new(),
            aliases: 0,
            access,
            reach,
            base_url,
            sqlite: false,
            sized_list: false,
            correlated: false,
            row_aliases: Vec::new(),
        }
    }

    /// The id of the resource that alias `r` stands for: its column, or for an index
    /// row (see [`Sql::row_aliases`]) looked up by its key.
    fn id_of(&self, r: &str) -> String {
        if self.row_aliases.iter().any(|a| a == r) {
            format!("(SELECT x.id FROM fhir_resources x WHERE x.rk = {r}.rk)")
        } else {
            format!("{r}.id")
        }
    }

    /// Writes the search's snapshot bound for SQLite's planner: `+r.last_updated`, which
    /// SQLite does not look up by index. Otherwise SQLite may walk every resource of the
    /// type by the (resource_type, last_updated) index, since nearly every row meets the
    /// bound, and test each against the criteria instead of starting from their index
    /// rows: the 5 Observations of one patient took 20 ms among 25,000, and the time grew
    /// with them. PostgreSQL plans by statistics and keeps `r.last_updated` (`+` there
    /// hides the column's statistics and made a `_has` search 40 times slower).
    fn on_sqlite(mut self, sqlite: bool) -> Self {
        self.sqlite = sqlite;
        self
    }

    /// The access a chain target or `_has` source of type `rt` is seen under (`None`:
    /// none of it is).
    fn reach_of(&self, mode: Mode<'a>, rt: ResourceType) -> Result<Option<&'a Access>> {
        match mode {
            Mode::Grant(access) => Ok(Some(access)),
            Mode::Query => {
                let reach: &'a Reach = self.reach;
                reach.get(&rt).map(Option::as_ref).ok_or_else(|| {
                    SearchStoreError::Access(AccessError(format!(
                        "no access was decided for {rt}, which the search reaches into"
                    )))
                })
            }
        }
    }

    fn text(&mut self, value: impl Into<String>) -> String {
        self.binds.push(Bind::Text(value.into()));
        format!("${}", self.binds.len())
    }

    fn int(&mut self, value: i64) -> String {
        self.binds.push(Bind::Int(value));
        format!("${}", self.binds.len())
    }

    fn float(&mut self, value: f64) -> String {
        self.binds.push(Bind::Float(value));
        format!("${}", self.binds.len())
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn texts<'s>(&mut self, values: impl IntoIterator<Item = &'s str>) -> String {
        let marks: Vec<String> = values.into_iter().map(|v| self.text(v)).collect();
        self.sized_list |= marks.len() > 1;
        marks.join(", ")
    }

    /// The condition that a resource `r` of type `rt` is visible under `access`.
    fn visible(
        &mut self,
        access: &'a Access,
        rt: ResourceType,
        r: &str,
        depth: usize,
    ) -> Result<Option<String>> {
        match access.visible(rt)? {
            Visible::All => Ok(None),
            Visible::Nothing(_) => Ok(Some("1 = 0".into())),
            Visible::Matching(criteria) => {
                let parts = criteria
                    .iter()
                    .map(|c| self.criterion(Some(rt), c, r, depth + 1, Mode::Grant(access)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(and(parts)))
            }
        }
    }

    /// `r.resource_type = T AND criteria AND visible(T)` for one type, seen under `access`.
    fn typed(
        &mut self,
        access: &'a Access,
        rt: ResourceType,
        criteria: &[Criterion],
        r: &str,
        depth: usize,
        mode: Mode<'a>,
    ) -> Result<String> {
        let mut parts = vec![format!("{r}.resource_type = {}", self.text(rt.as_str()))];
        for c in criteria {
            parts.push(self.criterion(Some(rt), c, r, depth, mode)?);
        }
        parts.extend(self.visible(access, rt, r, depth)?);
        Ok(and(parts))
    }

    fn criterion(
        &mut self,
        rt: Option<ResourceType>,
        criterion: &Criterion,
        r: &str,
        depth: usize,
        mode: Mode<'a>,
    ) -> Result<String> {
        if depth > MAX_DEPTH {
            return Err(SearchStoreError::Unsupported(format!(
                "chains and _has nested more than {MAX_DEPTH} levels deep"
            )));
        }
        match criterion {
            Criterion::Match {
                param,
                values,
                negated,
            } => {
                let matched = self.match_values(rt, param, values, r)?;
                Ok(if *negated {
                    format!("NOT ({matched})")
                } else {
                    matched
                })
            }
            Criterion::Missing { param, missing } => {
                let present = self.present(rt, param, r)?;
                Ok(if *missing {
                    format!("NOT ({present})")
                } else {
                    present
                })
            }
            Criterion::Chain { param, targets } => self.chain(rt, param, targets, r, depth, mode),
            Criterion::Has {
                source_type,
                reference,
                criterion,
            } => self.has(rt, *source_type, reference, criterion, r, depth, mode),
            Criterion::AnyOf(criteria) => {
                let parts = criteria
                    .iter()
                    .map(|c| self.criterion(rt, c, r, depth, mode))
                    .collect::<Result<Vec<_>>>()?;
                Ok(or(parts))
            }
        }
    }

    /// `param.chained=...`: a reference of `param` to a resource of a target's type (one
    /// the search may reach) that matches the target's criterion.
    fn chain(
        &mut self,
        rt: Option<ResourceType>,
        param: &SearchParamDef,
        targets: &[ChainTarget],
        r: &str,
        depth: usize,
        mode: Mode<'a>,
    ) -> Result<String> {
        let owners = self.chain_owners(param, targets, depth, mode)?;
        Ok(self.semi_join(rt, r, owners))
    }

    /// The reference rows of [`Sql::chain`]'s matches.
    fn chain_owners(
        &mut self,
        param: &SearchParamDef,
        targets: &[ChainTarget],
        depth: usize,
        mode: Mode<'a>,
    ) -> Result<Owners> {
        let c = self.alias("c");
        let t = self.alias("t");
        let code = self.text(param.rows_code());
        let mut alternatives = Vec::new();
        for target in targets {
            let Some(seen_under) = self.reach_of(mode, target.resource_type)? else {
                continue;
            };
            alternatives.push(self.typed(
                seen_under,
                target.resource_type,
                std::slice::from_ref(&target.criterion),
                &t,
                depth + 1,
                mode,
            )?);
        }
        Ok(Owners {
            from: format!(
                "fhir_idx_reference {c} JOIN fhir_resources {t} \
                 ON {t}.resource_type = {c}.target_type AND {t}.id = {c}.target_id"
            ),
            owner: Owner::Row(c.clone()),
            conditions: vec![
                format!("{c}.param = {code}"),
                format!("{t}.deleted = 0"),
                or(alternatives),
            ],
        })
    }

    /// `_has:Type:reference:...`: a resource of `source_type` (if the search may reach it)
    /// that refers to `r` through `reference` and matches `criterion`.
    #[allow(clippy::too_many_arguments)]
    fn has(
        &mut self,
        rt: Option<ResourceType>,
        source_type: ResourceType,
        reference: &SearchParamDef,
        criterion: &Criterion,
        r: &str,
        depth: usize,
        mode: Mode<'a>,
    ) -> Result<String> {
        Ok(
            match self.has_owners(source_type, reference, criterion, depth, mode)? {
                Some(owners) => self.semi_join(rt, r, owners),
                None => "1 = 0".into(),
            },
        )
    }

    /// The reference rows of [`Sql::has`]'s matches (`None`: the search may not reach
    /// the source type, and nothing matches). When neither the criterion nor the access
    /// to the source type reads the resource's own columns (`_lastUpdated`), they are
    /// compiled on the reference row itself, which has the source's type and key, and
    /// the source is checked against the few deleted resources of its type instead of
    /// each match's row being read ([`Sql::not_deleted`]).
    fn has_owners(
        &mut self,
        source_type: ResourceType,
        reference: &SearchParamDef,
        criterion: &Criterion,
        depth: usize,
        mode: Mode<'a>,
    ) -> Result<Option<Owners>> {
        let h = self.alias("h");
        let Some(seen_under) = self.reach_of(mode, source_type)? else {
            return Ok(None);
        };
        let code = self.text(reference.rows_code());
        let criteria = std::slice::from_ref(criterion);
        let on_rows = !reads_last_updated(criteria)
            && match seen_under.visible(source_type)? {
                Visible::Matching(access) => !reads_last_updated(&access),
                Visible::All | Visible::Nothing(_) => true,
            };
        if on_rows {
            let source = self.on_row_alias(&h, |sql| {
                sql.typed(seen_under, source_type, criteria, &h, depth + 1, mode)
            });
            let not_deleted = self.not_deleted(source_type, &h);
            return Ok(Some(Owners {
                from: format!("fhir_idx_reference {h}"),
                conditions: vec![format!("{h}.param = {code}"), not_deleted, source?],
                owner: Owner::Target(h),
            }));
        }
        let s = self.alias("s");
        let source = self.typed(seen_under, source_type, criteria, &s, depth + 1, mode)?;
        Ok(Some(Owners {
            from: format!("fhir_idx_reference {h} JOIN fhir_resources {s} ON {s}.rk = {h}.rk"),
            conditions: vec![
                format!("{h}.param = {code}"),
                format!("{s}.deleted = 0"),
                source,
            ],
            owner: Owner::Target(h),
        }))
    }

    /// The resource of type `rt` whose key is `{a}.rk` is not deleted, tested against
    /// the deleted resources of the type (few: a deletion is rare next to a write) rather
    /// than by reading its own row. SQLite lists them once from the partial index
    /// `fhir_resources_deleted`; PostgreSQL plans the `NOT EXISTS` as an anti-join (a
    /// `NOT IN` list larger than `work_mem` would be tested row by row).
    fn not_deleted(&mut self, rt: ResourceType, a: &str) -> String {
        let t = self.text(rt.as_str());
        if self.sqlite {
            format!("{a}.rk NOT IN ({})", deleted_keys_on_sqlite(&t))
        } else {
            format!(
                "NOT EXISTS (SELECT 1 FROM fhir_resources d WHERE d.resource_type = {t} \
                 AND d.deleted = 1 AND d.rk = {a}.rk)"
            )
        }
    }

    /// `r` is one of the owners that `FROM from WHERE conditions` selects. With a known
    /// type this is an uncorrelated `r.rk IN (SELECT ...)` (`r.id` for reference targets),
    /// which both planners run once from the value indexes; without one (or
    /// [`Sql::correlated`]), a correlated `EXISTS`.
    fn semi_join(&mut self, rt: Option<ResourceType>, r: &str, owners: Owners) -> String {
        let Owners {
            from,
            owner,
            mut conditions,
        } = owners;
        let (owner_type, owner_key) = owner.columns();
        let own = match owner {
            Owner::Row(_) => format!("{r}.rk"),
            Owner::Target(_) => self.id_of(r),
        };
        match rt {
            Some(rt) if !self.correlated => {
                conditions.insert(0, format!("{owner_type} = {}", self.text(rt.as_str())));
                format!(
                    "{own} IN (SELECT {owner_key} FROM {from} WHERE {})",
                    conditions.join(" AND ")
                )
            }
            _ => {
                let link = match owner {
                    Owner::Row(_) => format!("{owner_key} = {own}"),
                    Owner::Target(_) => {
                        format!("{owner_type} = {r}.resource_type AND {owner_key} = {own}")
                    }
                };
                conditions.insert(0, link);
                format!(
                    "EXISTS (SELECT 1 FROM {from} WHERE {})",
                    conditions.join(" AND ")
                )
            }
        }
    }

    /// The resource has an index row of `param` at all (`:missing=false`).
    fn present(
        &mut self,
        rt: Option<ResourceType>,
        param: &'static SearchParamDef,
        r: &str,
    ) -> Result<String> {
        if matches!(param.code.as_str(), "_id" | "_lastUpdated") {
            return Ok("1 = 1".into());
        }
        let table = table_of(param.kind).ok_or_else(|| {
            SearchStoreError::Unsupported(format!(
                "':missing' on the {} parameter '{}'",
                param.kind, param.code
            ))
        })?;
        let i = self.alias("i");
        let owners = Owners {
            from: format!("{table} {i}"),
            owner: Owner::Row(i.clone()),
            conditions: vec![self.rows_of(param, &i)],
        };
        Ok(self.semi_join(rt, r, owners))
    }

    /// At least one of `values` matches one of the resource's rows of `param`.
    fn match_values(
        &mut self,
        rt: Option<ResourceType>,
        param: &'static SearchParamDef,
        values: &[SearchValue],
        r: &str,
    ) -> Result<String> {
        if param.code == "_id" {
            let ids: Vec<&str> = values
                .iter()
                .filter_map(|v| match v {
                    SearchValue::Token(TokenValue {
                        code: Some(code), ..
                    }) => Some(code.as_str()),
                    _ => None,
                })
                .collect();
            if ids.is_empty() {
                return Ok("1 = 0".into());
            }
            let id = self.id_of(r);
            return Ok(format!("{id} IN ({})", self.texts(ids)));
        }
        if param.code == "_lastUpdated" {
            let column = format!("{r}.last_updated");
            let parts = values
                .iter()
                .map(|v| match v {
                    SearchValue::Date(d) => Ok(self.range(&d.predicate(), &column, &column)),
                    other => Err(SearchStoreError::Unsupported(format!(
                        "_lastUpdated value {other}"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(or(parts));
        }
        let mut alternatives = Vec::new();
        for value in values {
            alternatives.push(self.one_value(rt, param, value, r)?);
        }
        Ok(or(alternatives))
    }

    /// `r` has an index row of `param` that matches `value`.
    fn one_value(
        &mut self,
        rt: Option<ResourceType>,
        param: &'static SearchParamDef,
        value: &SearchValue,
        r: &str,
    ) -> Result<String> {
        Ok(match self.value_owners(param, value)? {
            Some(owners) => self.semi_join(rt, r, owners),
            None => "1 = 0".into(),
        })
    }

    /// The index rows of `param` that match `value` (of a composite parameter: its
    /// components' rows of one element); `None`: nothing matches.
    fn value_owners(
        &mut self,
        param: &'static SearchParamDef,
        value: &SearchValue,
    ) -> Result<Option<Owners>> {
        if let SearchValue::Composite(parts) = value {
            let components = param.component_params().ok_or_else(|| {
                SearchStoreError::Unsupported(format!("composite parameter '{}'", param.code))
            })?;
            // The components' rows of one element (see `extract::composite_row_param`):
            // the first component's rows by prefix, the others joined on the same
            // element number.
            let mut from = String::new();
            let mut conditions = Vec::new();
            let mut first: Option<(String, usize)> = None;
            for ((component, def), part) in param.components.iter().zip(components).zip(parts) {
                let table = table_of(def.kind).ok_or_else(|| {
                    SearchStoreError::Unsupported(format!(
                        "the {} component '{}' of '{}'",
                        def.kind, component.code, param.code
                    ))
                })?;
                let k = self.alias("k");
                let prefix = composite_row_prefix(&param.code, &component.code);
                match &first {
                    None => {
                        from = format!("{table} {k}");
                        conditions.push(format!(
                            "{k}.param LIKE {} ESCAPE '\\'",
                            self.text(format!("{}%", like_escape(&prefix)))
                        ));
                        first = Some((k.clone(), prefix.len()));
                    }
                    Some((f, len)) => {
                        let own = self.text(prefix);
                        from.push_str(&format!(
                            " JOIN {table} {k} ON {k}.rk = {f}.rk \
                             AND {k}.param = {own} || substr({f}.param, {})",
                            len + 1
                        ));
                    }
                }
                conditions.push(self.value_condition(part, &k)?);
            }
            return Ok(first.map(|(f, _)| Owners {
                from,
                owner: Owner::Row(f),
                conditions,
            }));
        }
        let table = match value {
            SearchValue::ReferenceIdentifier(_) => "fhir_idx_token",
            _ => table_of(param.kind).ok_or_else(|| {
                SearchStoreError::Unsupported(format!(
                    "the {} parameter '{}'",
                    param.kind, param.code
                ))
            })?,
        };
        let i = self.alias("i");
        let rows = self.rows_of(param, &i);
        let condition = self.value_condition(value, &i)?;
        Ok(Some(Owners {
            from: format!("{table} {i}"),
            owner: Owner::Row(i.clone()),
            conditions: vec![rows, condition],
        }))
    }

    fn value_condition(&mut self, value: &SearchValue, i: &str) -> Result<String> {
        Ok(match value {
            SearchValue::String {
                value,
                normalized,
                mode,
            } => match mode {
                StringMatch::StartsWith => {
                    let like = format!(
                        "{i}.normalized LIKE {} ESCAPE '\\'",
                        self.text(format!("{}%", like_escape(normalized)))
                    );
                    match prefix_bound(normalized).filter(|_| self.sqlite) {
                        // SQLite reads a LIKE from an index only under a NOCASE column;
                        // the same prefix as a range of the column's BINARY (code point)
                        // order is read from the value index. Not on PostgreSQL: there
                        // the range beside the LIKE made the planner join a chain on
                        // `family` by a worse plan (36 -> 104 ms at 100,000 resources).
                        Some(upper) => format!(
                            "({i}.normalized >= {} AND {i}.normalized < {} AND {like})",
                            self.text(normalized.as_str()),
                            self.text(upper)
                        ),
                        None => like,
                    }
                }
                StringMatch::Contains => format!(
                    "{i}.normalized LIKE {} ESCAPE '\\'",
                    self.text(format!("%{}%", like_escape(normalized)))
                ),
                StringMatch::Exact => format!("{i}.exact = {}", self.text(value.as_str())),
            },
            SearchValue::Token(token) | SearchValue::ReferenceIdentifier(token) => {
                self.token(token, i)
            }
            SearchValue::TokenText(text) => format!(
                "{i}.text LIKE {} ESCAPE '\\'",
                self.text(format!("{}%", like_escape(text)))
            ),
            SearchValue::Reference(reference) => self.reference_condition(reference, i),
            SearchValue::Date(d) => {
                self.range(&d.predicate(), &format!("{i}.low"), &format!("{i}.high"))
            }
            SearchValue::Number(n) => {
                let column = format!("{i}.value");
                self.range(&n.predicate(), &column, &column)
            }
            SearchValue::Quantity(q) => self.quantity_condition(q, i),
            SearchValue::Uri { value, mode } => match mode {
                UriMatch::Exact => format!("{i}.value = {}", self.text(value.as_str())),
                UriMatch::Below => format!(
                    "{i}.value LIKE {} ESCAPE '\\'",
                    self.text(format!("{}%", like_escape(value)))
                ),
                // The stored uri is a prefix of the parameter.
                UriMatch::Above => format!(
                    "{i}.value = substr({}, 1, length({i}.value))",
                    self.text(value.as_str())
                ),
            },
            SearchValue::Composite(_) => {
                return Err(SearchStoreError::Unsupported(
                    "a composite inside a composite".into(),
                ));
            }
        })
    }

    /// A reference value: by URL when it is not this server's, else by type and id.
    fn reference_condition(&mut self, reference: &ReferenceValue, i: &str) -> String {
        let local = reference
            .url
            .as_deref()
            .and_then(|u| u.strip_prefix(self.base_url))
            .is_some_and(|rest| rest.starts_with('/'));
        match (&reference.url, &reference.target_type, &reference.id) {
            (Some(url), _, _) if !local => format!("{i}.url = {}", self.text(url.as_str())),
            (_, Some(t), Some(id)) => format!(
                "{i}.target_type = {} AND {i}.target_id = {}",
                self.text(t.as_str()),
                self.text(id.as_str())
            ),
            (_, None, Some(id)) => format!("{i}.target_id = {}", self.text(id.as_str())),
            _ => "1 = 0".into(),
        }
    }

    /// A quantity value: its range, and its system and code when given (a code alone
    /// matches the unit too).
    fn quantity_condition(&mut self, q: &QuantityValue, i: &str) -> String {
        let column = format!("{i}.value");
        let mut parts = vec![self.range(&q.predicate(), &column, &column)];
        match (&q.system, &q.code) {
            (Some(s), Some(c)) => {
                parts.push(format!("{i}.system = {}", self.text(s.as_str())));
                parts.push(format!("{i}.code = {}", self.text(c.as_str())));
            }
            (Some(s), None) => parts.push(format!("{i}.system = {}", self.text(s.as_str()))),
            (None, Some(c)) => {
                let a = self.text(c.as_str());
                let b = self.text(c.as_str());
                parts.push(format!("({i}.code = {a} OR {i}.unit = {b})"));
            }
            (None, None) => {}
        }
        and(parts)
    }

    fn token(&mut self, token: &TokenValue, i: &str) -> String {
        let mut parts = Vec::new();
        match &token.system {
            TokenSystem::Any => {}
            TokenSystem::None => parts.push(format!("{i}.system IS NULL")),
            TokenSystem::Is(s) => parts.push(format!("{i}.system = {}", self.text(s.as_str()))),
        }
        if let Some(code) = &token.code {
            parts.push(format!("{i}.code = {}", self.text(code.as_str())));
        }
        and(parts)
    }

    fn range<T: Copy + Into<Num>>(
        &mut self,
        predicate: &RangePredicate<T>,
        low: &str,
        high: &str,
    ) -> String {
        match predicate {
            RangePredicate::Compare { column, op, value } => {
                let column = match column {
                    Bound::Low => low,
                    Bound::High => high,
                };
                let op = match op {
                    CompareOp::Lt => "<",
                    CompareOp::Le => "<=",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                };
                let placeholder = match (*value).into() {
                    Num::Int(v) => self.int(v),
                    Num::Float(v) => self.float(v),
                };
                format!("{column} {op} {placeholder}")
            }
            RangePredicate::All(parts) => {
                let parts = parts.iter().map(|p| self.range(p, low, high)).collect();
                and(parts)
            }
            RangePredicate::Any(parts) => {
                let parts = parts.iter().map(|p| self.range(p, low, high)).collect();
                or(parts)
            }
        }
    }

    /// The correlated subquery that gives a resource's value for one sort key; `NULL`
    /// when it has none.
    fn sort_value(&mut self, key: &SortKey, r: &str) -> String {
        let param = key.param;
        match param.code.as_str() {
            "_id" => return format!("{r}.id"),
            "_lastUpdated" => return format!("{r}.last_updated"),
            _ => {}
        }
        let agg = if key.descending { "MAX" } else { "MIN" };
        // The no-op `+ 0` / `|| ''` keeps SQLite from answering MIN/MAX by walking the
        // value index (resource_type, param, value) past every other resource's rows;
        // the row index (rk, param) is the fast path for one resource.
        let (table, column, noop) = match param.kind {
            SearchParamType::String => ("fhir_idx_string", "normalized", " || ''"),
            SearchParamType::Token => ("fhir_idx_token", "code", " || ''"),
            SearchParamType::Reference => ("fhir_idx_reference", "target_id", " || ''"),
            SearchParamType::Date if key.descending => ("fhir_idx_date", "high", " + 0"),
            SearchParamType::Date => ("fhir_idx_date", "low", " + 0"),
            SearchParamType::Number => ("fhir_idx_number", "value", " + 0"),
            SearchParamType::Quantity => ("fhir_idx_quantity", "value", " + 0"),
            SearchParamType::Uri => ("fhir_idx_uri", "value", " || ''"),
            SearchParamType::Composite | SearchParamType::Special => return "NULL".into(),
        };
        let i = self.alias("i");
        let rows = self.rows_of(param, &i);
        format!(
            "(SELECT {agg}({i}.{column}{noop}) FROM {table} {i} WHERE {i}.rk = {r}.rk \
             AND {rows})"
        )
    }

    /// The condition that the index row `i` is one of `param`'s: its code, and the
    /// subset of the rows it shares with another parameter
    /// ([`SearchParamDef::rows_subset`]).
    fn rows_of(&mut self, param: &SearchParamDef, i: &str) -> String {
        let code = self.text(param.rows_code());
        match param.rows_subset() {
            Some((column, value)) => {
                format!("{i}.param = {code} AND {i}.{column} = {}", self.text(value))
            }
            None => format!("{i}.param = {code}"),
        }
    }

    /// The `WHERE` of a search over `fhir_resources r`.
    fn search_where(&mut self, spec: &SearchSpec<'_>) -> Result<String> {
        let mut branches = Vec::new();
        for branch in spec.branches {
            match branch.resource_type {
                Some(rt) => branches.push(self.typed(
                    self.access,
                    rt,
                    &branch.criteria,
                    "r",
                    0,
                    Mode::Query,
                )?),
                None => {
                    if !self.access.is_unrestricted() {
                        return Err(SearchStoreError::Unsupported(
                            "a search across all types under access constraints (name the types with _type)"
                                .into(),
                        ));
                    }
                    let mut parts = Vec::new();
                    for c in &branch.criteria {
                        parts.push(self.criterion(None, c, "r", 0, Mode::Query)?);
                    }
                    branches.push(and(parts));
                }
            }
        }
        let existing = self.existing(spec);
        Ok(format!("{existing} AND {}", or(branches)))
    }

    /// Whether the resource `r` is one the search sees: current and not deleted at the
    /// snapshot, or for a later page, as it was at the snapshot.
    fn existing(&mut self, spec: &SearchSpec<'_>) -> String {
        let types: Option<Vec<&str>> = spec
            .branches
            .iter()
            .map(|b| b.resource_type.map(|rt| rt.as_str()))
            .collect();
        if let (true, false, Some(types)) = (self.sqlite, spec.as_of_snapshot, types) {
            return self.existing_by_index(&types, spec.snapshot);
        }
        let snapshot = self.int(spec.snapshot);
        let updated = if self.sqlite {
            "+r.last_updated"
        } else {
            "r.last_updated"
        };
        let current = format!("r.deleted = 0 AND {updated} <= {snapshot}");
        if spec.as_of_snapshot {
            // Changed since: in when its version of the snapshot was not a deletion.
            let after = self.int(spec.snapshot);
            let at = self.int(spec.snapshot);
            format!(
                "(({current}) OR (r.last_updated > {after} AND (SELECT h.deleted FROM fhir_history h \
                 WHERE h.resource_type = r.resource_type AND h.id = r.id AND h.last_updated <= {at} \
                 ORDER BY h.version_id DESC LIMIT 1) = 0))"
            )
        } else {
            current
        }
    }

    /// [`Sql::existing`] on SQLite for resources of `types`: `r` is none of the deleted
    /// resources of the types nor of those written after the snapshot, both few and
    /// listed once from their partial and `last_updated` indexes. A page's candidates are
    /// then tested without reading their rows, which sit beside their content in SQLite's
    /// table: candidates that come from an index (a `_has` page's, from the key index of
    /// their ids) are kept or left out from indexes alone.
    fn existing_by_index(&mut self, types: &[&str], snapshot: i64) -> String {
        let types = self.texts(types.iter().copied());
        let snapshot = self.int(snapshot);
        format!(
            "r.rk NOT IN ({}) \
             AND r.rk NOT IN (SELECT u.rk FROM fhir_resources u INDEXED BY fhir_resources_updated \
             WHERE u.resource_type IN ({types}) AND u.last_updated > {snapshot})",
            deleted_keys_on_sqlite(&types)
        )
    }

    /// How many resources match, counted from index rows where a branch allows: the
    /// distinct owners of its first index criterion's rows (from its value index, which on
    /// PostgreSQL includes the id: no probe of `fhir_resources` per match), less those among them
    /// that the search does not see, found among the few deleted resources and those
    /// written after the snapshot. Deleted resources keep their index rows, and every
    /// index row belongs to a stored resource. A branch without such a criterion, or
    /// with a criterion on `_lastUpdated` (a column of the resource, not of its rows),
    /// counts the old way: every match's current row.
    fn count(&mut self, spec: &SearchSpec<'_>) -> Result<String> {
        let mut types = std::collections::HashSet::new();
        let by_index = spec.branches.iter().all(|b| {
            b.resource_type.is_some_and(|rt| types.insert(rt))
                && driver(&b.criteria).is_some()
                && !reads_last_updated(&b.criteria)
        }) && spec.branches.iter().all(|b| {
            match b.resource_type.map(|rt| self.access.visible(rt)) {
                Some(Ok(Visible::Matching(criteria))) => !reads_last_updated(&criteria),
                _ => true,
            }
        });
        if !by_index {
            let where_clause = self.search_where(spec)?;
            return Ok(format!(
                "SELECT COUNT(*) AS n FROM fhir_resources r WHERE {where_clause}"
            ));
        }
        let mut terms = Vec::new();
        for branch in spec.branches {
            let (Some(rt), Some(d)) = (branch.resource_type, driver(&branch.criteria)) else {
                continue;
            };
            let deleted = self.count_unseen(spec, rt, &branch.criteria, false)?;
            let written = self.count_unseen(spec, rt, &branch.criteria, true)?;
            terms.push(format!(
                "({}) - ({deleted}) - ({written})",
                self.count_owners(rt, &branch.criteria, d)?
            ));
        }
        Ok(format!("SELECT {} AS n", terms.join(" + ")))
    }

    /// The distinct resources of type `rt` whose index rows meet `criteria` (and the
    /// access), deleted or not, driven by the rows of `criteria[driver]`.
    fn count_owners(
        &mut self,
        rt: ResourceType,
        criteria: &[Criterion],
        driver: usize,
    ) -> Result<String> {
        // A chain through a reference with at most one element per resource, whose rows
        // no other parameter shares, has at most one row per owner: its count needs no
        // `DISTINCT` (sorting or hashing every matching row's key).
        let one_row_each = matches!(&criteria[driver],
            Criterion::Chain { param, .. } if param.single && param.writes_rows());
        let owners = match &criteria[driver] {
            Criterion::Match { param, values, .. } => self.value_owners(param, &values[0])?,
            Criterion::Chain { param, targets } => {
                Some(self.chain_owners(param, targets, 0, Mode::Query)?)
            }
            Criterion::Has {
                source_type,
                reference,
                criterion,
            } => self.has_owners(*source_type, reference, criterion, 0, Mode::Query)?,
            _ => None,
        };
        let Some(Owners {
            from,
            owner,
            mut conditions,
        }) = owners
        else {
            return Ok("SELECT 0".into());
        };
        let (owner_type, owner_key) = owner.columns();
        conditions.insert(0, format!("{owner_type} = {}", self.text(rt.as_str())));
        // One index table: SQLite is held to its value index. Left to itself it may walk
        // the row index (rk, param) for keys already in order, over every row of the
        // table (the birthdate count of bench/search_latency.py: 30-40 ms instead of
        // 4-7).
        let from = match (self.sqlite, &owner, from.split_once(' ')) {
            (true, Owner::Row(a), Some((table, alias)))
                if alias == a && table.starts_with("fhir_idx_") =>
            {
                format!("{from} INDEXED BY {table}_value")
            }
            _ => from,
        };
        let (a, rest) = self.rest_on_owner(rt, criteria, driver, &owner)?;
        Ok(match owner {
            Owner::Row(_) => {
                conditions.extend(rest);
                let counted = if one_row_each {
                    "*".to_string()
                } else {
                    format!("DISTINCT {owner_key}")
                };
                format!(
                    "SELECT COUNT({counted}) FROM {from} WHERE {}",
                    conditions.join(" AND ")
                )
            }
            Owner::Target(_) => {
                let t = self.text(rt.as_str());
                format!(
                    "SELECT COUNT(*) FROM fhir_resources {a} WHERE {a}.resource_type = {t} \
                     AND {a}.id IN (SELECT {owner_key} FROM {from} WHERE {}) AND {}",
                    conditions.join(" AND "),
                    and(rest)
                )
            }
        })
    }

    /// The other criteria of a count on its owner, and the owner's alias: its own index
    /// row's (which stands for its resource), or for rows that name their target
    /// (`_has`), the stored resources they name, as `k`.
    fn rest_on_owner(
        &mut self,
        rt: ResourceType,
        criteria: &[Criterion],
        driver: usize,
        owner: &Owner,
    ) -> Result<(String, Vec<String>)> {
        Ok(match owner {
            Owner::Row(a) => {
                let rest = self.on_row_alias(a, |sql| sql.count_rest(rt, criteria, driver, a))?;
                (a.clone(), rest)
            }
            Owner::Target(_) => {
                let k = self.alias("k");
                let rest = self.count_rest(rt, criteria, driver, &k)?;
                (k, rest)
            }
        })
    }

    /// Runs `compile` with the index row alias `a` standing for its resource
    /// ([`Sql::row_aliases`]).
    fn on_row_alias<T>(&mut self, a: &str, compile: impl FnOnce(&mut Self) -> T) -> T {
        self.row_aliases.push(a.to_string());
        let compiled = compile(self);
        self.row_aliases.pop();
        compiled
    }

    /// The criteria of a count other than its driver's, and the access, on alias `a`.
    fn count_rest(
        &mut self,
        rt: ResourceType,
        criteria: &[Criterion],
        driver: usize,
        a: &str,
    ) -> Result<Vec<String>> {
        let mut rest = Vec::new();
        for (n, c) in criteria.iter().enumerate() {
            if n != driver {
                rest.push(self.criterion(Some(rt), c, a, 0, Mode::Query)?);
            }
        }
        rest.extend(self.visible(self.access, rt, a, 0)?);
        Ok(rest)
    }

    /// The count of the matches of type `rt` that the search does not see although their
    /// index rows meet the criteria: the deleted ones, or (`since_snapshot`) those written
    /// after the snapshot; on a later page, those whose version at the snapshot it does
    /// not see. It walks its few candidates by their own index and probes their index rows.
    fn count_unseen(
        &mut self,
        spec: &SearchSpec<'_>,
        rt: ResourceType,
        criteria: &[Criterion],
        since_snapshot: bool,
    ) -> Result<String> {
        let (index, deleted) = if since_snapshot {
            ("fhir_resources_updated", 0)
        } else {
            ("fhir_resources_deleted", 1)
        };
        self.correlated = true;
        let matched = self.typed(self.access, rt, criteria, "r", 0, Mode::Query);
        self.correlated = false;
        let mut conditions = vec![format!("r.deleted = {deleted}"), matched?];
        if since_snapshot {
            conditions.push(format!("r.last_updated > {}", self.int(spec.snapshot)));
        }
        if spec.as_of_snapshot {
            conditions.push(format!("({}) IS NOT TRUE", self.existing(spec)));
        }
        let hint = if self.sqlite {
            format!(" INDEXED BY {index}")
        } else {
            String::new()
        };
        Ok(format!(
            "SELECT COUNT(*) FROM fhir_resources r{hint} WHERE {}",
            conditions.join(" AND ")
        ))
    }

    /// The rows strictly after (`forward`) or before `position` in the order of `sort`
    /// then `(resource_type, id)`, over the columns `q.s{n}` of the page query. Each sort
    /// key is two components, whether it is NULL (NULLs last) and, when the position's
    /// is not NULL, its value; the condition is the lexicographic comparison spelled out.
    fn keyset(&mut self, sort: &[SortKey], position: &Position, forward: bool) -> Result<String> {
        if position.keys.len() != sort.len() {
            return Err(SearchStoreError::Unsupported(
                "a paging cursor of another sort order".into(),
            ));
        }
        let mut components: Vec<(String, Bind, bool)> = Vec::new();
        for (n, (key, value)) in sort.iter().zip(&position.keys).enumerate() {
            let null = value.is_null();
            components.push((
                format!("(CASE WHEN q.s{n} IS NULL THEN 1 ELSE 0 END)"),
                Bind::Int(i64::from(null)),
                true,
            ));
            if !null {
                let bind = match value {
                    serde_json::Value::String(s) => Bind::Text(s.clone()),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => Bind::Int(i),
                        None => Bind::Float(n.as_f64().unwrap_or_default()),
                    },
                    _ => {
                        return Err(SearchStoreError::Unsupported(
                            "a paging cursor not of this server".into(),
                        ));
                    }
                };
                components.push((format!("q.s{n}"), bind, !key.descending));
            }
        }
        components.push(("q.rk".into(), Bind::Int(position.rk), true));
        let mut alternatives = Vec::new();
        let mut equal: Vec<String> = Vec::new();
        for (expr, value, ascending) in components {
            let op = if ascending == forward { ">" } else { "<" };
            let mut parts = equal.clone();
            parts.push(format!("{expr} {op} {}", self.bind(value.clone())));
            alternatives.push(and(parts));
            equal.push(format!("{expr} = {}", self.bind(value)));
        }
        Ok(or(alternatives))
    }

    /// The text of [`search_page_in`]'s query: `count + 1` rows from `from` on.
    fn page(&mut self, spec: &SearchSpec<'_>, from: &PageFrom, count: i64) -> Result<String> {
        let where_clause = self.search_where(spec)?;
        let backwards = matches!(from, PageFrom::Before(_));
        let mut columns = Vec::new();
        let mut outer = String::new();
        let mut order = Vec::new();
        for (n, key) in spec.sort.iter().enumerate() {
            columns.push(format!("{} AS s{n}", self.sort_value(key, "r")));
            outer.push_str(&format!(", q.s{n}"));
            // NULLs last; a backwards page reads the order reversed. One mention of the
            // key: both planners compute a correlated key once per mention.
            let nulls = if backwards { "FIRST" } else { "LAST" };
            let direction = if key.descending != backwards {
                "DESC"
            } else {
                "ASC"
            };
            order.push(format!("q.s{n} {direction} NULLS {nulls}"));
        }
        let tail = if backwards { "DESC" } else { "ASC" };
        order.push(format!("q.rk {tail}"));
        let keyset = match from {
            PageFrom::First => String::new(),
            PageFrom::After(p) => format!(" WHERE {}", self.keyset(spec.sort, p, true)?),
            PageFrom::Before(p) => format!(" WHERE {}", self.keyset(spec.sort, p, false)?),
        };
        let extra = columns.iter().map(|c| format!(", {c}")).collect::<String>();
        let order = order.join(", ");
        // Every match goes through the order: its key and sort keys, not its content,
        // which is read for the page's rows only.
        let text = format!(
            "SELECT p.rk, c.resource_type, c.id, c.version_id, c.last_updated, c.content{} FROM (\
             SELECT q.rk{outer} FROM (SELECT r.rk{extra} \
             FROM fhir_resources r WHERE {where_clause}) q{keyset} ORDER BY {order} LIMIT {}) p \
             JOIN fhir_resources c ON c.rk = p.rk \
             ORDER BY {}",
            outer.replace("q.", "p."),
            count + 1,
            order.replace("q.", "p.")
        );
        Ok(text)
    }

    /// The text of a page read in the order of the sort parameter's index, for a search
    /// that allows it ([`ordered_key`]): of the first `count + 1` times [`ORDERED_BUDGET`]
    /// index rows from `from` on, the matches, at most `count + 1` of them. All of a page
    /// only when that many come back: the resources without a value of the parameter
    /// (their NULL key last) are not in it, nor matches past the budget.
    fn ordered_page(
        &mut self,
        spec: &SearchSpec<'_>,
        key: OrderedKey,
        count: i64,
    ) -> Result<String> {
        let OrderedKey {
            resource_type,
            param,
            descending,
            after,
        } = key;
        // Ties in the order of the resources' keys in either direction, as in `page`.
        let (column, index, direction, op) = if descending {
            ("high", "fhir_idx_date_high", "DESC", "<")
        } else {
            ("low", "fhir_idx_date_value", "ASC", ">")
        };
        let mut conditions = vec![
            format!("o.resource_type = {}", self.text(resource_type.as_str())),
            self.rows_of(param, "o"),
        ];
        // One row per resource: a criterion on the parameter is a condition on that row.
        for criterion in &spec.branches[0].criteria {
            if let Criterion::Match { values, .. } = criterion {
                let mut alternatives = Vec::new();
                for value in values {
                    alternatives.push(self.value_condition(value, "o")?);
                }
                conditions.push(or(alternatives));
            }
        }
        if let Some((value, rk)) = after {
            let (v, rk) = (self.int(value), self.int(rk));
            conditions.push(format!(
                "(o.{column} {op} {v} OR (o.{column} = {v} AND o.rk > {rk}))"
            ));
        }
        // The criteria are all on `o` and the access is to the whole type: what is left
        // to test of each resource is that the search sees it.
        let where_clause = format!(
            "r.resource_type = {} AND {}",
            self.text(resource_type.as_str()),
            self.existing(spec)
        );
        let indexed = if self.sqlite {
            format!(" INDEXED BY {index}")
        } else {
            String::new()
        };
        Ok(format!(
            "SELECT p.rk, p.resource_type, p.id, p.version_id, p.last_updated, c.content, p.s0 \
             FROM (SELECT r.rk, r.resource_type, r.id, r.version_id, r.last_updated, o.s0 \
             FROM (SELECT o.rk, o.{column} AS s0 FROM fhir_idx_date o{indexed} WHERE {} \
             ORDER BY o.{column} {direction}, o.rk LIMIT {}) o \
             JOIN fhir_resources r ON r.rk = o.rk WHERE {where_clause} \
             ORDER BY o.s0 {direction}, o.rk LIMIT {}) p \
             JOIN fhir_resources c ON c.rk = p.rk ORDER BY p.s0 {direction}, p.rk",
            and(conditions),
            (count + 1) * ORDERED_BUDGET,
            count + 1
        ))
    }

    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    fn run<'q>(&self, sql: &'q str) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        let mut query = sqlx::query(sql).persistent(!self.sized_list);
        for bind in self.binds.iter().cloned() {
            query = match bind {
                Bind::Text(v) => query.bind(v),
                Bind::Int(v) => query.bind(v),
                Bind::Float(v) => query.bind(v),
            };
        }
        query
    }
}

/// Index rows an ordered page reads per row it answers (see [`Sql::ordered_page`]):
/// rows of deleted resources, and of resources changed since the snapshot, are passed over.
const ORDERED_BUDGET: i64 = 4;

/// A search whose page can be read in the order of its sort parameter's index.
#[derive(Debug, Clone, Copy)]
struct OrderedKey {
    resource_type: ResourceType,
    param: &'static SearchParamDef,
    descending: bool,
    /// The key and resource key of the row the page continues after.
    after: Option<(i64, i64)>,
}

/// Whether `spec` is a search of one resource type, under access to all of it, sorted by
/// one date parameter with at most one value per resource ([`SearchParamDef::single`])
/// and with criteria on that parameter only: then every index row in the order of the
/// parameter is a match, unless its resource is deleted or changed since the snapshot,
/// and a page is the next rows of the index. A search with other criteria or restricted
/// access could pass over most of the index before it fills a page (a patient's
/// Observations by date), so it takes the general plan.
fn ordered_key(spec: &SearchSpec<'_>, from: &PageFrom) -> Option<OrderedKey> {
    let ([key], [branch]) = (spec.sort, spec.branches) else {
        return None;
    };
    let param = key.param;
    if param.kind != SearchParamType::Date || !param.single || !param.writes_rows() {
        return None;
    }
    let resource_type = branch.resource_type?;
    if !spec.access.is_unrestricted() {
        return None;
    }
    let on_key = |c: &Criterion| matches!(c, Criterion::Match { param: p, negated: false, .. } if *p == param);
    if !branch.criteria.iter().all(on_key) {
        return None;
    }
    let after = match from {
        PageFrom::First => None,
        PageFrom::After(position) => match position.keys.as_slice() {
            [value] => Some((value.as_i64()?, position.rk)),
            _ => return None,
        },
        PageFrom::Before(_) => return None,
    };
    Some(OrderedKey {
        resource_type,
        param,
        descending: key.descending,
        after,
    })
}

/// A comparable value of a range predicate, bound with its own SQL type.
enum Num {
    Int(i64),
    Float(f64),
}

impl From<i64> for Num {
    fn from(v: i64) -> Self {
        Num::Int(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::Float(v)
    }
}

/// The criterion whose index rows a count starts from ([`Sql::count`]): the first that
/// every match has rows of, a one-valued match of an indexed parameter, a chain or a
/// `_has`.
fn driver(criteria: &[Criterion]) -> Option<usize> {
    criteria.iter().position(|c| match c {
        Criterion::Match {
            param,
            values,
            negated: false,
        } => values.len() == 1 && !matches!(param.code.as_str(), "_id" | "_lastUpdated"),
        Criterion::Chain { .. } | Criterion::Has { .. } => true,
        _ => false,
    })
}

/// Whether `criteria` test the resource's `last_updated` column (`_lastUpdated`) rather
/// than only its index rows.
fn reads_last_updated(criteria: &[Criterion]) -> bool {
    criteria.iter().any(|c| match c {
        Criterion::Match { param, .. } => param.code == "_lastUpdated",
        Criterion::AnyOf(any) => reads_last_updated(any),
        _ => false,
    })
}

/// On SQLite, the keys of the deleted resources of the types `types` (bound values, comma
/// separated), from the partial index that holds them alone.
fn deleted_keys_on_sqlite(types: &str) -> String {
    format!(
        "SELECT d.rk FROM fhir_resources d INDEXED BY fhir_resources_deleted \
         WHERE d.resource_type IN ({types}) AND d.deleted = 1"
    )
}

fn and(parts: Vec<String>) -> String {
    match parts.len() {
        0 => "1 = 1".into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(" AND ")),
    }
}

fn or(parts: Vec<String>) -> String {
    match parts.len() {
        0 => "1 = 0".into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(" OR ")),
    }
}

fn table_of(kind: SearchParamType) -> Option<&'static str> {
    Some(match kind {
        SearchParamType::String => "fhir_idx_string",
        SearchParamType::Token => "fhir_idx_token",
        SearchParamType::Reference => "fhir_idx_reference",
        SearchParamType::Date => "fhir_idx_date",
        SearchParamType::Number => "fhir_idx_number",
        SearchParamType::Quantity => "fhir_idx_quantity",
        SearchParamType::Uri => "fhir_idx_uri",
        SearchParamType::Composite | SearchParamType::Special => return None,
    })
}

/// The least string greater than every string that starts with `prefix`, in code point
/// order: the prefix with its last character incremented (a character with no successor
/// is dropped and the one before it incremented). `None` when there is none: an empty
/// prefix, or one of `char::MAX` alone.
fn prefix_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Escapes `\`, `%` and `_` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn found_from_row(row: &AnyRow) -> std::result::Result<Found, sqlx::Error> {
    Ok(Found {
        resource_type: row.try_get("resource_type")?,
        id: row.try_get("id")?,
        version_id: row.try_get("version_id")?,
        last_updated: row.try_get("last_updated")?,
        content: row.try_get("content")?,
    })
}

/// How `_include` and `_revinclude` follow references from a set of resources.
#[derive(Debug, Clone, Copy)]
pub struct Follow<'a> {
    pub source_type: ResourceType,
    /// `None`: every reference parameter (`Type:*`).
    pub param: Option<&'a str>,
    pub target_type: Option<ResourceType>,
}

/// Where a page starts in the order of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum PageFrom {
    First,
    /// Strictly after this row (a `next` link).
    After(Position),
    /// Strictly before this row (a `previous` link); the page keeps the search's order.
    Before(Position),
}

/// A row's place in the order of a search: its sort-key values (JSON null, number or
/// text, as the database gave them), then its resource's key. What paging links carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub keys: Vec<serde_json::Value>,
    pub rk: i64,
}

impl Position {
    /// The cursor text of links: base64url of the JSON array `[keys..., rk]`.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut array = self.keys.clone();
        array.push(self.rk.into());
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::Value::Array(array).to_string())
    }

    /// The inverse of [`Position::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Position> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let serde_json::Value::Array(mut array) = serde_json::from_slice(&bytes).ok()? else {
            return None;
        };
        let rk = array.pop()?.as_i64()?;
        array
            .iter()
            .all(|v| v.is_null() || v.is_number() || v.is_string())
            .then_some(Position { keys: array, rk })
    }
}

/// One page of a search.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub rows: Vec<Found>,
    /// The positions of the first and last rows.
    pub first: Option<Position>,
    pub last: Option<Position>,
    /// More rows follow in the direction the page was read (after it for
    /// [`PageFrom::First`] and [`PageFrom::After`], before it for [`PageFrom::Before`]).
    pub more: bool,
}

impl Store {
    /// One page of matches, in the requested order.
    pub async fn search_page(
        &self,
        spec: &SearchSpec<'_>,
        from: &PageFrom,
        count: i64,
    ) -> Result<Page> {
        let mut conn = self.connection().await?;
        search_page_in(&mut conn, spec, from, count).await
    }
}

/// [`Store::search_page`] on `conn` (inside its transaction: it sees the transaction's writes).
pub async fn search_page_in(
    conn: &mut Conn,
    spec: &SearchSpec<'_>,
    from: &PageFrom,
    count: i64,
) -> Result<Page> {
    let conn = conn.sql();
    let sqlite = conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME;
    let new_sql = || Sql::new(spec.access, spec.reach, spec.base_url).on_sqlite(sqlite);
    let count = count.max(0);
    let mut rows = Vec::new();
    if let Some(key) = ordered_key(spec, from) {
        let mut sql = new_sql();
        let text = sql.ordered_page(spec, key, count)?;
        rows = sql.run(&text).fetch_all(&mut *conn).await?;
    }
    if rows.len() as i64 <= count {
        let mut sql = new_sql();
        let text = sql.page(spec, from, count)?;
        rows = sql.run(&text).fetch_all(&mut *conn).await?;
    }
    let backwards = matches!(from, PageFrom::Before(_));
    let more = rows.len() as i64 > count;
    let mut found = Vec::new();
    let mut positions = Vec::new();
    for row in rows.iter().take(count as usize) {
        let mut f = found_from_row(row)?;
        let mut keys = Vec::with_capacity(spec.sort.len());
        for n in 0..spec.sort.len() {
            keys.push(sort_key_of(row, &format!("s{n}"))?);
        }
        positions.push(Position {
            keys,
            rk: row.try_get("rk")?,
        });
        if f.last_updated > spec.snapshot
            && let Some(then) = version_at(conn, &f.resource_type, &f.id, spec.snapshot).await?
        {
            f = then;
        }
        found.push(f);
    }
    if backwards {
        found.reverse();
        positions.reverse();
    }
    Ok(Page {
        rows: found,
        first: positions.first().cloned(),
        last: positions.last().cloned(),
        more,
    })
}

/// A sort-key column as JSON: integers (ids of dates, times), doubles (numbers,
/// quantities) and text as the database typed them.
fn sort_key_of(row: &AnyRow, column: &str) -> std::result::Result<serde_json::Value, sqlx::Error> {
    if let Ok(v) = row.try_get::<Option<i64>, _>(column) {
        return Ok(v.map_or(serde_json::Value::Null, serde_json::Value::from));
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(column) {
        return Ok(v
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number));
    }
    Ok(row
        .try_get::<Option<String>, _>(column)?
        .map_or(serde_json::Value::Null, serde_json::Value::String))
}

/// The version of a resource that was current at `at` (ms), unless it was a deletion.
async fn version_at(
    conn: &mut sqlx::AnyConnection,
    resource_type: &str,
    id: &str,
    at: i64,
) -> Result<Option<Found>> {
    let row = sqlx::query(
        "SELECT resource_type, id, version_id, last_updated, content, deleted FROM fhir_history \
         WHERE resource_type = $1 AND id = $2 AND last_updated <= $3 ORDER BY version_id DESC LIMIT 1",
    )
    .bind(resource_type)
    .bind(id)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) if row.try_get::<i64, _>("deleted")? == 0 => Ok(Some(found_from_row(&row)?)),
        _ => Ok(None),
    }
}

impl Store {
    /// How many resources match (what `_total=accurate` reports).
    pub async fn search_count(&self, spec: &SearchSpec<'_>) -> Result<i64> {
        let mut sql = Sql::new(spec.access, spec.reach, spec.base_url)
            .on_sqlite(self.backend() == super::Backend::Sqlite);
        let text = sql.count(spec)?;
        let row = sql.run(&text).fetch_one(self.pool()).await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// The `(type, id)`s of current resources that resources of `follow.source_type`
    /// among `sources` refer to (`_include`), at most `limit` of them. Not filtered by
    /// access: [`Store::fetch_visible`] does that.
    pub async fn referenced_keys(
        &self,
        sources: &[&str],
        follow: Follow<'_>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let access = Access::Unrestricted;
        let mut sql = Sql::new(&access, &NO_REACH, "");
        let mut parts = vec![
            format!(
                "f.resource_type = {}",
                sql.text(follow.source_type.as_str())
            ),
            format!(
                "f.rk IN (SELECT y.rk FROM fhir_resources y WHERE y.resource_type = {} AND y.id IN ({}))",
                sql.text(follow.source_type.as_str()),
                sql.texts(sources.iter().copied())
            ),
            "f.target_type IS NOT NULL AND f.target_id IS NOT NULL".into(),
        ];
        if let Some(param) = follow.param {
            parts.push(format!("f.param = {}", sql.text(param)));
        }
        if let Some(t) = follow.target_type {
            parts.push(format!("f.target_type = {}", sql.text(t.as_str())));
        }
        let text = format!(
            "SELECT DISTINCT f.target_type AS t, f.target_id AS i FROM fhir_idx_reference f \
             JOIN fhir_resources x ON x.resource_type = f.target_type AND x.id = f.target_id \
             WHERE x.deleted = 0 AND {} ORDER BY t, i LIMIT {limit}",
            and(parts)
        );
        keys(sql.run(&text).fetch_all(self.pool()).await?)
    }

    /// The `(type, id)`s of current resources of `follow.source_type` that refer to one
    /// of `targets` (`_revinclude`), at most `limit` of them. Not filtered by access.
    pub async fn referring_keys(
        &self,
        targets: &[(String, String)],
        follow: Follow<'_>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let access = Access::Unrestricted;
        let mut sql = Sql::new(&access, &NO_REACH, "");
        let mut by_type: Vec<(&str, Vec<&str>)> = Vec::new();
        for (t, id) in targets {
            if let Some(wanted) = follow.target_type
                && wanted.as_str() != t
            {
                continue;
            }
            match by_type.iter_mut().find(|(ty, _)| ty == t) {
                Some((_, ids)) => ids.push(id),
                None => by_type.push((t, vec![id])),
            }
        }
        if by_type.is_empty() {
            return Ok(Vec::new());
        }
        let mut alternatives = Vec::new();
        for (t, ids) in &by_type {
            alternatives.push(format!(
                "(f.target_type = {} AND f.target_id IN ({}))",
                sql.text(*t),
                sql.texts(ids.iter().copied())
            ));
        }
        let mut parts = vec![
            format!(
                "f.resource_type = {}",
                sql.text(follow.source_type.as_str())
            ),
            or(alternatives),
        ];
        if let Some(param) = follow.param {
            parts.push(format!("f.param = {}", sql.text(param)));
        }
        let text = format!(
            "SELECT DISTINCT x.resource_type AS t, x.id AS i FROM fhir_idx_reference f \
             JOIN fhir_resources x ON x.rk = f.rk \
             WHERE x.deleted = 0 AND {} ORDER BY t, i LIMIT {limit}",
            and(parts)
        );
        keys(sql.run(&text).fetch_all(self.pool()).await?)
    }

    /// The current, not deleted resources of `rt` among `ids` that the access lets
    /// through, at most `limit` of them (by id).
    pub async fn fetch_visible(
        &self,
        rt: ResourceType,
        ids: &[&str],
        access: &Access,
        base_url: &str,
        limit: usize,
    ) -> Result<Vec<Found>> {
        let mut conn = self.pool().acquire().await?;
        fetch_visible_limited(&mut conn, rt, ids, access, base_url, Some(limit)).await
    }

    /// Whether `rt/id` (current, not deleted) is visible under the access.
    pub async fn is_visible(
        &self,
        rt: ResourceType,
        id: &str,
        access: &Access,
        base_url: &str,
    ) -> Result<bool> {
        if access.is_unrestricted() {
            return Ok(true);
        }
        let mut conn = self.connection().await?;
        is_visible_in(&mut conn, rt, id, access, base_url).await
    }

    /// The backend's name for logs and benchmarks.
    pub fn backend_name(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

async fn fetch_visible_limited(
    conn: &mut sqlx::AnyConnection,
    rt: ResourceType,
    ids: &[&str],
    access: &Access,
    base_url: &str,
    limit: Option<usize>,
) -> Result<Vec<Found>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(access, &NO_REACH, base_url);
    let typed = sql.typed(access, rt, &[], "r", 0, Mode::Query)?;
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let text = format!(
        "SELECT r.resource_type, r.id, r.version_id, r.last_updated, r.content FROM fhir_resources r \
         WHERE r.deleted = 0 AND r.id IN ({}) AND {typed} ORDER BY r.id{limit}",
        sql.texts(ids.iter().copied())
    );
    let rows = sql.run(&text).fetch_all(&mut *conn).await?;
    Ok(rows
        .iter()
        .map(found_from_row)
        .collect::<std::result::Result<_, _>>()?)
}

/// [`Store::is_visible`] on `conn`.
pub async fn is_visible_in(
    conn: &mut Conn,
    rt: ResourceType,
    id: &str,
    access: &Access,
    base_url: &str,
) -> Result<bool> {
    if access.is_unrestricted() {
        return Ok(true);
    }
    Ok(
        !fetch_visible_limited(conn.sql(), rt, &[id], access, base_url, None)
            .await?
            .is_empty(),
    )
}

impl Store {
    /// Type or system history under access constraints: the versions, newest first, of
    /// the resources of `visible`'s types whose current version the type's access lets
    /// through, and how many such versions the filter selects. Past versions have no index
    /// rows; a resource is judged by its current version, as a read of it would be, and
    /// a deleted resource, with nothing left to judge, is left out (fail closed).
    pub async fn history_visible(
        &self,
        visible: &[(ResourceType, Access)],
        filter: &HistoryFilter,
        base_url: &str,
    ) -> Result<(Vec<StoredVersion>, i64)> {
        if visible.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut sql = Sql::new(&Access::Unrestricted, &NO_REACH, base_url);
        // Types seen whole need no look at their current version.
        let mut whole = Vec::new();
        let mut branches = Vec::new();
        for (rt, access) in visible {
            match access.visible(*rt)? {
                Visible::All => whole.push(rt.as_str()),
                Visible::Nothing(_) => {}
                Visible::Matching(_) => {
                    // Uncorrelated, so that both planners compute the visible ids once
                    // (a correlated EXISTS per history row took PostgreSQL seconds).
                    let t = sql.text(rt.as_str());
                    let typed = sql.typed(access, *rt, &[], "r", 0, Mode::Query)?;
                    branches.push(format!(
                        "(hv.resource_type = {t} AND hv.id IN (SELECT r.id FROM fhir_resources r \
                         WHERE r.deleted = 0 AND {typed}))"
                    ));
                }
            }
        }
        if !whole.is_empty() {
            branches.push(format!("hv.resource_type IN ({})", sql.texts(whole)));
        }
        let mut conditions = vec![or(branches)];
        if let Some(since) = filter.since {
            conditions.push(format!("hv.last_updated >= {}", sql.int(since)));
        }
        if let Some(until) = filter.until {
            conditions.push(format!("hv.last_updated <= {}", sql.int(until)));
        }
        if let Some((start, end)) = filter.at {
            conditions.push(format!("hv.last_updated <= {}", sql.int(end)));
            sql.int(start);
            conditions.push(super::fhir::replaced_by_start("hv", sql.binds.len()));
        }
        let where_clause = and(conditions);
        let count_text = format!("SELECT COUNT(*) AS n FROM fhir_history hv WHERE {where_clause}");
        let page_text = format!(
            "SELECT hv.resource_type, hv.id, hv.version_id, hv.last_updated, hv.deleted, hv.content, hv.method \
             FROM fhir_history hv WHERE {where_clause} \
             ORDER BY hv.last_updated DESC, hv.resource_type, hv.id, hv.version_id DESC LIMIT {} OFFSET {}",
            filter.count.max(0),
            filter.offset.max(0)
        );
        let total: i64 = sql
            .run(&count_text)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let rows = sql.run(&page_text).fetch_all(self.pool()).await?;
        let versions = rows
            .iter()
            .map(super::fhir::version_from_row)
            .collect::<std::result::Result<_, _>>()?;
        Ok((versions, total))
    }
}

fn keys(rows: Vec<AnyRow>) -> Result<Vec<(String, String)>> {
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get("t")?, row.try_get("i")?)))
        .collect::<std::result::Result<_, sqlx::Error>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::SearchQuery;

    fn where_of(ty: &str, query: &str) -> (String, usize) {
        where_on(ty, query, false)
    }

    fn where_on(ty: &str, query: &str, sqlite: bool) -> (String, usize) {
        let rt = ResourceType::parse(ty).unwrap();
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let q = SearchQuery::parse(rt, pairs).unwrap();
        let branches = [Branch {
            resource_type: Some(rt),
            criteria: q.criteria,
        }];
        let access = Access::Unrestricted;
        let reach = Reach::new();
        let spec = SearchSpec {
            branches: &branches,
            sort: &[],
            snapshot: 0,
            as_of_snapshot: false,
            access: &access,
            reach: &reach,
            base_url: "http://h/fhir",
        };
        let mut sql = Sql::new(&access, &reach, "http://h/fhir").on_sqlite(sqlite);
        let text = sql.search_where(&spec).unwrap();
        (text, sql.binds.len())
    }

    #[test]
    fn the_snapshot_bound_takes_each_backends_form() {
        let (sqlite, _) = where_on("Observation", "subject=Patient/p7", true);
        assert!(
            sqlite.starts_with(
                "r.rk NOT IN (SELECT d.rk FROM fhir_resources d INDEXED BY fhir_resources_deleted \
                 WHERE d.resource_type IN ($"
            ) && sqlite.contains("AND u.last_updated > $"),
            "{sqlite}"
        );
        let (postgres, _) = where_on("Observation", "subject=Patient/p7", false);
        assert!(
            postgres.starts_with("r.deleted = 0 AND r.last_updated <= $"),
            "{postgres}"
        );
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let (text, binds) = where_of("Patient", "name=ada,bob&birthdate=ge2000");
        for n in 1..=binds {
            assert!(text.contains(&format!("${n}")), "{text}");
        }
        assert!(!text.contains(&format!("${}", binds + 1)), "{text}");
    }

    fn chain_where(reach: &Reach) -> Result<String> {
        let rt = ResourceType::parse("Observation").unwrap();
        let q = SearchQuery::parse(rt, [("subject:Patient.name", "x")]).unwrap();
        let branches = [Branch {
            resource_type: Some(rt),
            criteria: q.criteria,
        }];
        let access = Access::Unrestricted;
        let spec = SearchSpec {
            branches: &branches,
            sort: &[],
            snapshot: 0,
            as_of_snapshot: false,
            access: &access,
            reach,
            base_url: "http://h/fhir",
        };
        Sql::new(&access, reach, "http://h/fhir").search_where(&spec)
    }

    #[test]
    fn chains_reach_only_as_far_as_decided() {
        let patient = ResourceType::parse("Patient").unwrap();
        // No decision for the target type: refused, not compiled without one.
        assert!(matches!(
            chain_where(&Reach::new()),
            Err(SearchStoreError::Access(_))
        ));
        // Decided as out of reach: the chain matches nothing.
        let text = chain_where(&Reach::from([(patient, None)])).unwrap();
        assert!(
            text.contains("1 = 0") && !text.contains("fhir_idx_string"),
            "{text}"
        );
        // Within the target's own access: its constraint is inside the subquery.
        let within = Access::Within(vec![crate::fhir::access::AccessConstraint::Search {
            resource_type: patient,
            params: vec![("gender".into(), "female".into())],
        }]);
        let text = chain_where(&Reach::from([(patient, Some(within))])).unwrap();
        assert!(
            text.contains("fhir_idx_string") && text.contains("fhir_idx_token"),
            "{text}"
        );
    }

    #[test]
    fn a_prefix_bound_is_above_every_string_with_the_prefix_and_below_the_rest() {
        assert_eq!(prefix_bound("fam1").as_deref(), Some("fam2"));
        assert_eq!(prefix_bound("az").as_deref(), Some("a{"));
        assert_eq!(prefix_bound("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        assert_eq!(prefix_bound("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_bound("\u{10ffff}"), None);
        assert_eq!(prefix_bound(""), None);
        let upper = prefix_bound("smith").unwrap();
        for inside in ["smith", "smithson", "smith\u{10ffff}"] {
            assert!(inside >= "smith" && inside < upper.as_str(), "{inside}");
        }
        for outside in ["smiti", "smitg", "smit"] {
            assert!(
                !(outside >= "smith" && outside < upper.as_str()),
                "{outside}"
            );
        }
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn local_absolute_references_match_by_type_and_id() {
        let (text, _) = where_of("Observation", "subject=http://h/fhir/Patient/p1");
        assert!(text.contains("target_type"), "{text}");
        let (text, _) = where_of("Observation", "subject=http://other/fhir/Patient/p1");
        assert!(text.contains(".url ="), "{text}");
    }
}
