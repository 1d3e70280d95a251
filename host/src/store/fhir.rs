//! FHIR resources: current versions, history, and the search index rows written in the
//! same transaction as each version. Knows SQL, not HTTP and not FHIR semantics beyond
//! "a version of a resource"; `fhir::repository` decides what to write.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use std::borrow::Cow;
use std::cmp::Ordering;

use super::{Backend, Conn, Store, StoreError, WriteTx};
use crate::fhir::search::extract::composite_row_param;
use crate::fhir::search::{
    DateIndex, IndexRows, NumberIndex, QuantityIndex, ReferenceIndex, StringIndex, TokenIndex,
    UriIndex,
};

/// One version of a resource, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    /// Milliseconds since the Unix epoch.
    pub last_updated: i64,
    pub deleted: bool,
    /// The resource JSON with `meta.versionId` and `meta.lastUpdated` set; for a
    /// deletion, the last content before it.
    pub content: String,
    /// `POST`, `PUT`, `PATCH` or `DELETE`: how this version came to be.
    pub method: String,
}

/// How a write came to be, recorded in history (and shown in history Bundles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    Create,
    Update,
    Patch,
    Delete,
}

impl WriteMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMethod::Create => "POST",
            WriteMethod::Update => "PUT",
            WriteMethod::Patch => "PATCH",
            WriteMethod::Delete => "DELETE",
        }
    }
}

/// Which history to read.
#[derive(Debug, Clone, Copy)]
pub enum HistoryScope<'a> {
    Instance(&'a str, &'a str),
    Type(&'a str),
    System,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only versions updated at or after this time (ms), `_since`.
    pub since: Option<i64>,
    /// `_at`: only versions that were current at some moment of this range (ms, both
    /// ends inclusive): updated at or before its end, and not replaced by a next version
    /// at or before its start.
    pub at: Option<(i64, i64)>,
    /// Only versions written at or before this time (ms): the first page's time, which
    /// later pages' links carry, so that new versions do not shift their offsets.
    pub until: Option<i64>,
    pub offset: i64,
    pub count: i64,
}

pub(super) fn version_from_row(row: &AnyRow) -> Result<StoredVersion, sqlx::Error> {
    Ok(StoredVersion {
        resource_type: row.try_get("resource_type")?,
        id: row.try_get("id")?,
        version_id: row.try_get("version_id")?,
        last_updated: row.try_get("last_updated")?,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
        content: row.try_get("content")?,
        method: row.try_get("method")?,
    })
}

pub(super) const INDEX_TABLES: &[&str] = &[
    "fhir_idx_string",
    "fhir_idx_token",
    "fhir_idx_reference",
    "fhir_idx_date",
    "fhir_idx_number",
    "fhir_idx_quantity",
    "fhir_idx_uri",
];

/// Rows per index that [`Store::analyze`] samples (SQLite's `analysis_limit`).
const ANALYSIS_LIMIT: u32 = 1000;
/// PostgreSQL connections on which [`Store::analyze`] analyzes the tables at once.
const ANALYZE_CONNECTIONS: usize = 2;
/// Write transactions of a process before its first [`Store::analyze`]; then after twice
/// as many, and so on (a power of two).
const FIRST_ANALYZE_AFTER: u64 = 1024;

