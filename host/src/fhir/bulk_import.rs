//! Bulk Data import (`[base]/$import`), without HTTP: what a kick-off asks for, whether its
//! caller may, and the job that runs it in the background with `fhir::import`'s pipeline.
//!
//! Two forms. An NDJSON body (`Content-Type: application/fhir+ndjson`), which the HTTP
//! layer saves in the job's directory first. Or a manifest (the Bulk Data Import "ping
//! and pull" draft: a `Parameters` resource, or its plain JSON form) of NDJSON files by
//! URL, each with its resource type, which the job fetches, from under the URL prefixes
//! of `bulk.import_sources` only, without following redirects, within
//! `bulk.import_max_bytes` in all and `bulk.import_timeout_secs` per file.
//!
//! The kick-off is authorized as a create and an update of every type the input holds,
//! through the scope policy as those writes are (`system/Patient.cu`, `system/*.write`), and
//! only with unrestricted access to each: an import writes without the per-resource checks
//! of a restricted write. A job is a row of `bulk_jobs` (kind `import`) like an export's:
//! its status URL answers 202 with `X-Progress` while it runs and then the manifest (the
//! resources loaded per type, and an error file of OperationOutcome lines naming each
//! refused line); cancelling it stops it before its next batch, and the batches written
//! stay (each whole).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::bulk_worker::{Exports, StartError};
use super::clock::now_ms;
use super::definitions::ResourceType;
use super::error::FhirError;
use super::import::{BATCH_SHARED, ImportError, ImportOptions, Input, Progress, import};
use super::outcome::Issue;
use super::repository::Repository;
use crate::gate::Caller;
use crate::plugins::Interaction;
use crate::store::bulk::{JobKind, NewBulkJob};

/// The input formats a manifest may name: all mean NDJSON.
const INPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];
/// The files a manifest may name.
pub const MAX_INPUTS: usize = 1000;
/// The error file of a completed import with refused lines.
pub const ERRORS_FILE: &str = "errors.ndjson";
/// How long a fetch may take to connect.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn invalid(param: &str, why: impl Into<String>) -> FhirError {
    FhirError::BadRequest(vec![
        Issue::error("invalid", why.into()).at(param.to_owned()),
    ])
}

/// What an import loads.
#[derive(Debug, Clone)]
pub enum ImportSource {
    /// An NDJSON body, saved in the job's directory by the kick-off.
    Body(PathBuf),
    /// The files a manifest names, each with its resource type, to fetch.
    Pull(Vec<(ResourceType, Url)>),
}

/// The inputs of a manifest (a `Parameters` resource, or the draft's plain JSON form),
/// checked: each a resource type and a URL under one of `sources`.
pub fn manifest_inputs(
    body: &Value,
    sources: &[Url],
) -> Result<Vec<(ResourceType, Url)>, FhirError> {
    let (format, storage, listed) = if body["resourceType"] == "Parameters" {
        parameters_manifest(body)?
    } else if body.is_object() && body.get("resourceType").is_none() {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let listed = body["input"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|i| (text(&i["type"]), text(&i["url"])))
            .collect();
        (
            text(&body["inputFormat"]),
            text(&body["storageDetail"]["type"]),
            listed,
        )
    } else {
        return Err(FhirError::invalid(
            "a $import manifest is a Parameters resource (or the Bulk Data Import draft's JSON manifest); NDJSON itself goes as the body with Content-Type: application/fhir+ndjson",
        ));
    };
    if let Some(format) = format.filter(|f| !INPUT_FORMATS.contains(&f.as_str())) {
        return Err(invalid(
            "inputFormat",
            format!("inputFormat {format:?} is not supported; use application/fhir+ndjson"),
        ));
    }
    if let Some(storage) = storage.filter(|s| s != "https") {
        return Err(invalid(
            "storageDetail",
            format!(
                "storageDetail type {storage:?} is not supported: files are fetched by their URLs (https)"
            ),
        ));
    }
    if listed.is_empty() || listed.len() > MAX_INPUTS {
        return Err(invalid(
            "input",
            format!(
                "a $import manifest names from 1 to {MAX_INPUTS} inputs, not {}",
                listed.len()
            ),
        ));
    }
    listed
        .into_iter()
        .map(|(t, u)| input(t.as_deref(), u.as_deref(), sources))
        .collect()
}

