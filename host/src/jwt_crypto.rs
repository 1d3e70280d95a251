//! RSA and ECDSA for `jsonwebtoken` through aws-lc-rs: the process-wide `jsonwebtoken`
//! crypto provider.
//!
//! Why: `jsonwebtoken`'s `rust_crypto` backend does RSA with the `rsa` crate, whose
//! arithmetic (`num-bigint-dig`) took about half of the token endpoint's CPU (RS256
//! signatures, the key also re-parsed from DER for every one) and a third of an
//! authenticated FHIR read's (signature checks) under `bench/peers/run`; its ECDSA (the
//! `p256`/`p384` crates) is portable Rust too. aws-lc-rs does RSA PKCS#1 v1.5 and ECDSA
//! P-256/P-384 in assembly; its RSA-2048 signatures run at about twice ring's rate on
//! x86-64 (AVX-512 IFMA and AVX2 code paths ring does not have), verification and ECDSA
//! at about ring's. Everything else (PSS, HMAC, EdDSA, JWK utilities) stays with
//! `rust_crypto`, and so do keys aws-lc-rs refuses (RSA verification outside 2048..=8192
//! bits, EC keys not in PKCS#8), so which tokens verify does not change.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as rs, EcdsaKeyPair, RsaKeyPair, RsaPublicKeyComponents};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result as JwtResult};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: rust_crypto::DEFAULT_PROVIDER.jwk_utils.clone(),
});

/// Makes this the provider of `jsonwebtoken` for the process. Call before the first JWT
/// operation (the CLI does, first thing); later calls do nothing.
pub fn install() {
    // Err means a provider is already installed: this one (a second call), or none at all
    // could be, since jsonwebtoken picks its default at first use, which `cli::main` precedes.
    let _ = PROVIDER.install_default();
}

/// Parsed private keys by their DER (RSA: PKCS#1, EC: PKCS#8): parsing checks the
/// key, which costs about as much as a signature, and the signing keys change only on
/// rotation.
type KeyCache<K> = LazyLock<Mutex<HashMap<Vec<u8>, Arc<K>>>>;
static RSA_PAIRS: KeyCache<RsaKeyPair> = LazyLock::new(Default::default);
static P256_PAIRS: KeyCache<EcdsaKeyPair> = LazyLock::new(Default::default);
static P384_PAIRS: KeyCache<EcdsaKeyPair> = LazyLock::new(Default::default);
const MAX_CACHED_KEYS: usize = 16;

fn cached<K>(
    cache: &KeyCache<K>,
    der: &[u8],
    parse: impl FnOnce(&[u8]) -> JwtResult<K>,
) -> JwtResult<Arc<K>> {
    if let Some(pair) = cache.lock().expect("not poisoned").get(der) {
        return Ok(pair.clone());
    }
    let pair = Arc::new(parse(der)?);
    let mut cache = cache.lock().expect("not poisoned");
    if cache.len() >= MAX_CACHED_KEYS {
        cache.clear();
    }
    cache.insert(der.to_vec(), pair.clone());
    Ok(pair)
}

fn rsa_key_pair(der: &[u8]) -> JwtResult<Arc<RsaKeyPair>> {
    cached(&RSA_PAIRS, der, |der| {
        RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()).into())
    })
}

/// A PKCS#8 EC key for `alg`'s curve (aws-lc-rs refuses a key of another curve).
fn ec_key_pair(
    alg: &'static rs::EcdsaSigningAlgorithm,
    der: &[u8],
) -> JwtResult<Arc<EcdsaKeyPair>> {
    let cache = if std::ptr::eq(alg, &rs::ECDSA_P384_SHA384_FIXED_SIGNING) {
        &P384_PAIRS
    } else {
        &P256_PAIRS
    };
    cached(cache, der, |der| {
        EcdsaKeyPair::from_pkcs8(alg, der).map_err(|_| ErrorKind::InvalidEcdsaKey.into())
    })
}

/// ECDSA signing and verification of a JWS algorithm (fixed-size `r || s`
/// signatures, as JWS has them).
fn ecdsa_algorithms(
    alg: &Algorithm,
) -> Option<(
    &'static rs::EcdsaSigningAlgorithm,
    &'static rs::EcdsaVerificationAlgorithm,
)> {
    match alg {
        Algorithm::ES256 => Some((
            &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rs::ECDSA_P256_SHA256_FIXED,
        )),
        Algorithm::ES384 => Some((
            &rs::ECDSA_P384_SHA384_FIXED_SIGNING,
            &rs::ECDSA_P384_SHA384_FIXED,
        )),
        _ => None,
    }
}

