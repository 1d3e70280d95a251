//! Group commit of plain creates. A create (`POST` without `If-None-Exist`, outside a
//! Bundle) writes a new resource under an id the server chose, so it reads nothing and
//! conflicts with nothing: the creates that arrive while one group is being written wait,
//! and the next group writes them all in one transaction of multi-row statements
//! ([`super::fhir::fhir_write_many`]), a handful of statements for the whole group instead
//! of about nine per create. Each create is answered only after its group has committed,
//! so every acknowledged create is as durable as one written alone. On SQLite a group
//! holds one write turn ([`super::turn`]) for all of them.
//!
//! Hand-written: this is the store's own batching of its own statements, which no crate
//! offers over sqlx.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::fhir::{StoredVersion, fhir_write, fhir_write_many};
use super::{Store, StoreError};
use crate::fhir::search::IndexRows;

/// At most this many creates in one transaction; the rest wait for the next group.
const MAX_GROUP: usize = 256;

/// The creates waiting for a group, and the lock held while one group is written.
#[derive(Debug, Default)]
pub(super) struct CreateGroups {
    waiting: Mutex<Vec<Waiting>>,
    writing: tokio::sync::Mutex<()>,
}

/// A create waiting for its group: what to write and where to answer.
#[derive(Debug)]
struct Waiting {
    version: StoredVersion,
    index: IndexRows,
    done: oneshot::Sender<Result<StoredVersion, StoreError>>,
}

impl Store {
    /// Writes the first version of a new resource (`version_id` 1, an id no other write
    /// uses) together with the creates of the moment, and returns it once committed.
    pub async fn create_grouped(
        &self,
        version: StoredVersion,
        index: IndexRows,
    ) -> Result<StoredVersion, StoreError> {
        let groups = &self.create_groups;
        let (done, mut answer) = oneshot::channel();
        lock(&groups.waiting).push(Waiting {
            version,
            index,
            done,
        });
        // One group at a time: whoever holds the lock writes everything waiting, its own
        // create among it unless an earlier group took it.
        let writing = groups.writing.lock().await;
        match answer.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let group = take_group(&groups.waiting);
        if group.is_empty() {
            // Its own create is in a group still being written by a task whose caller
            // went away; that task answers it.
            drop(writing);
            return answer.await.unwrap_or_else(|_| Err(abandoned()));
        }
        // A task of its own, so that a caller that goes away (its client disconnected)
        // does not cut the group's transaction short for the others in it.
        let store = self.clone();
        let _ = tokio::spawn(async move { store.write_group(group).await }).await;
        drop(writing);
        answer.await.unwrap_or_else(|_| Err(abandoned()))
    }

    /// Writes `group` in one transaction and answers each create; when that fails, writes
    /// each alone so that each gets its own answer.
    async fn write_group(&self, group: Vec<Waiting>) {
        let (writes, answers): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|w| ((w.version, Some(w.index)), w.done))
            .unzip();
        let written = if writes.len() == 1 {
            Err(None)
        } else {
            self.write_many(&writes).await.map_err(Some)
        };
        match written {
            Ok(()) => {
                for ((version, _), done) in writes.into_iter().zip(answers) {
                    let _ = done.send(Ok(version));
                }
            }
            Err(error) => {
                if let Some(error) = error {
                    tracing::debug!(%error, creates = writes.len(), "a group of creates failed; writing each alone");
                }
                for ((version, index), done) in writes.into_iter().zip(answers) {
                    let result = self.write_one(&version, index.as_ref()).await;
                    let _ = done.send(result.map(|()| version));
                }
            }
        }
    }

    async fn write_many(
        &self,
        writes: &[(StoredVersion, Option<IndexRows>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        fhir_write_many(&mut tx, writes).await?;
        tx.commit_counting(writes.len() as u64).await
    }

    async fn write_one(
        &self,
        version: &StoredVersion,
        index: Option<&IndexRows>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        fhir_write(&mut tx, version, index).await?;
        tx.commit().await
    }
}

/// The creates waiting, oldest first, at most [`MAX_GROUP`] of them.
fn take_group(waiting: &Mutex<Vec<Waiting>>) -> Vec<Waiting> {
    let mut waiting = lock(waiting);
    let taken = waiting.len().min(MAX_GROUP);
    let rest = waiting.split_off(taken);
    std::mem::replace(&mut *waiting, rest)
}

/// The queue's lock; a panic while it was held left a plain `Vec` behind, still usable.
fn lock(waiting: &Mutex<Vec<Waiting>>) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
    waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The group writing a create ended without answering it (its task panicked).
fn abandoned() -> StoreError {
    StoreError::Invalid(
        "the group commit writing this create stopped without an answer (see the server log)"
            .into(),
    )
}
