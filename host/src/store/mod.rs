//! The database: one sqlx `AnyPool` over SQLite (embedded default) or PostgreSQL.
//!
//! Query texts are written once, with `$1` placeholders and portable types (TEXT, BIGINT
//! Unix seconds), so both backends run the same code. Where a dialect differs, code asks
//! [`Store::backend`]. Migrations live in `host/migrations/{sqlite,postgres}` with the same
//! version numbers; each issue that adds state adds a numbered migration to both.

pub mod bulk;
mod clients;
mod console;
pub mod fhir;
mod fhir_inline;
mod group;
mod handle;
pub mod import;
mod inline;
mod issuer;
mod oauth;
mod pg_creates;
mod records;
mod resource_cache;
mod rights;
pub mod search;
pub mod tables;
mod turn;
mod users;
pub mod write_many;

pub use clients::{
    Client, ClientKind, NewClient, NewClientSecret, constant_time_eq, hash_secret, secret_matches,
};
pub use console::{
    AdminSession, AuditEvent, AuditFilter, GrantRow, NewAuditEvent, RegistrationTokenRow,
    SessionRow,
};
pub use handle::{Conn, Held, WriteTx};
pub use issuer::IssuerRegistration;
pub use oauth::{
    AccessTokenRecord, AuthRequestRow, CodeRow, IssuedToken, KeyRow, PURGE_BATCH, Purged,
    RefreshRow, Revocation,
};
pub use resource_cache::CHECKED_WITHIN;
pub use rights::{
    Bindings, PolicyChange, Revisions, StoredPolicy, UserUpdate, UserWithRoles, checked_roles,
};
pub use users::{NewUser, User};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

/// Which database engine the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database is busy: {0}")]
    Busy(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: whose turn it is to write ([`turn`]). SQLite has one writer at a time;
    /// a transaction that has read and then finds another connection's write in its way
    /// fails at once with "database is locked" (its snapshot is stale, so the busy timeout
    /// cannot help), and plain lock waits back off in sleeps of up to 100 ms, losing every
    /// race to a writer that takes the lock again at once. Every write of the process takes
    /// the turn first ([`Store::begin`], [`Store::autocommit`], the import's loader); the
    /// writes of other processes (`hestia user add` while `serve` runs) meet the busy
    /// timeout and the turn's pauses.
    write_turn: Option<turn::WriteTurn>,
    /// What decides when to refresh the planner's statistics ([`Store::analyze`]).
    statistics: Arc<Statistics>,
    /// Commits of this process that revoked tokens, changed rights or the signing keys
    /// ([`Store::local_changes`]).
    changes: Arc<std::sync::atomic::AtomicU64>,
    /// Creates, token records and audit events waiting to be committed together
    /// ([`group`]).
    groups: Arc<AllGroups>,
    /// Connections kept out of the pool between uses ([`KeptConnection`]).
    kept: Arc<Kept>,
    /// SQLite on a file: the reads (and the records groups) done on the caller's thread
    /// ([`inline`]).
    inline: Option<Arc<inline::InlineSqlite>>,
    /// Current versions kept between reads ([`resource_cache`]).
    resources: Arc<resource_cache::ResourceCache>,
}

/// The group commits of a store, one queue per kind of write ([`group`]).
#[derive(Debug)]
struct AllGroups {
    creates: group::Groups<group::Create>,
    records: group::Groups<records::Record>,
}

/// A pooled connection kept out of the pool between the uses of one writer or reader that
/// runs a statement at a time (PostgreSQL's records groups, the reads of the revisions):
/// giving it back after each use would cost a round trip, since sqlx pings every connection
/// it takes back. Like the pool's, it is pinged before a use that follows
/// [`PING_IF_IDLE_FOR`] without one, and replaced when the ping fails; it goes back to the
/// pool after an error, and before the pool closes.
#[derive(Debug, Default)]
pub(super) struct KeptConnection(tokio::sync::Mutex<Option<Slot>>);

/// The kept connection, and when it was last used.
#[derive(Debug)]
struct Slot {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    used: std::time::Instant,
}

impl KeptConnection {
    /// Runs `use_it` on the kept connection, taking one from `pool` when none is kept or
    /// the kept one, idle, fails its ping.
    pub(super) async fn with<T>(
        &self,
        pool: &AnyPool,
        use_it: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        let mut kept = self.0.lock().await;
        if let Some(k) = kept.as_mut()
            && k.used.elapsed() >= PING_IF_IDLE_FOR
            && sqlx::Connection::ping(&mut *k.conn).await.is_err()
        {
            *kept = None;
        }
        let k = match kept.as_mut() {
            Some(k) => k,
            None => kept.insert(Slot {
                conn: pool.acquire().await?,
                used: std::time::Instant::now(),
            }),
        };
        let used = use_it(&mut *k.conn).await;
        k.used = std::time::Instant::now();
        if used.is_err() {
            *kept = None;
        }
        Ok(used?)
    }

    /// Gives the connection back to the pool.
    async fn release(&self) {
        self.0.lock().await.take();
    }
}

/// The connections a store keeps out of its pool ([`KeptConnection`]).
#[derive(Debug, Default)]
struct Kept {
    records: KeptConnection,
    revisions: KeptConnection,
}

impl AllGroups {
    /// One group of each kind at a time, except creates on PostgreSQL: two, since a `perf`
    /// of the create load there had the server process writing a group busy for most of
    /// each group's time and the machine idle for 39 % of it (1.10-1.23x the creates).
    /// Token records stay one group at a time: two made PostgreSQL's tokens 0.88x as fast
    /// (`bench/peers/run --scenarios token`), the signatures needing the CPU.
    fn for_backend(backend: Backend) -> Self {
        let creates = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 2,
        };
        AllGroups {
            creates: group::Groups::new(creates),
            records: group::Groups::new(1),
        }
    }
}

