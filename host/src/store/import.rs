//! The write side of `hestia fhir import`: batches of new resources (first versions), each
//! written in one transaction on a connection of the import's own, in the backend's
//! fastest way: on PostgreSQL `COPY ... FROM STDIN` into history, current rows and the
//! index tables; on SQLite `INSERT OR FAIL` statements of many rows (prepared once per
//! table and size), in the process's write turn, with a pause after a batch when other
//! connections write too ([`Courtesy`]).
//!
//! [`encode`] turns a batch into those statements without the database, so that the
//! import does it while the batch before is written. Within a batch the index rows are
//! sorted by their table's search key, so that the B-tree inserts of one statement fall
//! near each other. A batch that names a resource the database already has (its first
//! version is in history, or a concurrent write created it) writes nothing:
//! [`Loaded::Exists`] tells the caller to write it as updates instead
//! (`fhir::repository::Repository::update_many`).

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sqlx::{Arguments, ConnectOptions, Connection};

use super::fhir::{Batches, HISTORY_COLUMNS, KEYED_CURRENT_COLUMNS, StoredVersion};
use super::turn::WRITE_TURN_TIMEOUT;
use super::{Backend, Store, StoreError};
use crate::fhir::search::IndexRows;

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Written,
    /// A resource of the batch exists already: nothing was written.
    Exists,
}

