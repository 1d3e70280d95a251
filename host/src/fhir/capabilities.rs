//! The CapabilityStatement, generated from what the server really does: the resource
//! types and search parameters of the definitions table that search can evaluate, the
//! interactions the repository implements, and the OAuth endpoints of the authorization
//! server (SMART `oauth-uris`).

use serde_json::{Value, json};

use super::clock::now_ms;
use super::definitions::ResourceType;

/// The authorization server's endpoints, for the SMART security extension.
#[derive(Debug, Clone)]
pub struct OauthUris {
    pub authorize: String,
    pub token: String,
    pub register: String,
    pub introspect: String,
    pub revoke: String,
}

/// What varies by deployment.
#[derive(Debug, Clone)]
pub struct CapabilityOptions {
    pub base_url: String,
    pub create_on_update: bool,
    pub oauth: OauthUris,
}

/// `POST [type]/$validate` and `POST [type]/[id]/$validate` (`fhir::operations`); listed
/// on every resource, not in `rest.operation`, since there is no `[base]/$validate`.
const VALIDATE: &str = "http://hl7.org/fhir/OperationDefinition/Resource-validate";
/// `GET Patient/[id]/$everything` (`fhir::searchset::everything`).
const EVERYTHING: &str = "http://hl7.org/fhir/OperationDefinition/Patient-everything";
/// The Bulk Data export kick-offs (`fhir::bulk`): `[base]/$export`, `Patient/$export`,
/// `Group/[id]/$export`.
const BULK_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export";
const BULK_PATIENT_EXPORT: &str =
    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export";
const BULK_GROUP_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export";
/// `[base]/$import` (`fhir::bulk_import`). No published OperationDefinition describes the
/// forms it takes, so it is named by this server's own URN and documented in place.
const BULK_IMPORT: &str = "urn:hestia:OperationDefinition:import";
const BULK_IMPORT_DOC: &str = "Bulk Data import, asynchronous like $export (Prefer: respond-async; 202 with the status URL in Content-Location; the manifest lists the resources loaded per type and an error file of OperationOutcome lines naming each refused line). The body is NDJSON (Content-Type: application/fhir+ndjson, gzip allowed), or a Parameters manifest of NDJSON files (input: type and url) under the server's configured sources. Needs create and update access to every type imported.";

/// The operations of the whole system: the Bulk Data export and import kick-offs.
fn system_operations() -> Value {
    json!([
        {"name": "export", "definition": BULK_EXPORT},
        {"name": "import", "definition": BULK_IMPORT, "documentation": BULK_IMPORT_DOC},
    ])
}

/// Builds the CapabilityStatement (a few hundred KB: computed once per server).
pub fn capability_statement(options: &CapabilityOptions) -> Value {
    let interactions = |list: &[&str]| list.iter().map(|c| json!({"code": c})).collect::<Vec<_>>();
    let resources: Vec<Value> = ResourceType::all()
        .map(|rt| {
            let params: Vec<Value> = rt
                .search_params()
                .filter(|p| p.searchable().is_ok())
                .map(|p| json!({"name": p.code, "definition": p.url(), "type": p.kind.as_str()}))
                .collect();
            let mut operations = vec![json!({"name": "validate", "definition": VALIDATE})];
            if rt.as_str() == "Patient" {
                operations.push(json!({"name": "everything", "definition": EVERYTHING}));
                operations.push(json!({"name": "export", "definition": BULK_PATIENT_EXPORT}));
            }
            if rt.as_str() == "Group" {
                operations.push(json!({"name": "export", "definition": BULK_GROUP_EXPORT}));
            }
            json!({
                "type": rt.as_str(),
                "operation": operations,
                "interaction": interactions(&["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]),
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": options.create_on_update,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            })
        })
        .collect();
    // An endpoint the authorization server does not have is left out.
    let oauth_uris: Vec<Value> = [
        ("authorize", &options.oauth.authorize),
        ("token", &options.oauth.token),
        ("register", &options.oauth.register),
        ("introspect", &options.oauth.introspect),
        ("revoke", &options.oauth.revoke),
    ]
    .into_iter()
    .filter(|(_, uri)| !uri.is_empty())
    .map(|(url, uri)| json!({"url": url, "valueUri": uri}))
    .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        // When this statement was generated (it is built once per server start).
        "date": super::search::value::format_instant(now_ms()).get(..10).unwrap_or("1970-01-01"),
        "publisher": "Hestia",
        "kind": "instance",
        "software": {"name": "Hestia", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Hestia FHIR R4 server", "url": options.base_url},
        "fhirVersion": "4.0.1",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        // JSON is the only format: XML bodies and _format=xml get 415, Accept without JSON 406.
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": "JSON only (application/fhir+json; _format=json and _pretty=true are accepted): a request body in XML and _format=xml are answered with 415 Unsupported Media Type, an Accept header that allows no JSON (application/fhir+xml) with 406 Not Acceptable. Every interaction needs an OAuth2 access token (SMART App Launch 2) whose audience is this base URL.",
            "security": {
                "cors": false,
                "service": [{
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
                    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
                }],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": oauth_uris,
                }],
            },
            "resource": resources,
            "interaction": interactions(&["transaction", "batch", "history-system", "search-system"]),
            "operation": system_operations(),
        }],
    })
}
