//! Reads on SQLite answered on the calling thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own: every statement is a
//! message to that thread and an answer back, two thread switches. For a read of one row
//! from the page cache (a few microseconds of SQLite's time), those switches were most of
//! the cost: half the samples of a profile of authorized reads were the kernel switching
//! threads. So the hottest reads (the current version of a resource) run here instead, on
//! connections of rusqlite, a synchronous driver over the same SQLite library, called on
//! the request's own thread; so do the reads of the revisions (`crate::freshness`). A read of WAL mode never waits for a writer, so it does not
//! hold up the thread; any error (a busy database, a schema this code does not expect)
//! sends the caller back to the pooled path, which reports it as usual.
//!
//! The read connections are `query_only`; each sees every commit made before its
//! statement began, as a pooled connection does. One more connection writes the groups of
//! [`super::group`]: token records and audit events (`super::records`) and plain creates
//! (`super::fhir_inline`), as single-row inserts under the process's write turn, which the
//! caller holds, each a call into SQLite rather than a message to a worker thread. Being
//! the one connection those writes go through, its page cache stays warm from one group
//! to the next; a thread of its own checkpoints what it commits ([`Checkpointer`]). Every
//! other write stays with the pool ([`Store::begin`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::Revisions;
use super::fhir::StoredVersion;
use super::rights::REVISIONS;

/// Connections kept for reuse. A connection is taken for one statement and given back,
/// so no more are open at once than threads reading at once (the runtime's workers).
const KEPT: usize = 8;

/// Set on every connection: see `SQLITE_PRAGMAS` in `store/mod.rs` for the cache size.
/// No busy timeout: a read that would wait goes back to the pool, which waits without
/// holding a thread of the runtime.
const PRAGMAS: &str = "PRAGMA query_only = ON; PRAGMA cache_size = -512; PRAGMA busy_timeout = 0;";

const CURRENT: &str = "SELECT r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, \
     r.content, h.method FROM fhir_resources r JOIN fhir_history h \
     ON h.resource_type = r.resource_type AND h.id = r.id AND h.version_id = r.version_id \
     WHERE r.resource_type = ?1 AND r.id = ?2";

/// The writer's settings: the pool's durability (`synchronous = NORMAL` in WAL, see
/// `SQLITE_PRAGMAS`), and no busy timeout: a write that would wait for another process
/// goes back to the pool, which waits without holding a thread of the runtime. Its page
/// cache is the pool's 512 KiB: with 16 MiB, creates under load ran at 0.68-0.71x the rate
/// (`bench/peers/run --scenarios create`), for 3-5 % more transaction Bundles.
const WRITER_PRAGMAS: &str =
    "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -512; PRAGMA busy_timeout = 0;";

/// The least time between two checkpoints of the [`Checkpointer`].
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// The file's read connections and its writer.
#[derive(Debug)]
pub(super) struct InlineSqlite {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    writer: Mutex<Option<Writer>>,
}

/// The writer connection, and the thread that checkpoints what it writes.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    checkpoints: Option<Checkpointer>,
}

/// A thread of its own that copies the write-ahead log back into the database file
/// (`PRAGMA wal_checkpoint(PASSIVE)`, which waits for no reader or writer) after the
/// writer's commits, at most once per [`CHECKPOINT_EVERY`]. Without it SQLite runs the
/// checkpoint inside the commit that takes the log past 1,000 pages: a group of creates
/// writes 200-400 pages, so every third group also copied the pages back and waited for
/// two `fsync`s (4 ms groups took 15 ms), and the requests of the next group waited with
/// it. The writer connection runs with `wal_autocheckpoint = 0` only while this thread
/// exists. The thread ends when the writer is dropped (its channel closes).
///
/// A checkpoint beside a writer that keeps committing never copies the last frames, and
/// the log starts over from its beginning only once every frame is copied: on its own the
/// log grew by gigabytes in a minute of creates. So when the thread finds more than
/// [`FINISH_AT_FRAMES`] frames in the log, the writer, before its next write and in the
/// write turn (no other write of the process in between), checkpoints what is left itself:
/// little, since the thread copied the rest, and that write starts the log over.
#[derive(Debug)]
struct Checkpointer {
    wake: SyncSender<()>,
    /// Frames in the log at the thread's last checkpoint; zeroed when the writer finishes.
    log_frames: Arc<AtomicI64>,
}