impl Store {
    /// Refreshes the query planner's statistics. Without them a planner guesses how many
    /// rows each step finds, and for searches it guessed badly:
    /// - SQLite often started from the index that holds every row of the type: a
    ///   `_revinclude` of one patient's 5 Observations read all 25,000 of them (40 ms
    ///   instead of 3). Here `ANALYZE` samples at most [`ANALYSIS_LIMIT`] rows per index
    ///   (milliseconds at any size), in the write turn.
    /// - PostgreSQL, until autovacuum's first analysis of freshly loaded tables (a minute
    ///   or more), estimated one row per step and compared every pair: a chained search
    ///   took 415 ms among 12,000 resources instead of 10. Here `ANALYZE` of the FHIR
    ///   tables, which does not block writes (the resources' content is not sampled:
    ///   migration 0030).
    ///
    /// [`WriteTx::commit`] starts it after the 1,024th write transaction of the process,
    /// the 2,048th, the 4,096th and so on; `serve` at start.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        match self.backend() {
            Backend::Sqlite => {
                let mut tx = self.begin().await?;
                let conn = tx.sql();
                sqlx::query(&format!("PRAGMA analysis_limit = {ANALYSIS_LIMIT}"))
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("ANALYZE").execute(&mut *conn).await?;
                // Not `WriteTx::commit`: this is no write to count.
                tx.commit_uncounted().await?;
            }
            Backend::Postgres => {
                // Two connections, each analyzing every other table: the server analyzes
                // them in two processes, and the pool keeps connections for requests.
                let pool = self.pool();
                let tables: Vec<&str> = ["fhir_resources", "fhir_history"]
                    .iter()
                    .chain(INDEX_TABLES)
                    .copied()
                    .collect();
                let lanes = (0..ANALYZE_CONNECTIONS).map(|lane| {
                    let list: Vec<&str> = tables
                        .iter()
                        .skip(lane)
                        .step_by(ANALYZE_CONNECTIONS)
                        .copied()
                        .collect();
                    let sql = format!("ANALYZE {}", list.join(", "));
                    async move { sqlx::query(&sql).execute(pool).await }
                });
                futures_util::future::try_join_all(lanes).await?;
            }
        }
        Ok(())
    }

    /// Counts `writes` committed writes (a transaction, or the creates of a group); when
    /// the count passes 1,024, 2,048, 4,096, ... starts an [`Store::analyze`] in the
    /// background.
    pub(super) fn count_writes(&self, writes: u64) {
        let before = self
            .statistics
            .writes
            .fetch_add(writes, std::sync::atomic::Ordering::Relaxed);
        let n = before + writes;
        if n >= FIRST_ANALYZE_AFTER && n.ilog2() > before.max(1).ilog2() {
            let store = self.clone();
            tokio::spawn(async move {
                match store.analyze().await {
                    Ok(()) => tracing::debug!(writes = n, "refreshed the planner's statistics"),
                    Err(e) => tracing::warn!(error = %e, "cannot refresh the planner's statistics"),
                }
            });
        }
    }

    /// The current version of a resource (deleted or not), outside a transaction: kept
    /// from an earlier read while no write has changed it ([`super::resource_cache`]),
    /// else on SQLite read on this thread ([`super::inline`]) when it can be.
    pub async fn fhir_current(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let revision = self.resources.revision(self).await;
        if let Some(kept) = revision.and_then(|r| self.resources.get(resource_type, id, r)) {
            return Ok(Some(kept));
        }
        let found = match self
            .inline
            .as_ref()
            .and_then(|inline| inline.current(resource_type, id))
        {
            Some(found) => found,
            None => {
                let mut conn = self.connection().await?;
                fhir_current(&mut conn, resource_type, id).await?
            }
        };
        if let (Some(revision), Some(version)) = (revision, &found) {
            self.resources.keep(revision, version);
        }
        Ok(found)
    }

    /// One version from history.
    pub async fn fhir_version(
        &self,
        resource_type: &str,
        id: &str,
        version_id: i64,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let mut conn = self.connection().await?;
        fhir_version(&mut conn, resource_type, id, version_id).await
    }

    /// History, newest first, and the total number of versions that match the filter.
    pub async fn fhir_history(
        &self,
        scope: HistoryScope<'_>,
        filter: &HistoryFilter,
    ) -> Result<(Vec<StoredVersion>, i64), StoreError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        match scope {
            HistoryScope::Instance(ty, id) => {
                binds.push(ty.to_string());
                conditions.push(format!("h.resource_type = ${}", binds.len()));
                binds.push(id.to_string());
                conditions.push(format!("h.id = ${}", binds.len()));
            }
            HistoryScope::Type(ty) => {
                binds.push(ty.to_string());
                conditions.push(format!("h.resource_type = ${}", binds.len()));
            }
            HistoryScope::System => {}
        }
        // Times are bound as numbers after the text binds.
        let mut numbers = Vec::new();
        if let Some(since) = filter.since {
            numbers.push(since);
            conditions.push(format!(
                "h.last_updated >= ${}",
                binds.len() + numbers.len()
            ));
        }
        if let Some(until) = filter.until {
            numbers.push(until);
            conditions.push(format!(
                "h.last_updated <= ${}",
                binds.len() + numbers.len()
            ));
        }
        if let Some((start, end)) = filter.at {
            numbers.push(end);
            conditions.push(format!(
                "h.last_updated <= ${}",
                binds.len() + numbers.len()
            ));
            numbers.push(start);
            conditions.push(replaced_by_start("h", binds.len() + numbers.len()));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let count_sql = format!("SELECT COUNT(*) AS n FROM fhir_history h {where_clause}");
        let page_sql = format!(
            "SELECT h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content, h.method \
             FROM fhir_history h {where_clause} \
             ORDER BY h.last_updated DESC, h.resource_type, h.id, h.version_id DESC LIMIT {} OFFSET {}",
            filter.count.max(0),
            filter.offset.max(0)
        );
        let mut count = sqlx::query(&count_sql);
        let mut page = sqlx::query(&page_sql);
        for b in &binds {
            count = count.bind(b.clone());
            page = page.bind(b.clone());
        }
        for n in &numbers {
            count = count.bind(*n);
            page = page.bind(*n);
        }
        let total: i64 = count.fetch_one(self.pool()).await?.try_get("n")?;
        let rows = page.fetch_all(self.pool()).await?;
        let versions = rows
            .iter()
            .map(version_from_row)
            .collect::<Result<_, _>>()?;
        Ok((versions, total))
    }
}

