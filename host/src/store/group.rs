//! Group commit: writes that read nothing and conflict with nothing (plain creates under an
//! id the server chose, access-token records, audit events) wait while one group of their
//! kind is being written, and the next group writes them all in one transaction instead of
//! a transaction each. Each write is answered only after its group has committed, so every
//! acknowledged write is as durable as one written alone. On SQLite on a file a group is
//! written on the inline writer ([`super::inline`]: prepared single-row inserts on the
//! caller's thread, under one write turn, [`super::turn`]); on PostgreSQL as one statement
//! ([`super::pg_creates`], and the records' in [`super::records`]); on SQLite in memory as
//! multi-row statements through sqlx, one round trip per statement for the group.
//!
//! Hand-written: this is the store's own batching of its own statements, which no crate
//! offers over sqlx.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::fhir::{StoredVersion, VersionRows, fhir_write};
use super::write_many::fhir_write_many;
use super::{Store, StoreError};
use crate::fhir::search::IndexRows;

/// A kind of write that can be committed in groups.
pub(super) trait Grouped: Sized + Send + 'static {
    /// At most this many in one transaction; the rest wait for the next group.
    const MAX_GROUP: usize;
    /// What one is called in the log and in errors.
    const WHAT: &'static str;
    /// Writes all of `group` in one transaction.
    fn write_many(
        store: &Store,
        group: &[Self],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes `one` in a transaction of its own (a group of one, and each of a group that
    /// failed, so that each gets its own answer).
    fn write_one(store: &Store, one: &Self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The writes of one kind waiting for a group, and the permits of the groups being
/// written.
#[derive(Debug)]
pub(super) struct Groups<T> {
    waiting: Mutex<Vec<Waiting<T>>>,
    writing: tokio::sync::Semaphore,
}

impl<T> Groups<T> {
    /// Queues in which at most `in_flight` groups are written at once: one where the
    /// database has one writer (SQLite), more where each group's transaction has a server
    /// process of its own (PostgreSQL), so that one group's statements run while the next
    /// group is prepared and sent instead of after it.
    pub(super) fn new(in_flight: usize) -> Self {
        Groups {
            waiting: Mutex::new(Vec::new()),
            writing: tokio::sync::Semaphore::new(in_flight.max(1)),
        }
    }
}

/// A write waiting for its group: what to write and where to answer (with the write
/// itself, once committed).
#[derive(Debug)]
struct Waiting<T> {
    write: T,
    done: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Grouped> Groups<T> {
    /// Commits `write` together with the writes of its kind waiting at the time, and
    /// gives it back once committed.
    pub(super) async fn commit(&self, store: &Store, write: T) -> Result<T, StoreError> {
        let (done, mut answer) = oneshot::channel();
        lock(&self.waiting).push(Waiting { write, done });
        // Whoever holds a permit writes everything waiting, its own write among it unless an
        // earlier group took it.
        let writing = self.writing.acquire().await.map_err(|_| abandoned::<T>())?;
        match answer.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned::<T>()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let group = take_group::<T>(&self.waiting);
        if group.is_empty() {
            // Its own write is in a group still being written by a task whose caller went
            // away; that task answers it.
            drop(writing);
            return answer.await.unwrap_or_else(|_| Err(abandoned::<T>()));
        }
        // A task of its own, so that a caller that goes away (its client disconnected)
        // does not cut the group's transaction short for the others in it.
        let store = store.clone();
        let _ = tokio::spawn(async move { write_group(&store, group).await }).await;
        drop(writing);
        answer.await.unwrap_or_else(|_| Err(abandoned::<T>()))
    }
}

/// Writes `group` in one transaction and answers each write; when that fails, writes each
/// alone so that each gets its own answer.
async fn write_group<T: Grouped>(store: &Store, group: Vec<Waiting<T>>) {
    let (writes, answers): (Vec<T>, Vec<_>) = group.into_iter().map(|w| (w.write, w.done)).unzip();
    let written = if writes.len() == 1 {
        Err(None)
    } else {
        T::write_many(store, &writes).await.map_err(Some)
    };
    match written {
        Ok(()) => {
            for (write, done) in writes.into_iter().zip(answers) {
                let _ = done.send(Ok(write));
            }
        }
        Err(error) => {
            if let Some(error) = error {
                tracing::debug!(%error, writes = writes.len(), "a group of {} failed; writing each alone", T::WHAT);
            }
            for (write, done) in writes.into_iter().zip(answers) {
                let result = T::write_one(store, &write).await;
                let _ = done.send(result.map(|()| write));
            }
        }
    }
}

/// The writes waiting, oldest first, at most [`Grouped::MAX_GROUP`] of them.
fn take_group<T: Grouped>(waiting: &Mutex<Vec<Waiting<T>>>) -> Vec<Waiting<T>> {
    let mut waiting = lock(waiting);
    let taken = waiting.len().min(T::MAX_GROUP);
    let rest = waiting.split_off(taken);
    std::mem::replace(&mut *waiting, rest)
}

/// The queue's lock; a panic while it was held left a plain `Vec` behind, still usable.
fn lock<T>(waiting: &Mutex<Vec<Waiting<T>>>) -> std::sync::MutexGuard<'_, Vec<Waiting<T>>> {
    waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The group writing a write ended without answering it (its task panicked).
fn abandoned<T: Grouped>() -> StoreError {
    StoreError::Invalid(format!(
        "the group commit writing this {} stopped without an answer (see the server log)",
        T::WHAT
    ))
}

/// A plain create: the first version of a new resource and its index rows.
pub(super) type Create = VersionRows;

impl Grouped for Create {
    const MAX_GROUP: usize = 256;
    const WHAT: &'static str = "create";

    async fn write_many(store: &Store, group: &[Self]) -> Result<(), StoreError> {
        if write_inline(store, group).await? {
            return Ok(());
        }
        if store.backend() == super::Backend::Postgres {
            return super::pg_creates::write_creates(store, group).await;
        }
        let mut tx = store.begin().await?;
        fhir_write_many(&mut tx, group).await?;
        tx.commit_counting(group.len() as u64).await
    }

    async fn write_one(store: &Store, one: &Self) -> Result<(), StoreError> {
        if write_inline(store, std::slice::from_ref(one)).await? {
            return Ok(());
        }
        let (version, index) = one;
        let mut tx = store.begin().await?;
        fhir_write(&mut tx, version, index.as_ref()).await?;
        tx.commit().await
    }
}

/// Writes `group` on SQLite's inline writer ([`super::fhir_inline`]) under the write turn;
/// `false` when there is none or the write failed (rolled back): then the pool writes it,
/// and reports what failed.
async fn write_inline(store: &Store, group: &[Create]) -> Result<bool, StoreError> {
    let Some(inline) = &store.inline else {
        return Ok(false);
    };
    let turn = store.turn().await?;
    let written = inline.write(|tx| super::fhir_inline::write_versions(tx, group));
    drop(turn);
    if written.is_some() {
        store.count_writes(group.len() as u64);
    }
    Ok(written.is_some())
}

impl Store {
    /// Writes the first version of a new resource (`version_id` 1, an id no other write
    /// uses) together with the creates of the moment, and returns it once committed.
    pub async fn create_grouped(
        &self,
        version: StoredVersion,
        index: IndexRows,
    ) -> Result<StoredVersion, StoreError> {
        let (version, _) = self
            .groups
            .creates
            .commit(self, (version, Some(index)))
            .await?;
        Ok(version)
    }
}
