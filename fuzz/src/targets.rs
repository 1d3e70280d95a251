//! The fuzz targets: one `fn(&[u8])` per parser of untrusted input, the body shape of
//! cargo-fuzz's `fuzz_target!`, each calling what the server calls on that input. A
//! target panics only when an invariant breaks (a refusal must be a typed error; the
//! properties noted at each target); parsers refusing input is the normal case.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use hestia::config::{FileConfig, RawConfig};
use hestia::fhir::access::{Access, AccessConstraint};
use hestia::fhir::bundle::parse_bundle;
use hestia::fhir::definitions::ResourceType;
use hestia::fhir::fhirpath;
use hestia::fhir::repository::parse_resource;
use hestia::fhir::search::extract::extract;
use hestia::fhir::search::params::SearchQuery;
use hestia::fhir::searchset::decode_query;
use hestia::oauth::scopes::{self, SmartScope};
use hestia::oauth::{Params, client_auth, pkce, tokens};
use hestia::plugins::manifest::Manifest;
use jsonwebtoken::Algorithm::ES256;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde_json::{Value, json};

use crate::generators;
use crate::random::Gen;

/// One target: what it runs, where its corpus starts, and how to make new inputs.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub generate: fn(&mut Gen) -> Vec<u8>,
    /// Tokens the byte mutator inserts.
    pub dictionary: &'static [&'static str],
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "search-query",
        about: "GET search query strings: percent-decoding as axum's Query, then SearchQuery::parse and parse_lenient",
        run: search_query,
        seeds: generators::search_seeds,
        generate: generators::search,
        dictionary: generators::SEARCH_TOKENS,
    },
    Target {
        name: "search-form",
        about: "POST _search form bodies and If-None-Exist: searchset::decode_query, then SearchQuery::parse and parse_lenient",
        run: search_form,
        seeds: generators::search_seeds,
        generate: generators::search,
        dictionary: generators::SEARCH_TOKENS,
    },
    Target {
        name: "resource",
        about: "FHIR JSON resources: repository::parse_resource, index extraction (search::extract), JSON round trip",
        run: resource,
        seeds: generators::resource_seeds,
        generate: generators::resource,
        dictionary: generators::JSON_TOKENS,
    },
    Target {
        name: "bundle",
        about: "batch/transaction Bundles: bundle::parse_bundle",
        run: bundle,
        seeds: generators::bundle_seeds,
        generate: generators::bundle,
        dictionary: generators::JSON_TOKENS,
    },
    Target {
        name: "json-patch",
        about: "JSON Patch on a stored resource: what Repository::patch does before the write (parse, apply, checks, index extraction, serialisation)",
        run: json_patch,
        seeds: generators::patch_seeds,
        generate: generators::patch,
        dictionary: generators::JSON_TOKENS,
    },
    Target {
        name: "fhirpath-definitions",
        about: "the FHIRPath of every R4 search definition evaluated over arbitrary JSON",
        run: fhirpath_definitions,
        seeds: generators::resource_seeds,
        generate: generators::resource,
        dictionary: generators::JSON_TOKENS,
    },
    Target {
        name: "fhirpath-parse",
        about: "FHIRPath expression text: fhirpath::parse, then evaluation over an R4 example",
        run: fhirpath_parse,
        seeds: generators::fhirpath_seeds,
        generate: generators::fhirpath,
        dictionary: generators::FHIRPATH_TOKENS,
    },
    Target {
        name: "jwt",
        about: "JWT/JWS: unverified header and payload, check_claimed_issuer, decode_header, verify_access_token against a JWKS; no forgery passes",
        run: jwt,
        seeds: generators::jwt_seeds,
        generate: generators::jwt,
        dictionary: generators::JWT_TOKENS,
    },
    Target {
        name: "oauth-form",
        about: "OAuth form bodies and query strings (token, authorize, revoke, sign-in): Params, scopes, PKCE, HTTP Basic",
        run: oauth_form,
        seeds: generators::oauth_seeds,
        generate: generators::oauth_form,
        dictionary: generators::OAUTH_TOKENS,
    },
    Target {
        name: "smart-scope",
        about: "SMART v1/v2 scopes: split, SmartScope::parse, describe, and a scope's query as an access constraint",
        run: smart_scope,
        seeds: generators::scope_seeds,
        generate: generators::scope,
        dictionary: generators::SEARCH_TOKENS,
    },
    Target {
        name: "registration",
        about: "RFC 7591/7592 registration requests: the metadata checks before any write",
        run: registration,
        seeds: generators::registration_seeds,
        generate: generators::registration,
        dictionary: generators::JSON_TOKENS,
    },
    Target {
        name: "plugin-manifest",
        about: "plugin manifests (NAME.toml): Manifest::parse, config_json",
        run: plugin_manifest,
        seeds: generators::manifest_seeds,
        generate: generators::toml,
        dictionary: generators::TOML_TOKENS,
    },
    Target {
        name: "config",
        about: "hestia.toml: FileConfig, then RawConfig::resolve",
        run: config,
        seeds: generators::config_seeds,
        generate: generators::toml,
        dictionary: generators::TOML_TOKENS,
    },
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `Type?query`: the type names the URL's type (Observation when it is not one).
fn split_type(text: &str) -> (ResourceType, &str) {
    let (ty, query) = text.split_once('?').unwrap_or(("Observation", text));
    let ty = ResourceType::parse(ty)
        .or_else(|| ResourceType::parse("Observation"))
        .expect("Observation is an R4 type");
    (ty, query)
}

