//! Batch and transaction Bundles (FHIR R4 §3.1.0.11).
//!
//! A transaction runs every entry in one database transaction, in the order the spec
//! gives (DELETE, POST, PUT/PATCH, GET/HEAD), after giving each `POST` with a `urn:uuid:`
//! (or `urn:oid:`) `fullUrl` its new id and rewriting every reference to it; any failure
//! rolls everything back and names the entry. A batch runs each entry on its own and
//! reports each entry's result. Responses keep the request's entry order.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use serde_json::{Map, Value, json};

use super::access::Access;
use super::definitions::ResourceType;
use super::error::{ErrorKind, FhirError};
use super::outcome::{Issue, operation_outcome};
use super::repository::Conditional;
use super::repository::{PlainWrite, Repository, check_id, new_id};
use super::search::value::format_instant;
use super::searchset::{Allowed, Handling, SearchScope, TypeAccess, decode_query};
use crate::store::fhir::{StoredVersion, WriteMethod};
use crate::store::{Conn, WriteTx};

/// The HTTP method of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl EntryMethod {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// Transaction processing order: DELETE, POST, PUT and PATCH, then GET and HEAD.
    fn order(self) -> u8 {
        match self {
            Self::Delete => 0,
            Self::Post => 1,
            Self::Put | Self::Patch => 2,
            Self::Get | Self::Head => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// One entry's request, parsed: what the authorization layer sees for each entry.
#[derive(Debug, Clone)]
pub struct EntryRequest {
    /// Position in the request Bundle.
    pub index: usize,
    pub method: EntryMethod,
    pub resource_type: Option<ResourceType>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// Query parameters of the entry's URL (search, conditional interactions).
    pub query: Vec<(String, String)>,
    pub url: String,
    pub if_match: Option<i64>,
    pub if_none_exist: Option<String>,
    pub full_url: Option<String>,
    pub resource: Option<Map<String, Value>>,
}

/// Decides whether an entry may run, and under which [`Access`] its searches and
/// conditional matches run (the authorization layer supplies it).
pub type EntryCheck<'a> = &'a (dyn Fn(&EntryRequest) -> Result<Access, FhirError> + Send + Sync);

/// The kind of Bundle being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Batch,
    Transaction,
}

/// The outcome of one entry, which its `entry.response.status` states as an HTTP status
/// line ([`StatusLine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// Read, searched, updated, patched, or matched by a conditional create.
    Ok,
    Created,
    /// Deleted.
    NoContent,
    Failed(ErrorKind),
}

impl EntryStatus {
    /// A create or update's outcome: `Created` when it created the resource.
    fn written(created: bool) -> Self {
        if created { Self::Created } else { Self::Ok }
    }
}

/// Writes an entry's `response.status` (`"201 Created"`): the status codes are the HTTP
/// layer's, which passes this to [`Repository::process_bundle`].
pub type StatusLine = fn(EntryStatus) -> String;

fn entry_error(index: usize, what: impl Into<String>) -> FhirError {
    FhirError::BadRequest(vec![
        Issue::error("invalid", what).at(format!("Bundle.entry[{index}]")),
    ])
}

/// Parses a request Bundle into its kind and entries; any malformed entry refuses the whole Bundle.
pub fn parse_bundle(
    mut bundle: Map<String, Value>,
) -> Result<(BundleKind, Vec<EntryRequest>), FhirError> {
    let kind = bundle_kind(&bundle)?;
    let entries = match bundle.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(FhirError::invalid("Bundle.entry must be an array")),
    };
    let mut parsed = Vec::with_capacity(entries.len());
    let mut full_urls = HashSet::new();
    for (index, entry) in entries.into_iter().enumerate() {
        // A transaction's references to a fullUrl must name one entry.
        let seen = (kind == BundleKind::Transaction).then_some(&mut full_urls);
        parsed.push(parse_entry(index, entry, seen)?);
    }
    Ok((kind, parsed))
}