/// A manifest's format, storage type and inputs (type, URL), as a `Parameters` resource
/// has them. Unknown parameters are refused.
type Listed = (
    Option<String>,
    Option<String>,
    Vec<(Option<String>, Option<String>)>,
);

fn parameters_manifest(body: &Value) -> Result<Listed, FhirError> {
    let value = |p: &Value| -> Option<String> {
        ["valueCode", "valueString", "valueUri", "valueUrl"]
            .iter()
            .find_map(|field| p[*field].as_str())
            .map(str::to_owned)
    };
    let part = |p: &Value, name: &str| -> Option<String> {
        p["part"]
            .as_array()?
            .iter()
            .find(|q| q["name"] == name)
            .and_then(value)
    };
    let (mut format, mut storage, mut listed) = (None, None, Vec::new());
    for p in body["parameter"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match p["name"].as_str().unwrap_or_default() {
            "inputFormat" => format = value(p),
            "inputSource" => {}
            "storageDetail" => storage = part(p, "type"),
            "input" => listed.push((part(p, "type"), part(p, "url"))),
            "exportUrl" => {
                return Err(invalid(
                    "exportUrl",
                    "this server does not run an export at another server (exportUrl): name that export's files as input parameters, each with its type and url",
                ));
            }
            other => {
                return Err(FhirError::BadRequest(vec![
                    Issue::error(
                        "not-supported",
                        format!("$import takes inputFormat, inputSource, storageDetail and input, not {other:?}"),
                    )
                    .at(other.to_owned()),
                ]));
            }
        }
    }
    Ok((format, storage, listed))
}

/// One input of a manifest: a known resource type, and a URL under one of `sources`.
fn input(
    resource_type: Option<&str>,
    url: Option<&str>,
    sources: &[Url],
) -> Result<(ResourceType, Url), FhirError> {
    let (Some(name), Some(text)) = (resource_type, url) else {
        return Err(invalid("input", "each input needs a type and a url"));
    };
    let t = ResourceType::parse(name).ok_or_else(|| {
        invalid(
            "input",
            format!("input type {name:?} is not a resource type"),
        )
    })?;
    let url = Url::parse(text)
        .map_err(|e| invalid("input", format!("input url {text:?} is not a URL: {e}")))?;
    if sources.is_empty() {
        return Err(invalid(
            "input",
            "this server fetches no files for $import (bulk.import_sources is empty): send the NDJSON as the body with Content-Type: application/fhir+ndjson",
        ));
    }
    if !sources.iter().any(|source| is_under(&url, source)) {
        let list: Vec<&str> = sources.iter().map(Url::as_str).collect();
        return Err(invalid(
            "input",
            format!(
                "input url {url} is not under any of the sources this server fetches from (bulk.import_sources: {})",
                list.join(", ")
            ),
        ));
    }
    Ok((t, url))
}

/// Whether `url` is a file under `source` (same scheme, host and port, a path below its
/// path, no credentials).
fn is_under(url: &Url, source: &Url) -> bool {
    url.scheme() == source.scheme()
        && url.host_str() == source.host_str()
        && url.port_or_known_default() == source.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path().starts_with(source.path())
}

