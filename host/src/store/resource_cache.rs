//! Current versions of resources kept in memory between reads ([`Store::fhir_current`]),
//! as of one revision of the stored resources (migration 0021: `fhir_revision`, which
//! every update, deletion and expunge increments in its transaction, whichever process
//! commits it).
//!
//! A version is kept with the revision that a read of the revisions *begun before the
//! version was read* answered, and served only while the revisions read last still answer
//! that number. That last read must have begun at most [`CHECKED_WITHIN`] before the
//! request and after every write transaction this process has finished since
//! ([`ResourceCache::wrote`]); otherwise the request reads the revisions again first, one
//! read for all the requests waiting for it. So a write of this process is seen by its
//! next read, and one of another process (the CLI, another server on the same database)
//! by every read that begins [`CHECKED_WITHIN`] after its commit: the bound the gate
//! already keeps for revocations (`crate::freshness`).
//!
//! Only versions found are kept: a first version (an `INSERT` of a current row, which
//! does not move the revision) cannot make a kept one stale. A revision that moves drops
//! everything kept. The versions kept weigh at most [`CACHED_BYTES`], by their JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::Store;
use super::fhir::StoredVersion;

/// How old the last read of the revisions may be for a read to rely on it; the gate's
/// caches (`crate::freshness`) keep the same bound.
pub const CHECKED_WITHIN: Duration = Duration::from_millis(2);

/// The JSON kept at most, in bytes (and about 200 more per version).
const CACHED_BYTES: u64 = 64 << 20;

/// Versions kept, roughly, for the cache's first allocation.
const ESTIMATED_VERSIONS: usize = 16_384;

/// Versions kept by `Type/id`, with the revision they were read at.
pub(super) struct ResourceCache {
    versions: Cache<String, Kept, ByLength>,
    seen: Mutex<Option<Seen>>,
    /// One read of the revisions at a time: requests that find the last one too old wait
    /// for the next.
    reading: tokio::sync::Mutex<()>,
    /// Write transactions this process has finished (committed or rolled back).
    writes: AtomicU64,
}

#[derive(Clone)]
struct Kept {
    revision: i64,
    version: std::sync::Arc<StoredVersion>,
}

/// The last read of the revisions.
#[derive(Clone, Copy)]
struct Seen {
    began: Instant,
    /// [`ResourceCache::writes`] when it began.
    writes: u64,
    resources: i64,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<String, Kept> for ByLength {
    fn weight(&self, key: &String, kept: &Kept) -> u64 {
        (key.len() + kept.version.content.len() + 200) as u64
    }
}

impl std::fmt::Debug for ResourceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceCache")
            .field("versions", &self.versions.len())
            .finish_non_exhaustive()
    }
}

impl Default for ResourceCache {
    fn default() -> Self {
        ResourceCache {
            versions: Cache::with_weighter(ESTIMATED_VERSIONS, CACHED_BYTES, ByLength),
            seen: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
            writes: AtomicU64::new(0),
        }
    }
}

impl ResourceCache {
    /// Counts a write transaction of this process as finished: the next read relies on
    /// no read of the revisions begun before it.
    pub(super) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// [`ResourceCache::writes`], to pass to [`ResourceCache::saw`] with a read of the
    /// revisions that begins after this call.
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Notes a read of the revisions that began at `began`, after `writes` writes of this
    /// process; a revision of the resources newer than the last drops every version kept.
    pub(super) fn saw(&self, began: Instant, writes: u64, resources: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.is_some_and(|s| s.began > began) {
            return;
        }
        if seen.is_some_and(|s| s.resources != resources) {
            self.versions.clear();
        }
        *seen = Some(Seen {
            began,
            writes,
            resources,
        });
    }

    /// The revision of the resources a read that begins now may rely on, reading the
    /// revisions first when the last read is too old or came before a write of this
    /// process; `None` when that read fails (the caller reads the database and keeps
    /// nothing).
    pub(super) async fn revision(&self, store: &Store) -> Option<i64> {
        let asked = Instant::now();
        if let Some(r) = self.relied_on(|s| asked < s.began + CHECKED_WITHIN) {
            return Some(r);
        }
        let _turn = self.reading.lock().await;
        // A read that began after this call is as good as one of its own.
        if let Some(r) = self.relied_on(|s| s.began >= asked) {
            return Some(r);
        }
        match store.revisions().await {
            Ok(revisions) => Some(revisions.resources),
            Err(e) => {
                tracing::debug!(error = %e, "no revisions; the resource is read, not kept");
                None
            }
        }
    }

    fn relied_on(&self, recent: impl Fn(&Seen) -> bool) -> Option<i64> {
        let seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.filter(|s| s.writes == self.writes() && recent(s))
            .map(|s| s.resources)
    }