/// `Bundle.type`: batch or transaction, nothing else.
fn bundle_kind(bundle: &Map<String, Value>) -> Result<BundleKind, FhirError> {
    match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => Ok(BundleKind::Batch),
        Some("transaction") => Ok(BundleKind::Transaction),
        Some(other) => Err(FhirError::BadRequest(vec![
            Issue::error(
                "invalid",
                format!(
                    "a Bundle posted to the base must be of type batch or transaction, not {other:?}"
                ),
            )
            .at("Bundle.type"),
        ])),
        None => Err(FhirError::BadRequest(vec![
            Issue::error("required", "the Bundle has no type (batch or transaction)")
                .at("Bundle.type"),
        ])),
    }
}

/// One entry: its request's method and url, its resource and its conditions, checked
/// against each other; its fullUrl must not be in `seen_full_urls` when that is given.
fn parse_entry(
    index: usize,
    mut entry: Value,
    seen_full_urls: Option<&mut HashSet<String>>,
) -> Result<EntryRequest, FhirError> {
    let request = entry
        .get("request")
        .and_then(Value::as_object)
        .ok_or_else(|| entry_error(index, "entry has no request (method and url)"))?;
    let method_text = request.get("method").and_then(Value::as_str).unwrap_or("");
    let method = EntryMethod::parse(method_text).ok_or_else(|| {
        entry_error(
            index,
            format!("request.method {method_text:?} is not GET, HEAD, POST, PUT, PATCH or DELETE"),
        )
    })?;
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| entry_error(index, "entry has no request.url"))?
        .to_string();
    let target = parse_entry_url(index, &url)?;
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        None => None,
        Some(text) => Some(parse_if_match(index, text)?),
    };
    let if_none_exist = request
        .get("ifNoneExist")
        .and_then(Value::as_str)
        .map(str::to_string);
    let full_url = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_string);
    let resource = match entry.as_object_mut().and_then(|e| e.remove("resource")) {
        None => None,
        Some(Value::Object(r)) => Some(r),
        Some(_) => return Err(entry_error(index, "entry.resource must be a JSON object")),
    };
    let parsed = EntryRequest {
        index,
        method,
        resource_type: target.resource_type,
        id: target.id,
        version: target.version,
        query: target.query,
        url,
        if_match,
        if_none_exist,
        full_url,
        resource,
    };
    if let (Some(f), Some(seen)) = (&parsed.full_url, seen_full_urls)
        && !seen.insert(f.clone())
    {
        return Err(entry_error(
            index,
            format!("fullUrl {f:?} appears in more than one entry"),
        ));
    }
    check_entry_shape(&parsed)?;
    Ok(parsed)
}

/// What an entry's `request.url` names.
struct EntryTarget {
    resource_type: Option<ResourceType>,
    id: Option<String>,
    version: Option<String>,
    query: Vec<(String, String)>,
}

/// `request.url` as `[Type[/id[/_history/vid]]][?query]`, with a known type and a valid id.
fn parse_entry_url(index: usize, url: &str) -> Result<EntryTarget, FhirError> {
    let (path, query_text) = url.split_once('?').unwrap_or((url, ""));
    let query: Vec<(String, String)> = form_urlencoded_pairs(query_text);
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (resource_type, id, version) = match segments.as_slice() {
        [] => (None, None, None),
        [ty] => (Some(*ty), None, None),
        [ty, id] => (Some(*ty), Some(*id), None),
        [ty, id, "_history", v] => (Some(*ty), Some(*id), Some(*v)),
        _ => {
            return Err(entry_error(
                index,
                format!(
                    "request.url {url:?} is not a FHIR interaction this server supports in a Bundle"
                ),
            ));
        }
    };
    let resource_type = match resource_type {
        None => None,
        Some(t) => Some(ResourceType::parse(t).ok_or_else(|| {
            entry_error(
                index,
                format!("request.url {url:?}: {t:?} is not a FHIR R4 resource type"),
            )
        })?),
    };
    if let Some(id) = id {
        check_id(id).map_err(|_| {
            entry_error(
                index,
                format!("request.url {url:?}: {id:?} is not a valid id"),
            )
        })?;
    }
    Ok(EntryTarget {
        resource_type,
        id: id.map(str::to_string),
        version: version.map(str::to_string),
        query,
    })
}