/// The `_at` condition that the version `h` was not replaced by a next version at or
/// before the start of the range (placeholder `$start`): it was still current then, or
/// became current within the range.
pub(super) fn replaced_by_start(h: &str, start: usize) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM fhir_history nv WHERE nv.resource_type = {h}.resource_type \
         AND nv.id = {h}.id AND nv.version_id = {h}.version_id + 1 AND nv.last_updated <= ${start})"
    )
}

/// One version from history, inside a transaction.
pub async fn fhir_version(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
    version_id: i64,
) -> Result<Option<StoredVersion>, StoreError> {
    let conn = conn.sql();
    let row = sqlx::query(
        "SELECT resource_type, id, version_id, last_updated, deleted, content, method FROM fhir_history \
         WHERE resource_type = $1 AND id = $2 AND version_id = $3",
    )
    .bind(resource_type)
    .bind(id)
    .bind(version_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(version_from_row).transpose()?)
}

/// The current version of a resource inside a transaction.
pub async fn fhir_current(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
) -> Result<Option<StoredVersion>, StoreError> {
    let conn = conn.sql();
    let row = sqlx::query(
        "SELECT r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content, h.method \
         FROM fhir_resources r JOIN fhir_history h \
           ON h.resource_type = r.resource_type AND h.id = r.id AND h.version_id = r.version_id \
         WHERE r.resource_type = $1 AND r.id = $2",
    )
    .bind(resource_type)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(version_from_row).transpose()?)
}

