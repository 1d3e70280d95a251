//! Signing keys: RS256 and ES256 key pairs kept in the database, the JWKS, and rotation.
//!
//! A key is published from its creation and used for signing from `sign_from`. Rotation
//! creates a new key per algorithm whose `sign_from` lies one overlap in the future (so
//! relying parties that cache the JWKS see it before any token uses it) and schedules the
//! old key's `retire_after` for when the last token it signed has expired.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::store::{KeyRow, Store, StoreError};

/// The algorithms this server signs with.
pub const SIGNING_ALGS: &[&str] = &["RS256", "ES256"];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot generate or read a signing key: {0}")]
    Crypto(String),
    #[error("no signing key for {0} is active")]
    NoActiveKey(String),
}

fn crypto(e: impl std::fmt::Display) -> KeyError {
    KeyError::Crypto(e.to_string())
}

pub fn parse_alg(alg: &str) -> Option<Algorithm> {
    match alg {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "RS384" => Some(Algorithm::RS384),
        "ES384" => Some(Algorithm::ES384),
        _ => None,
    }
}

/// A key ready to sign with.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
}

/// Generates a key pair: the private key as PKCS#8 PEM and the public JWK (with kid = the
/// RFC 7638 thumbprint, `use: sig`, `alg`).
pub fn generate(alg: &str) -> Result<(String, String, Jwk), KeyError> {
    use rsa::pkcs8::EncodePrivateKey;
    let mut rng = rand::rngs::OsRng;
    let (pem, algorithm) = match alg {
        "RS256" => {
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(crypto)?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(crypto)?;
            (pem.to_string(), Algorithm::RS256)
        }
        "ES256" => {
            let key = p256::SecretKey::random(&mut rng);
            let pem = key
                .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .map_err(crypto)?;
            (pem.to_string(), Algorithm::ES256)
        }
        other => return Err(KeyError::Crypto(format!("unsupported algorithm {other}"))),
    };
    let encoding = encoding_key(&pem, algorithm)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(crypto)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256);
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match algorithm {
        Algorithm::ES256 => KeyAlgorithm::ES256,
        _ => KeyAlgorithm::RS256,
    });
    Ok((kid, pem, jwk))
}

fn encoding_key(pem: &str, alg: Algorithm) -> Result<EncodingKey, KeyError> {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .map_err(crypto)
}

pub fn is_published(row: &KeyRow, now: i64) -> bool {
    row.retire_after.is_none_or(|t| t > now)
}

/// Creates and stores a key of `alg` that signs from `sign_from`.
pub async fn create(
    store: &Store,
    alg: &str,
    now: i64,
    sign_from: i64,
) -> Result<KeyRow, KeyError> {
    let alg_owned = alg.to_string();
    // RSA key generation takes a while; keep it off the async workers.
    let (kid, pem, jwk) = tokio::task::spawn_blocking(move || generate(&alg_owned))
        .await
        .map_err(crypto)??;
    let row = KeyRow {
        kid,
        alg: alg.to_string(),
        private_pem: pem,
        public_jwk: serde_json::to_string(&jwk).map_err(crypto)?,
        created_at: now,
        sign_from,
        retire_after: None,
    };
    store.insert_signing_key(&row).await?;
    Ok(row)
}

/// Makes sure every algorithm has a key that can sign now (first start).
pub async fn ensure(store: &Store, now: i64) -> Result<(), KeyError> {
    let rows = store.signing_keys().await?;
    for alg in SIGNING_ALGS {
        let has = rows
            .iter()
            .any(|r| r.alg == *alg && is_published(r, now) && r.sign_from <= now);
        let pending = rows.iter().any(|r| r.alg == *alg && is_published(r, now));
        if !has && !pending {
            let row = create(store, alg, now, now).await?;
            tracing::info!(kid = %row.kid, alg, "created a signing key");
        }
    }
    Ok(())
}

/// What `hestia keys rotate` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    pub kid: String,
    pub alg: String,
    pub published_at: i64,
    pub signs_from: i64,
    pub previous_keys_retire_at: i64,
}

