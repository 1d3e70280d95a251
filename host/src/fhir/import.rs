//! `hestia fhir import`: resources from NDJSON files (one resource per line, optionally
//! gzip-compressed) loaded in batches, each batch one write transaction with the
//! resources' versions and search index rows, so an interrupted import (even `kill -9`)
//! leaves whole batches and no partial resource. Every resource passes the
//! resource-validator plugins, as a create or update does; a line that does not (or is
//! not a resource) is reported with its file and line number as an OperationOutcome
//! line, and the rest is loaded. It runs beside a serving server on the same database:
//! its transactions take their turn like any other write (`store::import`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::definitions::ResourceType;
use super::error::FhirError;
use super::outcome::{Issue, operation_outcome};
use super::repository::{Repository, Written, check_id, new_id};
use super::search::IndexRows;
use crate::store::Backend;
use crate::store::StoreError;
use crate::store::fhir::StoredVersion;
use crate::store::import::{Encoded, Loaded, Loader, encode};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub files: u64,
    /// Resources created or updated.
    pub loaded: u64,
    /// Lines refused (each reported as an OperationOutcome line).
    pub invalid: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the error report: {0}")]
    Report(std::io::Error),
    #[error("the database failed (the batch in progress was rolled back): {0}")]
    Store(String),
}

impl From<StoreError> for ImportError {
    fn from(e: StoreError) -> Self {
        ImportError::Store(e.to_string())
    }
}

/// A batch as the reader gathers it: resources checked, with their first versions and
/// index rows (and where each came from), and the lines refused on the way.
#[derive(Default)]
struct Prepared {
    writes: Vec<(StoredVersion, IndexRows)>,
    places: Vec<String>,
    refused: Vec<(String, String)>,
    /// Whether it repeats a resource of the batch before it.
    after_previous: bool,
}

/// A batch as the reader hands it to the writer: encoded for the database, with the
/// versions for the writer's other way (updates).
struct Batch {
    versions: Vec<StoredVersion>,
    encoded: Encoded,
    places: Vec<String>,
    refused: Vec<(String, String)>,
    after_previous: bool,
}

/// Batches the reader may have ready before the writer takes them.
const QUEUED_BATCHES: usize = 2;

/// The NDJSON files named: files as given, and in directories their `*.ndjson` and
/// `*.ndjson.gz` files in name order.
pub fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    let read = |path: &Path, source| ImportError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| read(path, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".ndjson") || name.ends_with(".ndjson.gz")
                })
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Imports `files` in batches of `batch` resources; refused lines go to `errors`.
///
/// Two stages run at once: a reader on a blocking thread parses, checks (validator
/// plugins), indexes and encodes the lines into batches, while [`Writers`] write the
/// batches before them.
pub async fn import(
    fhir: &Repository,
    files: &[PathBuf],
    batch: usize,
    errors: &mut dyn Write,
) -> Result<ImportReport, ImportError> {
    let (sender, mut batches) = tokio::sync::mpsc::channel(QUEUED_BATCHES);
    let reader = {
        let (fhir, files) = (fhir.clone(), files.to_vec());
        tokio::task::spawn_blocking(move || read(&fhir, &files, batch, &sender))
    };
    let mut writers = Writers::open(fhir, errors).await?;
    while let Some(batch) = batches.recv().await {
        writers.take(batch).await?;
    }
    let mut report = writers.close().await?;
    report.files = reader
        .await
        .map_err(|e| ImportError::Store(format!("the reader stopped: {e}")))??;
    if report.loaded > 0 {
        fhir.store().analyze().await?;
    }
    Ok(report)
}

/// Connections that write batches at the same time: PostgreSQL checks and inserts the
/// index entries of a transaction on one core, so two transactions at once go faster;
/// SQLite writes one transaction at a time.
const POSTGRES_WRITERS: usize = 2;