/// `request.ifMatch`: a version ETag (`W/"3"`, or the bare number).
fn parse_if_match(index: usize, text: &str) -> Result<i64, FhirError> {
    let inner = text
        .trim()
        .strip_prefix("W/")
        .unwrap_or(text.trim())
        .trim_matches('"');
    inner.parse::<i64>().map_err(|_| {
        entry_error(
            index,
            format!("request.ifMatch {text:?} is not a version ETag such as W/\"3\""),
        )
    })
}

/// What each method needs of the rest of the entry: a resource for POST and PUT, of the
/// type the url names; a type for writes; an id or a condition for PUT and PATCH.
fn check_entry_shape(entry: &EntryRequest) -> Result<(), FhirError> {
    let (index, method) = (entry.index, entry.method);
    match method {
        EntryMethod::Post | EntryMethod::Put if entry.resource.is_none() => {
            return Err(entry_error(
                index,
                format!("a {} entry needs a resource", method.as_str()),
            ));
        }
        EntryMethod::Post | EntryMethod::Put | EntryMethod::Patch | EntryMethod::Delete
            if entry.resource_type.is_none() =>
        {
            return Err(entry_error(
                index,
                format!(
                    "a {} entry's url must name a resource type",
                    method.as_str()
                ),
            ));
        }
        EntryMethod::Put | EntryMethod::Patch if entry.id.is_none() && entry.query.is_empty() => {
            return Err(entry_error(
                index,
                format!("a {} entry's url must be Type/id", method.as_str()),
            ));
        }
        _ => {}
    }
    if let (Some(ty), Some(r)) = (entry.resource_type, &entry.resource)
        && matches!(method, EntryMethod::Post | EntryMethod::Put)
        && r.get("resourceType").and_then(Value::as_str) != Some(ty.as_str())
    {
        return Err(entry_error(
            index,
            format!(
                "the entry's resource is not a {} as its request.url says",
                ty.as_str()
            ),
        ));
    }
    Ok(())
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

/// Rewrites what refers to a key of `ids` (a `urn:uuid:`/`urn:oid:` fullUrl of the Bundle)
/// to its new `Type/id`, anywhere in the resource (extensions and contained resources
/// included): a `reference`, any other element whose whole string value is that fullUrl
/// (the uri, url and canonical elements such as `Provenance.policy` or an extension's
/// `valueUri`), and `href`/`src` attributes naming it in a narrative `div`.
///
/// Without a table of element types, `value` keys are left alone: they are the plain
/// strings of `Identifier.value` and `ContactPoint.value` (an identifier whose value is a
/// `urn:uuid:` names something, it does not refer to this Bundle's entry); every other
/// string element that can hold such a URN is a uri, url, canonical or reference.
fn rewrite_references(value: &mut Value, ids: &HashMap<String, String>) {
    rewrite_under("", value, ids);
}

/// [`rewrite_references`] of `value`, the value (or an item of the array) of `key`.
fn rewrite_under(key: &str, value: &mut Value, ids: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                rewrite_under(key, v, ids);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_under(key, v, ids)),
        Value::String(s) if key == "div" => {
            for (urn, new) in ids {
                if s.contains(urn.as_str()) {
                    for quote in ['"', '\''] {
                        *s = s.replace(
                            &format!("={quote}{urn}{quote}"),
                            &format!("={quote}{new}{quote}"),
                        );
                    }
                }
            }
        }
        Value::String(s) if key != "value" => {
            if let Some(new) = ids.get(s.as_str()) {
                *s = new.clone();
            }
        }
        _ => {}
    }
}