/// Writes a new version: the current row, a history row, and (unless it is a deletion)
/// fresh index rows. A deletion keeps the index rows of the last content: searches skip
/// deleted resources, except that a later page of a search paged before the deletion
/// still finds it there (see `store::search`). The caller has checked preconditions
/// inside the same transaction.
pub async fn fhir_write(
    tx: &mut WriteTx,
    version: &StoredVersion,
    index: Option<&IndexRows>,
) -> Result<(), StoreError> {
    let conn = tx.sql();
    let deleted = i64::from(version.deleted);
    let inserted = sqlx::query(
        "INSERT INTO fhir_history (resource_type, id, version_id, last_updated, method, deleted, content) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&version.resource_type)
    .bind(&version.id)
    .bind(version.version_id)
    .bind(version.last_updated)
    .bind(&version.method)
    .bind(deleted)
    .bind(&version.content)
    .execute(&mut *conn)
    .await;
    if let Err(err) = inserted {
        return Err(super::conflict_or(err, || {
            format!(
                "version {} of {}/{} (a concurrent write got there first)",
                version.version_id, version.resource_type, version.id
            )
        }));
    }
    let rk: Option<i64> = if version.version_id == 1 {
        sqlx::query_scalar(
            "INSERT INTO fhir_resources (resource_type, id, version_id, last_updated, deleted, content) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING rk",
        )
        .bind(&version.resource_type)
        .bind(&version.id)
        .bind(version.version_id)
        .bind(version.last_updated)
        .bind(deleted)
        .bind(&version.content)
        .fetch_one(&mut *conn)
        .await
        .map(Some)
        .map_err(|e| super::conflict_or(e, || format!("{}/{}", version.resource_type, version.id)))?
    } else {
        sqlx::query_scalar(
            "UPDATE fhir_resources SET version_id = $3, last_updated = $4, deleted = $5, content = $6 \
             WHERE resource_type = $1 AND id = $2 AND version_id = $3 - 1 RETURNING rk",
        )
        .bind(&version.resource_type)
        .bind(&version.id)
        .bind(version.version_id)
        .bind(version.last_updated)
        .bind(deleted)
        .bind(&version.content)
        .fetch_optional(&mut *conn)
        .await?
    };
    let Some(rk) = rk else {
        return Err(StoreError::Conflict(format!(
            "version {} of {}/{} (its version {} is not the current one)",
            version.version_id,
            version.resource_type,
            version.id,
            version.version_id - 1
        )));
    };
    replace_index(conn, rk, version, index).await
}

/// The current versions (without their content) of the resources `keys` names that
/// exist, inside a transaction: a few statements for a whole import batch.
pub async fn fhir_current_many(
    conn: &mut Conn,
    keys: &[(&str, &str)],
) -> Result<Currents, StoreError> {
    current_many(conn.sql(), keys, "").await
}

/// The current versions (without content) of `keys` that exist, each keyed by
/// (type, id), every statement ending with `suffix` (a row lock).
async fn current_many(
    conn: &mut AnyConnection,
    keys: &[(&str, &str)],
    suffix: &str,
) -> Result<Currents, StoreError> {
    let mut found = std::collections::HashMap::new();
    for (resource_type, ids) in by_type(keys) {
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT resource_type, id, version_id, last_updated, deleted, '' AS content, '' AS method \
                 FROM fhir_resources WHERE resource_type = {} AND id IN ({}){suffix}",
                Marks::of(conn).list(1, 1),
                Marks::of(conn).list(2, chunk.len())
            );
            let mut query = super::rows_query(&sql, chunk.len()).bind(resource_type);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let version = version_from_row(&row)?;
                found.insert((version.resource_type.clone(), version.id.clone()), version);
            }
        }
    }
    Ok(found)
}

/// Current versions of resources, by (type, id), without their content
/// ([`fhir_current_many`]).
pub type Currents = std::collections::HashMap<(String, String), StoredVersion>;

/// A version and its index rows (none for a deletion), as the writers take them.
pub type VersionRows = (StoredVersion, Option<IndexRows>);

/// The columns of `fhir_history` a version fills, in the order writers bind them.
pub(super) const HISTORY_COLUMNS: &[&str] = &[
    "resource_type",
    "id",
    "version_id",
    "last_updated",
    "method",
    "deleted",
    "content",
];

/// The columns of `fhir_resources` an import fills, in the order it writes them: the
/// resource's key, which an import gives itself, then [`CURRENT_COLUMNS`].
pub(super) const KEYED_CURRENT_COLUMNS: &[&str] = &[
    "rk",
    "resource_type",
    "id",
    "version_id",
    "last_updated",
    "deleted",
    "content",
];

/// The columns of `fhir_resources` a current version fills, in the order writers bind them
/// (the key is the database's).
pub(super) const CURRENT_COLUMNS: &[&str] = KEYED_CURRENT_COLUMNS.split_at(1).1;

