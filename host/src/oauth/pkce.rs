//! PKCE (RFC 7636). Only `S256` is accepted: `plain` protects nothing against a leaked
//! authorization request, so discovery does not list it.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The one supported `code_challenge_method`.
pub const S256: &str = "S256";

fn well_formed(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Checks a `code_challenge` and its method at the authorization endpoint.
pub fn check_challenge(challenge: &str, method: Option<&str>) -> Result<(), String> {
    match method.unwrap_or("plain") {
        S256 => {}
        "plain" if method.is_none() => {
            return Err(
                "code_challenge_method is missing; the default, plain, is not supported: use S256"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "code_challenge_method {other:?} is not supported; use S256"
            ));
        }
    }
    if challenge.len() != 43 || !well_formed(challenge) {
        return Err(
            "code_challenge must be the 43-character base64url SHA-256 of the code_verifier".into(),
        );
    }
    Ok(())
}

/// The S256 challenge of a verifier.
pub fn challenge_of(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Verifies a `code_verifier` against the stored S256 challenge.
pub fn verify(challenge: &str, verifier: &str) -> Result<(), String> {
    if !well_formed(verifier) {
        return Err(
            "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636)".into(),
        );
    }
    if crate::store::constant_time_eq(challenge_of(verifier).as_bytes(), challenge.as_bytes()) {
        Ok(())
    } else {
        Err("PKCE verification failed: the S256 hash of code_verifier does not match the code_challenge of the authorization request".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            challenge_of(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(verify("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", verifier).is_ok());
        assert!(
            verify(
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                &"a".repeat(43)
            )
            .is_err()
        );
        assert!(verify("x", "short").is_err());
    }

    #[test]
    fn only_s256_is_accepted() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check_challenge(c, Some("S256")).is_ok());
        assert!(check_challenge(c, Some("plain")).is_err());
        assert!(check_challenge(c, None).is_err());
        assert!(check_challenge("tooshort", Some("S256")).is_err());
    }
}