/// The result of one entry.
#[derive(Debug, Clone)]
struct EntryResult {
    status: EntryStatus,
    version: Option<StoredVersion>,
    resource: Option<Value>,
    outcome: Option<Value>,
}

impl EntryResult {
    fn from_error(err: &FhirError) -> Self {
        // The entry's outcome is generic for internal failures; the cause goes to the log.
        if let FhirError::Internal(cause) = err {
            tracing::error!(%cause, "a batch entry failed");
        }
        Self {
            status: EntryStatus::Failed(err.kind()),
            version: None,
            resource: None,
            outcome: Some(operation_outcome(&err.issues())),
        }
    }

    fn into_json(self, return_resources: bool, status_line: StatusLine) -> Value {
        let mut response = json!({ "status": status_line(self.status) });
        if let Some(v) = &self.version {
            response["location"] = json!(format!(
                "{}/{}/_history/{}",
                v.resource_type, v.id, v.version_id
            ));
            response["etag"] = json!(format!("W/\"{}\"", v.version_id));
            response["lastModified"] = json!(format_instant(v.last_updated));
        }
        if let Some(o) = self.outcome {
            response["outcome"] = o;
        }
        let mut entry = json!({ "response": response });
        if let (Some(resource), true) = (self.resource, return_resources) {
            if let Some(v) = &self.version {
                entry["fullUrl"] = json!(format!("{}/{}", v.resource_type, v.id));
            }
            entry["resource"] = resource;
        }
        entry
    }
}

fn content(v: &StoredVersion) -> Result<Value, FhirError> {
    serde_json::from_str(&v.content).map_err(|e| FhirError::Internal(e.to_string()))
}

/// A PATCH entry's body: a Binary holding a JSON Patch document (base64 `data`).
fn patch_document(entry: &EntryRequest) -> Result<Vec<u8>, FhirError> {
    let resource = entry.resource.as_ref().ok_or_else(|| {
        entry_error(
            entry.index,
            "a PATCH entry needs a Binary resource holding a JSON Patch",
        )
    })?;
    let is_json_patch = resource.get("resourceType").and_then(Value::as_str) == Some("Binary")
        && resource.get("contentType").and_then(Value::as_str)
            == Some("application/json-patch+json");
    if !is_json_patch {
        return Err(entry_error(
            entry.index,
            "a PATCH entry's resource must be a Binary with contentType application/json-patch+json (FHIRPath Patch is not supported)",
        ));
    }
    let data = resource.get("data").and_then(Value::as_str).unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| entry_error(entry.index, format!("the Binary's data is not base64: {e}")))
}

impl EntryResult {
    /// A result that carries the version written or read, and its content.
    fn with_version(status: EntryStatus, v: StoredVersion) -> Result<Self, FhirError> {
        let resource = content(&v)?;
        Ok(Self {
            status,
            version: Some(v),
            resource: Some(resource),
            outcome: None,
        })
    }
}

