//! Rebuilding the search index rows of stored resources (`hestia fhir reindex`).
//!
//! Index rows are written with each version, by the extractor of the build that wrote it.
//! When a later build indexes more (composite parameters per element, a new search
//! parameter), resources stored before it lack those rows until they are written again;
//! this rewrites them from each resource's current content. It runs beside a serving
//! server: each resource is reindexed in a transaction of its own that first locks its
//! current row, so a concurrent update either comes before (and its content is what gets
//! indexed) or waits until after (and writes its own rows). Deleted resources keep the
//! rows of their last content, as a deletion does.

use serde_json::Value;

use super::search::extract;
use crate::store::fhir::{fhir_current, fhir_current_keys, fhir_reindex};
use crate::store::{Store, StoreError};

/// Resources per listing of keys.
const BATCH: i64 = 500;

/// What a reindex did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReindexReport {
    /// Resources whose index rows were rebuilt.
    pub reindexed: u64,
    /// Resources deleted or removed between listing and reindexing: nothing to do.
    pub gone: u64,
    /// Resources whose stored content could not be indexed, with why (their rows are kept).
    pub failed: Vec<String>,
}

/// Rebuilds the index rows of every current resource, or of one type's.
pub async fn reindex(
    store: &Store,
    resource_type: Option<&str>,
) -> Result<ReindexReport, StoreError> {
    let mut report = ReindexReport::default();
    let mut after: Option<(String, String)> = None;
    loop {
        let keys = {
            let mut conn = store.connection().await?;
            let after = after.as_ref().map(|(t, i)| (t.as_str(), i.as_str()));
            fhir_current_keys(&mut conn, resource_type, after, BATCH).await?
        };
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for (ty, id) in &keys {
            reindex_one(store, ty, id, &mut report).await?;
        }
        after = Some(last);
    }
    Ok(report)
}

async fn reindex_one(
    store: &Store,
    resource_type: &str,
    id: &str,
    report: &mut ReindexReport,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    if !tx.lock_current(resource_type, id).await? {
        report.gone += 1;
        return Ok(());
    }
    let current = match fhir_current(&mut tx, resource_type, id).await? {
        Some(current) if !current.deleted => current,
        _ => {
            report.gone += 1;
            return Ok(());
        }
    };
    let rows = serde_json::from_str::<Value>(&current.content)
        .map_err(|e| e.to_string())
        .and_then(|resource| extract(&resource).map_err(|e| e.to_string()));
    match rows {
        Ok(rows) => {
            fhir_reindex(&mut tx, resource_type, id, &rows).await?;
            tx.commit().await?;
            report.reindexed += 1;
        }
        Err(why) => report.failed.push(format!("{resource_type}/{id}: {why}")),
    }
    Ok(())
}
