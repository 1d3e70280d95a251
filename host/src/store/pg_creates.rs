//! A group of creates ([`super::group`]) on PostgreSQL in one statement, whatever its size:
//! the versions and each index table's rows are JSON parameters read by
//! `json_to_recordset`, and data-modifying `WITH` queries insert the history rows, the
//! current rows (whose keys `rk` the index rows take, joined on the version's place in the
//! group) and the index rows. A single statement is a transaction of its own: one round trip
//! where `BEGIN`, an insert per table and `COMMIT` took eight or more, and one text that
//! stays prepared, where multi-row `VALUES` lists are a new text, parsed and planned, for
//! each size of group.

use serde::Serialize;
use serde_json::{Value, json};

use super::fhir::{Batches, StoredVersion, VersionRows};
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
/// statement; a version that exists already fails the whole group (a conflict).
pub(super) async fn write_creates(store: &Store, group: &[VersionRows]) -> Result<(), StoreError> {
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
    let b = Batches::of(&owners);
    let rows = |json: Vec<Value>| Value::Array(json).to_string();
    let strings = b.strings.iter().map(|((_, n), p, r)| {
        json!({"n": n, "param": p, "normalized": r.normalized, "exact": r.exact, "part": r.part})
    });
    let tokens = b.tokens.iter().map(|((_, n), p, r)| {
        json!({"n": n, "param": p, "system": r.system, "code": r.code, "text": r.text})
    });
    let references = b.references.iter().map(|((_, n), p, r)| {
        json!({"n": n, "param": p, "target_type": r.target_type.map(|t| t.as_str()),
               "target_id": r.target_id, "version": r.version, "url": r.url})
    });
    let dates = b
        .dates
        .iter()
        .map(|((_, n), p, r)| json!({"n": n, "param": p, "low": r.low, "high": r.high}));
    let numbers = b
        .numbers
        .iter()
        .map(|((_, n), p, r)| json!({"n": n, "param": p, "value": r.value}));
    let quantities = b.quantities.iter().map(|((_, n), p, r)| {
        json!({"n": n, "param": p, "value": r.value, "system": r.system, "code": r.code,
               "unit": r.unit})
    });
    let uris = b
        .uris
        .iter()
        .map(|((_, n), p, r)| json!({"n": n, "param": p, "value": r.value}));
    sqlx::query(CREATES)
        .bind(versions)
        .bind(rows(strings.collect()))
        .bind(rows(tokens.collect()))
        .bind(rows(references.collect()))
        .bind(rows(dates.collect()))
        .bind(rows(numbers.collect()))
        .bind(rows(quantities.collect()))
        .bind(rows(uris.collect()))
        .execute(store.pool())
        .await
        .map_err(|e| super::conflict_or(e, || "a create of the group".into()))?;
    store.count_writes(group.len() as u64);
    Ok(())
}
