//! Values this server hands to a browser and takes back unchanged: JSON with an expiry,
//! MACed with a key derived from the current signing key ([`keys::mac_key`]). They carry
//! state between pages without a database row, so an unauthenticated request writes
//! nothing, and any host of a cluster can check them (the keys live in the database).
//! The content is readable by whoever holds the value; put nothing secret in it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{self, KeyError};
use crate::store::Store;

/// The signing key whose derived MAC key seals new values.
const SEALING_ALG: &str = "ES256";

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    kid: String,
    exp: i64,
    value: T,
}

/// `value`, valid until `exp`, as `<base64url JSON>.<base64url MAC>`.
pub async fn seal<T: Serialize>(
    store: &Store,
    purpose: &str,
    value: &T,
    exp: i64,
    now: i64,
) -> Result<String, KeyError> {
    let kid = keys::signing_key(store, SEALING_ALG, now).await?.kid;
    let key = keys::mac_key(store, &kid, purpose, now)
        .await?
        .ok_or_else(|| KeyError::NoActiveKey(SEALING_ALG.into()))?;
    let json = serde_json::to_vec(&Envelope { kid, exp, value })
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
    let body = URL_SAFE_NO_PAD.encode(json);
    let tag = ring::hmac::sign(&key, body.as_bytes());
    Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
}

/// The value sealed in `text` for `purpose`; `None` when it was not sealed by this server
/// for this purpose, was altered, has expired, or its key has retired.
pub async fn open<T: DeserializeOwned>(
    store: &Store,
    purpose: &str,
    text: &str,
    now: i64,
) -> Result<Option<T>, KeyError> {
    let Some((body, tag)) = text.split_once('.') else {
        return Ok(None);
    };
    let (Ok(json), Ok(tag)) = (URL_SAFE_NO_PAD.decode(body), URL_SAFE_NO_PAD.decode(tag)) else {
        return Ok(None);
    };
    // The kid is read before the MAC is checked only to find the key to check it with.
    let Ok(envelope) = serde_json::from_slice::<Envelope<serde_json::Value>>(&json) else {
        return Ok(None);
    };
    let Some(key) = keys::mac_key(store, &envelope.kid, purpose, now).await? else {
        return Ok(None);
    };
    if ring::hmac::verify(&key, body.as_bytes(), &tag).is_err() || now >= envelope.exp {
        return Ok(None);
    }
    Ok(serde_json::from_value(envelope.value).ok())
}