impl Repository {
    /// Runs one entry inside the transaction `tx`, under its `access` as a request of its
    /// own would run: reads of resources outside it are refused (403, or 404 with
    /// `hidden_as_not_found`), searches see only what it lets through, and updates, patches
    /// and deletes need the current version inside it.
    async fn run_entry(
        &self,
        tx: &mut WriteTx,
        entry: &EntryRequest,
        new_ids: &HashMap<usize, String>,
        access: &Access,
        type_access: TypeAccess<'_>,
    ) -> Result<EntryResult, FhirError> {
        let allowed = Allowed {
            access,
            type_access,
        };
        match entry.method {
            EntryMethod::Get | EntryMethod::Head => {
                self.run_read_entry(tx, entry, access, type_access).await
            }
            EntryMethod::Post => self.run_post_entry(tx, entry, new_ids, allowed).await,
            EntryMethod::Put => self.run_put_entry(tx, entry, allowed).await,
            EntryMethod::Patch => {
                let (Some(ty), Some(id)) = (entry.resource_type, &entry.id) else {
                    return Err(entry_error(
                        entry.index,
                        "conditional patch inside a Bundle is not supported; use Type/id",
                    ));
                };
                let doc = patch_document(entry)?;
                let w = self
                    .patch(Some(tx), ty, id, &doc, entry.if_match, access)
                    .await?;
                EntryResult::with_version(EntryStatus::Ok, w.version)
            }
            EntryMethod::Delete => {
                let ty = entry
                    .resource_type
                    .ok_or_else(|| entry_error(entry.index, "DELETE needs a resource type"))?;
                let v = match &entry.id {
                    Some(id) => {
                        self.delete(Some(tx), ty, id, entry.if_match, access)
                            .await?
                    }
                    None => {
                        let query = &entry.query;
                        self.conditional_delete(Some(tx), ty, query, entry.if_match, allowed)
                            .await?
                    }
                };
                Ok(EntryResult {
                    status: EntryStatus::NoContent,
                    version: v,
                    resource: None,
                    outcome: None,
                })
            }
        }
    }

    /// A GET or HEAD entry: a read, a version read, or a search.
    async fn run_read_entry(
        &self,
        tx: &mut WriteTx,
        entry: &EntryRequest,
        access: &Access,
        type_access: TypeAccess<'_>,
    ) -> Result<EntryResult, FhirError> {
        let ty = entry.resource_type;
        let Some(id) = &entry.id else {
            // A search: a searchset Bundle as the entry's resource. It reads the
            // committed database, not this transaction's own writes.
            let scope = ty.map_or(SearchScope::System, SearchScope::Type);
            let bundle = self
                .search(scope, &entry.query, Handling::Strict, access, type_access)
                .await?;
            return Ok(EntryResult {
                status: EntryStatus::Ok,
                version: None,
                resource: Some(bundle),
                outcome: None,
            });
        };
        let ty = ty.ok_or_else(|| entry_error(entry.index, "a read needs a resource type"))?;
        let v = match &entry.version {
            Some(vid) => {
                self.check_history_visible(Some(&mut *tx), ty, id, access)
                    .await?;
                self.vread(Some(tx), ty, id, vid).await?
            }
            None => self.read_with(Some(tx), ty, id, access).await?,
        };
        EntryResult::with_version(EntryStatus::Ok, v)
    }

    /// A POST entry: a create under the id given in advance, or a conditional create.
    async fn run_post_entry(
        &self,
        tx: &mut WriteTx,
        entry: &EntryRequest,
        new_ids: &HashMap<usize, String>,
        allowed: Allowed<'_>,
    ) -> Result<EntryResult, FhirError> {
        let ty = entry
            .resource_type
            .ok_or_else(|| entry_error(entry.index, "POST needs a resource type"))?;
        let id = new_ids.get(&entry.index).cloned().unwrap_or_else(new_id);
        let resource = entry.resource.clone().unwrap_or_default();
        if let Some(criteria) = &entry.if_none_exist {
            let criteria = decode_query(criteria);
            return match self
                .conditional_create(Some(tx), ty, id, resource, &criteria, allowed)
                .await?
            {
                Conditional::Written(w) => {
                    EntryResult::with_version(EntryStatus::Created, w.version)
                }
                Conditional::Existing(v) => EntryResult::with_version(EntryStatus::Ok, v),
            };
        }
        let w = self.create(Some(tx), ty, id, resource).await?;
        EntryResult::with_version(EntryStatus::Created, w.version)
    }