/// Frames of log (of 4 KiB pages) past which the writer finishes a checkpoint itself.
const FINISH_AT_FRAMES: i64 = 8192;

impl Checkpointer {
    fn start(path: &std::path::Path) -> std::io::Result<Checkpointer> {
        // One pending wake is enough: a checkpoint copies everything committed before it.
        let (wake, woken) = sync_channel::<()>(1);
        let log_frames = Arc::new(AtomicI64::new(0));
        let (path, seen) = (path.to_owned(), log_frames.clone());
        std::thread::Builder::new()
            .name("hestia-sqlite-checkpoint".into())
            .spawn(move || {
                let mut conn = None;
                while woken.recv().is_ok() {
                    if conn.is_none() {
                        conn = open(&path, CHECKPOINTER_PRAGMAS)
                            .inspect_err(|e| tracing::debug!(error = %e, "no checkpoint connection"))
                            .ok();
                    }
                    if let Some(c) = &conn {
                        match checkpoint(c) {
                            Ok(frames) => seen.store(frames, Ordering::Relaxed),
                            Err(e) => {
                                tracing::debug!(error = %e, "checkpoint failed; the next one retries");
                                conn = None;
                            }
                        }
                    }
                    std::thread::sleep(CHECKPOINT_EVERY);
                }
            })?;
        Ok(Checkpointer { wake, log_frames })
    }

    /// After a commit of the writer: asks the thread for a checkpoint.
    fn after_commit(&self) {
        let _ = self.wake.try_send(());
    }

    /// Before a write of `writer` (in the write turn): when the log has grown past
    /// [`FINISH_AT_FRAMES`], finishes a checkpoint on `writer` itself, so that this write
    /// starts the log over. Here rather than after the commit before: the thread has had
    /// the time between the two writes to copy that commit's frames (a transaction Bundle
    /// of 1,000 resources commits thousands), which the request that wrote them would
    /// otherwise wait for.
    fn before_write(&self, writer: &Connection) {
        if self.log_frames.load(Ordering::Relaxed) < FINISH_AT_FRAMES {
            return;
        }
        match checkpoint(writer) {
            Ok(_) => self.log_frames.store(0, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "the writer's checkpoint failed"),
        }
    }
}

/// A passive checkpoint on `conn`; the number of frames in the log.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |row| row.get(1))
}

/// The checkpoint connection's settings: it reads nothing and writes no transaction.
const CHECKPOINTER_PRAGMAS: &str = "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 0;";

