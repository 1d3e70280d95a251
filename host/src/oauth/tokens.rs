//! JWT access tokens (RFC 9068) and OpenID Connect id_tokens: their claims, signing, and
//! verification with errors that name the cause.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys::SigningKey;

/// The media type of RFC 9068 access tokens, in the JOSE header's `typ`.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// `aud`: one string when there is one audience, an array otherwise (RFC 7519 allows both).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audience(pub Vec<String>);

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(Audience(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }))
    }
}

/// The claims of an access token (RFC 9068 §2.2, plus the SMART context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user's id; the client id for client_credentials.
    pub sub: String,
    pub aud: Audience,
    pub client_id: String,
    /// Space-separated granted scopes.
    #[serde(default)]
    pub scope: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
    pub nbf: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// SMART launch context: the patient id (without `Patient/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// SMART: `Patient/123`, `Practitioner/abc` (a relative or absolute reference).
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

impl AccessClaims {
    pub fn scopes(&self) -> Vec<String> {
        super::scopes::split(&self.scope)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// The claims of an id_token (OpenID Connect Core §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

/// Why an access token is not accepted. The text is meant for `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token's typ is {0:?}, not \"at+jwt\": it is not an access token")]
    WrongType(String),
    #[error("the token's header has no kid")]
    MissingKid,
    #[error("unknown kid {kid} at issuer {issuer} (not in its JWKS)")]
    UnknownKid { kid: String, issuer: String },
    #[error("the token is signed with {alg} but key {kid} is a {key_alg} key")]
    AlgorithmMismatch {
        alg: String,
        kid: String,
        key_alg: String,
    },
    #[error("signature invalid (key {kid})")]
    SignatureInvalid { kid: String },
    #[error(
        "wrong issuer: issuer {found:?} is not trusted here (this server accepts tokens of {expected:?})"
    )]
    WrongIssuer { found: String, expected: String },
    #[error("expired at {} (exp {exp}; now {})", utc(*exp), utc(*now))]
    Expired { exp: i64, now: i64 },
    #[error("not valid before {} (nbf {nbf}; now {})", utc(*nbf), utc(*now))]
    NotYetValid { nbf: i64, now: i64 },
    #[error("revoked: {reason}")]
    Revoked { reason: String },
    #[error(
        "not active at issuer {issuer}: its introspection endpoint answers active=false (expired, revoked or unknown there)"
    )]
    Inactive { issuer: String },
    #[error("issuer {issuer} says this is a {token_type}, not an access token")]
    NotAccessToken { issuer: String, token_type: String },
    #[error("the authorization server cannot check the token: {0}")]
    Unavailable(String),
}

/// Signs claims with the given key; `typ` goes into the JOSE header.
pub fn sign<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> Result<String, String> {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.typ = Some(typ.to_string());
    jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| e.to_string())
}

/// Part `index` of a compact JWT (0 the header, 1 the payload) as JSON, NOT verified: for
/// deciding which key or issuer to verify with, and for explaining a token.
pub fn unverified_part(token: &str, index: usize) -> Option<serde_json::Value> {
    use base64::Engine;
    let part = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Refuses a JWT whose (not yet verified) `iss` names another issuer than `issuer`,
/// before any key is looked up: a token of an issuer this server does not trust is
/// refused as such, not as an unknown key of its own issuer, and costs no key fetch.
/// Only ever refuses; acceptance still needs the verified claims.
pub fn check_claimed_issuer(token: &str, issuer: &str) -> Result<(), TokenError> {
    let claimed = unverified_part(token, 1)
        .and_then(|v| v.get("iss").and_then(|i| i.as_str()).map(str::to_string));
    match claimed {
        Some(found) if found != issuer => Err(TokenError::WrongIssuer {
            found,
            expected: issuer.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Verifies an access token's header, signature, issuer and times against a JWK Set.
/// Revocation is not checked here (it needs the store): see `AuthServer::verify_access_token`.
/// With `now = None` the times are not checked (revocation accepts expired tokens).
pub fn verify_access_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    now: Option<i64>,
    leeway: i64,
) -> Result<AccessClaims, TokenError> {
    let header = unverified_header(token)?;
    check_claimed_issuer(token, issuer)?;
    verify_with_header(token, &header, jwks, issuer, now, leeway).map(|(claims, _)| claims)
}

/// A JWT's header, not verified: which key and algorithm to verify it with.
pub fn unverified_header(token: &str) -> Result<Header, TokenError> {
    jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))
}

/// [`verify_access_token`] for a caller that has read the header and checked the claimed
/// issuer already (so that neither is decoded twice); also answers the verified claims as
/// JSON, for plugins that read claims beyond [`AccessClaims`].
pub fn verify_with_header(
    token: &str,
    header: &Header,
    jwks: &JwkSet,
    issuer: &str,
    now: Option<i64>,
    leeway: i64,
) -> Result<(AccessClaims, serde_json::Value), TokenError> {
    let typ = header.typ.clone().unwrap_or_default();
    if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
        && !typ.eq_ignore_ascii_case("application/at+jwt")
    {
        return Err(TokenError::WrongType(typ));
    }
    let kid = header.kid.clone().ok_or(TokenError::MissingKid)?;
    let jwk = jwks.find(&kid).ok_or_else(|| TokenError::UnknownKid {
        kid: kid.clone(),
        issuer: issuer.to_string(),
    })?;
    let key_alg = jwk
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
    if key_alg.is_some_and(|a| a != header.alg) {
        return Err(TokenError::AlgorithmMismatch {
            alg: format!("{:?}", header.alg),
            kid,
            key_alg: key_alg.map(|a| format!("{a:?}")).unwrap_or_default(),
        });
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                TokenError::SignatureInvalid { kid: kid.clone() }
            }
            _ => TokenError::Malformed(e.to_string()),
        })?;
    let raw = data.claims;
    let claims = AccessClaims::deserialize(&raw)
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    if claims.iss != issuer {
        return Err(TokenError::WrongIssuer {
            found: claims.iss,
            expected: issuer.to_string(),
        });
    }
    if let Some(now) = now {
        check_times(&claims, now, leeway)?;
    }
    Ok((claims, raw))
}

/// `exp` and `nbf` against `now`, with `leeway` seconds either way.
pub fn check_times(claims: &AccessClaims, now: i64, leeway: i64) -> Result<(), TokenError> {
    if now >= claims.exp + leeway {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now,
        });
    }
    if claims.nbf > now + leeway {
        return Err(TokenError::NotYetValid {
            nbf: claims.nbf,
            now,
        });
    }
    Ok(())
}

/// Unix seconds as an RFC 3339 UTC time, for messages.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_825_600), "2000-02-29T12:00:00Z");
    }

    #[test]
    fn audience_is_one_string_or_many() {
        let one = serde_json::to_value(Audience(vec!["a".into()])).unwrap();
        assert_eq!(one, serde_json::json!("a"));
        let many = serde_json::to_value(Audience(vec!["a".into(), "b".into()])).unwrap();
        assert_eq!(many, serde_json::json!(["a", "b"]));
        let back: Audience = serde_json::from_value(serde_json::json!("x")).unwrap();
        assert_eq!(back.0, vec!["x"]);
    }
}
