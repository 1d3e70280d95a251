//! `hestia fhir import` and `[base]/$import` (`fhir::bulk_import`): resources from NDJSON
//! files (one resource per line, optionally gzip-compressed) loaded in batches, each batch
//! one write transaction with the resources' versions and search index rows, so an
//! interrupted import (even `kill -9`) leaves whole batches and no partial resource. Every
//! resource passes the resource-validator plugins, as a create or update does; a line that
//! does not (or is not a resource) is reported with its input and line number as an
//! OperationOutcome line, and the rest is loaded. It runs beside a serving server on the
//! same database: its transactions take their turn like any other write (`store::import`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    /// Resources created or updated, per type.
    #[serde(skip)]
    pub types: BTreeMap<String, u64>,
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

/// One NDJSON input: where it is, how its refused lines name it, and the one resource
/// type its lines may have (`None`: any).
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub label: String,
    pub only: Option<ResourceType>,
}

impl Input {
    /// A file named on the command line: its refused lines name its path.
    pub fn file(path: PathBuf) -> Input {
        Input {
            label: path.display().to_string(),
            path,
            only: None,
        }
    }
}

/// How an import reads its inputs.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Resources per batch (one write transaction); `None`: [`BATCH_ALONE`] on SQLite
    /// while no other process writes to the database, else [`BATCH_SHARED`].
    pub batch: Option<usize>,
    /// The longest line read: a longer one is refused without being held in memory.
    pub max_line_bytes: usize,
}

/// An import while it runs, as another task sees it: its counts so far, and a way to
/// stop it.
#[derive(Debug, Default)]
pub struct Progress {
    loaded: AtomicU64,
    invalid: AtomicU64,
    stop: AtomicBool,
}

impl Progress {
    /// Resources written so far.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Lines refused so far.
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// Stops the import before its next batch: the batches written stay, whole.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn publish(&self, report: &ImportReport) {
        self.loaded.store(report.loaded, Ordering::Relaxed);
        self.invalid.store(report.invalid, Ordering::Relaxed);
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

/// Resources per batch, unless named, while another process writes to the database, and
/// always on PostgreSQL (where larger batches load no faster: its writers are the index
/// inserts of two transactions at once).
pub const BATCH_SHARED: usize = 1000;

/// Resources per batch, unless named, of a SQLite import that no other process writes
/// beside. A batch holds SQLite's write lock for its whole transaction (about half a
/// second for 5,000 Patients on 2 cores), so the import takes these only while it finds
/// no other writer's commits between its batches ([`Loader::others_writing`]), and goes
/// back to [`BATCH_SHARED`] for as long as it does. Loading 100,000 Patients:
/// `bench/bulk_import.py`, figures in `bench/README.md`.
pub const BATCH_ALONE: usize = 5000;

/// The NDJSON files named: files as given, and in directories their `*.ndjson` and
/// `*.ndjson.gz` files in name order.
pub fn input_files(paths: &[PathBuf]) -> Result<Vec<Input>, ImportError> {
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
            files.extend(inside.into_iter().map(Input::file));
        } else {
            files.push(Input::file(path.clone()));
        }
    }
    Ok(files)
}

/// Opens an NDJSON input, gunzipping a `.gz` file.
fn open(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// A line of an input: its text, or why it is refused before it is parsed.
enum Line {
    Text(String),
    Refused(String),
}

/// The lines of an input, each held in memory up to `max` bytes: a longer line is read
/// to its end without being kept, and refused, as is a line that is not UTF-8.
struct Lines {
    reader: Box<dyn BufRead>,
    max: usize,
    buf: Vec<u8>,
}

impl Lines {
    fn new(reader: Box<dyn BufRead>, max: usize) -> Lines {
        Lines {
            reader,
            max,
            buf: Vec::new(),
        }
    }

    fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let limit = self.max as u64 + 1;
        if (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?
            == 0
        {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if self.buf.len() > self.max {
            self.skip_rest()?;
            return Ok(Some(Line::Refused(format!(
                "the line is longer than {} bytes, the most a line may have",
                self.max
            ))));
        }
        Ok(Some(match std::str::from_utf8(&self.buf) {
            Ok(text) => Line::Text(text.to_owned()),
            Err(e) => Line::Refused(format!("the line is not UTF-8: {e}")),
        }))
    }

    /// Reads past the end of the current line.
    fn skip_rest(&mut self) -> std::io::Result<()> {
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.reader.consume(at + 1);
                    return Ok(());
                }
                None => {
                    let n = available.len();
                    self.reader.consume(n);
                }
            }
        }
    }
}

