//! Bulk Data export jobs in the background: each job's plans run page by page at the
//! export's snapshot and are written as NDJSON files, a page at a time (memory does not
//! grow with the export), at most `bulk.workers` jobs at once. A job's row is its state:
//! the worker moves it after each page, and stops when the row is gone (cancelled) or no
//! longer in progress; a job whose worker stops moving it is failed by [`Exports::purge`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::bulk::{AssociatedPlan, ExportPlan, TypePlan};
use super::bulk_associated::provenance_of;
use super::clock::now_ms;
use super::error::FhirError;
use super::outcome::{Issue, operation_outcome};
use super::search::value::format_instant;
use super::searchset::shape;
use crate::config::BulkSettings;
use crate::store::bulk::{BulkJob, JobKind, NewBulkJob};
use crate::store::search::{Found, PageFrom, SearchSpec};
use crate::store::{Store, StoreError, now_secs};

/// Resources read per page of an export.
const PAGE: i64 = 1000;
/// Jobs the purge deletes per round.
const PURGE_BATCH: i64 = 100;

/// The export jobs of one server. Cheap to clone.
#[derive(Clone)]
pub struct Exports {
    store: Store,
    settings: Arc<BulkSettings>,
    base_url: String,
    turns: Arc<tokio::sync::Semaphore>,
}