    /// The version kept of `resource_type`/`id` at `revision`.
    pub(super) fn get(
        &self,
        resource_type: &str,
        id: &str,
        revision: i64,
    ) -> Option<StoredVersion> {
        let kept = self.versions.get(&key(resource_type, id))?;
        (kept.revision == revision).then(|| StoredVersion::clone(&kept.version))
    }

    /// Keeps `version`, read after a read of the revisions that answered `revision`.
    pub(super) fn keep(&self, revision: i64, version: &StoredVersion) {
        let kept = Kept {
            revision,
            version: std::sync::Arc::new(version.clone()),
        };
        self.versions
            .insert(key(&version.resource_type, &version.id), kept);
    }
}

fn key(resource_type: &str, id: &str) -> String {
    let mut key = String::with_capacity(resource_type.len() + id.len() + 1);
    key.push_str(resource_type);
    key.push('/');
    key.push_str(id);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fhir::fhir_write;

    fn version(id: &str, version_id: i64, family: &str) -> StoredVersion {
        let resource = serde_json::json!({"resourceType": "Patient", "id": id,
            "name": [{"family": family}]});
        StoredVersion {
            resource_type: "Patient".into(),
            id: id.into(),
            version_id,
            last_updated: 1_700_000_000_000 + version_id,
            deleted: false,
            content: resource.to_string(),
            method: if version_id == 1 { "POST" } else { "PUT" }.into(),
        }
    }

    async fn write(store: &Store, v: &StoredVersion) {
        let resource: serde_json::Value = serde_json::from_str(&v.content).unwrap();
        let index = crate::fhir::search::extract(&resource).unwrap();
        let mut tx = store.begin().await.unwrap();
        fhir_write(&mut tx, v, Some(&index)).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn family(store: &Store, id: &str) -> Option<String> {
        let found = store.fhir_current("Patient", id).await.unwrap()?;
        let json: serde_json::Value = serde_json::from_str(&found.content).unwrap();
        Some(json["name"][0]["family"].as_str().unwrap().to_owned())
    }

    /// Another process's update is read once the revisions are read again; this
    /// process's own update at once; a create elsewhere keeps what is kept.
    #[tokio::test]
    async fn a_kept_version_gives_way_to_every_update_wherever_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("h.db").display());
        let here = Store::open(&url).await.unwrap();
        let elsewhere = Store::connect(&url).await.unwrap();
        let after_the_bound = || tokio::time::sleep(CHECKED_WITHIN * 3);

        write(&here, &version("a", 1, "One")).await;
        assert_eq!(family(&here, "a").await.as_deref(), Some("One"));
        assert_eq!(here.resources.versions.len(), 1, "the version read is kept");
        assert_eq!(family(&here, "nobody").await, None);
        assert_eq!(here.resources.versions.len(), 1, "nothing kept of a miss");

        write(&elsewhere, &version("a", 2, "Two")).await;
        after_the_bound().await;
        assert_eq!(family(&here, "a").await.as_deref(), Some("Two"));

        write(&here, &version("a", 3, "Three")).await;
        assert_eq!(family(&here, "a").await.as_deref(), Some("Three"));

        write(&elsewhere, &version("b", 1, "Bee")).await;
        after_the_bound().await;
        here.revisions().await.unwrap();
        assert_eq!(here.resources.versions.len(), 1, "a create drops nothing");
        assert_eq!(family(&here, "a").await.as_deref(), Some("Three"));

        let mut gone = version("a", 4, "Three");
        gone.deleted = true;
        gone.method = "DELETE".into();
        let mut tx = elsewhere.begin().await.unwrap();
        fhir_write(&mut tx, &gone, None).await.unwrap();
        tx.commit().await.unwrap();
        after_the_bound().await;
        let read = here.fhir_current("Patient", "a").await.unwrap().unwrap();
        assert!(read.deleted, "the deletion elsewhere is read");
        assert_eq!(read.version_id, 4);
    }

    /// Until the revisions have been read after a write of this process, nothing kept is
    /// relied on, and the read that follows reads them.
    #[tokio::test]
    async fn a_write_here_makes_the_next_read_look_at_the_revisions() {
        let cache = ResourceCache::default();
        let began = Instant::now();
        cache.saw(began, cache.writes(), 7);
        assert_eq!(cache.relied_on(|_| true), Some(7));
        cache.wrote();
        assert_eq!(cache.relied_on(|_| true), None);
        // An older read noted late changes nothing.
        cache.saw(began - Duration::from_millis(1), cache.writes(), 9);
        assert_eq!(cache.relied_on(|_| true), None);
        cache.saw(Instant::now(), cache.writes(), 8);
        assert_eq!(cache.relied_on(|_| true), Some(8));
    }
}