/// Writes one new version of each of several distinct resources, as [`fhir_write`] does
/// for one: history rows, current rows, and (unless deleted) fresh index rows, in
/// multi-row statements. A version whose number is taken (a concurrent write got there
/// first) fails the whole call with a conflict.
pub(super) async fn write_many_rows(
    conn: &mut AnyConnection,
    writes: &[&VersionRows],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut keys = std::collections::HashMap::new();
    for chunk in writes.chunks(ROWS_PER_INSERT) {
        insert_history_many(conn, chunk).await?;
        // The history insert has claimed each version number, so replacing the current
        // row is safe without comparing its version.
        keys.extend(upsert_current_many(conn, chunk).await?);
    }
    // As in `replace_index`: a deletion keeps its last index rows, a first version has none.
    let mut replaced = Vec::new();
    let mut owners: Vec<(&str, i64, &IndexRows)> = Vec::new();
    for (v, rows) in writes.iter().copied().filter(|(v, _)| !v.deleted) {
        let rk = keys
            .remove(&(v.resource_type.clone(), v.id.clone()))
            .ok_or_else(|| {
                StoreError::Invalid(format!("no key for {}/{}", v.resource_type, v.id))
            })?;
        if v.version_id > 1 {
            replaced.push(rk);
        }
        if let Some(rows) = rows {
            owners.push((v.resource_type.as_str(), rk, rows));
        }
    }
    delete_index_many(conn, &replaced).await?;
    insert_index_many(conn, &owners).await
}

/// The history rows of a chunk of versions, in one statement; a version number taken
/// already is a conflict.
async fn insert_history_many(
    conn: &mut AnyConnection,
    chunk: &[&VersionRows],
) -> Result<(), StoreError> {
    let sql = multi_row_insert(
        Marks::of(conn),
        "fhir_history",
        HISTORY_COLUMNS,
        chunk.len(),
    );
    versions_query(&sql, HISTORY_COLUMNS, chunk)?
        .execute(&mut *conn)
        .await
        .map_err(batch_conflict)?;
    Ok(())
}

/// `err` of a write of several versions: a conflict when a version number was taken (a
/// unique violation), otherwise the database's error.
pub(super) fn batch_conflict(err: sqlx::Error) -> StoreError {
    super::conflict_or(err, || {
        "a version of the batch (a concurrent write got there first)".into()
    })
}

/// The current rows of a chunk of versions, inserted or replaced in one statement;
/// answers their keys by (type, id).
async fn upsert_current_many(
    conn: &mut AnyConnection,
    chunk: &[&VersionRows],
) -> Result<Vec<((String, String), i64)>, StoreError> {
    let sql = format!(
        "{} ON CONFLICT (resource_type, id) DO UPDATE SET version_id = excluded.version_id, \
         last_updated = excluded.last_updated, deleted = excluded.deleted, content = excluded.content \
         RETURNING resource_type, id, rk",
        multi_row_insert(
            Marks::of(conn),
            "fhir_resources",
            CURRENT_COLUMNS,
            chunk.len()
        )
    );
    let rows = versions_query(&sql, CURRENT_COLUMNS, chunk)?
        .fetch_all(&mut *conn)
        .await?;
    // The returned rows come in no promised order: each names its resource.
    rows.iter()
        .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// `sql` with the values of each version of `chunk` bound: its `columns` (of
/// [`HISTORY_COLUMNS`] or [`CURRENT_COLUMNS`]), in order.
fn versions_query<'q>(
    sql: &'q str,
    columns: &[&str],
    chunk: &'q [&'q VersionRows],
) -> Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>, StoreError> {
    let mut query = super::rows_query(sql, chunk.len());
    for (v, _) in chunk {
        for column in columns {
            query = match *column {
                "resource_type" => query.bind(&v.resource_type),
                "id" => query.bind(&v.id),
                "version_id" => query.bind(v.version_id),
                "last_updated" => query.bind(v.last_updated),
                "method" => query.bind(&v.method),
                "deleted" => query.bind(i64::from(v.deleted)),
                "content" => query.bind(&v.content),
                other => {
                    return Err(StoreError::Invalid(format!(
                        "a stored version has no column {other}"
                    )));
                }
            };
        }
    }
    Ok(query)
}

/// Every index row of the resources of keys `rks`: per chunk, one statement per index
/// table.
async fn delete_index_many(conn: &mut AnyConnection, rks: &[i64]) -> Result<(), StoreError> {
    for chunk in rks.chunks(ROWS_PER_INSERT) {
        for table in INDEX_TABLES {
            let sql = format!(
                "DELETE FROM {table} WHERE rk IN ({})",
                Marks::of(conn).list(1, chunk.len())
            );
            let mut query = super::rows_query(&sql, chunk.len());
            for rk in chunk {
                query = query.bind(*rk);
            }
            query.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Keys grouped by resource type, in order of first appearance.
fn by_type<'a>(keys: &[(&'a str, &'a str)]) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for &(resource_type, id) in keys {
        match groups.iter_mut().find(|(t, _)| *t == resource_type) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((resource_type, vec![id])),
        }
    }
    groups
}