/// The resource types the lines of `path` name (lines that are no resource aside).
pub fn resource_types(
    path: &Path,
    max_line_bytes: usize,
) -> std::io::Result<BTreeSet<ResourceType>> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
    }
    let mut lines = Lines::new(open(path)?, max_line_bytes);
    let mut types = BTreeSet::new();
    while let Some(line) = lines.next_line()? {
        let Line::Text(text) = line else { continue };
        if let Ok(Head {
            resource_type: Some(name),
        }) = serde_json::from_str(&text)
            && let Some(t) = ResourceType::parse(&name)
        {
            types.insert(t);
        }
    }
    Ok(types)
}

/// Imports `inputs`; refused lines go to `errors`, and `progress` follows (and may stop)
/// the import as it runs.
///
/// Two stages run at once: a reader on a blocking thread parses, checks (validator
/// plugins), indexes and encodes the lines into batches, while [`Writers`] write the
/// batches before them. A stopped import takes no further batch, and its reader stops
/// when it finds no one taking its batches.
pub async fn import(
    fhir: &Repository,
    inputs: &[Input],
    options: ImportOptions,
    errors: &mut (dyn Write + Send),
    progress: &Progress,
) -> Result<ImportReport, ImportError> {
    let (sender, mut batches) = tokio::sync::mpsc::channel(QUEUED_BATCHES);
    let shared = Arc::new(AtomicBool::new(false));
    let reader = {
        let (fhir, inputs, shared) = (fhir.clone(), inputs.to_vec(), shared.clone());
        tokio::task::spawn_blocking(move || read(&fhir, &inputs, options, &shared, &sender))
    };
    let mut writers = Writers::open(fhir, errors, progress, shared).await?;
    while let Some(batch) = batches.recv().await {
        if progress.stopped() {
            break;
        }
        writers.take(batch).await?;
    }
    drop(batches);
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
    errors: &'a mut (dyn Write + Send),
    progress: &'a Progress,
    /// Whether a loader found another process writing after its last batch.
    shared: Arc<AtomicBool>,
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
    async fn open(
        fhir: &'a Repository,
        errors: &'a mut (dyn Write + Send),
        progress: &'a Progress,
        shared: Arc<AtomicBool>,
    ) -> Result<Self, ImportError> {
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
            progress,
            shared,
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
        self.progress.publish(&self.report);
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
        self.shared
            .store(loader.others_writing(), Ordering::Relaxed);
        self.idle.push(loader);
        match loaded? {
            Loaded::Written => {
                for version in &versions {
                    self.count(&version.resource_type);
                }
            }
            Loaded::Exists => self.updates(versions, places).await?,
        }
        self.progress.publish(&self.report);
        Ok(true)
    }

    /// Counts a resource written.
    fn count(&mut self, resource_type: &str) {
        self.report.loaded += 1;
        match self.report.types.get_mut(resource_type) {
            Some(n) => *n += 1,
            None => {
                self.report.types.insert(resource_type.to_owned(), 1);
            }
        }
    }

    /// Writes a batch as updates; its next batches are taken as new when none of its
    /// resources existed.
    async fn updates(
        &mut self,
        versions: Vec<StoredVersion>,
        places: Vec<String>,
    ) -> Result<(), ImportError> {
        let types: Vec<String> = versions.iter().map(|v| v.resource_type.clone()).collect();
        let results = load_updates(self.fhir, versions).await?;
        self.assume_new = results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|w| w.version.version_id == 1));
        for ((at, result), resource_type) in places.into_iter().zip(results).zip(types) {
            match result {
                Ok(_) => self.count(&resource_type),
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
        self.progress.publish(&self.report);
        Ok(self.report)
    }
}