/// Whether `caller` may import resources of each of `types`: a create and an update of
/// the type, each allowed with unrestricted access, as the scope policy decides them.
pub fn authorize(caller: &Caller, types: &BTreeSet<ResourceType>) -> Result<(), FhirError> {
    if types.is_empty() {
        return Err(FhirError::invalid(
            "the import holds no line with a resourceType this server knows",
        ));
    }
    for t in types {
        for (interaction, verb) in [
            (Interaction::Create, "create"),
            (Interaction::Update, "update"),
        ] {
            match caller.write_access(interaction, *t) {
                Ok(access) if access.is_unrestricted() => {}
                Ok(_) => {
                    return Err(FhirError::Forbidden(format!(
                        "$import of {t}: the token may {verb} only some {t} resources; an import needs to {verb} any (for example system/{t}.cu)"
                    )));
                }
                Err(FhirError::Forbidden(why)) => {
                    return Err(FhirError::Forbidden(format!(
                        "$import of {t} needs a token that may {verb} {t}: {why}"
                    )));
                }
                Err(other) => return Err(other),
            }
        }
    }
    Ok(())
}

/// Why an import job failed.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("{0}")]
    Fetch(String),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("cannot write the job's files: {0}")]
    Io(#[from] std::io::Error),
}

/// The import jobs of one server: rows and directories of the export jobs' kind, and
/// their turns (`bulk.workers`). Cheap to clone.
#[derive(Clone)]
pub struct Imports {
    exports: Exports,
    fhir: Repository,
    http: reqwest::Client,
}

/// A running job as its heartbeat sees it.
#[derive(Default)]
struct Watch {
    progress: Progress,
    fetching: AtomicBool,
    fetched: AtomicU64,
}

impl Imports {
    pub fn new(exports: Exports, fhir: Repository) -> Imports {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hestia/", env!("CARGO_PKG_VERSION"), " ($import)"))
            .build()
            .unwrap_or_default();
        Imports {
            exports,
            fhir,
            http,
        }
    }