/// Publishes a new key per algorithm now, signing from `now + overlap`; older keys stay
/// published until `now + overlap + max_token_lifetime`, when their last token has expired.
pub async fn rotate(
    store: &Store,
    now: i64,
    overlap: i64,
    max_token_lifetime: i64,
) -> Result<Vec<Rotation>, KeyError> {
    store.delete_retired_keys(now).await?;
    let mut out = Vec::new();
    for alg in SIGNING_ALGS {
        let row = create(store, alg, now, now + overlap).await?;
        let retire = now + overlap + max_token_lifetime;
        store.schedule_key_retirement(alg, &row.kid, retire).await?;
        out.push(Rotation {
            kid: row.kid,
            alg: alg.to_string(),
            published_at: now,
            signs_from: now + overlap,
            previous_keys_retire_at: retire,
        });
    }
    Ok(out)
}

/// The public keys of every published key (RFC 7517 JWK Set).
pub async fn jwks(store: &Store, now: i64) -> Result<JwkSet, KeyError> {
    Ok(jwks_until(store, now).await?.0)
}

/// [`jwks`], and the earliest time one of its keys retires (when the set changes
/// without a new key being added), for caches.
pub async fn jwks_until(store: &Store, now: i64) -> Result<(JwkSet, Option<i64>), KeyError> {
    let rows = store.signing_keys().await?;
    let published: Vec<&KeyRow> = rows.iter().filter(|r| is_published(r, now)).collect();
    let keys = published
        .iter()
        .map(|r| serde_json::from_str::<Jwk>(&r.public_jwk).map_err(crypto))
        .collect::<Result<Vec<_>, _>>()?;
    let retires = published.iter().filter_map(|r| r.retire_after).min();
    Ok((JwkSet { keys }, retires))
}

/// Of `rows`, the key that signs `alg` tokens now: the newest published one whose
/// `sign_from` has come.
pub fn current_signer<'a>(rows: &'a [KeyRow], alg: &str, now: i64) -> Option<&'a KeyRow> {
    rows.iter()
        .filter(|r| r.alg == alg && r.sign_from <= now && is_published(r, now))
        // Within one second a rotated key and the key it replaces can tie on both times;
        // the replaced one is the one scheduled to retire.
        .max_by_key(|r| (r.sign_from, r.created_at, r.retire_after.is_none()))
}

/// The key that signs `alg` tokens now: the newest whose `sign_from` has come.
pub async fn signing_key(store: &Store, alg: &str, now: i64) -> Result<SigningKey, KeyError> {
    let rows = store.signing_keys().await?;
    let row = current_signer(&rows, alg, now);
    let row = match row {
        Some(row) => row.clone(),
        // First use on a fresh database that no `serve` has prepared yet.
        None if !rows.iter().any(|r| r.alg == alg && is_published(r, now)) => {
            create(store, alg, now, now).await?
        }
        None => return Err(KeyError::NoActiveKey(alg.to_string())),
    };
    let algorithm = parse_alg(&row.alg).ok_or_else(|| KeyError::NoActiveKey(row.alg.clone()))?;
    Ok(SigningKey {
        kid: row.kid.clone(),
        alg: algorithm,
        encoding: encoding_key(&row.private_pem, algorithm)?,
    })
}

/// The signing keys read and parsed once per revision of the keys (migration 0017: every
/// insert, update and delete of `signing_keys` moves it), so that a token is signed with
/// neither a read of the keys nor a PEM parse. Which key signs is decided per token from
/// the rows' times ([`current_signer`]), so a rotated key whose `sign_from` comes takes
/// over with no read.
#[derive(Default)]
pub struct Signers {
    loaded: RwLock<Option<LoadedKeys>>,
}

struct LoadedKeys {
    /// The keys' revision, read before the rows were.
    revision: i64,
    rows: Vec<KeyRow>,
    /// The keys of `rows` that parse, by kid.
    parsed: HashMap<String, Arc<SigningKey>>,
}

