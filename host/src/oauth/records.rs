//! Access-token records committed in groups. A token is answered only once its record (and
//! the grant it opens) is committed; the token requests that arrive while one commit runs
//! are written together by the next, in one transaction ([`Store::record_issued`]): on
//! SQLite one write turn and one WAL commit for all of them instead of one each (where
//! concurrent single inserts also met SQLite's busy sleeps), on PostgreSQL one round trip
//! per table. Nothing is answered before its commit, so the records are exactly as durable
//! as when each was its own transaction.

use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::store::{IssuedToken, Store, StoreError};

/// The records waiting for a commit, and whose turn it is to commit them.
#[derive(Default)]
pub struct TokenRecords {
    queue: Mutex<Vec<Waiting>>,
    committer: tokio::sync::Mutex<()>,
}

struct Waiting {
    record: IssuedToken,
    /// `true` once the record is committed; `false` when its group failed.
    committed: oneshot::Sender<bool>,
}

impl TokenRecords {
    /// Commits `record`, with whatever other records wait at the time. A group that fails
    /// is written again one record at a time, so a record fails only for its own error.
    pub async fn record(&self, store: &Store, record: IssuedToken) -> Result<(), StoreError> {
        let (committed, outcome) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Waiting {
                record: record.clone(),
                committed,
            });
        {
            let _turn = self.committer.lock().await;
            let group =
                std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
            if !group.is_empty() {
                // Its own task: a request given up on mid-commit does not leave the others
                // of its group without an answer.
                let store = store.clone();
                let _ = tokio::spawn(async move { commit(&store, group).await }).await;
            }
        }
        match outcome.await {
            Ok(true) => Ok(()),
            _ => store.record_issued(std::slice::from_ref(&record)).await,
        }
    }
}

async fn commit(store: &Store, group: Vec<Waiting>) {
    let records: Vec<IssuedToken> = group.iter().map(|w| w.record.clone()).collect();
    let ok = match store.record_issued(&records).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                records = records.len(),
                "a group of token records failed, each is written alone: {e}"
            );
            false
        }
    };
    for waiting in group {
        let _ = waiting.committed.send(ok);
    }
}