/// A connection of the import's own, which writes batches of new resources.
pub struct Loader {
    store: Store,
    conn: Conn,
    courtesy: Courtesy,
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Pages of write-ahead log after which the import connection checkpoints (64 MiB of
/// 4 KiB pages): fewer, larger checkpoints than SQLite's default 1,000 pages.
const SQLITE_CHECKPOINT_PAGES: u32 = 16 * 1024;
/// The import connection's page cache (KiB), held while the import runs: the index pages
/// a batch of thousands of resources changes stay in memory for the batch instead of
/// being read again from the operating system (SQLite's default is 2,000 KiB; 3-4 % off
/// an import of 100,000 Patients).
const SQLITE_CACHE_KIB: u32 = 64 * 1024;
/// Rows per SQLite statement, largest first: a batch's rows of one table go in as many
/// statements of the largest size as fit, then of the next sizes for the rest, so that each
/// table has at most four statement texts, which sqlx prepares once and keeps.
/// 512 rows × 7 columns = 3,584 values, well under SQLite's 32,766.
const SQLITE_ROWS: [usize; 4] = [512, 64, 8, 1];

impl Loader {
    /// Opens the import's connection to the store's database.
    pub async fn open(store: &Store) -> Result<Loader, StoreError> {
        let url = store.pool().connect_options().database_url.clone();
        let connect_err = |source| StoreError::Connect {
            url: super::redact(url.as_str()),
            source,
        };
        let conn = match store.backend() {
            Backend::Sqlite => Conn::Sqlite(
                SqliteConnectOptions::from_url(&url)
                    .map_err(connect_err)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(WRITE_TURN_TIMEOUT)
                    .pragma("wal_autocheckpoint", SQLITE_CHECKPOINT_PAGES.to_string())
                    .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
                    .log_statements(tracing::log::LevelFilter::Trace)
                    .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5))
                    .connect()
                    .await
                    .map_err(connect_err)?,
            ),
            Backend::Postgres => Conn::Postgres(
                PgConnectOptions::from_url(&url)
                    .map_err(connect_err)?
                    .log_statements(tracing::log::LevelFilter::Trace)
                    .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5))
                    .connect()
                    .await
                    .map_err(connect_err)?,
            ),
        };
        Ok(Loader {
            store: store.clone(),
            conn,
            courtesy: Courtesy::default(),
        })
    }

    /// Writes a batch [`encode`]d of first versions of new resources, with their index
    /// rows, in one transaction; nothing when one of them exists already
    /// ([`Loaded::Exists`]).
    pub async fn write_new(&mut self, batch: Encoded) -> Result<Loaded, StoreError> {
        let resources = batch.resources;
        let written = match (&mut self.conn, batch.statements) {
            (Conn::Sqlite(conn), Statements::Sqlite(statements)) => {
                let turn = self.store.turn().await?;
                let number = turn.as_ref().map_or(0, |t| t.number());
                let started = Instant::now();
                let written = write_sqlite(conn, resources, statements).await;
                drop(turn);
                if let Ok(data_version) = written {
                    let pause = self.courtesy.after(data_version, number, started.elapsed());
                    tokio::time::sleep(pause).await;
                }
                written.map(|_| ())
            }
            (Conn::Postgres(conn), Statements::Postgres(copies)) => {
                write_postgres(conn, resources, copies).await
            }
            _ => {
                return Err(StoreError::Invalid(
                    "a batch encoded for another database".into(),
                ));
            }
        };
        match written {
            Ok(()) => Ok(Loaded::Written),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Loaded::Exists),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether another process has written to the database lately (SQLite: its commits
    /// moved `data_version` between two of this loader's batches in the last
    /// [`COURTESY_FOR`]); always false on PostgreSQL, whose writers do not wait for a batch.
    pub fn others_writing(&self) -> bool {
        self.courtesy.others_recently(Instant::now())
    }

    pub async fn close(self) -> Result<(), StoreError> {
        match self.conn {
            Conn::Sqlite(conn) => conn.close().await?,
            Conn::Postgres(conn) => conn.close().await?,
        }
        Ok(())
    }
}

/// A batch of first versions and their index rows as the statements that write them,
/// for [`Loader::write_new`], and how many resources it has. Encoding takes CPU, not the
/// database: the import does it on its reader thread, while the batch before is written.
/// The resources' keys (`rk`) are taken when the batch is written: the encoding holds
/// each resource's place in the batch where its key goes ([`Cells::key`]).
pub struct Encoded {
    statements: Statements,
    resources: usize,
}

enum Statements {
    /// Statement texts and their values.
    Sqlite(Vec<(String, SqliteCells)>),
    /// `COPY` statements and their data.
    Postgres(Vec<(String, CopyText)>),
}

/// Encodes a batch of first versions of distinct resources, with their index rows, for a
/// database of `backend`.
pub fn encode(backend: Backend, batch: &[(StoredVersion, IndexRows)]) -> Encoded {
    let owners: Vec<(&str, i64, &IndexRows)> = batch
        .iter()
        .zip(0..)
        .map(|((v, rows), place)| (v.resource_type.as_str(), place, rows))
        .collect();
    let mut index = Batches::of(&owners);
    index.sort_by_search_key();
    let tables = tables(batch, &index);
    let statements = match backend {
        Backend::Sqlite => Statements::Sqlite(sqlite_statements(&tables)),
        Backend::Postgres => Statements::Postgres(copies(&tables)),
    };
    Encoded {
        statements,
        resources: batch.len(),
    }
}

/// Each table's rows in as many statements of [`SQLITE_ROWS`] rows as fit, then of the
/// smaller sizes.
fn sqlite_statements(tables: &[Table<'_>]) -> Vec<(String, SqliteCells)> {
    let mut statements = Vec::new();
    for table in tables {
        let mut start = 0;
        while start < table.len {
            let rows = SQLITE_ROWS
                .into_iter()
                .find(|&n| n <= table.len - start)
                .unwrap_or(1);
            let mut cells = SqliteCells::default();
            for i in start..start + rows {
                (table.row)(i, &mut cells);
            }
            statements.push((sqlite_insert(table, rows), cells));
            start += rows;
        }
    }
    statements
}

/// One transaction (`BEGIN IMMEDIATE`: the write lock first); an error rolls it back
/// before it is answered ([`finish`]). The batch's `resources` take the keys after the
/// highest one, which no other writer can take while this transaction holds the lock.
/// Answers SQLite's `data_version` at its start, which moves when other connections
/// have committed.
async fn write_sqlite(
    conn: &mut SqliteConnection,
    resources: usize,
    statements: Vec<(String, SqliteCells)>,
) -> sqlx::Result<i64> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let written = async {
        let data_version = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut *tx)
            .await?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(rk), 0) FROM fhir_resources")
            .fetch_one(&mut *tx)
            .await?;
        let keys: Vec<i64> = (1..=resources as i64).map(|n| last + n).collect();
        for (sql, cells) in statements {
            sqlx::query_with(&sql, cells.arguments(&keys))
                .execute(&mut *tx)
                .await?;
        }
        Ok(data_version)
    }
    .await;
    finish(tx, written).await
}

