//! The FHIR repository: the REST interactions on resources (read, vread, create, update,
//! patch, delete, history) as plain functions. No HTTP here: `http/fhir.rs` maps requests
//! to these calls and [`FhirError`] to status codes and OperationOutcomes.
//!
//! Every write checks its input completely (JSON shape, type, id, validator plugins)
//! before the first statement, and runs in one database transaction with its index rows.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::access::{Access, Visible};
use super::clock::version_stamp;
use super::definitions::ResourceType;
use super::error::FhirError;
use super::limits::Limits;
use super::outcome::Issue;
use super::search::value::{format_instant, is_valid_id};
use super::search::{IndexRows, SearchLimits, extract};
use super::searchset::{self, Allowed, Handling, SearchScope, Via};
use crate::store::fhir::{
    Currents, HistoryFilter, HistoryScope, StoredVersion, VersionRows, WriteMethod, fhir_current,
    fhir_current_many, fhir_version, fhir_write,
};
use crate::store::write_many::fhir_write_many;
use crate::store::{Conn, Store, WriteTx};

/// Checks resources before they are stored (the resource-validator plugins implement it).
pub trait ResourceValidator: Send + Sync {
    fn validate(&self, resource_type: &str, resource_json: &str) -> Vec<Issue>;
}

/// A validator that accepts everything: for tests of the repository alone and for tools
/// that import data known to be valid. The server always runs the plugins.
pub struct NoValidation;

impl ResourceValidator for NoValidation {
    fn validate(&self, _: &str, _: &str) -> Vec<Issue> {
        Vec::new()
    }
}

#[derive(Debug, Clone)]
pub struct RepositoryOptions {
    /// The FHIR base URL (for `fullUrl`s and links).
    pub base_url: String,
    /// Whether `PUT` of a resource that does not exist creates it with the client's id.
    pub create_on_update: bool,
    /// Whether a read refused by the access constraints answers 404 (hiding that the
    /// resource exists) instead of 403.
    pub hidden_as_not_found: bool,
    /// What one search may ask (`fhir.max_chain_depth`, ...).
    pub search_limits: SearchLimits,
}

/// A resource that exists but that the caller's access does not let through: why (the
/// refusal naming the constraint) and which (`Type/id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden(pub String, pub String);

/// A version that was just written.
#[derive(Debug, Clone)]
pub struct Written {
    pub version: StoredVersion,
    /// True when the write created the resource (201), false for a new version (200).
    pub created: bool,
}

/// A version written by [`Repository::write_plain`], with its content as a `Value`.
pub type WrittenContent = (Written, Value);

/// Why [`Repository::write_plain`] wrote nothing, with the position of the write refused
/// when one is to blame.
pub type Refusal = (Option<usize>, FhirError);

/// A create (under a new id) or an update of `Type/id` for [`Repository::write_plain`].
pub struct PlainWrite<'a> {
    pub resource_type: ResourceType,
    pub id: String,
    pub resource: Map<String, Value>,
    /// [`WriteMethod::Create`] or [`WriteMethod::Update`].
    pub method: WriteMethod,
    pub if_match: Option<i64>,
    /// What the write may touch: an update's current version must be within it.
    pub access: &'a Access,
    /// The content's index rows, extracted by [`Repository::check_plain`].
    pub index: Option<IndexRows>,
}

/// Which attempt at a transaction's writes [`Repository::write_plain`] makes: under the
/// inline writer, which may give up and leave them to a transaction of the pool, or the
/// last one.
#[derive(Clone, Copy)]
enum Try {
    Inline,
    Last,
}

/// The repository. Cheap to clone. Each interaction takes `tx`, the caller's write
/// transaction when it runs inside one (a Bundle's), or `None` to run in a transaction
/// of its own (a read: on a pooled connection).
#[derive(Clone)]
pub struct Repository {
    store: Store,
    validator: Arc<dyn ResourceValidator>,
    options: Arc<RepositoryOptions>,
    limits: Arc<Limits>,
}

/// Checks a logical id: `[A-Za-z0-9\-\.]{1,64}` (FHIR `id`).
pub fn check_id(id: &str) -> Result<(), FhirError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "{id:?} is not a valid resource id (1 to 64 of A-Z a-z 0-9 - .)"
        )))
    }
}

/// Resolves a resource type named in a URL; an unknown one is 404 (FHIR: "resource type not supported").
pub fn resource_type(name: &str) -> Result<ResourceType, FhirError> {
    ResourceType::parse(name)
        .ok_or_else(|| FhirError::NotFound(format!("{name:?} is not a FHIR R4 resource type")))
}

