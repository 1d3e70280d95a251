//! A group of creates ([`super::group`]) on PostgreSQL in one statement, whatever its size:
//! the versions and each index table's rows are JSON parameters read by
//! `json_to_recordset`, and data-modifying `WITH` queries insert the history rows, the
//! current rows (whose keys `rk` the index rows take, joined on the version's place in the
//! group) and the index rows. A single statement is a transaction of its own: one round trip
//! where `BEGIN`, an insert per table and `COMMIT` took eight or more, and one text that
//! stays prepared, where multi-row `VALUES` lists are a new text, parsed and planned, for
//! each size of group.

use std::borrow::Cow;

use serde::Serialize;
use sqlx::AnyConnection;

use super::fhir::{Batches, Owner, StoredVersion, VersionRows};
use super::{Store, StoreError};

/// The statement: `$1` the versions, `$2`..`$8` the rows of the index tables, each row
/// naming its version by `n`, its place in `$1`.
const CREATES: &str = "WITH v AS (\
     SELECT * FROM json_to_recordset($1::json) AS x(n BIGINT, resource_type TEXT, id TEXT, \
     version_id BIGINT, last_updated BIGINT, method TEXT, deleted BIGINT, content TEXT)), \
     h AS (INSERT INTO fhir_history \
     (resource_type, id, version_id, last_updated, method, deleted, content) \
     SELECT resource_type, id, version_id, last_updated, method, deleted, content FROM v), \
     c AS (INSERT INTO fhir_resources \
     (resource_type, id, version_id, last_updated, deleted, content) \
     SELECT resource_type, id, version_id, last_updated, deleted, content FROM v \
     RETURNING resource_type, id, rk), \
     k AS (SELECT v.n, c.resource_type, c.rk FROM v JOIN c USING (resource_type, id)), \
     s AS (INSERT INTO fhir_idx_string (resource_type, rk, param, normalized, exact, part) \
     SELECT k.resource_type, k.rk, x.param, x.normalized, x.exact, x.part \
     FROM json_to_recordset($2::json) AS x(n BIGINT, param TEXT, normalized TEXT, exact TEXT, \
     part TEXT) JOIN k USING (n)), \
     t AS (INSERT INTO fhir_idx_token (resource_type, rk, param, system, code, text) \
     SELECT k.resource_type, k.rk, x.param, x.system, x.code, x.text \
     FROM json_to_recordset($3::json) AS x(n BIGINT, param TEXT, system TEXT, code TEXT, \
     text TEXT) JOIN k USING (n)), \
     r AS (INSERT INTO fhir_idx_reference \
     (resource_type, rk, param, target_type, target_id, version, url) \
     SELECT k.resource_type, k.rk, x.param, x.target_type, x.target_id, x.version, x.url \
     FROM json_to_recordset($4::json) AS x(n BIGINT, param TEXT, target_type TEXT, \
     target_id TEXT, version TEXT, url TEXT) JOIN k USING (n)), \
     d AS (INSERT INTO fhir_idx_date (resource_type, rk, param, low, high) \
     SELECT k.resource_type, k.rk, x.param, x.low, x.high \
     FROM json_to_recordset($5::json) AS x(n BIGINT, param TEXT, low BIGINT, high BIGINT) \
     JOIN k USING (n)), \
     nu AS (INSERT INTO fhir_idx_number (resource_type, rk, param, value) \
     SELECT k.resource_type, k.rk, x.param, x.value \
     FROM json_to_recordset($6::json) AS x(n BIGINT, param TEXT, value DOUBLE PRECISION) \
     JOIN k USING (n)), \
     q AS (INSERT INTO fhir_idx_quantity (resource_type, rk, param, value, system, code, unit) \
     SELECT k.resource_type, k.rk, x.param, x.value, x.system, x.code, x.unit \
     FROM json_to_recordset($7::json) AS x(n BIGINT, param TEXT, value DOUBLE PRECISION, \
     system TEXT, code TEXT, unit TEXT) JOIN k USING (n)), \
     u AS (INSERT INTO fhir_idx_uri (resource_type, rk, param, value) \
     SELECT k.resource_type, k.rk, x.param, x.value \
     FROM json_to_recordset($8::json) AS x(n BIGINT, param TEXT, value TEXT) JOIN k USING (n)) \
     SELECT 1";

/// A version as the statement's `$1` reads it, borrowed: the content (the whole resource)
/// is written into the parameter's text once, not copied into a JSON value first.
#[derive(Serialize)]
struct VersionRow<'a> {
    n: i64,
    resource_type: &'a str,
    id: &'a str,
    version_id: i64,
    last_updated: i64,
    method: &'a str,
    deleted: i64,
    content: &'a str,
}

impl<'a> VersionRow<'a> {
    fn of(v: &'a StoredVersion, n: i64) -> Self {
        VersionRow {
            n,
            resource_type: &v.resource_type,
            id: &v.id,
            version_id: v.version_id,
            last_updated: v.last_updated,
            method: &v.method,
            deleted: i64::from(v.deleted),
            content: &v.content,
        }
    }
}