    /// A new job's id and directory (created), for the kick-off to save a body in.
    pub async fn prepare(&self) -> std::io::Result<(String, PathBuf)> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.exports.job_dir(&id);
        tokio::fs::create_dir_all(&dir).await?;
        Ok((id, dir))
    }

    /// Removes the directory of a job that did not start.
    pub async fn discard(&self, id: &str) {
        remove_dir(&self.exports.job_dir(id)).await;
    }

    /// Records job `id` (unless too many are in progress) and starts it in the background.
    pub async fn start(
        &self,
        id: &str,
        (client_id, subject): (&str, &str),
        request: &str,
        source: ImportSource,
    ) -> Result<(), StartError> {
        let max = self.exports.settings().max_jobs;
        let job = NewBulkJob {
            id,
            kind: JobKind::Import,
            client_id,
            subject,
            request,
            transaction_time: now_ms(),
        };
        if !self.exports.store().create_bulk_job(&job, max).await? {
            return Err(StartError::Busy(max));
        }
        let imports = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let Some(_turn) = imports.exports.turn().await else {
                return;
            };
            imports.run(&id, source).await;
        });
        Ok(())
    }

    /// Runs a job to its end, moving its row every second (and stopping it when the row
    /// is gone: cancelled): completed with its counts and error file, or failed.
    async fn run(&self, id: &str, source: ImportSource) {
        let dir = self.exports.job_dir(id);
        let watch = Watch::default();
        // Both polled at once: a beat waits for the write turn, which the work may hold
        // in the middle of a transaction, so the work must go on while a beat waits.
        let outcome = tokio::select! {
            done = self.work(&dir, source, &watch) => done,
            () = self.heartbeat(id, &watch) => unreachable!("the heartbeat has no end"),
        };
        let store = self.exports.store();
        let finished = match &outcome {
            Ok(Some((output, errors))) => store.finish_bulk_job(id, Ok((output, errors))).await,
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "import job failed");
                store
                    .finish_bulk_job(id, Err(&format!("the import failed: {e}")))
                    .await
            }
        };
        if let Err(e) = finished {
            tracing::error!(job = %id, error = %e, "cannot record the end of an import job");
        }
        let gone = !matches!(store.bulk_job(id).await, Ok(Some(_)));
        if gone || outcome.is_err() {
            remove_dir(&dir).await;
        }
    }

    /// Beats every second ([`Imports::beat`]), until dropped.
    async fn heartbeat(&self, id: &str, watch: &Watch) {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            ticks.tick().await;
            self.beat(id, watch).await;
        }
    }

    /// Reports a running job's progress; stops it when its row is gone (cancelled).
    async fn beat(&self, id: &str, watch: &Watch) {
        let text = if watch.fetching.load(Ordering::Relaxed) {
            format!(
                "fetching the input files: {} bytes",
                watch.fetched.load(Ordering::Relaxed)
            )
        } else {
            format!(
                "{} resources loaded, {} lines refused",
                watch.progress.loaded(),
                watch.progress.invalid()
            )
        };
        match self.exports.store().bulk_job_progress(id, &text).await {
            Ok(true) => {}
            Ok(false) => watch.progress.stop(),
            Err(e) => tracing::warn!(job = %id, error = %e, "cannot report an import's progress"),
        }
    }

    /// Fetches the inputs (of a manifest) and imports them; the manifest's output and
    /// error lists, or `None` when the job was stopped.
    async fn work(
        &self,
        dir: &Path,
        source: ImportSource,
        watch: &Watch,
    ) -> Result<Option<(String, String)>, JobError> {
        let inputs = match source {
            ImportSource::Body(path) => vec![Input {
                path,
                label: "body".to_owned(),
                only: None,
            }],
            ImportSource::Pull(list) => {
                watch.fetching.store(true, Ordering::Relaxed);
                let fetched = self.fetch_all(dir, &list, watch).await;
                watch.fetching.store(false, Ordering::Relaxed);
                match fetched? {
                    Some(inputs) => inputs,
                    None => return Ok(None),
                }
            }
        };
        let errors_path = dir.join(ERRORS_FILE);
        let mut errors = std::io::BufWriter::new(std::fs::File::create(&errors_path)?);
        let options = ImportOptions {
            // Inside the serving process, whose own writes wait for a batch's turn.
            batch: Some(BATCH_SHARED),
            max_line_bytes: self.fhir.limits().max_resource_bytes,
        };
        let report = import(&self.fhir, &inputs, options, &mut errors, &watch.progress).await?;
        if watch.progress.stopped() {
            return Ok(None);
        }
        errors.flush()?;
        for input in &inputs {
            tokio::fs::remove_file(&input.path).await?;
        }
        let output: Vec<Value> = report
            .types
            .iter()
            .map(|(t, count)| json!({"type": t, "count": count}))
            .collect();
        let errors = if report.invalid > 0 {
            json!([{"type": "OperationOutcome", "file": ERRORS_FILE, "count": report.invalid}])
        } else {
            tokio::fs::remove_file(&errors_path).await?;
            json!([])
        };
        Ok(Some((Value::Array(output).to_string(), errors.to_string())))
    }

    /// Fetches the files of a manifest into `dir`, within `bulk.import_max_bytes` in all;
    /// `None` when the job was stopped meanwhile.
    async fn fetch_all(
        &self,
        dir: &Path,
        list: &[(ResourceType, Url)],
        watch: &Watch,
    ) -> Result<Option<Vec<Input>>, JobError> {
        let settings = self.exports.settings();
        let mut budget = settings.import_max_bytes;
        let mut inputs = Vec::with_capacity(list.len());
        for (n, (t, url)) in list.iter().enumerate() {
            let gz = if url.path().ends_with(".gz") {
                ".gz"
            } else {
                ""
            };
            let path = dir.join(format!("input-{}.ndjson{gz}", n + 1));
            let fetch = self.fetch(url, &path, &mut budget, watch);
            match tokio::time::timeout(settings.import_timeout, fetch).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(JobError::Fetch(format!(
                        "fetching {url} took longer than {} s (bulk.import_timeout_secs)",
                        settings.import_timeout.as_secs()
                    )));
                }
            }
            inputs.push(Input {
                path,
                label: url.to_string(),
                only: Some(*t),
            });
        }
        Ok(Some(inputs))
    }

    /// Fetches `url` into `path`, its bytes taken from `budget`; false when the job was
    /// stopped meanwhile.
    async fn fetch(
        &self,
        url: &Url,
        path: &Path,
        budget: &mut u64,
        watch: &Watch,
    ) -> Result<bool, JobError> {
        let max = self.exports.settings().import_max_bytes;
        let too_large = || {
            JobError::Fetch(format!(
                "the files of this import are larger than {max} bytes in all (bulk.import_max_bytes); stopped at {url}"
            ))
        };
        let mut response = match self.http.get(url.clone()).send().await {
            Ok(response) => response,
            Err(e) => {
                let why = crate::verifier::diagnose::describe(url.as_str(), &e).await;
                return Err(JobError::Fetch(format!("cannot fetch {url}: {why}")));
            }
        };
        if !response.status().is_success() {
            return Err(JobError::Fetch(format!(
                "{url} answered {} (a file is fetched with a GET, without credentials or redirects)",
                response.status()
            )));
        }
        if response.content_length().is_some_and(|n| n > *budget) {
            return Err(too_large());
        }
        let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await?);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(JobError::Fetch(format!("reading {url} failed: {e}"))),
            };
            if watch.progress.stopped() {
                return Ok(false);
            }
            let len = chunk.len() as u64;
            *budget = budget.checked_sub(len).ok_or_else(too_large)?;
            watch.fetched.fetch_add(len, Ordering::Relaxed);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(true)
    }
}