impl InlineSqlite {
    /// Reads of the database at `url` (as prepared for sqlx: `sqlite://PATH?QUERY`), or
    /// `None` for a database only sqlx's own connections can see (in memory).
    pub(super) fn of_url(url: &str) -> Option<InlineSqlite> {
        let (path, query) = super::sqlite_path_and_query(url);
        if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
            return None;
        }
        Some(InlineSqlite {
            path: PathBuf::from(path),
            idle: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
        })
    }

    /// The current version of `resource_type/id` (deleted or not), or `None` when this
    /// path cannot answer and the pooled one must.
    pub(super) fn current(&self, resource_type: &str, id: &str) -> Option<Option<StoredVersion>> {
        self.with(|conn| {
            conn.prepare_cached(CURRENT)?
                .query_row((resource_type, id), |row| {
                    Ok(StoredVersion {
                        resource_type: row.get(0)?,
                        id: row.get(1)?,
                        version_id: row.get(2)?,
                        last_updated: row.get(3)?,
                        deleted: row.get::<_, i64>(4)? != 0,
                        content: row.get(5)?,
                        method: row.get(6)?,
                    })
                })
                .optional()
        })
    }

    /// The revisions of rights, revocations, keys, clients and resources
    /// ([`Store::revisions`]), or
    /// `None` when the pooled path must answer.
    pub(super) fn revisions(&self) -> Option<Revisions> {
        self.with(|conn| {
            conn.prepare_cached(REVISIONS)?.query_row((), |row| {
                Ok(Revisions {
                    rights: row.get(0)?,
                    revocations: row.get(1)?,
                    keys: row.get(2)?,
                    clients: row.get(3)?,
                    resources: row.get(4)?,
                })
            })
        })
    }

    /// Runs `read` on an idle connection (or a new one) and keeps the connection; `None`
    /// when it fails, after logging why at debug level.
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match taken {
            Some(conn) => conn,
            None => match open(&self.path, PRAGMAS) {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "no inline SQLite read; the pool answers");
                    return None;
                }
            },
        };
        let answer = read(&conn);
        if let Err(e) = &answer {
            tracing::debug!(error = %e, "inline SQLite read failed; the pool answers");
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < KEPT {
            idle.push(conn);
        }
        answer.ok()
    }

    /// Runs `write` in a transaction of the writer connection (`BEGIN IMMEDIATE`) and
    /// commits it; `None` when it fails, rolled back, after logging why at debug level.
    /// The caller holds the process's write turn.
    pub(super) fn write<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Option<T> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer.is_none() {
            match self.open_writer() {
                Ok(opened) => *writer = Some(opened),
                Err(e) => {
                    tracing::debug!(error = %e, "no inline SQLite writer; the pool writes");
                    return None;
                }
            }
        }
        let Writer { conn, checkpoints } = writer.as_mut()?;
        if let Some(c) = checkpoints {
            c.before_write(conn);
        }
        let written = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .and_then(|tx| {
                let answer = write(&tx)?;
                tx.commit()?;
                Ok(answer)
            });
        match &written {
            Ok(_) => {
                if let Some(c) = checkpoints {
                    c.after_commit();
                }
            }
            Err(e) => tracing::debug!(error = %e, "inline SQLite write failed; the pool writes"),
        }
        written.ok()
    }

    fn open_writer(&self) -> rusqlite::Result<Writer> {
        let conn = open(&self.path, WRITER_PRAGMAS)?;
        let checkpoints = match Checkpointer::start(&self.path) {
            Ok(c) => {
                conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; the writer's commits checkpoint");
                None
            }
        };
        Ok(Writer { conn, checkpoints })
    }
}