/// The writing side of an import. Each batch is first written as new resources by one of
/// the loaders ([`Loader::write_new`]), several batches at once on PostgreSQL. A batch
/// with a resource that exists already is written as updates instead
/// ([`Repository::update_many`]), and so are the next batches until one has no
/// resource that existed. A batch that repeats a resource of the batch before it waits
/// for the batches before it, so that versions are written in the order of the lines.
struct Writers<'a> {
    fhir: &'a Repository,
    errors: &'a mut dyn Write,
    idle: Vec<Loader>,
    running: tokio::task::JoinSet<Attempt>,
    assume_new: bool,
    report: ImportReport,
}

/// A batch that a loader wrote as new resources, or found one of them existing.
struct Attempt {
    loader: Loader,
    versions: Vec<StoredVersion>,
    places: Vec<String>,
    loaded: Result<Loaded, StoreError>,
}

impl<'a> Writers<'a> {
    async fn open(fhir: &'a Repository, errors: &'a mut dyn Write) -> Result<Self, ImportError> {
        let count = match fhir.store().backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITERS,
        };
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(Loader::open(fhir.store()).await?);
        }
        Ok(Writers {
            fhir,
            errors,
            idle,
            running: tokio::task::JoinSet::new(),
            assume_new: true,
            report: ImportReport::default(),
        })
    }

    /// Reports the batch's refused lines and starts writing its resources.
    async fn take(&mut self, batch: Batch) -> Result<(), ImportError> {
        let Batch {
            versions,
            encoded,
            places,
            refused,
            after_previous,
        } = batch;
        for (at, why) in refused {
            refuse(self.errors, &at, &why, &mut self.report)?;
        }
        if versions.is_empty() {
            return Ok(());
        }
        if after_previous || !self.assume_new {
            while self.finish_one().await? {}
        }
        if !self.assume_new {
            return self.updates(versions, places).await;
        }
        let mut loader = loop {
            match self.idle.pop() {
                Some(loader) => break loader,
                None => {
                    self.finish_one().await?;
                }
            }
        };
        self.running.spawn(async move {
            let loaded = loader.write_new(encoded).await;
            Attempt {
                loader,
                versions,
                places,
                loaded,
            }
        });
        Ok(())
    }

    /// Waits for one batch being written; false when none is.
    async fn finish_one(&mut self) -> Result<bool, ImportError> {
        let Some(done) = self.running.join_next().await else {
            return Ok(false);
        };
        let Attempt {
            loader,
            versions,
            places,
            loaded,
        } = done.map_err(|e| ImportError::Store(format!("a writer stopped: {e}")))?;
        self.idle.push(loader);
        match loaded? {
            Loaded::Written => self.report.loaded += versions.len() as u64,
            Loaded::Exists => self.updates(versions, places).await?,
        }
        Ok(true)
    }

    /// Writes a batch as updates; its next batches are taken as new when none of its
    /// resources existed.
    async fn updates(
        &mut self,
        versions: Vec<StoredVersion>,
        places: Vec<String>,
    ) -> Result<(), ImportError> {
        let results = load_updates(self.fhir, versions).await?;
        self.assume_new = results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|w| w.version.version_id == 1));
        for (at, result) in places.into_iter().zip(results) {
            match result {
                Ok(_) => self.report.loaded += 1,
                Err(e) => refuse(self.errors, &at, &why(&e), &mut self.report)?,
            }
        }
        Ok(())
    }

    /// Waits for the batches being written; answers what was done.
    async fn close(mut self) -> Result<ImportReport, ImportError> {
        while self.finish_one().await? {}
        for loader in self.idle {
            loader.close().await?;
        }
        Ok(self.report)
    }
}