impl Signers {
    /// The key that signs `alg` tokens at `now`, when the rows held are those of
    /// `revision` and one of them does (and parses).
    pub fn get(&self, revision: i64, alg: &str, now: i64) -> Option<Arc<SigningKey>> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        let loaded = loaded.as_ref().filter(|l| l.revision == revision)?;
        let row = current_signer(&loaded.rows, alg, now)?;
        loaded.parsed.get(&row.kid).cloned()
    }

    /// Holds `rows`, read after `revision` was, with the keys parsed. A key that does not
    /// parse is left out: signing with it goes through [`signing_key`], which names the
    /// error.
    pub fn load(&self, revision: i64, rows: Vec<KeyRow>) {
        let parsed = rows
            .iter()
            .filter_map(|row| {
                let alg = parse_alg(&row.alg)?;
                let encoding = encoding_key(&row.private_pem, alg).ok()?;
                let key = SigningKey {
                    kid: row.kid.clone(),
                    alg,
                    encoding,
                };
                Some((row.kid.clone(), Arc::new(key)))
            })
            .collect();
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = Some(LoadedKeys {
            revision,
            rows,
            parsed,
        });
    }

    /// Drops the keys held: the next token reads them again.
    pub fn forget(&self) {
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A MAC key for `purpose`, derived (HKDF-SHA256) from the private key of published
/// signing key `kid`: every host reads the same keys from the database, so a value one
/// host MACs another can check, and the derived key retires with the signing key. `None`
/// when no published key has that kid.
pub async fn mac_key(
    store: &Store,
    kid: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<ring::hmac::Key>, KeyError> {
    let rows = store.signing_keys().await?;
    let Some(row) = rows.iter().find(|r| r.kid == kid && is_published(r, now)) else {
        return Ok(None);
    };
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"hestia mac key")
        .extract(row.private_pem.as_bytes());
    let info = [purpose.as_bytes()];
    let okm = prk
        .expand(&info, ring::hmac::HMAC_SHA256)
        .map_err(|_| KeyError::Crypto("cannot derive a MAC key".into()))?;
    Ok(Some(ring::hmac::Key::from(okm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kid: &str, alg: &str, pem: &str, sign_from: i64, retire_after: Option<i64>) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            alg: alg.into(),
            private_pem: pem.into(),
            public_jwk: String::new(),
            created_at: sign_from,
            sign_from,
            retire_after,
        }
    }

    #[test]
    fn signers_answer_for_their_revision_and_follow_the_keys_times() {
        let (_, old_pem, _) = generate("ES256").unwrap();
        let (_, new_pem, _) = generate("ES256").unwrap();
        let signers = Signers::default();
        assert!(signers.get(0, "ES256", 100).is_none(), "nothing loaded");
        signers.load(
            7,
            vec![
                row("old", "ES256", &old_pem, 0, Some(1000)),
                row("new", "ES256", &new_pem, 500, None),
                row("broken", "RS256", "not a key", 0, None),
            ],
        );
        assert_eq!(signers.get(7, "ES256", 100).unwrap().kid, "old");
        assert_eq!(
            signers.get(7, "ES256", 500).unwrap().kid,
            "new",
            "its sign_from came"
        );
        assert!(signers.get(8, "ES256", 100).is_none(), "another revision");
        assert!(
            signers.get(7, "RS256", 100).is_none(),
            "a key that does not parse"
        );
        signers.forget();
        assert!(signers.get(7, "ES256", 100).is_none(), "forgotten");
    }

    #[test]
    fn generated_keys_sign_and_verify_through_their_jwk() {
        for alg in SIGNING_ALGS {
            let (kid, pem, jwk) = generate(alg).unwrap();
            assert_eq!(jwk.common.key_id.as_deref(), Some(kid.as_str()));
            let algorithm = parse_alg(alg).unwrap();
            let mut header = jsonwebtoken::Header::new(algorithm);
            header.kid = Some(kid);
            let token = jsonwebtoken::encode(
                &header,
                &serde_json::json!({"sub": "x"}),
                &encoding_key(&pem, algorithm).unwrap(),
            )
            .unwrap();
            let mut v = jsonwebtoken::Validation::new(algorithm);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
            assert_eq!(data.claims["sub"], "x");
        }
    }
}
