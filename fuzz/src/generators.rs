//! Seeds and generators of each target's input format.

use base64::Engine;
use hestia::fhir::definitions::{ResourceType, SearchParamType};
use serde_json::{Value, json};

use crate::random::{FHIR_KEYS, Gen};
use crate::seeds;

pub const SEARCH_TOKENS: &[&str] = &[
    "&",
    "=",
    ".",
    ":",
    "_has:",
    "_has:Observation:patient:",
    "_include=",
    "_revinclude=",
    ":iterate",
    "_sort=-",
    "_count=",
    "_summary=",
    "_elements=",
    "_total=",
    "_id=",
    "_lastUpdated=",
    ":missing=",
    ":exact",
    ":contains",
    ":not",
    ":text",
    ":above",
    ":below",
    ":identifier",
    ":of-type",
    ":Patient",
    "subject.",
    "patient.",
    "part-of.",
    "eq",
    "ne",
    "gt",
    "lt",
    "ge",
    "le",
    "sa",
    "eb",
    "ap",
    "|",
    "\\|",
    "\\,",
    "\\$",
    "$",
    ",",
    "%7C",
    "%2C",
    "%24",
    "%3D",
    "%26",
    "%25",
    "%",
    "%F0%9F%98%80",
    "%C3",
    "+",
];
pub const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "1e999",
    "\"resourceType\":",
    "\"reference\":",
    "\"op\":\"copy\"",
    "\"from\":",
    "\"path\":",
    "\"/text\"",
    "\"/-\"",
    "\"entry\":",
    "\"request\":",
    "\"url\":",
];
pub const FHIRPATH_TOKENS: &[&str] = &[
    ".",
    "(",
    ")",
    "|",
    " or ",
    " and ",
    " as ",
    " is ",
    "where(",
    "resolve()",
    "exists()",
    "ofType(",
    "extension(",
    "first()",
    "[0]",
    "'",
    "\\'",
    "%resource",
    "$this",
    "=",
    "!=",
    "Observation",
    "value",
    "code",
    "Reference",
];
pub const JWT_TOKENS: &[&str] = &[
    ".",
    "eyJ",
    "eyJhbGciOiJub25lIn0",
    "eyJhbGciOiJIUzI1NiJ9",
    "e30",
    "=",
    "+",
    "/",
    "-",
    "_",
];
pub const OAUTH_TOKENS: &[&str] = &[
    "&",
    "=",
    "+",
    "%",
    "%20",
    "%FF",
    "%C3%A9",
    "scope=",
    "grant_type=",
    "client_id=",
    "code_verifier=",
    "code_challenge=",
    "code_challenge_method=S256",
    "client_assertion=",
    "patient/",
    "user/",
    "system/",
    ".rs?",
    ".cruds",
    "*.*",
];
pub const TOML_TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'''",
    "\"\"\"",
    "{",
    "}",
    ".",
    "\n",
    "#",
    "1979-05-27T07:32:00Z",
    "inf",
    "nan",
    "0x7fffffffffffffff",
    "1e400",
    "[config]",
    "[wasi]",
    "[fhir]",
    "[oauth]",
    "[plugins]",
    "[tls]",
    "[issuer]",
];

fn bytes(items: impl IntoIterator<Item = impl Into<String>>) -> Vec<Vec<u8>> {
    items.into_iter().map(|s| s.into().into_bytes()).collect()
}

pub fn search_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::SEARCH_QUERIES.iter().copied())
}

fn any_type(g: &mut Gen) -> ResourceType {
    let all: Vec<ResourceType> = ResourceType::all().collect();
    *g.pick(&all)
}

/// A random walk through reference parameters: `subject.organization.partof...name`,
/// valid by the definitions, of any length.
fn chain(g: &mut Gen, mut ty: ResourceType, links: usize) -> String {
    let mut names = Vec::new();
    for _ in 0..links {
        let refs: Vec<_> = ty
            .search_params()
            .filter(|p| p.kind == SearchParamType::Reference && !p.targets.is_empty())
            .collect();
        if refs.is_empty() {
            break;
        }
        let param = *g.pick(&refs);
        let target = *g.pick(&param.targets);
        names.push(if g.chance(3) {
            format!("{}:{}", param.code, target.as_str())
        } else {
            param.code.clone()
        });
        ty = target;
    }
    let leaf: Vec<_> = ty.search_params().collect();
    if !leaf.is_empty() {
        names.push(g.pick(&leaf).code.clone());
    }
    names.join(".")
}

/// `_has:Type:ref:_has:Type:ref:...:param`, nested `depth` times.
fn has(g: &mut Gen, depth: usize) -> String {
    let mut out = String::from("_has");
    for _ in 0..depth {
        let source = any_type(g);
        let refs: Vec<_> = source
            .search_params()
            .filter(|p| p.kind == SearchParamType::Reference)
            .collect();
        let reference = refs
            .first()
            .map_or("subject".to_string(), |_| g.pick(&refs).code.clone());
        out.push_str(&format!(":{}:{}:_has", source.as_str(), reference));
    }
    out.truncate(out.len() - 4);
    let leaf = if g.chance(2) { "code" } else { "_id" };
    out.push_str(leaf);
    out
}

fn search_value(g: &mut Gen, long: bool) -> String {
    let cap = if long { 2000 } else { 8 };
    let prefix = *g.pick(&[
        "", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz",
    ]);
    let body = match g.below(8) {
        0 => g.pick(crate::random::NUMBERS).to_string(),
        1 => format!("{}|{}", g.string(), g.string()),
        2 => format!(
            "{}|{}|{}",
            g.pick(crate::random::NUMBERS),
            g.string(),
            g.string()
        ),
        3 => format!("Patient/{}", g.string()),
        4 => (0..g.size().min(cap))
            .map(|_| g.string())
            .collect::<Vec<_>>()
            .join(","),
        5 => format!("{}${}", g.string(), g.string()),
        _ => g.string(),
    };
    format!("{prefix}{body}")
}

/// `long`: whether this parameter may be long (chains and `_has` of thousands of links,
/// value lists of thousands); a query has few such, or it would take minutes to build.
fn search_name(g: &mut Gen, ty: ResourceType, long: bool) -> String {
    let cap = if long { usize::MAX } else { 8 };
    let params: Vec<_> = ty.search_params().collect();
    let base = match g.below(10) {
        0 => {
            let links = g.size().min(cap);
            chain(g, ty, links)
        }
        1 => {
            let depth = g.size().min(cap);
            has(g, depth)
        }
        2 => g
            .pick(&[
                "_include",
                "_revinclude",
                "_include:iterate",
                "_sort",
                "_count",
                "_summary",
                "_elements",
                "_total",
                "_format",
                "_pretty",
                "_id",
                "_lastUpdated",
                "_tag",
                "_profile",
                "_security",
                "_text",
                "_content",
                "_list",
                "_query",
                "_type",
            ])
            .to_string(),
        3 => g.string(),
        _ if !params.is_empty() => g.pick(&params).code.clone(),
        _ => "_id".into(),
    };
    if g.chance(4) {
        let modifier = *g.pick(&[
            "missing",
            "exact",
            "contains",
            "not",
            "text",
            "above",
            "below",
            "identifier",
            "of-type",
            "in",
            "not-in",
            "Patient",
            "iterate",
            "",
            "x:y",
        ]);
        format!("{base}:{modifier}")
    } else {
        base
    }
}

/// Percent-encodes some of the characters (all of them, sometimes), as clients differ.
fn encode(g: &mut Gen, text: &str) -> String {
    let all = g.chance(4);
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || (!all && !"&=%+#".contains(c) && !g.chance(8)) {
                c.to_string()
            } else {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

pub fn search(g: &mut Gen) -> Vec<u8> {
    let ty = any_type(g);
    let count = g.size().max(1);
    let pairs: Vec<String> = (0..count)
        .map(|_| {
            let long = count < 8 || g.chance(200);
            let name = search_name(g, ty, long);
            let value = search_value(g, long);
            format!("{}={}", encode(g, &name), encode(g, &value))
        })
        .collect();
    format!("{}?{}", ty.as_str(), pairs.join("&")).into_bytes()
}

pub fn resource_seeds() -> Vec<Vec<u8>> {
    seeds::resources()
        .iter()
        .map(|r| serde_json::to_vec(r).expect("JSON"))
        .collect()
}

/// An R4 example changed at the JSON level, or fresh JSON, or nesting at the limits.
pub fn resource(g: &mut Gen) -> Vec<u8> {
    let examples = seeds::resources();
    match g.below(10) {
        0 => g.deep_json().into_bytes(),
        1 => {
            let mut v = g.json(6);
            if let Value::Object(map) = &mut v {
                map.insert("resourceType".into(), json!(any_type(g).as_str()));
            }
            v.to_string().into_bytes()
        }
        _ => {
            let mut v = g.pick(examples).clone();
            for _ in 0..g.below(6) + 1 {
                g.mutate_json(&mut v);
            }
            v.to_string().into_bytes()
        }
    }
}

pub fn bundle_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::resources()
        .iter()
        .filter(|r| r["resourceType"] == "Bundle")
        .map(|r| r.to_string().into_bytes())
        .collect();
    out.push(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"}},
            {"request": {"method": "GET", "url": "Observation?subject=urn:uuid:1&_count=5"}},
            {"request": {"method": "DELETE", "url": "Patient/x", "ifMatch": "W/\"3\""}},
            {"resource": {"resourceType": "Patient", "id": "y"},
             "request": {"method": "PUT", "url": "Patient/y"}},
            {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "W10="},
             "request": {"method": "PATCH", "url": "Patient/y"}}
        ]})
        .to_string()
        .into_bytes(),
    );
    out
}

pub fn bundle(g: &mut Gen) -> Vec<u8> {
    let seeds = bundle_seeds();
    let mut v: Value = serde_json::from_slice(g.pick::<Vec<u8>>(&seeds)).expect("seed is JSON");
    if g.chance(3) {
        let n = g.size();
        let entries: Vec<Value> = (0..n)
            .map(|_| {
                let method = *g.pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", ""]);
                let ty = any_type(g);
                json!({"request": {"method": method, "url": format!("{}/{}?{}", ty.as_str(), g.string(), g.string()),
                    "ifMatch": g.string(), "ifNoneExist": g.string()},
                    "fullUrl": g.string(), "resource": {"resourceType": ty.as_str()}})
            })
            .collect();
        v["type"] = json!(*g.pick(&["batch", "transaction", "searchset", "", "BATCH"]));
        v["entry"] = Value::Array(entries);
    }
    for _ in 0..g.below(4) {
        g.mutate_json(&mut v);
    }
    v.to_string().into_bytes()
}

/// JSON Pointers of a document's nodes (a sample), for patch paths that exist.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    if out.len() > 200 {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

pub fn patch_seeds() -> Vec<Vec<u8>> {
    bytes([
        r#"[{"op":"replace","path":"/text/status","value":"additional"}]"#,
        r#"[{"op":"add","path":"/extension","value":[{"url":"http://x","valueString":"y"}]},{"op":"test","path":"/extension/0/url","value":"http://x"}]"#,
        r#"[{"op":"copy","from":"/text","path":"/text/a"},{"op":"move","from":"/text/a","path":"/contained"},{"op":"remove","path":"/contained"}]"#,
        r#"[{"op":"add","path":"/meta/-","value":1}]"#,
    ])
}

/// Copies that double a value into its own deepest point: depth 2^n after n operations.
fn doubling_copies(g: &mut Gen) -> Vec<Value> {
    let mut depth = 0usize;
    let mut ops = Vec::new();
    for _ in 0..g.below(18) + 1 {
        let path = format!("/text{}", "/a".repeat(depth + 1));
        ops.push(json!({"op": "copy", "from": "/text", "path": path}));
        depth = 2 * depth + 1;
    }
    ops
}

pub fn patch(g: &mut Gen) -> Vec<u8> {
    if g.chance(4) {
        let mut ops = doubling_copies(g);
        ops.insert(0, json!({"op": "add", "path": "/text", "value": {}}));
        return Value::Array(ops).to_string().into_bytes();
    }
    let examples = seeds::resources();
    let mut paths = Vec::new();
    pointers(g.pick(examples), String::new(), &mut paths);
    paths.extend([
        "/-".into(),
        "".into(),
        "/".into(),
        "/id".into(),
        "/resourceType".into(),
    ]);
    let ops: Vec<Value> = (0..g.size().max(1))
        .map(|_| {
            let op = *g.pick(&["add", "remove", "replace", "move", "copy", "test", "x"]);
            let path = g.pick(&paths).clone();
            let from = g.pick(&paths).clone();
            let value = g.json(3);
            json!({"op": op, "path": path, "from": from, "value": value})
        })
        .collect();
    Value::Array(ops).to_string().into_bytes()
}

pub fn fhirpath_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::fhirpath_expressions())
}

pub fn fhirpath(g: &mut Gen) -> Vec<u8> {
    let exprs = seeds::fhirpath_expressions();
    let mut parts = Vec::new();
    for _ in 0..g.size().max(1) {
        parts.push(match g.below(4) {
            0 => g.pick(FHIRPATH_TOKENS).to_string(),
            1 => g.pick(FHIR_KEYS).to_string(),
            _ => g.pick(&exprs).clone(),
        });
    }
    let sep = *g.pick(&[".", " | ", " or ", "", "("]);
    parts.join(sep).into_bytes()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn jwt_header(g: &mut Gen) -> Value {
    let signer = crate::targets::signer();
    let mut h = json!({
        "alg": *g.pick(&["ES256", "ES256", "RS256", "HS256", "none", "None", "EdDSA", "ES384", "PS256", ""]),
        "typ": *g.pick(&["at+jwt", "application/at+jwt", "JWT", "", "AT+JWT"]),
        "kid": if g.chance(4) { json!(g.string()) } else { json!(signer.kid) },
    });
    if g.chance(4) {
        g.mutate_json(&mut h);
    }
    for key in ["crit", "jku", "x5c", "jwk", "b64", "cty", "x5u"] {
        if let (true, Value::Object(map)) = (g.chance(10), &mut h) {
            map.insert(key.into(), g.json(2));
        }
    }
    h
}

fn jwt_claims(g: &mut Gen) -> Value {
    let mut c = json!({
        "iss": if g.chance(4) { json!(g.string()) } else { json!(crate::targets::ISSUER) },
        "sub": "alice", "aud": "https://fhir.example", "client_id": "app",
        "scope": "patient/*.rs", "jti": "j", "iat": 1, "nbf": 1, "exp": 4_000_000_000i64,
    });
    for _ in 0..g.below(4) {
        g.mutate_json(&mut c);
    }
    c
}

pub fn jwt_seeds() -> Vec<Vec<u8>> {
    let mut g = Gen::new(1);
    let signer = crate::targets::signer();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": signer.kid});
    let claims = jwt_claims(&mut g);
    vec![
        signer.sign(&header, &claims).into_bytes(),
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"at+jwt"}"#),
            b64(claims.to_string().as_bytes())
        )
        .into_bytes(),
    ]
}

pub fn jwt(g: &mut Gen) -> Vec<u8> {
    let signer = crate::targets::signer();
    let header = jwt_header(g);
    let claims = jwt_claims(g);
    let token = match g.below(4) {
        0 => format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes()),
            b64(g.string().as_bytes())
        ),
        1 => format!("{}.{}", b64(g.string().as_bytes()), g.string()),
        _ => signer.sign(&header, &claims),
    };
    token.into_bytes()
}

pub fn oauth_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::OAUTH_FORMS.iter().copied())
}

pub fn oauth_form(g: &mut Gen) -> Vec<u8> {
    let names = [
        "grant_type",
        "code",
        "redirect_uri",
        "client_id",
        "client_secret",
        "client_assertion",
        "scope",
        "code_verifier",
        "code_challenge",
        "code_challenge_method",
        "state",
        "aud",
    ];
    let pairs: Vec<String> = (0..g.size().clamp(1, 100))
        .map(|_| {
            let name = if g.chance(6) {
                g.string()
            } else {
                g.pick(&names).to_string()
            };
            let value = match name.as_str() {
                "scope" => String::from_utf8(scope(g)).expect("UTF-8"),
                "client_assertion" => String::from_utf8(jwt(g)).expect("UTF-8"),
                "code_verifier" | "code_challenge" => {
                    let n = *g.pick(&[42usize, 43, 128, 129]);
                    (0..n).map(|_| *g.pick(b"aZ09-._~+/=") as char).collect()
                }
                _ => g.string(),
            };
            format!("{}={}", encode(g, &name), encode(g, &value))
        })
        .collect();
    pairs.join("&").into_bytes()
}

pub fn scope_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::SCOPES.iter().copied())
}

pub fn scope(g: &mut Gen) -> Vec<u8> {
    let parts: Vec<String> = (0..g.size().clamp(1, 50))
        .map(|_| {
            let context = *g.pick(&["patient", "user", "system", "x", ""]);
            let ty = if g.chance(5) {
                "*".to_string()
            } else {
                any_type(g).as_str().to_string()
            };
            let perms = *g.pick(&["read", "write", "*", "rs", "cruds", "c", "sr", "rr", ""]);
            let query = if g.chance(4) {
                let q = String::from_utf8(search(g)).expect("UTF-8");
                format!("?{}", q.split_once('?').map_or("", |(_, q)| q))
            } else {
                String::new()
            };
            format!("{context}/{ty}.{perms}{query}")
        })
        .collect();
    parts.join(" ").into_bytes()
}

pub fn registration_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::REGISTRATIONS.iter().copied())
}

pub fn registration(g: &mut Gen) -> Vec<u8> {
    let seeds = registration_seeds();
    let mut v: Value = serde_json::from_slice(g.pick::<Vec<u8>>(&seeds)).expect("seed is JSON");
    for _ in 0..g.below(5) + 1 {
        g.mutate_json(&mut v);
    }
    v.to_string().into_bytes()
}

pub fn manifest_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::MANIFESTS.iter().copied())
}

pub fn config_seeds() -> Vec<Vec<u8>> {
    bytes(seeds::CONFIGS.iter().copied())
}

/// TOML: keys and values of odd shapes, tables nested deep, long arrays.
pub fn toml(g: &mut Gen) -> Vec<u8> {
    let mut out = String::new();
    if g.chance(5) {
        let depth = *g.pick(&[10usize, 100, 1000, 10_000]);
        out.push_str(&format!(
            "a = {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ));
    }
    for _ in 0..g.size().max(1) {
        let key = *g.pick(&[
            "kind",
            "order",
            "on_error",
            "isolation",
            "listen",
            "public_url",
            "database_url",
            "fhir.base_path",
            "fhir.max_body_bytes",
            "oauth.signing_alg",
            "oauth.trusted_proxies",
            "plugins.deadline_ms",
            "plugins.memory_mib",
            "wasi.clock",
            "config.x",
            "tls.cert",
            "issuer.url",
            "issuer.introspect",
            "log_format",
        ]);
        let value = match g.below(5) {
            0 => g.pick(crate::random::NUMBERS).to_string(),
            1 => format!("{:?}", g.string()),
            2 => format!("[{:?}, {:?}]", g.string(), g.string()),
            3 => g
                .pick(&["true", "false", "inf", "-inf", "nan", "1979-05-27"])
                .to_string(),
            _ => format!("{{ a = {:?} }}", g.string()),
        };
        out.push_str(&format!("{key} = {value}\n"));
    }
    out.into_bytes()
}