/// Commits `tx` when `written` succeeded, else rolls it back at once; answers `written`.
/// At once: sqlx sends the rollback of a dropped PostgreSQL transaction only with the
/// connection's next statement, and until then the rows the batch inserted stay locked,
/// so the updates that follow a batch found existing would wait for the idle loader.
async fn finish<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    written: sqlx::Result<T>,
) -> sqlx::Result<T> {
    match written {
        Ok(value) => tx.commit().await.map(|()| value),
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "cannot roll back an import batch");
            }
            Err(e)
        }
    }
}

/// When a SQLite import leaves the write lock free after a batch, so that the writes of
/// other processes (a serving server's) are not starved. SQLite has no queue for its
/// write lock: a waiting writer's busy handler retries after sleeps of 1, 2, 5, 10, 15,
/// 20, 25, 25, 25, 50, 50 ms and then every 100 ms, so it finds the lock free only if it
/// stays free for as long as the sleep it is in. (Writers of this process queue for the
/// write turn instead; a lone import pauses as the turn does: see [`super::turn`].)
///
/// While another process has committed in the last [`COURTESY_FOR`] (`data_version`
/// moved while no other turn of this process was taken), each batch is followed by a
/// pause as long as the sleep a writer that began waiting at the batch's start is in at
/// its end: such a writer gets in after at most one batch.
#[derive(Default)]
struct Courtesy {
    data_version: Option<i64>,
    turn: Option<u64>,
    others_seen: Option<Instant>,
}

/// How long after another process's commit each batch is followed by a pause.
const COURTESY_FOR: Duration = Duration::from_secs(10);

impl Courtesy {
    /// The pause after a batch that took `batch`, written in turn number `turn` (0 on
    /// PostgreSQL), that found `data_version` at its start.
    fn after(&mut self, data_version: i64, turn: u64, batch: Duration) -> Duration {
        let now = Instant::now();
        let turns_between = self.turn.map(|last| turn.saturating_sub(last + 1));
        if self.data_version.is_some_and(|v| v != data_version) && turns_between == Some(0) {
            self.others_seen = Some(now);
        }
        self.data_version = Some(data_version);
        self.turn = Some(turn);
        if self.others_recently(now) {
            return busy_sleep_at(batch) + Duration::from_millis(2);
        }
        Duration::ZERO
    }

    /// Whether another process committed in the [`COURTESY_FOR`] before `now`.
    fn others_recently(&self, now: Instant) -> bool {
        self.others_seen.is_some_and(|t| now - t < COURTESY_FOR)
    }
}

/// The sleep SQLite's default busy handler is in after waiting `waited`.
fn busy_sleep_at(waited: Duration) -> Duration {
    const SLEEPS_MS: [u64; 11] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50];
    let mut slept = Duration::ZERO;
    for ms in SLEEPS_MS {
        slept += Duration::from_millis(ms);
        if slept >= waited {
            return Duration::from_millis(ms);
        }
    }
    Duration::from_millis(100)
}

/// `INSERT OR FAIL INTO table (columns) VALUES (?, …), …` for `rows` rows. `OR FAIL`: a
/// conflict stops the statement where it is, and the transaction is rolled back anyway,
/// so SQLite keeps no statement journal to undo the statement's earlier rows.
fn sqlite_insert(table: &Table<'_>, rows: usize) -> String {
    let row = format!("({})", vec!["?"; table.columns.len()].join(", "));
    format!(
        "INSERT OR FAIL INTO {} ({}) VALUES {}",
        table.name,
        table.columns.join(", "),
        vec![row; rows].join(", ")
    )
}

