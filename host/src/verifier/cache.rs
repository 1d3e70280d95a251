//! Tokens already verified, kept between requests as of one revocation revision
//! ([`crate::freshness`] says when that revision is read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::Verified;

/// Tokens kept verified; past that the cache starts over.
const TOKENS_CACHED: usize = 10_000;

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