/// Property: the strict parse fails exactly when the lenient one reports problems, and
/// with the first of them.
fn parse_search(ty: ResourceType, pairs: Vec<(String, String)>) {
    let strict = SearchQuery::parse(ty, pairs.iter().cloned());
    let (_, problems) = SearchQuery::parse_lenient(ty, pairs);
    match (strict, problems.first()) {
        (Ok(_), None) => {}
        (Err(e), Some(first)) => {
            assert_eq!(
                e.to_string(),
                first.to_string(),
                "strict and lenient differ"
            );
            assert!(!e.to_string().is_empty(), "a refusal names its cause");
        }
        (strict, first) => panic!("strict {strict:?} but lenient problems {first:?}"),
    }
}

pub fn search_query(data: &[u8]) {
    let text = text(data);
    let (ty, query) = split_type(&text);
    // axum's `Query<Vec<(String, String)>>`; a query it cannot decode is a 400 there.
    if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) {
        parse_search(ty, pairs);
    }
}

pub fn search_form(data: &[u8]) {
    let text = text(data);
    let (ty, query) = split_type(&text);
    parse_search(ty, decode_query(query));
}

/// Property: an accepted resource has index rows (its type is known), and the text the
/// store would keep parses again.
pub fn resource(data: &[u8]) {
    let ty = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| v["resourceType"].as_str().and_then(ResourceType::parse))
        .unwrap_or_else(|| ResourceType::parse("Patient").expect("Patient"));
    let Ok(object) = parse_resource(data, ty) else {
        return;
    };
    let value = Value::Object(object);
    extract(&value).expect("an accepted resource has a known type");
    let stored = serde_json::to_string(&value).expect("a Value serialises");
    serde_json::from_str::<Value>(&stored).expect("the stored text parses again");
}

pub fn bundle(data: &[u8]) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let count = map
        .get("entry")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if let Ok((_, entries)) = parse_bundle(map) {
        assert_eq!(
            entries.len(),
            count,
            "every entry parsed or the Bundle refused"
        );
    }
}

/// The resource a patch applies to: one of the R4 examples, chosen by the input.
fn patch_base(data: &[u8]) -> Value {
    let examples = crate::seeds::resources();
    let hash = data
        .iter()
        .fold(0usize, |h, b| h.wrapping_mul(31) ^ *b as usize);
    let mut base = examples[hash % examples.len()].clone();
    if base.get("id").is_none() {
        base["id"] = json!("x");
    }
    base
}

/// `Repository::patch` between reading the current version and writing the new one.
pub fn json_patch(data: &[u8]) {
    let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(data) else {
        return;
    };
    let mut doc = patch_base(data);
    let (ty, id) = (doc["resourceType"].clone(), doc["id"].clone());
    // As the repository applies it: one operation at a time, within the depth and size
    // limits; a refused patch leaves a document that is only dropped.
    if hestia::fhir::limits::Limits::default()
        .apply_patch(&mut doc, &patch)
        .is_err()
    {
        return;
    }
    if doc["resourceType"] != ty || doc["id"] != id {
        return;
    }
    extract(&doc).expect("the type did not change");
    drop(serde_json::to_string(&doc).expect("a Value serialises"));
}

fn definitions_of(value: &Value) -> Vec<ResourceType> {
    match value["resourceType"].as_str().and_then(ResourceType::parse) {
        Some(ty) => vec![ty],
        None => ResourceType::all().collect(),
    }
}

pub fn fhirpath_definitions(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for ty in definitions_of(&value) {
        for param in ty.search_params() {
            if let Ok(expr) = param.compiled() {
                drop(fhirpath::evaluate(expr, &value));
            }
        }
    }
}

pub fn fhirpath_parse(data: &[u8]) {
    let text = text(data);
    let Ok(expr) = fhirpath::parse(&text) else {
        return;
    };
    let examples = crate::seeds::resources();
    let base = &examples[text.len() % examples.len()];
    drop(fhirpath::evaluate(&expr, base));
}

pub const ISSUER: &str = "https://hestia.example";

