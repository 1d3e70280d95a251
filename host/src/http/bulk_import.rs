//! `POST [base]/$import` over HTTP (`fhir::bulk_import`): an NDJSON body
//! (`Content-Type: application/fhir+ndjson`, gzip with `Content-Encoding: gzip`), saved in
//! the job's directory as it arrives, or a manifest of NDJSON files by URL
//! (`application/fhir+json`). The job's status URL, cancel and error file are the export
//! jobs' (`http/bulk.rs`).

use std::collections::BTreeSet;
use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, header};
use axum::routing::post;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::AppState;
use super::bulk::{
    BulkResult, MAX_KICKOFF_BODY, accepted, bad_request, caller_of, check_kickoff_headers,
    not_started,
};
use super::fhir::FhirResponseError;
use crate::fhir::bulk_import::{ImportSource, authorize, manifest_inputs};
use crate::fhir::error::FhirError;
use crate::fhir::import::resource_types;
use crate::gate::Caller;

/// Routes relative to the FHIR base (see `gate::BULK_ROUTES`).
pub fn routes() -> Router<AppState> {
    Router::new().route("/$import", post(kick_off))
}

/// What the body of a kick-off is.
enum Form {
    Ndjson { gzip: bool },
    Manifest,
}

fn form_of(headers: &HeaderMap) -> Result<Form, FhirResponseError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim();
    let gzip = match encoding {
        "identity" => false,
        "gzip" | "x-gzip" => true,
        other => {
            return Err(FhirError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported for $import; use gzip or none"
            ))
            .into());
        }
    };
    match media.to_ascii_lowercase().as_str() {
        "application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson" => {
            Ok(Form::Ndjson { gzip })
        }
        "application/fhir+json" | "application/json" if !gzip => Ok(Form::Manifest),
        _ => Err(FhirError::UnsupportedMediaType(format!(
            "$import takes NDJSON (Content-Type: application/fhir+ndjson) or a manifest of files (application/fhir+json), not {content_type:?}"
        ))
        .into()),
    }
}

/// A kick-off: checks the headers, saves or reads the body, decides each type the input
/// holds with the scope policy, records the job and starts it; 202 with the status URL.
async fn kick_off(State(state): State<AppState>, request: Request) -> BulkResult {
    let (parts, body) = request.into_parts();
    let caller = caller_of(
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(axum::Extension),
    )?;
    check_kickoff_headers(&parts.headers, "$import")?;
    let form = form_of(&parts.headers)?;
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.to_string(), |o| o.0.to_string());
    let public = format!("{}{}", state.settings().public_url, uri);
    let imports = state.imports();
    let (id, dir) = imports.prepare().await.map_err(|e| {
        FhirError::Internal(format!("cannot create the import job's directory: {e}"))
    })?;
    let owner = (
        caller.claims.client_id.as_str(),
        caller.claims.subject.as_str(),
    );
    let prepared = match form {
        Form::Ndjson { gzip } => ndjson_source(&state, &caller, body, &dir, gzip).await,
        Form::Manifest => manifest_source(&state, &caller, body).await,
    };
    let started = match prepared {
        Ok(source) => imports
            .start(&id, owner, &public, source)
            .await
            .map(|()| accepted(&state, &id))
            .or_else(not_started),
        Err(e) => Err(e),
    };
    if !matches!(&started, Ok(r) if r.status().is_success()) {
        imports.discard(&id).await;
    }
    started
}

/// An NDJSON body, saved as it arrives; the types its lines name are authorized.
async fn ndjson_source(
    state: &AppState,
    caller: &Caller,
    body: Body,
    dir: &Path,
    gzip: bool,
) -> Result<ImportSource, FhirResponseError> {
    let path = dir.join(if gzip {
        "body.ndjson.gz"
    } else {
        "body.ndjson"
    });
    save(body, &path, state.settings().bulk.import_max_bytes).await?;
    let max_line = state.fhir().limits().max_resource_bytes;
    let scanned = path.clone();
    let types = tokio::task::spawn_blocking(move || resource_types(&scanned, max_line))
        .await
        .map_err(|e| FhirError::Internal(format!("the body's scan stopped: {e}")))?
        .map_err(|e| bad_request(format!("the body cannot be read as NDJSON: {e}")))?;
    authorize(caller, &types)?;
    Ok(ImportSource::Body(path))
}

/// A manifest of files by URL; the types it names are authorized.
async fn manifest_source(
    state: &AppState,
    caller: &Caller,
    body: Body,
) -> Result<ImportSource, FhirResponseError> {
    let bytes = axum::body::to_bytes(body, MAX_KICKOFF_BODY)
        .await
        .map_err(|e| FhirError::PayloadTooLarge(format!("the manifest cannot be read: {e}")))?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("the manifest is not JSON: {e}")))?;
    let inputs = manifest_inputs(&manifest, &state.settings().bulk.import_sources)?;
    let types: BTreeSet<_> = inputs.iter().map(|(t, _)| *t).collect();
    authorize(caller, &types)?;
    Ok(ImportSource::Pull(inputs))
}

/// Writes `body` to `path` as it arrives, refusing it beyond `max` bytes.
async fn save(body: Body, path: &Path, max: u64) -> Result<(), FhirResponseError> {
    let failed =
        |e: std::io::Error| FhirError::Internal(format!("cannot save the import's body: {e}"));
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(failed)?);
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad_request(format!("the body could not be read: {e}")))?;
        written += chunk.len() as u64;
        if written > max {
            return Err(FhirError::PayloadTooLarge(format!(
                "the body is larger than {max} bytes, the most an import takes (bulk.import_max_bytes)"
            ))
            .into());
        }
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    Ok(())
}
