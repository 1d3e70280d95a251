//! Seed material: the R4 examples the tests already use, the search definitions, and
//! hand-made OAuth, JWT and TOML samples.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;

/// Examples of one type beyond this many add little but start-up time.
const PER_TYPE: usize = 4;
/// Larger examples make every execution slow; the mutators grow inputs anyway.
const MAX_EXAMPLE_BYTES: usize = 24 * 1024;

static PACKED: &[u8] = include_bytes!("../../tests/fixtures/r4-examples.json.zst");
static SMALL: &[&str] = &[
    include_str!("../../tests/fixtures/search-resources.json"),
    include_str!("../../tests/fixtures/search-composites.json"),
];
static TESTDATA: &[&str] = &[
    include_str!("../../host/fhir-defs/testdata/Appointment-example.json"),
    include_str!("../../host/fhir-defs/testdata/Condition-example.json"),
    include_str!("../../host/fhir-defs/testdata/Encounter-example.json"),
    include_str!("../../host/fhir-defs/testdata/Immunization-example.json"),
    include_str!("../../host/fhir-defs/testdata/Observation-blood-pressure.json"),
    include_str!("../../host/fhir-defs/testdata/Observation-example.json"),
    include_str!("../../host/fhir-defs/testdata/Patient-example.json"),
    include_str!("../../host/fhir-defs/testdata/Practitioner-example.json"),
    include_str!("../../host/fhir-defs/testdata/RiskAssessment-prognosis.json"),
];

/// A sample of the R4 examples (`hl7.fhir.r4.examples`, every resource type), plus the
/// resources of the search tests. Bundles among them are kept: they seed the Bundle target.
pub fn resources() -> &'static [Value] {
    static RESOURCES: OnceLock<Vec<Value>> = OnceLock::new();
    RESOURCES.get_or_init(|| {
        let text = zstd::decode_all(PACKED).expect("the packed R4 examples decompress");
        let mut de = serde_json::Deserializer::from_slice(&text);
        let mut out = de
            .deserialize_seq(Sample)
            .expect("the R4 examples are a JSON array");
        for text in SMALL {
            let list: Vec<Value> = serde_json::from_str(text).expect("fixture is JSON");
            out.extend(list);
        }
        out.extend(
            TESTDATA
                .iter()
                .map(|t| serde_json::from_str(t).expect("JSON")),
        );
        out
    })
}

/// Keeps at most [`PER_TYPE`] small examples of each type while streaming the array, so
/// that the 78 MB of examples are never all in memory.
struct Sample;

impl<'de> Visitor<'de> for Sample {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of FHIR resources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut kept = Vec::new();
        let mut per_type: HashMap<String, usize> = HashMap::new();
        while let Some(value) = seq.next_element::<Value>()? {
            let ty = value["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let count = per_type.entry(ty).or_default();
            if *count < PER_TYPE && value.to_string().len() <= MAX_EXAMPLE_BYTES {
                *count += 1;
                kept.push(value);
            }
        }
        Ok(kept)
    }
}