/// Committed write transactions of this process, counted towards the next `ANALYZE`.
#[derive(Debug, Default)]
struct Statistics {
    writes: std::sync::atomic::AtomicU64,
}

/// A statement whose text depends on how many rows it writes or names. Only the one-row
/// form is kept prepared on the connection: every other count is another text, and sqlx
/// keeps up to 100 prepared statements per connection, which the row counts of index
/// inserts alone fill (on SQLite, memory of the server process that grew for minutes).
/// `($1, $2, $3, $4), ($5, …)`: `rows` tuples of `width` placeholders, for multi-row
/// statements.
pub(super) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn rows_query(
    sql: &str,
    rows: usize,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(rows == 1)
}

/// Set on every SQLite connection of the pool. `cache_size = -512`: each connection keeps
/// 512 KiB of pages (SQLite's default is 2,000 KiB). A connection's cache is dropped
/// whenever another connection has written since its last read, which under a steady mix
/// of writes is most reads: the pages come again from the operating system's file cache
/// (microseconds each), and every refill allocates on the connection's thread. Eight
/// connections of 2 MB each kept growing their malloc arenas by fragments for as long as
/// a mixed load ran.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512;";

/// Seconds since the Unix epoch, the one time representation in the schema.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A pooled connection idle for this long is pinged before it is handed out (a connection
/// that fails the ping is closed and another one taken): one the server dropped while it
/// sat in the pool is not given to a request. One in use more recently is not: sqlx's
/// default pings before every acquire, a round trip to PostgreSQL (and on SQLite a hand-off
/// to the connection's worker thread) in front of each statement or transaction under
/// load. Connection pools such as HikariCP skip the check on the same grounds (their
/// bypass window is 500 ms).
const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);

impl Store {
    /// Opens (and for SQLite creates) the database. Does not migrate: see [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, None).await
    }

    /// [`Store::connect`]; on PostgreSQL every connection of the pool runs with
    /// `statement_timeout` set to `statement_timeout`, so that a statement whose request
    /// was given up on does not keep running. SQLite has no such setting (its busy
    /// timeout bounds lock waits).
    pub async fn connect_with(
        url: &str,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = if backend == Backend::Sqlite {
            prepare_sqlite_url(url)?
        } else {
            url.to_string()
        };
        let connect_err = |source| StoreError::Connect {
            url: redact(&url),
            source,
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect_err)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool_options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        let pool_options = if backend == Backend::Sqlite {
            pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets `hestia user add` write while `serve` reads and writes.
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
        } else if let Some(timeout) = statement_timeout {
            let set = format!("SET statement_timeout = {}", timeout.as_millis().max(1));
            pool_options.after_connect(move |conn, _meta| {
                let set = set.clone();
                Box::pin(async move {
                    conn.execute(set.as_str()).await?;
                    Ok(())
                })
            })
        } else {
            pool_options
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        Ok(Self {
            pool,
            backend,
            write_turn: (backend == Backend::Sqlite).then(Default::default),
            statistics: Default::default(),
            groups: Arc::new(AllGroups::for_backend(backend)),
            kept: Default::default(),
            changes: Default::default(),
            resources: Default::default(),
            inline: (backend == Backend::Sqlite)
                .then(|| inline::InlineSqlite::of_url(&url).map(Arc::new))
                .flatten(),
        })
    }

    /// How many commits of this process have revoked tokens, changed rights, the signing
    /// keys or the clients. A cache of what those commits change reads the database again
    /// when this moves, so that they take effect on this process's next request; other
    /// processes' commits it learns from the revisions (`rights_revision`,
    /// `revocation_revision`, `signing_keys_revision`, `clients_revision`).
    pub fn local_changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a committed revocation, change of rights, of the signing keys or of a client
    /// ([`Store::local_changes`]).
    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Brings the schema up to date; safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_to(None).await
    }

    /// Applies this build's migrations up to `version` (all of them with `None`).
    pub async fn migrate_to(&self, version: Option<i64>) -> Result<(), StoreError> {
        tables::migrator(self.backend, version)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Opens and migrates: what every command does first.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Answers when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        // The pool's close waits for every connection taken from it.
        self.kept.records.release().await;
        self.kept.revisions.release().await;
        self.pool.close().await;
    }
}

/// Creates the SQLite file's directory and asks sqlx to create the file.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let (path, query) = sqlite_path_and_query(url);
    let parent = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::DataDir {
            path: parent.display().to_string(),
            source,
        })?;
    }
    let mut query = query.to_string();
    if !query.split('&').any(|kv| kv.starts_with("mode=")) {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{query}"))
}

/// The file path and the query (`mode=…`, without the `?`) of a `sqlite:` URL.
fn sqlite_path_and_query(url: &str) -> (&str, &str) {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rest.split_once('?').unwrap_or((rest, ""))
}

/// Hides a password in a database URL before it is printed.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Maps a unique-constraint violation to a [`StoreError::Conflict`] naming `what`.
fn conflict_or(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Sql(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a/b.db"), "sqlite://a/b.db");
    }

    #[test]
    fn sqlite_url_gets_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("x.db");
        let url = prepare_sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert!(url.ends_with("?mode=rwc"), "{url}");
        assert!(dir.path().join("sub").is_dir());
        let url = prepare_sqlite_url("sqlite://x.db?mode=ro").unwrap();
        assert_eq!(url, "sqlite://x.db?mode=ro");
    }
}