/// A new server-assigned resource id: a UUIDv7, whose leading timestamp puts a new
/// resource at the end of the indexes keyed by (type, id) instead of on a random leaf page
/// of each (74 random bits keep ids unguessable; `meta.lastUpdated` already tells when).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Parses a body as a JSON object whose `resourceType` is `expected`.
pub fn parse_resource(
    body: &[u8],
    expected: ResourceType,
) -> Result<Map<String, Value>, FhirError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        FhirError::BadRequest(vec![Issue::error(
            "structure",
            format!("the body is not valid JSON: {e}"),
        )])
    })?;
    let Value::Object(object) = value else {
        return Err(FhirError::BadRequest(vec![Issue::error(
            "structure",
            "the body must be a JSON object (a FHIR resource)",
        )]));
    };
    match object.get("resourceType") {
        Some(Value::String(t)) if t == expected.as_str() => Ok(object),
        Some(Value::String(t)) => Err(FhirError::BadRequest(vec![
            Issue::error(
                "invalid",
                format!(
                    "the body's resourceType {t:?} does not match the URL's resource type {:?}",
                    expected.as_str()
                ),
            )
            .at("resourceType"),
        ])),
        _ => Err(FhirError::BadRequest(vec![
            Issue::error("required", "the body has no resourceType").at("resourceType"),
        ])),
    }
}

impl Repository {
    pub fn new(
        store: Store,
        validator: Arc<dyn ResourceValidator>,
        options: RepositoryOptions,
    ) -> Self {
        Self {
            store,
            validator,
            options: Arc::new(options),
            limits: Default::default(),
        }
    }