/// The key tokens are verified with, and the messages (header.payload) signed with it:
/// no other input may verify.
pub struct Signer {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwks: JwkSet,
    pub signed: Mutex<HashSet<String>>,
}

pub fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        hestia::jwt_crypto::install();
        let (kid, pem, jwk): (String, String, Jwk) =
            hestia::oauth::keys::generate("ES256").expect("an ES256 key");
        Signer {
            kid,
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).expect("own PEM"),
            jwks: JwkSet { keys: vec![jwk] },
            signed: Mutex::default(),
        }
    })
}

impl Signer {
    /// Signs `claims` under `header` (any JSON object) and remembers the message.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, ES256)
            .expect("ES256 signs");
        self.signed
            .lock()
            .expect("not poisoned")
            .insert(message.clone());
        format!("{message}.{signature}")
    }
}

/// Property: a token verifies only if its header and payload are exactly what this key
/// signed (no `alg: none`, no algorithm confusion, no malleable encoding).
pub fn jwt(data: &[u8]) {
    let token = text(data);
    for part in 0..3 {
        drop(tokens::unverified_part(&token, part));
    }
    drop(tokens::check_claimed_issuer(&token, ISSUER));
    drop(jsonwebtoken::decode_header(&*token));
    let signer = signer();
    if let Ok(claims) = tokens::verify_access_token(&token, &signer.jwks, ISSUER, None, 60) {
        let message = token.rsplit_once('.').map_or("", |(m, _)| m);
        assert!(
            signer
                .signed
                .lock()
                .expect("not poisoned")
                .contains(message),
            "a token this key never signed verified: {claims:?}"
        );
    }
    drop(client_auth::parse_basic(&format!("Basic {token}")));
}

/// The parameters the token, authorize, revocation, introspection and sign-in endpoints read.
const OAUTH_PARAMS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "refresh_token",
    "code_verifier",
    "code_challenge",
    "code_challenge_method",
    "response_type",
    "state",
    "nonce",
    "aud",
    "launch",
    "token",
    "token_type_hint",
    "username",
    "password",
    "request_id",
];

pub fn oauth_form(data: &[u8]) {
    let params = Params::parse(data);
    for name in OAUTH_PARAMS {
        let one = params.get(name);
        drop(params.require(name));
        let all = params.all(name);
        // Property: `get` refuses exactly when a name has more than one value.
        assert_eq!(one.is_err(), all.len() > 1, "{name}: get vs all");
    }
    if let Ok(Some(scope)) = params.get("scope") {
        smart_scope(scope.as_bytes());
    }
    if let Ok(Some(challenge)) = params.get("code_challenge") {
        drop(pkce::check_challenge(
            challenge,
            params.get("code_challenge_method").ok().flatten(),
        ));
    }
    if let Ok(Some(verifier)) = params.get("code_verifier") {
        // Property: a well-formed verifier matches its own challenge and nothing else.
        if pkce::verify(&pkce::challenge_of(verifier), verifier).is_ok() {
            assert!(pkce::verify(&pkce::challenge_of("x"), verifier).is_err());
        }
    }
    if let Ok(Some(assertion)) = params.get("client_assertion") {
        jwt(assertion.as_bytes());
    }
}

/// Property: splitting is idempotent; a parsed scope names `*` or an alphanumeric type;
/// a scope's query either constrains access or is refused, never panics.
pub fn smart_scope(data: &[u8]) {
    let text = text(data);
    let parts = scopes::split(&text);
    assert_eq!(scopes::split(&scopes::join(&parts)), parts, "split/join");
    for part in &parts {
        drop(scopes::describe(part));
        let Some(scope) = SmartScope::parse(part) else {
            continue;
        };
        assert!(scope.resource == "*" || scope.resource.chars().all(char::is_alphanumeric));
        let (Some(query), Some(ty)) = (&scope.query, ResourceType::parse(&scope.resource)) else {
            continue;
        };
        let access = Access::Within(vec![
            AccessConstraint::PatientCompartment("example".into()),
            AccessConstraint::Search {
                resource_type: ty,
                params: decode_query(query),
            },
        ]);
        drop(access.visible(ty));
    }
}

/// Property: a refusal is `invalid_client_metadata` (or `invalid_redirect_uri`) with a description.
pub fn registration(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Err(e) = hestia::fuzzing::registration_request(&body) {
        assert!(!e.description.is_empty(), "a refusal names its cause");
    }
}

pub fn plugin_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(manifest) = Manifest::parse(text) {
        let json: Value = serde_json::from_str(&manifest.config_json()).expect("config is JSON");
        assert!(json.is_object(), "config is an object");
    }
}

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    let raw = RawConfig {
        file,
        ..RawConfig::default()
    };
    if let Err(e) = raw.resolve() {
        assert!(!e.to_string().is_empty(), "a refusal names its cause");
    }
}