/// A `COPY ... FROM STDIN` per table that has rows, with its data.
fn copies(tables: &[Table<'_>]) -> Vec<(String, CopyText)> {
    let mut copies = Vec::new();
    for table in tables.iter().filter(|t| t.len > 0) {
        let mut data = CopyText::default();
        for i in 0..table.len {
            (table.row)(i, &mut data);
            data.end_row();
        }
        let statement = format!(
            "COPY {} ({}) FROM STDIN",
            table.name,
            table.columns.join(", ")
        );
        copies.push((statement, data));
    }
    copies
}

/// One transaction of the `COPY`s, the batch's `resources` keyed by values of the keys'
/// identity sequence; an error rolls it back at once ([`finish`]).
async fn write_postgres(
    conn: &mut PgConnection,
    resources: usize,
    copies: Vec<(String, CopyText)>,
) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    let written = async {
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('fhir_resources', 'rk')::regclass) \
             FROM generate_series(1, $1)",
        )
        .bind(resources as i64)
        .fetch_all(&mut *tx)
        .await?;
        for (statement, data) in copies {
            let mut copy = tx.copy_in_raw(&statement).await?;
            copy.send(data.with_keys(&keys)).await?;
            copy.finish().await?;
        }
        Ok(())
    }
    .await;
    finish(tx, written).await
}

/// Where the values of rows go, one after the other, each row's in column order.
trait Cells {
    /// The key of the batch's resource at `place`, known when the batch is written.
    fn key(&mut self, place: i64);
    fn text(&mut self, value: &str);
    fn opt(&mut self, value: Option<&str>);
    fn int(&mut self, value: i64);
    fn real(&mut self, value: f64);
}

/// The rows of one table of a batch: its name, its columns, and how row `i` is written.
struct Table<'a> {
    name: &'static str,
    columns: &'static [&'static str],
    len: usize,
    #[allow(clippy::type_complexity)]
    row: Box<dyn Fn(usize, &mut dyn Cells) + 'a>,
}

/// History, current rows, then the index tables.
fn tables<'a>(batch: &'a [(StoredVersion, IndexRows)], index: &'a Batches<'a>) -> Vec<Table<'a>> {
    let history = Table {
        name: "fhir_history",
        columns: HISTORY_COLUMNS,
        len: batch.len(),
        row: Box::new(move |i, c| {
            let v = &batch[i].0;
            c.text(&v.resource_type);
            c.text(&v.id);
            c.int(v.version_id);
            c.int(v.last_updated);
            c.text(&v.method);
            c.int(i64::from(v.deleted));
            c.text(&v.content);
        }),
    };
    let current = Table {
        name: "fhir_resources",
        columns: KEYED_CURRENT_COLUMNS,
        len: batch.len(),
        row: Box::new(move |i, c| {
            let v = &batch[i].0;
            c.key(i as i64);
            c.text(&v.resource_type);
            c.text(&v.id);
            c.int(v.version_id);
            c.int(v.last_updated);
            c.int(i64::from(v.deleted));
            c.text(&v.content);
        }),
    };
    let mut tables = vec![history, current];
    tables.extend(index_tables(index));
    tables
}

/// `index_table!(table, rows, [columns], |r, c| { writes of r's own columns })`: the key
/// columns (resource_type, rk, param) come first.
macro_rules! index_table {
    ($name:literal, $rows:expr, [$($column:literal),+], |$r:ident, $c:ident| $body:block) => {{
        let rows = &$rows;
        Table {
            name: $name,
            columns: &["resource_type", "rk", "param", $($column),+],
            len: rows.len(),
            row: Box::new(move |i, $c| {
                let ((resource_type, place), param, $r) = &rows[i];
                $c.text(resource_type);
                $c.key(*place);
                $c.text(param.as_ref());
                $body
            }),
        }
    }};
}

