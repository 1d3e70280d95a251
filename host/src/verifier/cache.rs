//! Tokens already verified, kept between requests as of one revocation revision
//! ([`crate::freshness`] says when that revision is read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::Verified;

/// Tokens kept verified (an entry is about a kilobyte: claims and their JSON). When full,
/// expired tokens go first; if that frees less than a quarter, the cache starts over. A
/// server that sees more tokens than this in their lifetime verifies some of them again,
/// which costs one signature check and one record read each.
const TOKENS_CACHED: usize = 4096;

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

    /// Keeps a token verified as of `revocations` (read before its record was); `now`
    /// tells which entries have expired when the cache is full.
    pub fn insert(&self, key: TokenKey, revocations: i64, verified: Arc<Verified>, now: i64) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.at(revocations) {
            return;
        }
        if map.of.len() >= TOKENS_CACHED {
            map.of.retain(|_, v| v.claims.exp > now);
            if map.of.len() > TOKENS_CACHED * 3 / 4 {
                map.of.clear();
            }
        }
        map.of.insert(key, verified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: i64) -> Arc<Verified> {
        let claims = serde_json::json!({
            "iss": "https://as.example", "sub": "s", "aud": "https://fhir.example",
            "client_id": "c", "exp": exp, "iat": 0, "jti": "j"
        });
        Arc::new(Verified {
            claims: serde_json::from_value(claims).unwrap(),
            raw_json: String::new(),
            username: None,
        })
    }

    fn key(n: usize) -> TokenKey {
        token_key(&n.to_string())
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_then_starts_over() {
        let cache = VerifiedTokens::default();
        for n in 0..TOKENS_CACHED {
            let exp = if n % 2 == 0 { 100 } else { 1_000 };
            cache.insert(key(n), 0, verified(exp), 50);
        }
        // Full: at 500 half of them have expired and go; the live half stays.
        cache.insert(key(TOKENS_CACHED), 0, verified(1_000), 500);
        assert!(cache.get(&key(0), 0).is_none(), "expired");
        assert!(cache.get(&key(1), 0).is_some(), "live");
        assert!(cache.get(&key(TOKENS_CACHED), 0).is_some(), "the new one");
        for n in TOKENS_CACHED + 1..2 * TOKENS_CACHED {
            cache.insert(key(n), 0, verified(1_000), 500);
        }
        // Full of live tokens: it starts over with the new one.
        cache.insert(key(0), 0, verified(1_000), 500);
        assert!(cache.get(&key(1), 0).is_none());
        assert!(cache.get(&key(0), 0).is_some());
        // A newer revocation revision empties it; an older one neither finds nor keeps.
        assert!(cache.get(&key(0), 1).is_none());
        cache.insert(key(7), 0, verified(1_000), 500);
        assert!(cache.get(&key(7), 1).is_none());
    }
}