    /// A PUT entry: an update of `Type/id`, or a conditional update.
    async fn run_put_entry(
        &self,
        tx: &mut WriteTx,
        entry: &EntryRequest,
        allowed: Allowed<'_>,
    ) -> Result<EntryResult, FhirError> {
        let ty = entry
            .resource_type
            .ok_or_else(|| entry_error(entry.index, "PUT needs a resource type"))?;
        let resource = entry.resource.clone().unwrap_or_default();
        let w = match &entry.id {
            None => {
                self.conditional_update(
                    Some(tx),
                    ty,
                    resource,
                    &entry.query,
                    entry.if_match,
                    allowed,
                )
                .await?
            }
            Some(id) => {
                self.update(Some(tx), ty, id, resource, entry.if_match, allowed.access)
                    .await?
            }
        };
        EntryResult::with_version(EntryStatus::written(w.created), w.version)
    }

    /// Processes a batch or transaction Bundle; `check` authorizes each entry before it runs,
    /// `type_access` restricts what searches inside it include (see [`Self::search`]).
    /// Returns the response Bundle, each entry's `response.status` written by `status_line`.
    pub async fn process_bundle(
        &self,
        bundle: Map<String, Value>,
        check: EntryCheck<'_>,
        type_access: TypeAccess<'_>,
        return_resources: bool,
        status_line: StatusLine,
    ) -> Result<Value, FhirError> {
        let entry_count = bundle
            .get("entry")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        self.limits().check_bundle_entries(entry_count)?;
        let (kind, entries) = parse_bundle(bundle)?;
        let results = match kind {
            BundleKind::Batch => self.run_batch(&entries, check, type_access).await,
            BundleKind::Transaction => self.run_transaction(entries, check, type_access).await?,
        };
        let entries: Vec<Value> = results
            .into_iter()
            .map(|r| r.map_or(Value::Null, |r| r.into_json(return_resources, status_line)))
            .collect();
        Ok(json!({
            "resourceType": "Bundle",
            "id": new_id(),
            "type": match kind { BundleKind::Batch => "batch-response", BundleKind::Transaction => "transaction-response" },
            "entry": entries,
        }))
    }

    /// A batch: each entry checked and run in a transaction of its own, a failure being
    /// that entry's result. Results are in the request's entry order.
    async fn run_batch(
        &self,
        entries: &[EntryRequest],
        check: EntryCheck<'_>,
        type_access: TypeAccess<'_>,
    ) -> Vec<Option<EntryResult>> {
        let mut results: Vec<Option<EntryResult>> = vec![None; entries.len()];
        for entry in entries {
            let result = match check(entry) {
                Err(err) => EntryResult::from_error(&err),
                Ok(access) => {
                    let run = async {
                        let mut tx = self.store().begin().await?;
                        let r = self
                            .run_entry(&mut tx, entry, &HashMap::new(), &access, type_access)
                            .await?;
                        tx.commit().await?;
                        Ok::<_, FhirError>(r)
                    };
                    run.await
                        .unwrap_or_else(|err| EntryResult::from_error(&err))
                }
            };
            results[entry.index] = Some(result);
        }
        results
    }

    /// A transaction: new ids and rewritten references, every entry checked, then every
    /// entry run in the spec's order inside one database transaction; the first failure
    /// rolls everything back. Results are in the request's entry order.
    async fn run_transaction(
        &self,
        mut entries: Vec<EntryRequest>,
        check: EntryCheck<'_>,
        type_access: TypeAccess<'_>,
    ) -> Result<Vec<Option<EntryResult>>, FhirError> {
        if only_plain_writes(&entries) {
            return self.run_plain_transaction(entries, check).await;
        }
        let mut results: Vec<Option<EntryResult>> = vec![None; entries.len()];
        let mut tx = self.store().begin().await?;
        let (new_ids, references) = self
            .assign_post_ids(&mut tx, &entries, check, type_access)
            .await?;
        rewrite_entries(&mut entries, &references);
        let granted = decide_entries(&entries, check)?;
        for entry in in_processing_order(&entries) {
            // Every entry was checked above; one without a decision is refused.
            let access = granted.get(&entry.index).cloned().ok_or_else(|| {
                FhirError::Internal(format!("entry {} has no access decision", entry.index))
            })?;
            let result = self
                .run_entry(&mut tx, entry, &new_ids, &access, type_access)
                .await
                .map_err(|err| in_entry(err, entry))?;
            results[entry.index] = Some(result);
        }
        tx.commit().await?;
        Ok(results)
    }