/// The keys of current, non-deleted resources after `after` in (type, id) order, at most
/// `limit`, of one type or all: the walk of `fhir::reindex`.
pub async fn fhir_current_keys(
    conn: &mut Conn,
    resource_type: Option<&str>,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let conn = conn.sql();
    let (after_type, after_id) = after.unwrap_or(("", ""));
    let rows = sqlx::query(
        "SELECT resource_type, id FROM fhir_resources \
         WHERE deleted = 0 AND ($1 = '' OR resource_type = $1) \
           AND (resource_type > $2 OR (resource_type = $2 AND id > $3)) \
         ORDER BY resource_type, id LIMIT $4",
    )
    .bind(resource_type.unwrap_or(""))
    .bind(after_type)
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

impl WriteTx {
    /// Locks a resource's current row for the rest of the transaction (PostgreSQL: a row
    /// lock; SQLite: the write lock), so that no write of it interleaves with what follows;
    /// answers whether the row exists.
    pub async fn lock_current(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let locked = sqlx::query(
            "UPDATE fhir_resources SET version_id = version_id WHERE resource_type = $1 AND id = $2",
        )
        .bind(resource_type)
        .bind(id)
        .execute(self.sql())
        .await?;
        Ok(locked.rows_affected() == 1)
    }
}

impl WriteTx {
    /// [`fhir_current_many`], holding the rows found until the transaction ends as
    /// [`Conn::lock_for_write`] holds one: on PostgreSQL a row lock on each, in the order
    /// of the current rows' key, so that two writers of the same resources wait for each
    /// other instead of both locking one half.
    pub async fn lock_current_many(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<Currents, StoreError> {
        let conn = self.sql();
        let suffix = if conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
            ""
        } else {
            " ORDER BY resource_type, id FOR UPDATE"
        };
        current_many(conn, keys, suffix).await
    }
}

impl Conn {
    /// Holds a resource's current row, if there is one, until the transaction ends: a second
    /// writer of the same resource waits here and then reads the version the first committed
    /// (PostgreSQL, `READ COMMITTED`: a row lock). On SQLite there is nothing to do: a write
    /// transaction holds the database's write lock from its start (`BEGIN IMMEDIATE`).
    pub async fn lock_for_write(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let conn = self.sql();
        if conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
            return Ok(());
        }
        sqlx::query("SELECT 1 FROM fhir_resources WHERE resource_type = $1 AND id = $2 FOR UPDATE")
            .bind(resource_type)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Replaces every index row of a resource with `rows` (run after [`WriteTx::lock_current`]).
pub async fn fhir_reindex(
    tx: &mut WriteTx,
    resource_type: &str,
    id: &str,
    rows: &IndexRows,
) -> Result<(), StoreError> {
    let conn = tx.sql();
    let rk: i64 =
        sqlx::query_scalar("SELECT rk FROM fhir_resources WHERE resource_type = $1 AND id = $2")
            .bind(resource_type)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{resource_type}/{id}")))?;
    delete_index_many(conn, &[rk]).await?;
    insert_index_many(conn, &[(resource_type, rk, rows)]).await
}

/// The index rows of the resource of key `rk`, written as its version `version`.
async fn replace_index(
    conn: &mut AnyConnection,
    rk: i64,
    version: &StoredVersion,
    index: Option<&IndexRows>,
) -> Result<(), StoreError> {
    if version.deleted {
        return Ok(());
    }
    // A first version has no earlier index rows to remove (a re-created resource
    // continues its version numbers, so this is its first creation).
    if version.version_id > 1 {
        delete_index_many(conn, &[rk]).await?;
    }
    match index {
        Some(rows) => insert_index_many(conn, &[(version.resource_type.as_str(), rk, rows)]).await,
        None => Ok(()),
    }
}

/// The index rows of several resources, one multi-row INSERT per index table and chunk
/// (a handful of statements per write, or per import batch, instead of one per row).
async fn insert_index_many(
    conn: &mut AnyConnection,
    owners: &[(&str, i64, &IndexRows)],
) -> Result<(), StoreError> {
    let Batches {
        strings,
        tokens,
        references,
        dates,
        numbers,
        quantities,
        uris,
    } = Batches::of(owners);
    // `insert_rows!` binds the key columns, then each row's own.
    macro_rules! insert_rows {
        ($table:literal, [$($column:literal),+], $rows:expr, |$p:ident, $r:ident| [$($value:expr),+]) => {
            for chunk in $rows.chunks(ROWS_PER_INSERT) {
                let columns: &[&str] = &["resource_type", "rk", "param", $($column),+];
                let sql = multi_row_insert(Marks::of(conn), $table, columns, chunk.len());
                let mut query = super::rows_query(&sql, chunk.len());
                for ((resource_type, rk), $p, $r) in chunk {
                    query = query.bind(*resource_type).bind(*rk).bind($p.as_ref())$(.bind($value))+;
                }
                query.execute(&mut *conn).await?;
            }
        };
    }
    insert_rows!(
        "fhir_idx_string",
        ["normalized", "exact", "part"],
        strings,
        |p, r| [&r.normalized, &r.exact, r.part]
    );
    insert_rows!(
        "fhir_idx_token",
        ["system", "code", "text"],
        tokens,
        |p, r| [&r.system, &r.code, &r.text]
    );
    insert_rows!(
        "fhir_idx_reference",
        ["target_type", "target_id", "version", "url"],
        references,
        |p, r| [
            r.target_type.map(|t| t.as_str()),
            &r.target_id,
            &r.version,
            &r.url
        ]
    );
    insert_rows!("fhir_idx_date", ["low", "high"], dates, |p, r| [
        r.low, r.high
    ]);
    insert_rows!("fhir_idx_number", ["value"], numbers, |p, r| [r.value]);
    insert_rows!(
        "fhir_idx_quantity",
        ["value", "system", "code", "unit"],
        quantities,
        |p, r| [r.value, &r.system, &r.code, &r.unit]
    );
    insert_rows!("fhir_idx_uri", ["value"], uris, |p, r| [&r.value]);
    Ok(())
}

/// Each index table's rows with the `param` they are stored under: their own, or for the
/// components of a composite's element `composite$component$element`.
/// Each row is keyed by its resource (type, key).
#[derive(Default)]
pub(super) struct Batches<'a> {
    pub strings: Vec<(Owner<'a>, Cow<'static, str>, &'a StringIndex)>,
    pub tokens: Vec<(Owner<'a>, Cow<'static, str>, &'a TokenIndex)>,
    pub references: Vec<(Owner<'a>, Cow<'static, str>, &'a ReferenceIndex)>,
    pub dates: Vec<(Owner<'a>, Cow<'static, str>, &'a DateIndex)>,
    pub numbers: Vec<(Owner<'a>, Cow<'static, str>, &'a NumberIndex)>,
    pub quantities: Vec<(Owner<'a>, Cow<'static, str>, &'a QuantityIndex)>,
    pub uris: Vec<(Owner<'a>, Cow<'static, str>, &'a UriIndex)>,
}

/// The resource an index row belongs to: its type and key (`rk`; in an import's
/// encoding, its place in the batch until the batch's keys are known).
pub(super) type Owner<'a> = (&'a str, i64);

impl<'a> Batches<'a> {
    /// The rows of several resources, composites' components included.
    pub fn of(owners: &[(&'a str, i64, &'a IndexRows)]) -> Self {
        let mut batches = Batches::default();
        for &(resource_type, rk, rows) in owners {
            batches.add((resource_type, rk), rows, Cow::Borrowed);
            for composite in &rows.composites {
                batches.add((resource_type, rk), &composite.rows, |p| {
                    Cow::Owned(composite_row_param(composite.param, p, composite.element))
                });
            }
        }
        batches
    }

    /// Sorts each table's rows by the key of its search index (`fhir_idx_*_value`:
    /// resource type, parameter, the value's columns, then the owner's key, in the order of
    /// the owners' places in the batch).
    pub fn sort_by_search_key(&mut self) {
        fn by<T>(
            rows: &mut [((&str, i64), Cow<'static, str>, &T)],
            value: impl Fn((&T, i64), (&T, i64)) -> Ordering,
        ) {
            rows.sort_unstable_by(|(a_owner, a_param, a), (b_owner, b_param, b)| {
                (a_owner.0, a_param)
                    .cmp(&(b_owner.0, b_param))
                    .then_with(|| value((a, a_owner.1), (b, b_owner.1)))
            });
        }
        let b = self;
        by(&mut b.strings, |(a, a_id), (b, b_id)| {
            (&a.normalized, a_id).cmp(&(&b.normalized, b_id))
        });
        by(&mut b.tokens, |(a, a_id), (b, b_id)| {
            (&a.code, &a.system, a_id).cmp(&(&b.code, &b.system, b_id))
        });
        by(&mut b.references, |(a, a_id), (b, b_id)| {
            let target = |r: &ReferenceIndex| r.target_type.map(|t| t.as_str());
            (&a.target_id, target(a), a_id).cmp(&(&b.target_id, target(b), b_id))
        });
        by(&mut b.dates, |(a, a_id), (b, b_id)| {
            (a.low, a.high, a_id).cmp(&(b.low, b.high, b_id))
        });
        by(&mut b.numbers, |(a, a_id), (b, b_id)| {
            a.value.total_cmp(&b.value).then_with(|| a_id.cmp(&b_id))
        });
        by(&mut b.quantities, |(a, a_id), (b, b_id)| {
            a.value.total_cmp(&b.value).then_with(|| a_id.cmp(&b_id))
        });
        by(&mut b.uris, |(a, a_id), (b, b_id)| {
            (&a.value, a_id).cmp(&(&b.value, b_id))
        });
    }

    fn add(
        &mut self,
        owner: Owner<'a>,
        rows: &'a IndexRows,
        name: impl Fn(&'static str) -> Cow<'static, str>,
    ) {
        self.strings
            .extend(rows.strings.iter().map(|r| (owner, name(r.param), r)));
        self.tokens
            .extend(rows.tokens.iter().map(|r| (owner, name(r.param), r)));
        self.references
            .extend(rows.references.iter().map(|r| (owner, name(r.param), r)));
        self.dates
            .extend(rows.dates.iter().map(|r| (owner, name(r.param), r)));
        self.numbers
            .extend(rows.numbers.iter().map(|r| (owner, name(r.param), r)));
        self.quantities
            .extend(rows.quantities.iter().map(|r| (owner, name(r.param), r)));
        self.uris
            .extend(rows.uris.iter().map(|r| (owner, name(r.param), r)));
    }
}

/// Rows per INSERT statement: at most 7 columns each, so 7 × 500 = 3,500 bound values, well
/// under SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 500;

/// How a statement marks its bound values. SQLite looks a `$n` up by name in a list, for
/// every value bound, which grows quadratic in a statement of thousands of values (half of
/// an import's time); its anonymous `?` costs nothing. PostgreSQL takes only `$n`.
#[derive(Clone, Copy)]
enum Marks {
    Numbered,
    Anonymous,
}

impl Marks {
    fn of(conn: &AnyConnection) -> Marks {
        if conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
            Marks::Anonymous
        } else {
            Marks::Numbered
        }
    }

    /// The marks of `n` values, the first being the statement's `first`-th, comma-separated.
    fn list(self, first: usize, n: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(n * 6);
        for i in first..first + n {
            if i > first {
                out.push_str(", ");
            }
            match self {
                Marks::Numbered => {
                    let _ = write!(out, "${i}");
                }
                Marks::Anonymous => out.push('?'),
            }
        }
        out
    }
}

/// `INSERT INTO table (columns) VALUES ($1, …), ($n+1, …), …` for `rows` rows. Written here
/// rather than with sqlx's `QueryBuilder` because over the `Any` driver that writes `?`
/// placeholders whatever the backend.
fn multi_row_insert(marks: Marks, table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        sql.push_str(&marks.list(row * columns.len() + 1, columns.len()));
        sql.push(')');
    }
    sql
}