/// The reader: every line of `files` parsed, checked and indexed, sent in batches of
/// `batch` resources; answers how many files it read. A resource that comes again starts
/// a new batch, so that a batch writes one version of each resource.
fn read(
    fhir: &Repository,
    files: &[PathBuf],
    batch: usize,
    out: &tokio::sync::mpsc::Sender<Batch>,
) -> Result<u64, ImportError> {
    let backend = fhir.store().backend();
    let mut current = Prepared::default();
    let mut keys = std::collections::HashSet::new();
    let mut read_files = 0;
    for path in files {
        read_files += 1;
        let read = |source| ImportError::Read {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(read)?;
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{} line {}", path.display(), n + 1);
            let (resource_type, id, resource) = match parse_line(&line) {
                Ok(parsed) => parsed,
                Err(why) => {
                    current.refused.push((at, why));
                    continue;
                }
            };
            if !keys.insert((resource_type, id.clone())) {
                if !send(backend, &mut current, out) {
                    return Ok(read_files);
                }
                current.after_previous = true;
                keys.clear();
                keys.insert((resource_type, id.clone()));
            }
            match fhir.prepare_new(resource_type, &id, resource) {
                Ok(write) => {
                    current.writes.push(write);
                    current.places.push(at);
                }
                Err(e) if !e.kind().is_server_failure() => current.refused.push((at, why(&e))),
                Err(e) => return Err(e.into()),
            }
            if current.writes.len() >= batch {
                if !send(backend, &mut current, out) {
                    return Ok(read_files);
                }
                keys.clear();
            }
        }
    }
    // A send fails only when the writer has stopped, with its own error.
    send(backend, &mut current, out);
    Ok(read_files)
}

/// Encodes the batch gathered and hands it to the writer; false when the writer has stopped.
fn send(backend: Backend, current: &mut Prepared, out: &tokio::sync::mpsc::Sender<Batch>) -> bool {
    let Prepared {
        writes,
        places,
        refused,
        after_previous,
    } = std::mem::take(current);
    let encoded = encode(backend, &writes);
    let versions = writes.into_iter().map(|(v, _)| v).collect();
    out.blocking_send(Batch {
        versions,
        encoded,
        places,
        refused,
        after_previous,
    })
    .is_ok()
}

/// A line as a resource: a JSON object of a known type, with a valid id (a new one when
/// it has none).
fn parse_line(line: &str) -> Result<(ResourceType, String, Map<String, Value>), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(resource) = value else {
        return Err("not a JSON object (a FHIR resource)".into());
    };
    let name = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or("no resourceType")?;
    let resource_type = ResourceType::parse(name)
        .ok_or_else(|| format!("{name:?} is not a FHIR R4 resource type"))?;
    let mut resource = resource;
    let id = match resource.get("id") {
        None => {
            let id = new_id();
            resource.insert("id".into(), Value::String(id.clone()));
            id
        }
        Some(Value::String(id)) => {
            check_id(id).map_err(|e| e.to_string())?;
            id.clone()
        }
        Some(other) => return Err(format!("id {other} is not a string")),
    };
    Ok((resource_type, id, resource))
}

/// Writes a batch as updates of what the database holds ([`Repository::update_many`]),
/// in one transaction.
async fn load_updates(
    fhir: &Repository,
    versions: Vec<StoredVersion>,
) -> Result<Vec<Result<Written, FhirError>>, ImportError> {
    let mut resources = Vec::with_capacity(versions.len());
    for version in versions {
        let resource_type = ResourceType::parse(&version.resource_type);
        let content = serde_json::from_str(&version.content);
        let (Some(resource_type), Ok(Value::Object(resource))) = (resource_type, content) else {
            return Err(ImportError::Store(format!(
                "{}/{} does not read back as it was prepared",
                version.resource_type, version.id
            )));
        };
        resources.push((resource_type, version.id, resource));
    }
    let mut tx = fhir.store().begin().await?;
    let results = fhir.update_many(&mut tx, resources).await?;
    tx.commit().await?;
    Ok(results)
}

/// What a refusal says: its issues' diagnostics.
fn why(e: &FhirError) -> String {
    e.issues()
        .iter()
        .map(|i| i.diagnostics.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reports a refused line as an OperationOutcome line naming the file and line.
fn refuse(
    errors: &mut dyn Write,
    at: &str,
    why: &str,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    report.invalid += 1;
    let outcome = operation_outcome(&[Issue::error("invalid", format!("{at}: {why}"))]);
    writeln!(errors, "{outcome}").map_err(ImportError::Report)
}

impl From<FhirError> for ImportError {
    fn from(e: FhirError) -> Self {
        ImportError::Store(e.to_string())
    }
}