    /// A transaction of plain creates and updates ([`only_plain_writes`]): what
    /// [`Self::run_transaction`] does, with every entry's content checked (validator
    /// plugins included) before the database transaction begins and the rows of all
    /// entries written together ([`Repository::write_plain`]) instead of entry by entry.
    async fn run_plain_transaction(
        &self,
        mut entries: Vec<EntryRequest>,
        check: EntryCheck<'_>,
    ) -> Result<Vec<Option<EntryResult>>, FhirError> {
        let mut new_ids = HashMap::new();
        let mut references = HashMap::new();
        for entry in entries.iter().filter(|e| e.method == EntryMethod::Post) {
            name_post(entry, new_id(), &mut new_ids, &mut references);
        }
        rewrite_entries(&mut entries, &references);
        let granted = decide_entries(&entries, check)?;
        // Each body moves into its write: the checks above were the last to read it here.
        let mut bodies: HashMap<usize, Map<String, Value>> = entries
            .iter_mut()
            .map(|e| (e.index, e.resource.take().unwrap_or_default()))
            .collect();
        let order = in_processing_order(&entries);
        let mut writes = Vec::with_capacity(order.len());
        for entry in &order {
            let body = bodies.remove(&entry.index).unwrap_or_default();
            let mut write = plain_write(entry, body, &new_ids, &granted)?;
            self.check_plain(&mut write)
                .map_err(|err| in_entry(err, entry))?;
            writes.push(write);
        }
        let written = self
            .write_plain(writes)
            .await
            .map_err(|(at, err)| match at {
                Some(at) => in_entry(err, order[at]),
                None => err,
            })?;
        let mut results: Vec<Option<EntryResult>> = vec![None; entries.len()];
        for (entry, (w, content)) in order.iter().zip(written) {
            results[entry.index] = Some(EntryResult {
                status: EntryStatus::written(w.created),
                version: Some(w.version),
                resource: Some(content),
                outcome: None,
            });
        }
        Ok(results)
    }

    /// New ids for a transaction's POSTs, by entry index, and what each `urn:uuid:`/`urn:oid:`
    /// fullUrl becomes (`Type/id`), so that every reference to it can be rewritten. A
    /// conditional create that matches one resource is that resource: references to it
    /// name the existing id (matched in this transaction, under the entry's access, before
    /// any entry runs).
    async fn assign_post_ids(
        &self,
        conn: &mut Conn,
        entries: &[EntryRequest],
        check: EntryCheck<'_>,
        type_access: TypeAccess<'_>,
    ) -> Result<(HashMap<usize, String>, HashMap<String, String>), FhirError> {
        let mut new_ids = HashMap::new();
        let mut references = HashMap::new();
        for entry in entries.iter().filter(|e| e.method == EntryMethod::Post) {
            let mut id = new_id();
            if let (Some(criteria), Some(ty)) = (&entry.if_none_exist, entry.resource_type) {
                let access = check(entry).map_err(|err| in_entry(err, entry))?;
                let allowed = Allowed {
                    access: &access,
                    type_access,
                };
                let found = self
                    .matching(conn, ty, &decode_query(criteria), allowed)
                    .await
                    .map_err(|err| in_entry(err, entry))?;
                if let [one] = found.as_slice() {
                    id = one.clone();
                }
            }
            name_post(entry, id, &mut new_ids, &mut references);
        }
        Ok((new_ids, references))
    }
}