/// Why a kick-off did not start a job.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0} export jobs are in progress, the most bulk.max_jobs allows; retry later")]
    Busy(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One output file as the manifest lists it.
struct OutputFile {
    resource_type: String,
    name: String,
    count: u64,
}

impl Exports {
    pub fn new(store: Store, settings: BulkSettings, base_url: String) -> Exports {
        let workers = settings.workers;
        Exports {
            store,
            settings: Arc::new(settings),
            base_url,
            turns: Arc::new(tokio::sync::Semaphore::new(workers)),
        }
    }

    pub fn settings(&self) -> &BulkSettings {
        &self.settings
    }

    /// The store the jobs are rows of.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for a turn among the `bulk.workers` jobs this process runs at once; `None`
    /// when the server is shutting down the turns.
    pub async fn turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.turns.clone().acquire_owned().await.ok()
    }

    /// The directory of a job's files.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.settings.dir.join(id)
    }

    /// Records a job (unless too many are in progress) and starts it in the background.
    pub async fn start(
        &self,
        client_id: &str,
        subject: &str,
        request: &str,
        plan: ExportPlan,
    ) -> Result<String, StartError> {
        let id = uuid::Uuid::new_v4().to_string();
        let transaction_time = now_ms();
        let job = NewBulkJob {
            id: &id,
            kind: JobKind::Export,
            client_id,
            subject,
            request,
            transaction_time,
        };
        if !self
            .store
            .create_bulk_job(&job, self.settings.max_jobs)
            .await?
        {
            return Err(StartError::Busy(self.settings.max_jobs));
        }
        let exports = self.clone();
        let job_id = id.clone();
        tokio::spawn(async move {
            let Some(_turn) = exports.turn().await else {
                return;
            };
            exports.run(&job_id, transaction_time, plan).await;
        });
        Ok(id)
    }

    /// Runs a job to its end: completed with its files, failed with the reason, or, when
    /// its row went away (cancelled), its files removed.
    async fn run(&self, id: &str, snapshot: i64, plan: ExportPlan) {
        let dir = self.job_dir(id);
        let outcome = self.export(id, &dir, snapshot, &plan).await;
        let finished = match &outcome {
            Ok(Some(files)) => {
                let output: Vec<Value> = files
                    .iter()
                    .map(|f| json!({"type": f.resource_type, "file": f.name, "count": f.count}))
                    .collect();
                let output = Value::Array(output).to_string();
                self.store.finish_bulk_job(id, Ok((&output, "[]"))).await
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "export job failed");
                self.store
                    .finish_bulk_job(id, Err(&format!("the export failed: {e}")))
                    .await
            }
        };
        if let Err(e) = finished {
            tracing::error!(job = %id, error = %e, "cannot record the end of an export job");
        }
        let gone = !matches!(self.store.bulk_job(id).await, Ok(Some(_)));
        if gone || outcome.is_err() {
            remove_dir(&dir).await;
        }
    }

    /// Writes every type's resources, then the associated Provenance; `None` when the
    /// job was cancelled meanwhile.
    async fn export(
        &self,
        id: &str,
        dir: &Path,
        snapshot: i64,
        plan: &ExportPlan,
    ) -> Result<Option<Vec<OutputFile>>, FhirError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| FhirError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let plans = &plan.types;
        let max = self.settings.file_max_resources;
        let mut associates = plan.associated.as_ref().map(|a| Associates {
            plan: a,
            out: Writer::new(dir, "Provenance", "Provenance-associated", max),
            seen: HashSet::new(),
        });
        let mut files = Vec::new();
        for (n, plan) in plans.iter().enumerate() {
            let progress = format!("{} of {} types ({})", n, plans.len(), plan.resource_type);
            if !self.store.bulk_job_progress(id, &progress).await? {
                return Ok(None);
            }
            match self
                .export_type(id, dir, snapshot, plan, associates.as_mut())
                .await?
            {
                Some(mut written) => files.append(&mut written),
                None => return Ok(None),
            }
        }
        if let Some(associates) = associates {
            files.append(&mut associates.out.finish().await?);
        }
        Ok(Some(files))
    }

    /// Writes the Provenance associated with `rows` (exported resources of one type)
    /// that `associates` has not written yet.
    async fn associate(
        &self,
        associates: &mut Associates<'_>,
        snapshot: i64,
        rows: &[Found],
    ) -> Result<(), FhirError> {
        let found =
            provenance_of(&self.store, associates.plan, snapshot, &self.base_url, rows).await?;
        for provenance in &found {
            if associates.seen.insert(provenance.id.clone()) {
                let line = line(provenance, &associates.plan.elements)?;
                associates.out.write(&line).await?;
            }
        }
        Ok(())
    }

    /// The files of one type; `None` when the job was cancelled meanwhile.
    async fn export_type(
        &self,
        id: &str,
        dir: &Path,
        snapshot: i64,
        plan: &TypePlan,
        mut associates: Option<&mut Associates<'_>>,
    ) -> Result<Option<Vec<OutputFile>>, FhirError> {
        let name = plan.resource_type.as_str();
        let mut out = Writer::new(dir, name, name, self.settings.file_max_resources);
        // Provenance exported as a type and as associated data is written once.
        let provenance = name == "Provenance";
        // A resource in the compartments of patients of two queries (an Observation of
        // one patient that references another as performer, say) is found by both; the
        // ids written so far keep it to one line. Only then: a single query finds each
        // resource once, and the set would cost memory for nothing.
        let mut seen = (plan.queries.len() > 1).then(std::collections::HashSet::new);
        for branches in &plan.queries {
            let spec = SearchSpec {
                branches,
                sort: &[],
                snapshot,
                as_of_snapshot: true,
                access: &plan.access,
                reach: &plan.reach,
                base_url: &self.base_url,
            };
            let mut from = PageFrom::First;
            loop {
                let page = self.store.search_page(&spec, &from, PAGE).await?;
                for found in &page.rows {
                    if let Some(seen) = &mut seen
                        && !seen.insert(found.id.clone())
                    {
                        continue;
                    }
                    if provenance
                        && let Some(a) = associates.as_deref_mut()
                        && !a.seen.insert(found.id.clone())
                    {
                        continue;
                    }
                    out.write(&line(found, &plan.elements)?).await?;
                }
                if !provenance && let Some(a) = associates.as_deref_mut() {
                    self.associate(a, snapshot, &page.rows).await?;
                }
                let progress = format!("{}: {} resources", plan.resource_type, out.total);
                if !self.store.bulk_job_progress(id, &progress).await? {
                    return Ok(None);
                }
                match page.last {
                    Some(last) if page.more => from = PageFrom::After(last),
                    _ => break,
                }
            }
        }
        Ok(Some(out.finish().await?))
    }

    /// Deletes jobs finished longer than `bulk.retain_secs` ago with their files, and
    /// fails jobs in progress whose worker stopped reporting (`bulk.stale_after_secs`).
    pub async fn purge(&self) -> Result<(), StoreError> {
        self.fail_stale().await?;
        let before = now_secs() - self.settings.retain.as_secs() as i64;
        loop {
            let expired = self.store.expired_bulk_jobs(before, PURGE_BATCH).await?;
            for id in &expired {
                self.store.delete_bulk_job(id).await?;
                remove_dir(&self.job_dir(id)).await;
            }
            if (expired.len() as i64) < PURGE_BATCH {
                return Ok(());
            }
        }
    }

    /// Runs [`Exports::purge`] at once and then every minute (or every
    /// `bulk.retain_secs`, when shorter), in the background; a failed purge is logged and
    /// tried again at the next tick.
    pub fn spawn_purge(&self) {
        let exports = self.clone();
        let every = self.settings.retain.min(std::time::Duration::from_secs(60));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = exports.purge().await {
                    tracing::warn!(error = %e, "cannot purge export jobs; trying again later");
                }
            }
        });
    }

    /// Fails the jobs in progress whose worker stopped reporting.
    pub async fn fail_stale(&self) -> Result<u64, StoreError> {
        let stale_before = now_secs() - self.settings.stale_after.as_secs() as i64;
        self.store
            .fail_stale_bulk_jobs(
                stale_before,
                [
                    "the export was interrupted (the server stopped while it ran); start it again",
                    "the import was interrupted (the server stopped while it ran): the batches it had written are loaded, each whole; start it again to load the rest (resources loaded already get a new version)",
                ],
            )
            .await
    }

    /// Cancels a job: its row and its files go (a worker still running it stops at its
    /// next page).
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self.store.delete_bulk_job(id).await?;
        remove_dir(&self.job_dir(id)).await;
        Ok(removed)
    }

    /// The manifest of a completed job: file URLs under `files_url` (`.../bulkfiles/[job]`);
    /// an import's output lists counts per type, without files.
    pub fn manifest(&self, job: &BulkJob, files_url: &str) -> Value {
        let list = |text: &str| -> Vec<Value> {
            serde_json::from_str::<Vec<Value>>(text)
                .unwrap_or_default()
                .into_iter()
                .map(|f| {
                    let mut entry = json!({"type": f["type"], "count": f["count"]});
                    if let Some(file) = f["file"].as_str() {
                        entry["url"] = json!(format!("{files_url}/{file}"));
                    }
                    entry
                })
                .collect()
        };
        let mut manifest = json!({
            "transactionTime": format_instant(job.transaction_time),
            "request": job.request,
            "requiresAccessToken": true,
            "output": list(&job.output),
            "error": list(&job.errors),
        });
        if job.kind == JobKind::Import {
            // The Bulk Data Import drafts name the error files `outcome`.
            manifest["outcome"] = manifest["error"].clone();
        }
        manifest
    }
}