/// Writes the first versions `group` (distinct resources), with their index rows, in one
/// statement of its own; a version that exists already fails the whole group (a conflict).
pub(super) async fn write_creates(store: &Store, group: &[VersionRows]) -> Result<(), StoreError> {
    let group: Vec<&VersionRows> = group.iter().collect();
    let params = Params::of(&group)?;
    params
        .query()
        .execute(store.pool())
        .await
        .map_err(|e| super::conflict_or(e, || "a create of the group".into()))?;
    store.count_writes(group.len() as u64);
    Ok(())
}

/// Writes the first versions `firsts` with their index rows in the transaction of `conn`,
/// in the one statement [`write_creates`] sends: a transaction Bundle's creates.
pub(super) async fn write_creates_in(
    conn: &mut AnyConnection,
    firsts: &[&VersionRows],
) -> Result<(), StoreError> {
    Params::of(firsts)?
        .query()
        .execute(conn)
        .await
        .map_err(super::fhir::batch_conflict)?;
    Ok(())
}

/// The statement's parameters: the versions, then each index table's rows, as JSON texts.
struct Params([String; 8]);

impl Params {
    /// The parameters of `group`, each index table's rows in the order of its search
    /// index, so that the B-tree inserts of one table fall near each other.
    fn of(group: &[&VersionRows]) -> Result<Params, StoreError> {
        let versions: Vec<VersionRow> = group
            .iter()
            .zip(0i64..)
            .map(|((v, _), n)| VersionRow::of(v, n))
            .collect();
        let versions = serde_json::to_string(&versions)
            .map_err(|e| StoreError::Invalid(format!("cannot encode a group of creates: {e}")))?;
        let owners: Vec<(&str, i64, &crate::fhir::search::IndexRows)> = group
            .iter()
            .zip(0i64..)
            .filter_map(|((v, rows), n)| Some((v.resource_type.as_str(), n, rows.as_ref()?)))
            .collect();
        let mut b = Batches::of(&owners);
        b.sort_by_search_key();
        Ok(Params([
            versions,
            rows(&b.strings, |r| StringRow {
                normalized: &r.normalized,
                exact: &r.exact,
                part: r.part,
            })?,
            rows(&b.tokens, |r| TokenRow {
                system: r.system.as_deref(),
                code: r.code.as_deref(),
                text: r.text.as_deref(),
            })?,
            rows(&b.references, |r| ReferenceRow {
                target_type: r.target_type.map(|t| t.as_str()),
                target_id: r.target_id.as_deref(),
                version: r.version.as_deref(),
                url: r.url.as_deref(),
            })?,
            rows(&b.dates, |r| DateRow {
                low: r.low,
                high: r.high,
            })?,
            rows(&b.numbers, |r| NumberRow { value: r.value })?,
            rows(&b.quantities, |r| QuantityRow {
                value: r.value,
                system: r.system.as_deref(),
                code: r.code.as_deref(),
                unit: r.unit.as_deref(),
            })?,
            rows(&b.uris, |r| UriRow { value: &r.value })?,
        ]))
    }

    fn query(self) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>> {
        self.0
            .into_iter()
            .fold(sqlx::query(CREATES), |query, param| query.bind(param))
    }
}

/// The JSON text of one index table's `rows` as the statement reads them: each row's
/// columns ([`Row`], borrowed from the row) with the place `n` of its version and its
/// `param`, written straight into the text.
fn rows<'a, T, C: Serialize>(
    rows: &'a [(Owner<'_>, Cow<'static, str>, &'a T)],
    columns: impl Fn(&'a T) -> C,
) -> Result<String, StoreError> {
    let rows: Vec<Row<'a, C>> = rows
        .iter()
        .map(|((_, n), param, r)| Row {
            n: *n,
            param,
            columns: columns(r),
        })
        .collect();
    serde_json::to_string(&rows)
        .map_err(|e| StoreError::Invalid(format!("cannot encode a group's index rows: {e}")))
}

/// An index row: its version's place, its parameter, and its table's own columns.
#[derive(Serialize)]
struct Row<'a, C> {
    n: i64,
    param: &'a str,
    #[serde(flatten)]
    columns: C,
}

#[derive(Serialize)]
struct StringRow<'a> {
    normalized: &'a str,
    exact: &'a str,
    part: Option<&'a str>,
}

#[derive(Serialize)]
struct TokenRow<'a> {
    system: Option<&'a str>,
    code: Option<&'a str>,
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct ReferenceRow<'a> {
    target_type: Option<&'a str>,
    target_id: Option<&'a str>,
    version: Option<&'a str>,
    url: Option<&'a str>,
}

#[derive(Serialize)]
struct DateRow {
    low: i64,
    high: i64,
}

#[derive(Serialize)]
struct NumberRow {
    value: f64,
}

#[derive(Serialize)]
struct QuantityRow<'a> {
    value: f64,
    system: Option<&'a str>,
    code: Option<&'a str>,
    unit: Option<&'a str>,
}

#[derive(Serialize)]
struct UriRow<'a> {
    value: &'a str,
}