/// Every FHIRPath expression of the R4 search definitions (parameters and components).
pub fn fhirpath_expressions() -> Vec<String> {
    let mut out: Vec<String> = hestia::fhir::definitions::ResourceType::all()
        .flat_map(|t| t.search_params())
        .flat_map(|p| {
            std::iter::once(p.expression.clone())
                .chain(p.components.iter().map(|c| c.expression.clone()))
        })
        .filter(|e| !e.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Search query strings in the shapes clients send (chains, `_has`, modifiers, prefixes,
/// escapes, result parameters).
pub const SEARCH_QUERIES: &[&str] = &[
    "Patient?name=peter&birthdate=ge1970-01-01&_count=10",
    "Patient?family:exact=Chalmers&given:contains=pet&_sort=-birthdate,name",
    "Observation?code=http://loinc.org|8480-6&value-quantity=gt5.4|http://unitsofmeasure.org|mg",
    "Observation?subject:Patient.name=peter&_include=Observation:subject&_revinclude:iterate=Provenance:target",
    "Observation?subject.organization.name=Acme&date=ap2013-01-14T10:00:00Z",
    "Observation?component-code-value-quantity=http://loinc.org|8480-6$lt60&_summary=count",
    "Patient?_has:Observation:patient:code=1234-5&_has:Observation:subject:_has:AuditEvent:entity:agent=x",
    "Encounter?subject=Patient/123&status:not=finished&_lastUpdated=lt2020-01-01T00:00:00%2B01:00",
    "Patient?identifier=http://acme.org/mrn%7C12345&_id=a,b,c&_elements=name,birthDate&_total=accurate",
    "Condition?code:text=heart&onset-date=eb2000&abatement-date:missing=true&_format=json&_pretty=true",
    "Observation?value-string=caf%C3%A9%20%E2%80%94%20%F0%9F%98%80&_tag=a%5C%2Cb%5C%7Cc",
    "ValueSet?url:below=http://hl7.org/fhir/ValueSet&reference:above=http://x/y",
    "Observation?subject:identifier=urn:oid:1.2.3|456&code:of-type=http://t|MR|123",
    "RiskAssessment?probability=gt0.8&_summary=true&_sort=_lastUpdated",
];

/// Token, authorize and registration form bodies.
pub const OAUTH_FORMS: &[&str] = &[
    "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&client_id=app&code_verifier=dBjftJeZ4CVP-mJ92K9z9jDwt7xc7Y9R4b1-ZT8gIJc",
    "grant_type=client_credentials&scope=system%2FObservation.rs%3Fcategory%3Dlaboratory&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJFUzI1NiJ9.e30.sig",
    "grant_type=refresh_token&refresh_token=xyz&scope=openid+fhirUser+offline_access",
    "response_type=code&client_id=app&redirect_uri=https://app/cb&scope=launch%2Fpatient+patient%2F*.read+openid&state=s&aud=https://fhir.example/fhir&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
    "token=abc&token_type_hint=access_token",
    "username=alice&password=p%C3%A4ss+word&request_id=r1",
    "scope=user%2FPatient.cruds+patient%2FObservation.rs%3Fcode%3Dhttp%3A%2F%2Floinc.org%7C1234-5&scope=openid",
];

/// SMART scopes, v1 and v2.
pub const SCOPES: &[&str] = &[
    "patient/Observation.read",
    "user/*.write",
    "system/Patient.cruds",
    "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
    "user/Encounter.rs?subject:Patient.name=x&_has:Observation:encounter:code=1",
    "openid fhirUser launch/patient offline_access online_access",
    "patient/*.*",
];

/// RFC 7591 registration requests.
pub const REGISTRATIONS: &[&str] = &[
    r#"{"client_name":"App","redirect_uris":["https://app.example/cb"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"client_secret_basic","scope":"openid fhirUser patient/*.rs"}"#,
    r#"{"client_name":"Backend","grant_types":["client_credentials"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://backend.example/jwks.json","scope":"system/*.rs"}"#,
    r#"{"hestia_client_kind":"resource-server","client_name":"FHIR","token_endpoint_auth_method":"client_secret_post","hestia_access_token_lifetime":300}"#,
    r#"{"redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}"#,
];

/// Plugin manifests: the examples' and a few written for each plugin kind.
pub const MANIFESTS: &[&str] = &[
    include_str!("../../plugins/examples/consent-labels/consent-labels.toml"),
    include_str!("../../plugins/examples/tenant-isolation/tenant-isolation.toml"),
    include_str!("../../plugins/examples/us-core-validator/us-core-validator.toml"),
    include_str!("../../plugins/examples/trusted-audiences/trusted-audiences.toml"),
    "kind = \"resource-validator\"\norder = 5\non_error = \"allow\"\nisolation = true\n[wasi]\nclock = true\nrandom = true\n",
    "kind = \"audience-rule\"\n[config]\naudiences = [\"https://a\", \"https://b\"]\nnested = { a = { b = [1, 2.5, true, 1979-05-27T07:32:00Z] } }\n",
];

/// `hestia.toml` with every section.
pub const CONFIGS: &[&str] = &[
    r#"listen = "127.0.0.1:8443"
public_url = "https://hestia.example"
data_dir = "/var/lib/hestia"
database_url = "postgres://hestia:pw@db/hestia"
plugins_dir = "plugins"
log_format = "json"
[tls]
cert = "cert.pem"
key = "key.pem"
insecure_http = false
[fhir]
enabled = true
base_path = "/fhir"
max_body_bytes = 1048576
create_on_update = true
access_token_in_query = false
require_basic_auth = false
clock_skew_secs = 60
hidden_as = "not-found"
[oauth]
access_token_lifetime_secs = 3600
refresh_token_lifetime_secs = 86400
code_lifetime_secs = 60
key_rotation_overlap_secs = 3600
refresh_grace_secs = 10
open_registration = true
purge_interval_secs = 600
purge_after_secs = 86400
signing_alg = "ES256"
trusted_proxies = ["10.0.0.0/8", "::1"]
[plugins]
deadline_ms = 50
memory_mib = 64
watch = true
[plugins.wasi]
clock = true
random = false
"#,
    "[issuer]\nurl = \"https://issuer.example\"\nca = \"ca.pem\"\nregistration_token = \"t\"\nintrospect = \"always\"\nintrospection_cache_secs = 30\njwks_refetch_secs = 5\n",
    "",
];
