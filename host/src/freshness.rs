//! What the gate keeps between requests, and how it stays current: the database's
//! revisions (of rights, of revocations) as last read, and the tokens already verified.
//!
//! A request reads the revisions only when this process committed a revocation or a change
//! of rights since the last read ([`Store::local_changes`]), or when the last read began
//! more than [`CHECKED_WITHIN`] before the request. So a change this process commits applies
//! to its next request, and one that another process commits (the CLI, another server on
//! the same database) to every request that begins [`CHECKED_WITHIN`] after the commit.
//! Under load one read serves many requests, where each request read the token's record
//! (and, for an account's token, the rights revision) before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::{Revisions, Store, StoreError};
use crate::verifier::Verified;

/// How old the last read of the revisions may be for a request to rely on it.
pub const CHECKED_WITHIN: Duration = Duration::from_millis(2);

/// Tokens kept verified; past that the cache starts over.
const TOKENS_CACHED: usize = 10_000;

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
    pub async fn current(&self) -> Result<Revisions, StoreError> {
        let asked = Instant::now();
        if let Some(revisions) = self.fresh(|seen| asked < seen.began + CHECKED_WITHIN) {
            return Ok(revisions);
        }
        let _turn = self.reading.lock().await;
        // A read that began after this call is as good as one of its own.
        if let Some(revisions) = self.fresh(|seen| seen.began >= asked) {
            return Ok(revisions);
        }
        let began = Instant::now();
        let local = self.store.local_changes();
        let revisions = self.store.revisions().await?;
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(Seen {
            began,
            local,
            revisions,
        });
        Ok(revisions)
    }

    fn fresh(&self, recent: impl Fn(&Seen) -> bool) -> Option<Revisions> {
        let seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.filter(|seen| seen.local == self.store.local_changes() && recent(seen))
            .map(|seen| seen.revisions)
    }
}

/// The key of a token in [`VerifiedTokens`]: its SHA-256 (a forged token cannot take the
/// place of a verified one, and the cache does not hold the tokens themselves).
pub type TokenKey = [u8; 32];

pub fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens whose signature, issuer and record were checked, as of one revocation revision:
/// when it moves, every entry goes (revocations are rare, and a token checked again costs
/// one verification). Expiry is checked on every use, by the caller.
#[derive(Default)]
pub struct VerifiedTokens {
    inner: Mutex<TokenMap>,
}

#[derive(Default)]
struct TokenMap {
    revocations: i64,
    of: HashMap<TokenKey, Arc<Verified>>,
}

impl TokenMap {
    /// Empties the map when `revocations` is newer than its entries; false when it is older.
    fn at(&mut self, revocations: i64) -> bool {
        if revocations > self.revocations {
            self.of.clear();
            self.revocations = revocations;
        }
        revocations == self.revocations
    }
}

impl VerifiedTokens {
    pub fn get(&self, key: &TokenKey, revocations: i64) -> Option<Arc<Verified>> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.at(revocations) {
            return None;
        }
        map.of.get(key).cloned()
    }

    /// Keeps a token verified as of `revocations` (read before its record was).
    pub fn insert(&self, key: TokenKey, revocations: i64, verified: Arc<Verified>) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.at(revocations) {
            return;
        }
        if map.of.len() >= TOKENS_CACHED {
            map.of.clear();
        }
        map.of.insert(key, verified);
    }
}