/// The reader: every line of `inputs` parsed, checked and indexed, sent in batches of
/// `options.batch` resources (or as many as [`Reader::batch`] says while `shared` says
/// whether others write); answers how many inputs it read. A resource that comes again
/// starts a new batch, so that a batch writes one version of each resource.
fn read(
    fhir: &Repository,
    inputs: &[Input],
    options: ImportOptions,
    shared: &AtomicBool,
    out: &tokio::sync::mpsc::Sender<Batch>,
) -> Result<u64, ImportError> {
    let mut reader = Reader {
        fhir,
        out,
        backend: fhir.store().backend(),
        batch: options.batch.map(|n| n.max(1)),
        shared,
        current: Prepared::default(),
        keys: std::collections::HashSet::new(),
    };
    let mut read_files = 0;
    for input in inputs {
        read_files += 1;
        let read = |source| ImportError::Read {
            path: input.label.clone(),
            source,
        };
        let mut lines = Lines::new(open(&input.path).map_err(read)?, options.max_line_bytes);
        let mut n = 0;
        while let Some(line) = lines.next_line().map_err(read)? {
            n += 1;
            let at = format!("{} line {n}", input.label);
            let text = match line {
                Line::Text(text) if text.trim().is_empty() => continue,
                Line::Text(text) => text,
                Line::Refused(why) => {
                    reader.current.refused.push((at, why));
                    continue;
                }
            };
            if !reader.line(input, at, &text)? {
                return Ok(read_files);
            }
        }
    }
    // A send fails only when the writer has stopped, with its own error (or was stopped).
    send(reader.backend, &mut reader.current, out);
    Ok(read_files)
}

/// The reader's state: the batch being gathered and the resources it holds.
struct Reader<'a> {
    fhir: &'a Repository,
    out: &'a tokio::sync::mpsc::Sender<Batch>,
    backend: Backend,
    /// The batch size named, if one was.
    batch: Option<usize>,
    shared: &'a AtomicBool,
    current: Prepared,
    keys: std::collections::HashSet<(ResourceType, String)>,
}

impl Reader<'_> {
    /// Resources in the batch being gathered before it is sent.
    fn batch(&self) -> usize {
        match (self.batch, self.backend) {
            (Some(n), _) => n,
            (None, Backend::Sqlite) if !self.shared.load(Ordering::Relaxed) => BATCH_ALONE,
            (None, _) => BATCH_SHARED,
        }
    }

    /// Takes one line of `input`; false when the writer has stopped.
    fn line(&mut self, input: &Input, at: String, text: &str) -> Result<bool, ImportError> {
        let (resource_type, id, resource) = match parse_line(text, input.only) {
            Ok(parsed) => parsed,
            Err(why) => {
                self.current.refused.push((at, why));
                return Ok(true);
            }
        };
        if !self.keys.insert((resource_type, id.clone())) {
            if !send(self.backend, &mut self.current, self.out) {
                return Ok(false);
            }
            self.current.after_previous = true;
            self.keys.clear();
            self.keys.insert((resource_type, id.clone()));
        }
        match self.fhir.prepare_new(resource_type, &id, resource) {
            Ok(write) => {
                self.current.writes.push(write);
                self.current.places.push(at);
            }
            Err(e) if !e.kind().is_server_failure() => self.current.refused.push((at, why(&e))),
            Err(e) => return Err(e.into()),
        }
        if self.current.writes.len() >= self.batch() {
            if !send(self.backend, &mut self.current, self.out) {
                return Ok(false);
            }
            self.keys.clear();
        }
        Ok(true)
    }
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

/// A line as a resource: a JSON object of a known type (`only`, when given), with a
/// valid id (a new one when it has none).
fn parse_line(
    line: &str,
    only: Option<ResourceType>,
) -> Result<(ResourceType, String, Map<String, Value>), String> {
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
    if let Some(only) = only
        && only != resource_type
    {
        return Err(format!(
            "a {resource_type} in an input of {only} resources (the type the import names for it)"
        ));
    }
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