/// One resource as an NDJSON line (without the newline), shaped by `_elements`.
fn line(found: &Found, elements: &[String]) -> Result<String, FhirError> {
    if elements.is_empty() && !found.content.contains('\n') {
        return Ok(found.content.clone());
    }
    let mut resource: Value = serde_json::from_str(&found.content)
        .map_err(|e| FhirError::Internal(format!("stored resource is not JSON: {e}")))?;
    if !elements.is_empty() {
        shape(&mut resource, found, None, elements);
    }
    Ok(resource.to_string())
}

async fn remove_dir(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove export files"),
    }
}

/// The associated Provenance of a job: its files, and the Provenance written so far (as
/// associated data or as the export of the type).
struct Associates<'a> {
    plan: &'a AssociatedPlan,
    out: Writer<'a>,
    seen: HashSet<String>,
}

/// The NDJSON files of one type: `Stem-1.ndjson`, `Stem-2.ndjson`, ..., a new one after
/// `max` resources; none for a type without resources. The stem is the type's name, or
/// `Provenance-associated` for associated data.
struct Writer<'a> {
    dir: &'a Path,
    resource_type: &'a str,
    stem: &'a str,
    max: u64,
    current: Option<(tokio::io::BufWriter<tokio::fs::File>, OutputFile)>,
    done: Vec<OutputFile>,
    total: u64,
}

impl<'a> Writer<'a> {
    fn new(dir: &'a Path, resource_type: &'a str, stem: &'a str, max: u64) -> Self {
        Writer {
            dir,
            resource_type,
            stem,
            max,
            current: None,
            done: Vec::new(),
            total: 0,
        }
    }

    async fn write(&mut self, line: &str) -> Result<(), FhirError> {
        let io =
            |e: std::io::Error| FhirError::Internal(format!("cannot write an export file: {e}"));
        if self
            .current
            .as_ref()
            .is_some_and(|(_, f)| f.count >= self.max)
        {
            self.close().await?;
        }
        if self.current.is_none() {
            let name = format!("{}-{}.ndjson", self.stem, self.done.len() + 1);
            let file = tokio::fs::File::create(self.dir.join(&name))
                .await
                .map_err(io)?;
            let entry = OutputFile {
                resource_type: self.resource_type.to_owned(),
                name,
                count: 0,
            };
            self.current = Some((tokio::io::BufWriter::new(file), entry));
        }
        let (file, entry) = self.current.as_mut().expect("opened above");
        file.write_all(line.as_bytes()).await.map_err(io)?;
        file.write_all(b"\n").await.map_err(io)?;
        entry.count += 1;
        self.total += 1;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), FhirError> {
        if let Some((mut file, entry)) = self.current.take() {
            file.flush()
                .await
                .map_err(|e| FhirError::Internal(format!("cannot write an export file: {e}")))?;
            self.done.push(entry);
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<OutputFile>, FhirError> {
        self.close().await?;
        Ok(self.done)
    }
}

/// An OperationOutcome for a job that failed, as its status URL answers it.
pub fn failure_outcome(job: &BulkJob) -> Value {
    operation_outcome(&[Issue::error(
        "exception",
        job.error
            .clone()
            .unwrap_or_else(|| "the export failed".to_owned()),
    )])
}