fn index_tables<'a>(b: &'a Batches<'a>) -> Vec<Table<'a>> {
    vec![
        index_table!(
            "fhir_idx_string",
            b.strings,
            ["normalized", "exact", "part"],
            |r, c| {
                c.text(&r.normalized);
                c.text(&r.exact);
                c.opt(r.part);
            }
        ),
        index_table!(
            "fhir_idx_token",
            b.tokens,
            ["system", "code", "text"],
            |r, c| {
                c.opt(r.system.as_deref());
                c.opt(r.code.as_deref());
                c.opt(r.text.as_deref());
            }
        ),
        index_table!(
            "fhir_idx_reference",
            b.references,
            ["target_type", "target_id", "version", "url"],
            |r, c| {
                c.opt(r.target_type.map(|t| t.as_str()));
                c.opt(r.target_id.as_deref());
                c.opt(r.version.as_deref());
                c.opt(r.url.as_deref());
            }
        ),
        index_table!("fhir_idx_date", b.dates, ["low", "high"], |r, c| {
            c.int(r.low);
            c.int(r.high);
        }),
        index_table!("fhir_idx_number", b.numbers, ["value"], |r, c| {
            c.real(r.value);
        }),
        index_table!(
            "fhir_idx_quantity",
            b.quantities,
            ["value", "system", "code", "unit"],
            |r, c| {
                c.real(r.value);
                c.opt(r.system.as_deref());
                c.opt(r.code.as_deref());
                c.opt(r.unit.as_deref());
            }
        ),
        index_table!("fhir_idx_uri", b.uris, ["value"], |r, c| {
            c.text(&r.value);
        }),
    ]
}

/// Values bound to a SQLite statement, in order (copies: the statement outlives the batch).
#[derive(Default)]
struct SqliteCells(Vec<SqliteCell>);

enum SqliteCell {
    Text(Option<String>),
    Int(i64),
    Real(f64),
    /// The key of the batch's resource at this place.
    Key(i64),
}

impl SqliteCells {
    /// The values, each resource's key taken from `keys` by its place in the batch.
    fn arguments(self, keys: &[i64]) -> SqliteArguments<'static> {
        let mut arguments = SqliteArguments::default();
        for cell in self.0 {
            // Text, integers and reals always encode.
            let _ = match cell {
                SqliteCell::Text(v) => arguments.add(v),
                SqliteCell::Int(v) => arguments.add(v),
                SqliteCell::Real(v) => arguments.add(v),
                SqliteCell::Key(place) => arguments.add(key_at(keys, place)),
            };
        }
        arguments
    }
}

/// The key of the resource at `place` of a batch: there are as many keys as resources.
fn key_at(keys: &[i64], place: i64) -> i64 {
    usize::try_from(place)
        .ok()
        .and_then(|p| keys.get(p))
        .copied()
        .unwrap_or_default()
}

impl Cells for SqliteCells {
    fn key(&mut self, place: i64) {
        self.0.push(SqliteCell::Key(place));
    }
    fn text(&mut self, value: &str) {
        self.0.push(SqliteCell::Text(Some(value.to_owned())));
    }
    fn opt(&mut self, value: Option<&str>) {
        self.0.push(SqliteCell::Text(value.map(str::to_owned)));
    }
    fn int(&mut self, value: i64) {
        self.0.push(SqliteCell::Int(value));
    }
    fn real(&mut self, value: f64) {
        self.0.push(SqliteCell::Real(value));
    }
}

/// Rows in PostgreSQL's `COPY` text format: values separated by tabs, rows ended by
/// newlines, `\N` for NULL, and backslash, newline, carriage return and tab escaped with
/// a backslash. Resources' keys are left out of `data` and written in by
/// [`CopyText::with_keys`].
#[derive(Default)]
struct CopyText {
    data: Vec<u8>,
    /// Where in `data` a key goes, and the place of its resource in the batch.
    keys: Vec<(usize, i64)>,
    /// Whether a value of the current row has been written.
    in_row: bool,
}

