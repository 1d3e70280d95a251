//! `hestia fhir import`: resources from NDJSON files (one resource per line, optionally
//! gzip-compressed) loaded in batches, each batch one write transaction with the
//! resources' versions and search index rows, so an interrupted import (even `kill -9`)
//! leaves whole batches and no partial resource. Every resource passes the
//! resource-validator plugins, as a create or update does; a line that does not (or is
//! not a resource) is reported with its file and line number as an OperationOutcome
//! line, and the rest is loaded. It runs beside a serving server on the same database:
//! its transactions take their turn like any other write.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::definitions::ResourceType;
use super::error::FhirError;
use super::outcome::{Issue, operation_outcome};
use super::repository::{Repository, check_id, new_id};
use crate::store::StoreError;

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

/// One resource of a batch, with where it came from.
struct Pending {
    resource_type: ResourceType,
    id: String,
    resource: Map<String, Value>,
    at: String,
}

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
pub async fn import(
    fhir: &Repository,
    files: &[PathBuf],
    batch: usize,
    errors: &mut dyn Write,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut pending: Vec<Pending> = Vec::with_capacity(batch);
    // The keys of `pending`: a resource that comes again starts a new batch, so that a
    // batch writes one version of each resource.
    let mut keys = std::collections::HashSet::new();
    for path in files {
        report.files += 1;
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
            match parse_line(&line) {
                Ok((resource_type, id, resource)) => {
                    if !keys.insert((resource_type, id.clone())) {
                        load(fhir, &mut pending, errors, &mut report).await?;
                        keys.clear();
                        keys.insert((resource_type, id.clone()));
                    }
                    pending.push(Pending {
                        resource_type,
                        id,
                        resource,
                        at,
                    });
                }
                Err(why) => refuse(errors, &at, &why, &mut report)?,
            }
            if pending.len() >= batch {
                load(fhir, &mut pending, errors, &mut report).await?;
                keys.clear();
            }
        }
    }
    load(fhir, &mut pending, errors, &mut report).await?;
    Ok(report)
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

/// Writes one batch in one transaction: every resource checked first (id, validator
/// plugins), then the batch written with [`Repository::update_many_in`] in a few
/// multi-row statements. A resource the checks (or the repository) refuse is reported
/// and left out; a database failure rolls the batch back and stops.
async fn load(
    fhir: &Repository,
    pending: &mut Vec<Pending>,
    errors: &mut dyn Write,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut refused = Vec::new();
    let mut places = Vec::with_capacity(pending.len());
    let mut resources = Vec::with_capacity(pending.len());
    for p in pending.drain(..) {
        match check_line(fhir, &p) {
            Ok(()) => {
                places.push(p.at);
                resources.push((p.resource_type, p.id, p.resource));
            }
            Err(e) if !e.kind().is_server_failure() => refused.push((p.at, e)),
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = fhir.store().begin().await?;
    let results = fhir.update_many_in(&mut tx, resources).await?;
    tx.commit()
        .await
        .map_err(|e| ImportError::Store(e.to_string()))?;
    for (at, result) in places.into_iter().zip(results) {
        match result {
            Ok(_) => report.loaded += 1,
            Err(e) => refused.push((at, e)),
        }
    }
    for (at, e) in refused {
        let why = e
            .issues()
            .iter()
            .map(|i| i.diagnostics.clone())
            .collect::<Vec<_>>()
            .join("; ");
        refuse(errors, &at, &why, report)?;
    }
    Ok(())
}

/// Times a line is checked again when only a plugin failed on it (see [`check_line`]).
const PLUGIN_FAILURE_RETRIES: usize = 2;

/// The checks of one line. A refusal whose every failing issue is a validator plugin's
/// failure (`exception`: it trapped or missed its wall-clock deadline, which a busy
/// machine can cause) says nothing about the resource, so the line is checked again, up
/// to [`PLUGIN_FAILURE_RETRIES`] times, before it is reported.
fn check_line(fhir: &Repository, p: &Pending) -> Result<(), FhirError> {
    let mut result = fhir.check_update(p.resource_type, &p.id, &p.resource);
    for _ in 0..PLUGIN_FAILURE_RETRIES {
        match &result {
            Err(e) if only_plugin_failures(e) => {
                result = fhir.check_update(p.resource_type, &p.id, &p.resource)
            }
            _ => break,
        }
    }
    result
}

fn only_plugin_failures(e: &FhirError) -> bool {
    let issues = e.issues();
    let failing: Vec<_> = issues.iter().filter(|i| i.severity.is_failure()).collect();
    !failing.is_empty() && failing.iter().all(|i| i.code == "exception")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_made_of_plugin_failures_is_checked_again() {
        let failed = |issues: Vec<Issue>| only_plugin_failures(&FhirError::Unprocessable(issues));
        let plugin = Issue::error("exception", "plugin v denied: timed out after 20 ms");
        assert!(failed(vec![plugin.clone()]));
        assert!(failed(vec![plugin.clone(), Issue::warning("invalid", "w")]));
        assert!(!failed(vec![plugin, Issue::error("invalid", "no status")]));
        assert!(!failed(vec![Issue::error("required", "status")]));
        assert!(!failed(vec![]));
        assert!(!only_plugin_failures(&FhirError::NotFound("x".into())));
    }
}