/// Gives a transaction's POST `entry` the id `id`, and its `urn:uuid:` (or `urn:oid:`)
/// fullUrl the reference `Type/id`.
fn name_post(
    entry: &EntryRequest,
    id: String,
    new_ids: &mut HashMap<usize, String>,
    references: &mut HashMap<String, String>,
) {
    if let (Some(full), Some(ty)) = (&entry.full_url, entry.resource_type)
        && (full.starts_with("urn:uuid:") || full.starts_with("urn:oid:"))
    {
        references.insert(full.clone(), format!("{}/{id}", ty.as_str()));
    }
    new_ids.insert(entry.index, id);
}

/// Rewrites every reference to a POST's fullUrl in the entries' resources.
fn rewrite_entries(entries: &mut [EntryRequest], references: &HashMap<String, String>) {
    if references.is_empty() {
        return;
    }
    for entry in entries {
        if let Some(resource) = &mut entry.resource {
            let mut value = Value::Object(std::mem::take(resource));
            rewrite_references(&mut value, references);
            if let Value::Object(map) = value {
                *resource = map;
            }
        }
    }
}

/// Each entry's access decision, by index; the first refusal refuses the transaction.
fn decide_entries(
    entries: &[EntryRequest],
    check: EntryCheck<'_>,
) -> Result<HashMap<usize, Access>, FhirError> {
    entries
        .iter()
        .map(|entry| {
            Ok((
                entry.index,
                check(entry).map_err(|err| in_entry(err, entry))?,
            ))
        })
        .collect()
}

/// The entries in the order a transaction runs them.
fn in_processing_order(entries: &[EntryRequest]) -> Vec<&EntryRequest> {
    let mut order: Vec<&EntryRequest> = entries.iter().collect();
    order.sort_by_key(|e| (e.method.order(), e.index));
    order
}

/// Whether a transaction is only creates (POST without `ifNoneExist`) and updates of
/// `Type/id`, no two of the same resource: nothing in it reads what another entry writes,
/// so its rows can be written together ([`Repository::run_plain_transaction`]).
fn only_plain_writes(entries: &[EntryRequest]) -> bool {
    let mut targets = HashSet::new();
    entries
        .iter()
        .all(|e| match (e.method, e.resource_type, &e.id) {
            (EntryMethod::Post, Some(_), _) => e.if_none_exist.is_none(),
            (EntryMethod::Put, Some(ty), Some(id)) => targets.insert((ty, id.as_str())),
            _ => false,
        })
}

/// The [`PlainWrite`] of a plain entry ([`only_plain_writes`]) under its decision.
fn plain_write<'a>(
    entry: &EntryRequest,
    resource: Map<String, Value>,
    new_ids: &HashMap<usize, String>,
    granted: &'a HashMap<usize, Access>,
) -> Result<PlainWrite<'a>, FhirError> {
    let missing =
        |what: &str| FhirError::Internal(format!("plain entry {} has no {what}", entry.index));
    let (id, method) = match entry.method {
        EntryMethod::Post => (new_ids.get(&entry.index), WriteMethod::Create),
        _ => (entry.id.as_ref(), WriteMethod::Update),
    };
    Ok(PlainWrite {
        resource_type: entry
            .resource_type
            .ok_or_else(|| missing("resource type"))?,
        id: id.ok_or_else(|| missing("id"))?.clone(),
        resource,
        method,
        if_match: entry.if_match,
        access: granted
            .get(&entry.index)
            .ok_or_else(|| missing("access decision"))?,
        index: None,
    })
}

/// Names the failing entry in a transaction's error, keeping its kind.
fn in_entry(err: FhirError, entry: &EntryRequest) -> FhirError {
    let prefix = format!(
        "transaction entry {} ({} {}): ",
        entry.index,
        entry.method.as_str(),
        entry.url
    );
    if let FhirError::Internal(cause) = &err {
        tracing::error!(%cause, "{prefix}failed");
    }
    let mut issues = err.issues();
    for issue in &mut issues {
        issue.diagnostics = format!("{prefix}{}", issue.diagnostics);
        issue
            .expression
            .push(format!("Bundle.entry[{}]", entry.index));
    }
    FhirError::WithKind(err.kind(), issues)
}