impl CopyText {
    fn separate(&mut self) {
        if self.in_row {
            self.data.push(b'\t');
        }
        self.in_row = true;
    }

    fn end_row(&mut self) {
        self.data.push(b'\n');
        self.in_row = false;
    }

    /// The data with each resource's key taken from `keys` by its place in the batch.
    fn with_keys(self, keys: &[i64]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(self.data.len() + self.keys.len() * 8);
        let mut start = 0;
        for (at, place) in self.keys {
            out.extend_from_slice(&self.data[start..at]);
            let _ = write!(out, "{}", key_at(keys, place));
            start = at;
        }
        out.extend_from_slice(&self.data[start..]);
        out
    }
}

impl Cells for CopyText {
    fn key(&mut self, place: i64) {
        self.separate();
        self.keys.push((self.data.len(), place));
    }

    fn text(&mut self, value: &str) {
        self.separate();
        let bytes = value.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                _ => continue,
            };
            self.data.extend_from_slice(&bytes[start..i]);
            self.data.extend_from_slice(escaped);
            start = i + 1;
        }
        self.data.extend_from_slice(&bytes[start..]);
    }

    fn opt(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => {
                self.separate();
                self.data.extend_from_slice(b"\\N");
            }
        }
    }

    fn int(&mut self, value: i64) {
        use std::io::Write;
        self.separate();
        let _ = write!(self.data, "{value}");
    }

    fn real(&mut self, value: f64) {
        use std::io::Write;
        self.separate();
        let _ = write!(self.data, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_and_separates() {
        let mut out = CopyText::default();
        out.text("a\\b\tc\nd\re");
        out.opt(None);
        out.int(-42);
        out.real(0.5);
        out.end_row();
        out.text("");
        out.opt(Some("\"é\""));
        out.end_row();
        out.key(1);
        out.int(3);
        out.end_row();
        assert_eq!(
            String::from_utf8(out.with_keys(&[7, 12])).unwrap(),
            "a\\\\b\\tc\\nd\\re\t\\N\t-42\t0.5\n\t\"é\"\n12\t3\n"
        );
    }

    #[test]
    fn pauses_follow_the_busy_handler_and_other_writers() {
        let ms = Duration::from_millis;
        assert_eq!(busy_sleep_at(ms(0)), ms(1));
        assert_eq!(busy_sleep_at(ms(100)), ms(25));
        assert_eq!(busy_sleep_at(ms(150)), ms(50));
        assert_eq!(busy_sleep_at(ms(229)), ms(100));
        let mut courtesy = Courtesy::default();
        // Alone: no pause.
        assert_eq!(courtesy.after(7, 1, ms(100)), Duration::ZERO);
        assert_eq!(courtesy.after(7, 2, ms(100)), Duration::ZERO);
        // A writer of this process took a turn in between: it queued, no pause.
        assert_eq!(courtesy.after(8, 4, ms(100)), Duration::ZERO);
        assert_eq!(courtesy.after(8, 5, ms(100)), Duration::ZERO);
        assert!(!courtesy.others_recently(Instant::now()));
        // Another process committed: a pause after every batch.
        assert_eq!(courtesy.after(9, 6, ms(100)), ms(27));
        assert_eq!(courtesy.after(9, 7, ms(150)), ms(52));
        assert!(courtesy.others_recently(Instant::now()));
        assert!(!courtesy.others_recently(Instant::now() + COURTESY_FOR));
    }

    #[test]
    fn sqlite_statements_have_one_mark_per_value() {
        let table = Table {
            name: "t",
            columns: &["a", "b"],
            len: 3,
            row: Box::new(|_, _| {}),
        };
        assert_eq!(
            sqlite_insert(&table, 2),
            "INSERT OR FAIL INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
    }
}