fn rsa_encoding(alg: &Algorithm) -> Option<&'static dyn rs::RsaEncoding> {
    match alg {
        Algorithm::RS256 => Some(&rs::RSA_PKCS1_SHA256),
        Algorithm::RS384 => Some(&rs::RSA_PKCS1_SHA384),
        Algorithm::RS512 => Some(&rs::RSA_PKCS1_SHA512),
        _ => None,
    }
}

fn rsa_parameters(alg: &Algorithm) -> Option<&'static rs::RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&rs::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&rs::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&rs::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    }
}

struct RsaSigner {
    alg: Algorithm,
    encoding: &'static dyn rs::RsaEncoding,
    key: Arc<RsaKeyPair>,
}

impl signature::Signer<Vec<u8>> for RsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(self.encoding, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| signature::Error::new())?;
        Ok(sig)
    }
}

impl JwtSigner for RsaSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

struct EcdsaSigner {
    alg: Algorithm,
    key: Arc<EcdsaKeyPair>,
}

impl signature::Signer<Vec<u8>> for EcdsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.key
            .sign(&SystemRandom::new(), msg)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for EcdsaSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// An EC public key as the uncompressed SEC1 point `jsonwebtoken` keeps (`0x04 || x || y`).
struct EcdsaVerifier {
    alg: Algorithm,
    verification: &'static rs::EcdsaVerificationAlgorithm,
    point: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for EcdsaVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        rs::UnparsedPublicKey::new(self.verification, &self.point)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for EcdsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

struct RsaVerifier {
    alg: Algorithm,
    params: &'static rs::RsaParameters,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(self.params, msg, sig)
        .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> JwtResult<Box<dyn JwtSigner>> {
    if let Some(encoding) = rsa_encoding(alg)
        && key.family() == AlgorithmFamily::Rsa
        // A key aws-lc-rs refuses (under 2048 bits, say) is signed with as before.
        && let Ok(key) = rsa_key_pair(key.inner())
    {
        return Ok(Box::new(RsaSigner {
            alg: *alg,
            encoding,
            key,
        }));
    }
    if let Some((signing, _)) = ecdsa_algorithms(alg)
        && key.family() == AlgorithmFamily::Ec
        // A key aws-lc-rs refuses (SEC1 rather than PKCS#8, another curve) is signed with as before.
        && let Ok(pair) = ec_key_pair(signing, key.inner())
    {
        return Ok(Box::new(EcdsaSigner {
            alg: *alg,
            key: pair,
        }));
    }
    (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key)
}

/// Bits of a big-endian unsigned integer.
fn bit_len(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        Some(i) => (n.len() - i) * 8 - n[i].leading_zeros() as usize,
        None => 0,
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> JwtResult<Box<dyn JwtVerifier>> {
    if let (Some(params), DecodingKeyKind::RsaModulusExponent { n, e }) =
        (rsa_parameters(alg), key.kind())
        && (2048..=8192).contains(&bit_len(n))
    {
        return Ok(Box::new(RsaVerifier {
            alg: *alg,
            params,
            n: n.clone(),
            e: e.clone(),
        }));
    }
    if let (Some((_, verification)), DecodingKeyKind::SecretOrDer(point)) =
        (ecdsa_algorithms(alg), key.kind())
        && key.family() == AlgorithmFamily::Ec
        && point.first() == Some(&0x04)
    {
        return Ok(Box::new(EcdsaVerifier {
            alg: *alg,
            verification,
            point: point.clone(),
        }));
    }
    (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;

    fn rsa_key(bits: usize) -> (EncodingKey, DecodingKey) {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        let public = key.to_public_key();
        let decoding = DecodingKey::from_rsa_raw_components(
            &public.n().to_bytes_be(),
            &public.e().to_bytes_be(),
        );
        (EncodingKey::from_rsa_der(der.as_bytes()), decoding)
    }

    /// A fresh PKCS#8 key of `alg`'s curve and its public point.
    fn ec_key(alg: Algorithm) -> (EncodingKey, DecodingKey) {
        let (signing, _) = ecdsa_algorithms(&alg).unwrap();
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(signing, der.as_ref()).unwrap();
        let point = rs::KeyPair::public_key(&pair).as_ref().to_vec();
        (
            EncodingKey::from_ec_der(der.as_ref()),
            DecodingKey::from_ec_der(&point),
        )
    }

    fn sign_with(p: &CryptoProvider, alg: Algorithm, key: &EncodingKey, msg: &[u8]) -> Vec<u8> {
        (p.signer_factory)(&alg, key)
            .unwrap()
            .try_sign(msg)
            .unwrap()
    }

    fn verifies(
        p: &CryptoProvider,
        alg: Algorithm,
        key: &DecodingKey,
        msg: &[u8],
        sig: &[u8],
    ) -> bool {
        (p.verifier_factory)(&alg, key)
            .unwrap()
            .verify(msg, &sig.to_vec())
            .is_ok()
    }

    #[test]
    fn aws_lc_and_rust_crypto_accept_each_others_rsa_signatures_and_refuse_altered_ones() {
        let theirs = &rust_crypto::DEFAULT_PROVIDER;
        let (enc, dec) = rsa_key(2048);
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            let msg = b"header.claims";
            let ours_sig = sign_with(&PROVIDER, alg, &enc, msg);
            assert!(
                verifies(theirs, alg, &dec, msg, &ours_sig),
                "{alg:?}: aws-lc's signature"
            );
            assert!(
                verifies(&PROVIDER, alg, &dec, msg, &ours_sig),
                "{alg:?}: aws-lc verifies aws-lc"
            );
            let their_sig = sign_with(theirs, alg, &enc, msg);
            assert!(
                verifies(&PROVIDER, alg, &dec, msg, &their_sig),
                "{alg:?}: rsa crate's signature"
            );
            // PKCS#1 v1.5 is deterministic: both implementations give the same bytes.
            assert_eq!(ours_sig, their_sig, "{alg:?}");
            let mut altered = ours_sig.clone();
            altered[10] ^= 1;
            assert!(
                !verifies(&PROVIDER, alg, &dec, msg, &altered),
                "{alg:?}: altered signature"
            );
            assert!(
                !verifies(&PROVIDER, alg, &dec, b"header.claimz", &ours_sig),
                "{alg:?}: altered message"
            );
        }
        // A signature made for another hash does not pass as RS256.
        let sig = sign_with(&PROVIDER, Algorithm::RS384, &enc, b"m");
        assert!(!verifies(&PROVIDER, Algorithm::RS256, &dec, b"m", &sig));
    }

    #[test]
    fn keys_outside_aws_lcs_range_and_other_algorithms_keep_the_rust_crypto_behaviour() {
        // A 1024-bit key: aws-lc-rs may refuse it, the rsa crate accepts it (to sign and to verify);
        // so do we, as before.
        let (enc, dec) = rsa_key(1024);
        let sig = sign_with(&PROVIDER, Algorithm::RS256, &enc, b"m");
        assert!(verifies(&PROVIDER, Algorithm::RS256, &dec, b"m", &sig));
        assert!(!verifies(&PROVIDER, Algorithm::RS256, &dec, b"n", &sig));
    }

    #[test]
    fn aws_lc_and_rust_crypto_accept_each_others_ecdsa_signatures_and_refuse_altered_ones() {
        let theirs = &rust_crypto::DEFAULT_PROVIDER;
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            let name = format!("{alg:?}");
            let (enc, dec) = ec_key(alg);
            let msg = b"header.claims";
            let ours = sign_with(&PROVIDER, alg, &enc, msg);
            assert!(verifies(theirs, alg, &dec, msg, &ours), "{name}: aws-lc's");
            assert!(
                verifies(&PROVIDER, alg, &dec, msg, &ours),
                "{name}: aws-lc's by aws-lc"
            );
            let their_sig = sign_with(theirs, alg, &enc, msg);
            assert!(
                verifies(&PROVIDER, alg, &dec, msg, &their_sig),
                "{name}: p256/p384's"
            );
            let mut altered = ours.clone();
            altered[5] ^= 1;
            assert!(
                !verifies(&PROVIDER, alg, &dec, msg, &altered),
                "{name}: altered"
            );
            assert!(
                !verifies(&PROVIDER, alg, &dec, b"header.claimz", &ours),
                "{name}"
            );
        }
        // A P-256 key (as Hestia makes them) does not sign as ES384, nor does an ES256
        // signature pass as ES384.
        let (_, pem, jwk) = crate::oauth::keys::generate("ES256").unwrap();
        let enc = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let dec = DecodingKey::from_jwk(&jwk).unwrap();
        assert!(
            ec_key_pair(&rs::ECDSA_P256_SHA256_FIXED_SIGNING, enc.inner()).is_ok(),
            "Hestia's ES256 keys sign through aws-lc-rs"
        );
        let sig = sign_with(&PROVIDER, Algorithm::ES256, &enc, b"m");
        assert!(!verifies(&PROVIDER, Algorithm::ES384, &dec, b"m", &sig));
        assert!(
            (PROVIDER.signer_factory)(&Algorithm::ES384, &enc)
                .and_then(|s| s
                    .try_sign(b"m")
                    .map_err(|_| ErrorKind::InvalidEcdsaKey.into()))
                .is_err(),
            "a P-256 key refused for ES384"
        );
    }

    #[test]
    fn bit_length_ignores_leading_zero_bytes() {
        assert_eq!(bit_len(&[0, 0, 0x01, 0]), 9);
        assert_eq!(bit_len(&[0x80; 256]), 2048);
        assert_eq!(bit_len(&[0, 0]), 0);
    }
}
