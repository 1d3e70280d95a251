//! How what the gate and the token endpoint keep between requests stays current: the
//! database's revisions (of rights, of revocations, of signing keys) as last read. The
//! tokens already verified are kept in [`crate::verifier::cache`], as of a revision read here.
//!
//! A request reads the revisions only when this process committed a revocation or a change
//! of rights since the last read ([`Store::local_changes`]), or when the last read began
//! more than [`CHECKED_WITHIN`] before the request. So a change this process commits applies
//! to its next request, and one that another process commits (the CLI, another server on
//! the same database) to every request that begins [`CHECKED_WITHIN`] after the commit.
//! Under load one read serves many requests, where each request read the token's record
//! (and, for an account's token, the rights revision) before.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::store::{Revisions, Store, StoreError};

/// How old the last read of the revisions may be for a request to rely on it: the store's
/// bound for the versions it keeps between reads, one bound for all that is kept.
pub use crate::store::CHECKED_WITHIN;

/// The revisions as this process last read them.
pub struct Freshness {
    store: Store,
    seen: Mutex<Option<Seen>>,
    /// One read at a time: requests that find the last read too old wait for the next one.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Clone, Copy)]
struct Seen {
    began: Instant,
    /// [`Store::local_changes`] when the read began.
    local: u64,
    revisions: Revisions,
}

impl Freshness {
    pub fn new(store: Store) -> Freshness {
        Freshness {
            store,
            seen: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The revisions, as of a read that began at most [`CHECKED_WITHIN`] before this call
    /// and after every revocation or change of rights this process committed.
    ///
    /// Once half of [`CHECKED_WITHIN`] has passed since the last read began, one request
    /// reads again while the others go on with the last read, still within its bound: under
    /// load no request waits for a read the others need.
    pub async fn current(&self) -> Result<Revisions, StoreError> {
        let asked = Instant::now();
        if let Some(seen) = self.fresh(|seen| asked < seen.began + CHECKED_WITHIN) {
            if asked >= seen.began + CHECKED_WITHIN / 2
                && let Ok(_turn) = self.reading.try_lock()
            {
                match self.read().await {
                    Ok(revisions) => return Ok(revisions),
                    Err(e) => tracing::debug!(error = %e, "an early read of the revisions failed"),
                }
            }
            return Ok(seen.revisions);
        }
        let _turn = self.reading.lock().await;
        // A read that began after this call is as good as one of its own.
        if let Some(seen) = self.fresh(|seen| seen.began >= asked) {
            return Ok(seen.revisions);
        }
        self.read().await
    }

    /// Reads the revisions; the caller holds the reading turn.
    async fn read(&self) -> Result<Revisions, StoreError> {
        let began = Instant::now();
        let local = self.store.local_changes();
        let revisions = self.store.revisions().await?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.is_none_or(|s| s.began <= began) {
            *seen = Some(Seen {
                began,
                local,
                revisions,
            });
        }
        Ok(revisions)
    }

    fn fresh(&self, recent: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.filter(|seen| seen.local == self.store.local_changes() && recent(seen))
    }
}