    /// The same repository under other request limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &RepositoryOptions {
        &self.options
    }

    /// Runs the validator plugins; errors refuse the write with 422.
    pub fn validate(
        &self,
        resource_type: ResourceType,
        resource: &Map<String, Value>,
    ) -> Vec<Issue> {
        let json = serde_json::to_string(resource).unwrap_or_default();
        self.validator.validate(resource_type.as_str(), &json)
    }

    fn check_valid(
        &self,
        resource_type: ResourceType,
        resource: &Map<String, Value>,
    ) -> Result<(), FhirError> {
        let issues = self.validate(resource_type, resource);
        if issues.iter().any(|i| i.severity.is_failure()) {
            return Err(FhirError::Unprocessable(issues));
        }
        Ok(())
    }

    /// The current version; 404 when it never existed, 410 when deleted. Inside the
    /// caller's transaction `tx` when there is one (it sees the transaction's own writes).
    pub async fn read(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
    ) -> Result<StoredVersion, FhirError> {
        match tx {
            Some(tx) => current_of(tx, resource_type, id).await,
            None => self.current(resource_type, id).await,
        }
    }

    /// One version; 404 when there is no such version, 410 when it is a deletion.
    pub async fn vread(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        version: &str,
    ) -> Result<StoredVersion, FhirError> {
        let mut conn = self.store.connection_unless(tx).await?;
        check_id(id)?;
        let ty = resource_type.as_str();
        let vid: i64 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
            FhirError::invalid(format!(
                "{version:?} is not a version id of this server (1, 2, 3, …)"
            ))
        })?;
        match fhir_version(&mut conn, ty, id, vid).await? {
            None => Err(FhirError::NotFound(format!(
                "{ty}/{id} has no version {vid}"
            ))),
            Some(v) if v.deleted => Err(FhirError::Gone(format!(
                "version {vid} of {ty}/{id} is its deletion"
            ))),
            Some(v) => Ok(v),
        }
    }

    /// Creates a resource under `id`, which the server chose ([`new_id`]; a client's `id`
    /// is ignored, as the spec says), in the caller's transaction `tx`, or without one
    /// together with the other creates of the moment ([`Store::create_grouped`]).
    pub async fn create(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: String,
        mut resource: Map<String, Value>,
    ) -> Result<Written, FhirError> {
        resource.insert("id".into(), Value::String(id.clone()));
        self.check_valid(resource_type, &resource)?;
        let Some(tx) = tx else {
            let (written, index) =
                prepare_version(resource_type, &id, resource, None, WriteMethod::Create)?;
            let version = self.store.create_grouped(written.version, index).await?;
            return Ok(Written { version, ..written });
        };
        let mut tx = self.store.begin_unless(Some(tx)).await?;
        let written = write_version(
            &mut tx,
            resource_type,
            &id,
            resource,
            None,
            WriteMethod::Create,
        )
        .await?;
        tx.finish().await?;
        Ok(written)
    }

    /// Updates (or, when allowed, creates) the resource with the client's id, in the
    /// caller's transaction `tx` or one of its own. `if_match` is the version the client
    /// last saw (`If-Match: W/"n"`); `access` the caller's decision, which the current
    /// version must be within ([`Self::lock_write_target`], in the write's transaction).
    pub async fn update(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        resource: Map<String, Value>,
        if_match: Option<i64>,
        access: &Access,
    ) -> Result<Written, FhirError> {
        // The body's checks (and validator plugins) before the transaction: on SQLite a
        // transaction holds the process's one write turn.
        self.check_update(resource_type, id, &resource)?;
        let mut tx = self.store.begin_unless(tx).await?;
        self.lock_write_target(&mut tx, resource_type, id, access)
            .await?;
        let current = fhir_current(&mut tx, resource_type.as_str(), id).await?;
        check_precondition(resource_type, id, current.as_ref(), if_match)?;
        if current.is_none() && !self.options.create_on_update {
            return Err(not_created(resource_type, id));
        }
        let written = write_version(
            &mut tx,
            resource_type,
            id,
            resource,
            current.as_ref(),
            WriteMethod::Update,
        )
        .await?;
        tx.finish().await?;
        Ok(written)
    }

    /// What an update checks of its content alone, before any database work: the id, the
    /// body's id, and the validator plugins.
    pub fn check_update(
        &self,
        resource_type: ResourceType,
        id: &str,
        resource: &Map<String, Value>,
    ) -> Result<(), FhirError> {
        check_id(id)?;
        match resource.get("id") {
            Some(Value::String(body_id)) if body_id == id => {}
            Some(Value::String(body_id)) => {
                return Err(FhirError::BadRequest(vec![
                    Issue::error(
                        "invalid",
                        format!("the body's id {body_id:?} does not match the URL's id {id:?}"),
                    )
                    .at("id"),
                ]));
            }
            _ => {
                return Err(FhirError::BadRequest(vec![
                    Issue::error(
                        "required",
                        format!("an update needs the resource's id in the body (\"id\": {id:?})"),
                    )
                    .at("id"),
                ]));
            }
        }
        self.check_valid(resource_type, resource)
    }

    /// What an import writes of a resource it takes to be new: checked as an update
    /// ([`Self::check_update`]), then its first version (written by `PUT`) and index rows.
    /// One that exists already is written with [`Self::update_many`] instead.
    pub fn prepare_new(
        &self,
        resource_type: ResourceType,
        id: &str,
        resource: Map<String, Value>,
    ) -> Result<(StoredVersion, IndexRows), FhirError> {
        self.check_update(resource_type, id, &resource)?;
        let (written, index) =
            prepare_version(resource_type, id, resource, None, WriteMethod::Update)?;
        Ok((written.version, index))
    }

    /// What [`Self::create`] or [`Self::update`] checks of one [`PlainWrite`]'s content
    /// alone, before any database work (a create's body gets its new id).
    /// The index rows are extracted here too, outside the write's transaction: they do
    /// not depend on the version (`_lastUpdated` is the current row's column).
    pub fn check_plain(&self, write: &mut PlainWrite<'_>) -> Result<(), FhirError> {
        match write.method {
            WriteMethod::Create => {
                (write.resource).insert("id".into(), Value::String(write.id.clone()));
                self.check_valid(write.resource_type, &write.resource)?;
            }
            _ => self.check_update(write.resource_type, &write.id, &write.resource)?,
        }
        write.index = Some(extract_from(&mut write.resource)?);
        Ok(())
    }

    /// Writes creates and updates of distinct resources, each checked with
    /// [`Self::check_plain`], in one transaction, with the checks [`Self::create`] and
    /// [`Self::update`] make in the database (the target held and within the write's
    /// access, `If-Match`, create-on-update; under constraints every access first) made for
    /// each in the order given, and the rows
    /// of all of them written together: a transaction Bundle of plain writes. On SQLite
    /// writes within no constraints go through the inline writer (prepared single-row
    /// statements on this thread, its page cache warm); otherwise multi-row statements in a
    /// transaction of the pool. The first write refused is answered with its position.
    pub async fn write_plain(
        &self,
        mut writes: Vec<PlainWrite<'_>>,
    ) -> Result<Vec<WrittenContent>, Refusal> {
        let updated: Vec<(&str, String)> = writes
            .iter()
            .filter(|w| w.method != WriteMethod::Create)
            .map(|w| (w.resource_type.as_str(), w.id.clone()))
            .collect();
        let keys: Vec<(&str, &str)> = updated.iter().map(|(t, id)| (*t, id.as_str())).collect();
        if writes.iter().all(|w| w.access.is_unrestricted()) {
            let mut written = Vec::new();
            let inline = self
                .store
                .write_inline_after(&keys, |currents| {
                    let (rows, versions) =
                        self.plain_versions(&mut writes, currents, Try::Inline)?;
                    written = versions;
                    Ok(rows)
                })
                .await
                .map_err(|e| (None, e.into()))?;
            match inline {
                Some(Ok(_)) => return Ok(written),
                Some(Err(refused)) => return Err(refused),
                None => {}
            }
        }
        let mut tx = self.store.begin().await.map_err(|e| (None, e.into()))?;
        let currents = tx
            .lock_current_many(&keys)
            .await
            .map_err(|e| (None, e.into()))?;
        for (at, write) in writes.iter().enumerate() {
            if write.method != WriteMethod::Create {
                self.check_write_target(&mut tx, write.resource_type, &write.id, write.access)
                    .await
                    .map_err(|e| (Some(at), e))?;
            }
        }
        let (rows, written) = self.plain_versions(&mut writes, &currents, Try::Last)?;
        let done = async {
            fhir_write_many(&mut tx, &rows).await?;
            tx.commit_counting(rows.len() as u64).await
        };
        done.await.map_err(|e| (None, e.into()))?;
        Ok(written)
    }

    /// The versions of [`Self::write_plain`]'s writes after `currents` (their rows, and
    /// each with its content), with what an update checks of each apart from the access
    /// ([`Self::check_write_target`]); the first refused is answered with its position.
    fn plain_versions(
        &self,
        writes: &mut [PlainWrite<'_>],
        currents: &Currents,
        attempt: Try,
    ) -> Result<(Vec<VersionRows>, Vec<WrittenContent>), Refusal> {
        let mut rows = Vec::with_capacity(writes.len());
        let mut written = Vec::with_capacity(writes.len());
        for (at, write) in writes.iter_mut().enumerate() {
            let current = current_in(currents, write);
            let (w, index) = self
                .unrestricted_version(write, current, attempt)
                .map_err(|e| (Some(at), e))?;
            rows.push((w.0.version.clone(), Some(index)));
            written.push(w);
        }
        Ok((rows, written))
    }

    /// The version one write of [`Self::write_plain`] makes after `current`, with what an
    /// update checks of it apart from the access ([`Self::check_write_target`]).
    fn unrestricted_version(
        &self,
        write: &mut PlainWrite<'_>,
        current: Option<&StoredVersion>,
        attempt: Try,
    ) -> Result<(WrittenContent, IndexRows), FhirError> {
        let (resource_type, id) = (write.resource_type, write.id.as_str());
        if write.method != WriteMethod::Create {
            check_precondition(resource_type, id, current, write.if_match)?;
            if current.is_none() && !self.options.create_on_update {
                return Err(not_created(resource_type, id));
            }
        }
        // Under the inline writer the content stays for the pool to write should it fail;
        // the index rows taken are extracted again then.
        let mut resource = match attempt {
            Try::Inline => write.resource.clone(),
            Try::Last => std::mem::take(&mut write.resource),
        };
        let index = match write.index.take() {
            Some(index) => index,
            None => extract_from(&mut resource)?,
        };
        let written = new_version(resource_type, id, resource, current, write.method)?;
        Ok((written, index))
    }

    /// Updates (or creates) several distinct resources at once, unrestricted, with the
    /// rows [`Self::update`] writes for each, in a few multi-row statements, in `tx`: the
    /// bulk import. Each resource has passed [`Self::check_update`]; one that cannot be
    /// written gets its error in the answer (in the order given) and the others are written.
    pub async fn update_many(
        &self,
        tx: &mut WriteTx,
        resources: Vec<(ResourceType, String, Map<String, Value>)>,
    ) -> Result<Vec<Result<Written, FhirError>>, FhirError> {
        let keys: Vec<(&str, &str)> = resources
            .iter()
            .map(|(t, id, _)| (t.as_str(), id.as_str()))
            .collect();
        let currents = fhir_current_many(tx, &keys).await?;
        let mut results = Vec::with_capacity(resources.len());
        let mut writes = Vec::with_capacity(resources.len());
        for (resource_type, id, resource) in resources {
            let current = currents.get(&(resource_type.as_str().to_string(), id.clone()));
            if current.is_none() && !self.options.create_on_update {
                results.push(Err(not_created(resource_type, &id)));
                continue;
            }
            match prepare_version(resource_type, &id, resource, current, WriteMethod::Update) {
                Ok((written, index)) => {
                    writes.push((written.version.clone(), Some(index)));
                    results.push(Ok(written));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        fhir_write_many(tx, &writes).await?;
        Ok(results)
    }

    /// Applies a JSON Patch (RFC 6902) to the current version, in the caller's transaction
    /// `tx` or one of its own; the current version must be within `access`.
    pub async fn patch(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        patch: &[u8],
        if_match: Option<i64>,
        access: &Access,
    ) -> Result<Written, FhirError> {
        let mut tx = self.store.begin_unless(tx).await?;
        check_id(id)?;
        self.lock_write_target(&mut tx, resource_type, id, access)
            .await?;
        let patch: json_patch::Patch = serde_json::from_slice(patch).map_err(|e| {
            FhirError::invalid(format!("the body is not a JSON Patch document: {e}"))
        })?;
        let ty = resource_type.as_str();
        let current = fhir_current(&mut tx, ty, id).await?;
        let current = match current {
            None => return Err(FhirError::NotFound(format!("{ty}/{id} is not known"))),
            Some(v) if v.deleted => return Err(FhirError::Gone(format!("{ty}/{id} was deleted"))),
            Some(v) => v,
        };
        check_precondition(resource_type, id, Some(&current), if_match)?;
        let resource = self.patched(resource_type, id, &current, &patch)?;
        let written = write_version(
            &mut tx,
            resource_type,
            id,
            resource,
            Some(&current),
            WriteMethod::Patch,
        )
        .await?;
        tx.finish().await?;
        Ok(written)
    }

    /// `current` with `patch` applied, checked: still the same resource, and valid.
    fn patched(
        &self,
        resource_type: ResourceType,
        id: &str,
        current: &StoredVersion,
        patch: &json_patch::Patch,
    ) -> Result<Map<String, Value>, FhirError> {
        let ty = resource_type.as_str();
        let mut doc: Value = serde_json::from_str(&current.content)
            .map_err(|e| FhirError::Internal(e.to_string()))?;
        self.limits.apply_patch(&mut doc, patch)?;
        let Value::Object(resource) = doc else {
            return Err(FhirError::Unprocessable(vec![Issue::error(
                "processing",
                "the patch replaced the whole resource",
            )]));
        };
        if resource.get("resourceType").and_then(Value::as_str) != Some(ty)
            || resource.get("id").and_then(Value::as_str) != Some(id)
        {
            return Err(FhirError::Unprocessable(vec![Issue::error(
                "processing",
                "a patch must not change resourceType or id",
            )]));
        }
        self.check_valid(resource_type, &resource)?;
        Ok(resource)
    }

    /// Deletes a resource: a new version marked deleted (its index rows stay for
    /// searches paged before it; see `store::search`), in the caller's transaction `tx`
    /// or one of its own. Deleting something absent or already deleted succeeds and
    /// changes nothing (idempotent). The current version must be within `access`.
    pub async fn delete(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        if_match: Option<i64>,
        access: &Access,
    ) -> Result<Option<StoredVersion>, FhirError> {
        let mut tx = self.store.begin_unless(tx).await?;
        check_id(id)?;
        self.lock_write_target(&mut tx, resource_type, id, access)
            .await?;
        let ty = resource_type.as_str();
        let current = fhir_current(&mut tx, ty, id).await?;
        check_precondition(resource_type, id, current.as_ref(), if_match)?;
        let Some(current) = current.filter(|c| !c.deleted) else {
            tx.finish().await?;
            return Ok(None);
        };
        let version = StoredVersion {
            resource_type: ty.to_string(),
            id: id.to_string(),
            version_id: current.version_id + 1,
            last_updated: version_stamp(current.last_updated),
            deleted: true,
            content: current.content.clone(),
            method: WriteMethod::Delete.as_str().to_string(),
        };
        fhir_write(&mut tx, &version, None).await?;
        tx.finish().await?;
        Ok(Some(version))
    }

    /// The current version, when `access` lets it through: otherwise 403 naming the
    /// constraint (or 404, with `hidden_as_not_found`). A resource that does not exist
    /// or was deleted is 404 / 410 as for [`Repository::read`].
    pub async fn read_with(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        access: &Access,
    ) -> Result<StoredVersion, FhirError> {
        self.read_visible(tx, resource_type, id, access)
            .await?
            .map_err(|hidden| self.refuse_hidden(hidden))
    }

    /// The current version, or [`Hidden`] when `access` does not let it through; the
    /// caller decides what a hidden resource answers (writes always refuse with 403,
    /// reads follow `hidden_as_not_found` through [`Self::refuse_hidden`]).
    pub async fn read_visible(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        access: &Access,
    ) -> Result<Result<StoredVersion, Hidden>, FhirError> {
        if let Some(tx) = tx {
            return self.visible_on(tx, resource_type, id, access).await;
        }
        // Outside a transaction the version and the look at the access are two statements
        // either way; the version is read without taking a pooled connection.
        let version = self.current(resource_type, id).await?;
        if access.is_unrestricted() {
            return Ok(Ok(version));
        }
        let mut conn = self.store.connection().await?;
        self.judged(&mut conn, (resource_type, id), version, access)
            .await
    }

    /// The current version outside a transaction ([`Store::fhir_current`]); 404 when it
    /// never existed, 410 when deleted.
    async fn current(
        &self,
        resource_type: ResourceType,
        id: &str,
    ) -> Result<StoredVersion, FhirError> {
        check_id(id)?;
        let found = self.store.fhir_current(resource_type.as_str(), id).await?;
        present(resource_type, id, found)
    }

    /// [`Self::read_visible`] on `conn`.
    async fn visible_on(
        &self,
        conn: &mut Conn,
        resource_type: ResourceType,
        id: &str,
        access: &Access,
    ) -> Result<Result<StoredVersion, Hidden>, FhirError> {
        let version = current_of(conn, resource_type, id).await?;
        self.judged(conn, (resource_type, id), version, access)
            .await
    }

    /// `version` when `access` lets its resource through, otherwise [`Hidden`].
    async fn judged(
        &self,
        conn: &mut Conn,
        (resource_type, id): (ResourceType, &str),
        version: StoredVersion,
        access: &Access,
    ) -> Result<Result<StoredVersion, Hidden>, FhirError> {
        if crate::store::search::is_visible_in(
            conn,
            resource_type,
            id,
            access,
            &self.options.base_url,
        )
        .await?
        {
            return Ok(Ok(version));
        }
        Ok(Err(Hidden(
            access.refusal(resource_type, id),
            format!("{resource_type}/{id}"),
        )))
    }

    /// Under constraints, the versions of a resource are visible when its current version
    /// is: a vread or instance history of a resource outside the access is refused like
    /// a read (403, or 404 with `hidden_as_not_found`). A deleted resource has no current
    /// version to judge it by, so its history is refused too (fail closed). A resource that
    /// never existed passes (its history or vread answers 404 on its own). Inside the
    /// caller's transaction `tx` when there is one.
    pub async fn check_history_visible(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: &str,
        access: &Access,
    ) -> Result<(), FhirError> {
        if tx.is_none() && access.is_unrestricted() {
            return Ok(());
        }
        let mut conn = self.store.connection_unless(tx).await?;
        conn.lock_for_write(resource_type.as_str(), id).await?;
        if access.is_unrestricted() {
            return Ok(());
        }
        match self.visible_on(&mut conn, resource_type, id, access).await {
            Ok(Ok(_)) | Err(FhirError::NotFound(_)) => Ok(()),
            Ok(Err(hidden)) => Err(self.refuse_hidden(hidden)),
            Err(FhirError::Gone(_)) => Err(FhirError::Forbidden(format!(
                "{resource_type}/{id} is deleted: its history cannot be checked against the token's constraints"
            ))),
            Err(other) => Err(other),
        }
    }

    /// Holds `Type/id` for the rest of the write's transaction, so that concurrent updates,
    /// patches and deletes of one resource run one after the other, each on the version the
    /// one before wrote (not a 409 for the later one), then checks it. Under constraints, an
    /// update, patch or delete of `Type/id` needs its current version
    /// visible (403 naming the constraint otherwise, whatever `hidden_as_not_found` says:
    /// a write is not a read). A resource that does not exist or was deleted passes: an
    /// update then creates it, with content the caller checked against the constraints.
    async fn lock_write_target(
        &self,
        tx: &mut WriteTx,
        resource_type: ResourceType,
        id: &str,
        access: &Access,
    ) -> Result<(), FhirError> {
        tx.lock_for_write(resource_type.as_str(), id).await?;
        self.check_write_target(tx, resource_type, id, access).await
    }

    /// What [`Self::lock_write_target`] checks once the row is held.
    async fn check_write_target(
        &self,
        tx: &mut WriteTx,
        resource_type: ResourceType,
        id: &str,
        access: &Access,
    ) -> Result<(), FhirError> {
        if access.is_unrestricted() {
            return Ok(());
        }
        match self.visible_on(tx, resource_type, id, access).await {
            Ok(Ok(_)) | Err(FhirError::NotFound(_)) | Err(FhirError::Gone(_)) => Ok(()),
            Ok(Err(hidden)) => Err(FhirError::Forbidden(hidden.0)),
            Err(other) => Err(other),
        }
    }

    /// What a read of a hidden resource answers: 403 naming the constraint, or with
    /// `hidden_as_not_found` the 404 of a resource that does not exist.
    pub fn refuse_hidden(&self, hidden: Hidden) -> FhirError {
        if self.options.hidden_as_not_found {
            FhirError::NotFound(format!("{} is not known", hidden.1))
        } else {
            FhirError::Forbidden(hidden.0)
        }
    }

    /// A search (type or system), answered as a `searchset` Bundle. `params` are the
    /// query-string pairs (and a `_search` form body), decoded, in order. Every match,
    /// count, include and page is restricted by `access` inside the store query; an
    /// included resource also by its type's `type_access` ([`searchset::search`]).
    pub async fn search(
        &self,
        scope: SearchScope,
        params: &[(String, String)],
        handling: Handling,
        access: &Access,
        type_access: searchset::TypeAccess<'_>,
    ) -> Result<Value, FhirError> {
        searchset::search(
            &self.store,
            &self.options.base_url,
            scope,
            params,
            handling,
            access,
            type_access,
            &self.options.search_limits,
        )
        .await
    }

    /// Conditional create (`If-None-Exist`): no match creates under `id`, one match
    /// answers the existing resource (200, nothing written), several are 412. The match
    /// and the write run in one transaction: the caller's `tx`, or one of its own.
    pub async fn conditional_create(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        id: String,
        resource: Map<String, Value>,
        criteria: &[(String, String)],
        allowed: Allowed<'_>,
    ) -> Result<Conditional, FhirError> {
        let mut tx = self.store.begin_unless(tx).await?;
        let found = self
            .matching(&mut tx, resource_type, criteria, allowed)
            .await?;
        let result = match found.as_slice() {
            [] => Conditional::Written(
                self.create(Some(&mut tx), resource_type, id, resource)
                    .await?,
            ),
            [one] => Conditional::Existing(current_of(&mut tx, resource_type, one).await?),
            _ => return Err(several(resource_type, criteria, "If-None-Exist")),
        };
        tx.finish().await?;
        Ok(result)
    }

    /// Conditional update (`PUT [type]?criteria`): no match creates (with the body's id,
    /// as an update-as-create, or a new id); one match is updated (a body id must be
    /// that one's); several are 412. One transaction: the caller's `tx`, or one of its own.
    pub async fn conditional_update(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        mut resource: Map<String, Value>,
        criteria: &[(String, String)],
        if_match: Option<i64>,
        allowed: Allowed<'_>,
    ) -> Result<Written, FhirError> {
        let mut tx = self.store.begin_unless(tx).await?;
        let found = self
            .matching(&mut tx, resource_type, criteria, allowed)
            .await?;
        let body_id = match resource.get("id") {
            None => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(FhirError::invalid("the body's id must be a string")),
        };
        let written = match found.as_slice() {
            [] => match body_id {
                Some(id) => {
                    check_id(&id)?;
                    if fhir_current(&mut tx, resource_type.as_str(), &id)
                        .await?
                        .is_some_and(|c| !c.deleted)
                    {
                        return Err(FhirError::Conflict(format!(
                            "{resource_type}/{id} exists but does not match the update's criteria"
                        )));
                    }
                    let tx = Some(&mut *tx);
                    self.update(tx, resource_type, &id, resource, if_match, allowed.access)
                        .await?
                }
                None => {
                    self.create(Some(&mut tx), resource_type, new_id(), resource)
                        .await?
                }
            },
            [one] => {
                if let Some(id) = &body_id
                    && id != one
                {
                    return Err(FhirError::BadRequest(vec![
                        Issue::error(
                            "invalid",
                            format!(
                                "the body's id {id:?} is not the id of the resource the criteria select ({one:?})"
                            ),
                        )
                        .at("id"),
                    ]));
                }
                resource.insert("id".into(), Value::String(one.clone()));
                let tx = Some(&mut *tx);
                self.update(tx, resource_type, one, resource, if_match, allowed.access)
                    .await?
            }
            _ => return Err(several(resource_type, criteria, "the conditional update")),
        };
        tx.finish().await?;
        Ok(written)
    }

    /// Conditional delete (`DELETE [type]?criteria`): no match changes nothing, one is
    /// deleted, several are 412 (this server deletes one resource per request). One
    /// transaction: the caller's `tx`, or one of its own.
    pub async fn conditional_delete(
        &self,
        tx: Option<&mut WriteTx>,
        resource_type: ResourceType,
        criteria: &[(String, String)],
        if_match: Option<i64>,
        allowed: Allowed<'_>,
    ) -> Result<Option<StoredVersion>, FhirError> {
        let mut tx = self.store.begin_unless(tx).await?;
        let found = self
            .matching(&mut tx, resource_type, criteria, allowed)
            .await?;
        let deleted = match found.as_slice() {
            [] => None,
            [one] => {
                self.delete(Some(&mut tx), resource_type, one, if_match, allowed.access)
                    .await?
            }
            _ => return Err(several(resource_type, criteria, "the conditional delete")),
        };
        tx.finish().await?;
        Ok(deleted)
    }

    /// The ids (at most two: enough to tell none, one and several) that match, read on
    /// `conn` (the caller's transaction).
    pub async fn matching(
        &self,
        conn: &mut Conn,
        resource_type: ResourceType,
        criteria: &[(String, String)],
        allowed: Allowed<'_>,
    ) -> Result<Vec<String>, FhirError> {
        let found = searchset::matching(
            conn,
            &self.options.base_url,
            resource_type,
            criteria,
            allowed,
            &self.options.search_limits,
            2,
        )
        .await?;
        Ok(found.into_iter().map(|f| f.id).collect())
    }

    /// A history page, newest first, with the total count. An instance's history is
    /// checked against the access by the caller ([`Self::check_history_visible`]); a type's
    /// or the system's is filtered inside the store query: only versions of resources the
    /// access lets through (judged by their current version, deleted ones left out), of
    /// the types a search of which `allowed.type_access` allows (system history). A type
    /// the access excludes altogether is refused, as a search of it is.
    pub async fn history(
        &self,
        scope: HistoryScope<'_>,
        filter: &HistoryFilter,
        allowed: Allowed<'_>,
    ) -> Result<(Vec<StoredVersion>, i64), FhirError> {
        let access = allowed.access;
        let visible = match scope {
            HistoryScope::Instance(_, id) => {
                check_id(id)?;
                return Ok(self.store.fhir_history(scope, filter).await?);
            }
            _ if access.is_unrestricted() => {
                return Ok(self.store.fhir_history(scope, filter).await?);
            }
            HistoryScope::Type(ty) => {
                let rt = resource_type(ty)?;
                match access.visible(rt) {
                    Ok(Visible::Nothing(why)) => return Err(FhirError::Forbidden(why)),
                    Err(e) => return Err(FhirError::Forbidden(e.to_string())),
                    Ok(_) => vec![(rt, access.clone())],
                }
            }
            HistoryScope::System => {
                let mut visible = Vec::new();
                for rt in ResourceType::all() {
                    if matches!(access.visible(rt), Ok(Visible::Nothing(_))) {
                        continue;
                    }
                    let own = match (allowed.type_access)(rt, Via::Search) {
                        Ok(own) => own,
                        Err(FhirError::Forbidden(_)) => continue,
                        Err(other) => return Err(other),
                    };
                    let combined = access.clone().and(own);
                    match combined.visible(rt) {
                        Ok(Visible::Nothing(_)) => {}
                        Err(e) => return Err(FhirError::Forbidden(e.to_string())),
                        Ok(_) => visible.push((rt, combined)),
                    }
                }
                visible
            }
        };
        Ok(self
            .store
            .history_visible(&visible, filter, &self.options.base_url)
            .await?)
    }
}

/// The outcome of a conditional create.
#[derive(Debug, Clone)]
pub enum Conditional {
    /// Nothing matched: the resource was created.
    Written(Written),
    /// One resource matched: it is answered, nothing was written.
    Existing(StoredVersion),
}

fn several(resource_type: ResourceType, criteria: &[(String, String)], what: &str) -> FhirError {
    FhirError::PreconditionFailed(format!(
        "the criteria of {what} match more than one {resource_type} ({resource_type}?{})",
        searchset::encode_query(criteria)
    ))
}

fn check_precondition(
    resource_type: ResourceType,
    id: &str,
    current: Option<&StoredVersion>,
    if_match: Option<i64>,
) -> Result<(), FhirError> {
    let Some(expected) = if_match else {
        return Ok(());
    };
    let ty = resource_type.as_str();
    match current {
        Some(c) if c.version_id == expected && !c.deleted => Ok(()),
        Some(c) => Err(FhirError::PreconditionFailed(format!(
            "If-Match expected version {expected} of {ty}/{id}, but the current version is {}{}",
            c.version_id,
            if c.deleted { " (deleted)" } else { "" }
        ))),
        None => Err(FhirError::PreconditionFailed(format!(
            "If-Match expected version {expected} of {ty}/{id}, but it does not exist"
        ))),
    }
}

fn not_created(resource_type: ResourceType, id: &str) -> FhirError {
    FhirError::MethodNotAllowed(format!(
        "{}/{id} does not exist and this server does not create resources with client-assigned ids",
        resource_type.as_str()
    ))
}

/// The current version of a [`PlainWrite`]'s target among `currents`: none for a create.
fn current_in<'c>(currents: &'c Currents, write: &PlainWrite<'_>) -> Option<&'c StoredVersion> {
    if write.method == WriteMethod::Create {
        return None;
    }
    currents.get(&(write.resource_type.as_str().to_string(), write.id.clone()))
}

/// The current version of `Type/id` on `conn`; 404 when it never existed, 410 when deleted.
async fn current_of(
    conn: &mut Conn,
    resource_type: ResourceType,
    id: &str,
) -> Result<StoredVersion, FhirError> {
    check_id(id)?;
    let found = fhir_current(conn, resource_type.as_str(), id).await?;
    present(resource_type, id, found)
}

/// The current version `found` of `Type/id`; 404 when it never existed, 410 when deleted.
fn present(
    resource_type: ResourceType,
    id: &str,
    found: Option<StoredVersion>,
) -> Result<StoredVersion, FhirError> {
    let ty = resource_type.as_str();
    match found {
        None => Err(FhirError::NotFound(format!("{ty}/{id} is not known"))),
        Some(v) if v.deleted => Err(FhirError::Gone(format!(
            "{ty}/{id} was deleted (version {})",
            v.version_id
        ))),
        Some(v) => Ok(v),
    }
}

/// Sets `meta.versionId` and `meta.lastUpdated`, extracts index rows, and writes.
async fn write_version(
    tx: &mut WriteTx,
    resource_type: ResourceType,
    id: &str,
    resource: Map<String, Value>,
    current: Option<&StoredVersion>,
    method: WriteMethod,
) -> Result<Written, FhirError> {
    let (written, index) = prepare_version(resource_type, id, resource, current, method)?;
    fhir_write(tx, &written.version, Some(&index)).await?;
    Ok(written)
}

/// The next version of a resource after `current`, with `meta.versionId` and
/// `meta.lastUpdated` set, and its index rows.
fn prepare_version(
    resource_type: ResourceType,
    id: &str,
    mut resource: Map<String, Value>,
    current: Option<&StoredVersion>,
    method: WriteMethod,
) -> Result<(Written, IndexRows), FhirError> {
    let index = extract_from(&mut resource)?;
    let (written, _) = new_version(resource_type, id, resource, current, method)?;
    Ok((written, index))
}

/// The index rows of a resource's content (lent to [`extract`] as a `Value` and given
/// back).
fn extract_from(resource: &mut Map<String, Value>) -> Result<IndexRows, FhirError> {
    let value = Value::Object(std::mem::take(resource));
    let index = extract(&value).map_err(|e| FhirError::invalid(e.to_string()));
    if let Value::Object(map) = value {
        *resource = map;
    }
    index
}

/// The next version of a resource after `current`, with `meta.versionId` and
/// `meta.lastUpdated` set, and its content as a `Value` (what the version's text says).
fn new_version(
    resource_type: ResourceType,
    id: &str,
    mut resource: Map<String, Value>,
    current: Option<&StoredVersion>,
    method: WriteMethod,
) -> Result<(Written, Value), FhirError> {
    let version_id = current.map_or(1, |c| c.version_id + 1);
    let last_updated = version_stamp(current.map_or(0, |c| c.last_updated));
    let meta = resource.entry("meta").or_insert_with(|| json!({}));
    let Value::Object(meta) = meta else {
        return Err(FhirError::BadRequest(vec![
            Issue::error("structure", "meta must be an object").at("meta"),
        ]));
    };
    meta.insert("versionId".into(), Value::String(version_id.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(format_instant(last_updated)),
    );
    let resource = Value::Object(resource);
    let version = StoredVersion {
        resource_type: resource_type.as_str().to_string(),
        id: id.to_string(),
        version_id,
        last_updated,
        deleted: false,
        content: resource.to_string(),
        method: method.as_str().to_string(),
    };
    let written = Written {
        created: current.is_none_or(|c| c.deleted),
        version,
    };
    Ok((written, resource))
}