/// A connection to the file at `path` with `pragmas` set. No mutex of SQLite's own: a
/// connection is used by one thread at a time.
fn open(path: &std::path::Path, pragmas: &str) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch(pragmas)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn patient(id: &str, version_id: i64) -> (StoredVersion, crate::fhir::search::IndexRows) {
        let resource = serde_json::json!({"resourceType": "Patient", "id": id});
        let index = crate::fhir::search::extract(&resource).unwrap();
        let version = StoredVersion {
            resource_type: "Patient".into(),
            id: id.into(),
            version_id,
            last_updated: 1_700_000_000_000,
            deleted: false,
            content: resource.to_string(),
            method: "POST".into(),
        };
        (version, index)
    }

    #[test]
    fn a_database_in_memory_has_no_inline_reads() {
        assert!(InlineSqlite::of_url("sqlite::memory:").is_none());
        assert!(InlineSqlite::of_url("sqlite://x.db?mode=memory&cache=shared").is_none());
        assert!(InlineSqlite::of_url("sqlite://data/hestia.db?mode=rwc").is_some());
    }

    #[tokio::test]
    async fn inline_reads_answer_what_the_pool_committed_and_fall_back_when_they_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("h.db").display());
        let store = Store::open(&url).await.unwrap();
        let inline = store.inline.clone().expect("a file database reads inline");

        assert_eq!(inline.current("Patient", "a"), Some(None));
        let (first, index) = patient("a", 1);
        let written = store.create_grouped(first, index).await.unwrap();
        // The connection kept from the read before sees the commit made after it.
        assert_eq!(inline.current("Patient", "a"), Some(Some(written.clone())));
        assert_eq!(
            store.fhir_current("Patient", "a").await.unwrap(),
            Some(written)
        );
        assert!(
            inline.idle.lock().unwrap().len() == 1,
            "the connection is kept"
        );

        let row = sqlx::query(REVISIONS)
            .fetch_one(store.pool())
            .await
            .unwrap();
        use sqlx::Row;
        let pooled = Revisions {
            rights: row.get(0),
            revocations: row.get(1),
            keys: row.get(2),
            clients: row.get(3),
            resources: row.get(4),
        };
        assert_eq!(inline.revisions(), Some(pooled));

        // A file that cannot be opened: no answer here, the pool's path answers.
        let gone = InlineSqlite::of_url("sqlite:///nonexistent-dir/h.db").unwrap();
        assert_eq!(gone.current("Patient", "a"), None);
    }

    #[tokio::test]
    async fn a_thread_of_its_own_checkpoints_the_writers_commits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.db");
        let store = Store::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let inline = store.inline.clone().expect("a file database writes inline");
        let before = std::fs::metadata(&file).unwrap().len();
        // About 150 pages of log: below the 1,000 at which a commit checkpoints by itself.
        let written = inline.write(|tx| {
            let mut insert = tx.prepare(
                "INSERT INTO oauth_access_tokens (jti, grant_id, client_id, expires_at) \
                 VALUES (?1, 'g', 'c', 4000000000)",
            )?;
            for i in 0..5000 {
                insert.execute([format!("token-{i:05}")])?;
            }
            Ok(())
        });
        assert_eq!(written, Some(()));
        let autocheckpoint: i64 = {
            let writer = inline.writer.lock().unwrap();
            let writer = writer.as_ref().unwrap();
            assert!(writer.checkpoints.is_some(), "the checkpoint thread runs");
            writer
                .conn
                .query_row("PRAGMA wal_autocheckpoint", (), |r| r.get(0))
                .unwrap()
        };
        assert_eq!(autocheckpoint, 0, "the writer's commits do not checkpoint");
        // The rows reach the database file itself, copied from the log by the thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&file).unwrap().len() < before + 200_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint: the file is still {} bytes",
                std::fs::metadata(&file).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Inserts a token record named `jti` in `tx`.
    fn insert(tx: &rusqlite::Transaction<'_>, jti: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO oauth_access_tokens (jti, grant_id, client_id, expires_at) \
             VALUES (?1, 'g', 'c', 4000000000)",
            [jti],
        )
    }

    /// Past FINISH_AT_FRAMES frames of log, the next write starts the log over: the writer
    /// finishes the checkpoint before it writes.
    #[tokio::test]
    async fn the_write_after_a_long_log_starts_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.db");
        let store = Store::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let inline = store.inline.clone().expect("a file database writes inline");
        // 40 rows of 1 MB: over 10,000 pages of log in one commit.
        let big = inline.write(|tx| {
            for i in 0..40 {
                insert(tx, &format!("{i:02}{}", "x".repeat(1 << 20)))?;
            }
            Ok(())
        });
        assert_eq!(big, Some(()));
        let frames = |inline: &InlineSqlite| {
            let writer = inline.writer.lock().unwrap();
            let c = writer.as_ref().unwrap().checkpoints.as_ref().unwrap();
            c.log_frames.load(Ordering::Relaxed)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while frames(&inline) < FINISH_AT_FRAMES {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread saw no long log"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(inline.write(|tx| insert(tx, "small")), Some(1));
        assert_eq!(frames(&inline), 0, "the writer finished the checkpoint");
        let log: i64 = rusqlite::Connection::open(&file)
            .unwrap()
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |row| row.get(1))
            .unwrap();
        assert!(
            log < 100,
            "the small write started the log over: {log} frames"
        );
    }

    #[tokio::test]
    async fn the_writer_commits_for_the_pool_to_read_and_rolls_back_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("h.db").display());
        let store = Store::open(&url).await.unwrap();
        let inline = store.inline.clone().expect("a file database writes inline");
        assert_eq!(inline.write(|tx| insert(tx, "one")), Some(1));
        // A write that fails part-way leaves nothing: "two" is rolled back with it.
        assert_eq!(
            inline.write(|tx| {
                insert(tx, "two")?;
                insert(tx, "one")
            }),
            None
        );
        let jtis: Vec<String> = sqlx::query_scalar("SELECT jti FROM oauth_access_tokens")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(jtis, ["one"]);
        // The writer is still usable after the failure, and the store's own path to it
        // writes records the pool reads.
        assert_eq!(inline.write(|tx| insert(tx, "three")), Some(1));
        let record = crate::store::IssuedToken {
            jti: "four".into(),
            grant_id: "g4".into(),
            client_id: "c".into(),
            expires_at: 4_000_000_000,
            new_grant: Some((None, 1_700_000_000)),
        };
        store.record_issued(record, None).await.unwrap();
        let found = store.access_token_record("four").await.unwrap().unwrap();
        assert_eq!(found.grant_id, "g4");
    }
}