async fn remove_dir(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove import files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<Url> {
        vec![Url::parse("https://files.example/exports/").unwrap()]
    }

    #[test]
    fn urls_are_fetched_only_under_the_sources() {
        for (url, ok) in [
            ("https://files.example/exports/p.ndjson", true),
            ("https://files.example/exports/a/b.ndjson.gz", true),
            ("https://files.example/exports-other/p.ndjson", false),
            ("https://files.example/p.ndjson", false),
            ("http://files.example/exports/p.ndjson", false),
            ("https://files.example:8443/exports/p.ndjson", false),
            ("https://files.example.evil/exports/p.ndjson", false),
            ("https://user:pw@files.example/exports/p.ndjson", false),
            ("https://files.example/exports/../secret.ndjson", false),
        ] {
            let body = json!({"input": [{"type": "Patient", "url": url}]});
            assert_eq!(manifest_inputs(&body, &sources()).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn manifests_in_both_forms_name_their_inputs() {
        let url = "https://files.example/exports/p.ndjson";
        let parameters = json!({"resourceType": "Parameters", "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "inputSource", "valueUri": "https://files.example"},
            {"name": "storageDetail", "part": [{"name": "type", "valueCode": "https"}]},
            {"name": "input", "part": [
                {"name": "type", "valueCode": "Patient"},
                {"name": "url", "valueUri": url},
            ]},
        ]});
        let plain = json!({"inputFormat": "application/fhir+ndjson",
                           "input": [{"type": "Patient", "url": url}]});
        for body in [parameters, plain] {
            let inputs = manifest_inputs(&body, &sources()).unwrap();
            assert_eq!(inputs.len(), 1);
            assert_eq!(inputs[0].0.as_str(), "Patient");
            assert_eq!(inputs[0].1.as_str(), url);
        }
        for (body, says) in [
            (json!({"input": []}), "from 1 to"),
            (
                json!({"input": [{"type": "Nope", "url": url}]}),
                "not a resource type",
            ),
            (json!({"input": [{"url": url}]}), "needs a type"),
            (
                json!({"inputFormat": "text/csv", "input": [{"type": "Patient", "url": url}]}),
                "inputFormat",
            ),
            (
                json!({"storageDetail": {"type": "aws-s3"}, "input": [{"type": "Patient", "url": url}]}),
                "storageDetail",
            ),
            (
                json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "x"}]}),
                "\"mode\"",
            ),
            (json!({"resourceType": "Patient"}), "Parameters resource"),
        ] {
            let err = manifest_inputs(&body, &sources()).unwrap_err().to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
        let none = manifest_inputs(&json!({"input": [{"type": "Patient", "url": url}]}), &[]);
        assert!(
            none.unwrap_err()
                .to_string()
                .contains("bulk.import_sources is empty")
        );
    }
}
