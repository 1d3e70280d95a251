//! The registered clients as the token endpoint reads them: every token request looks up
//! its client (with the secret's hash) and the registered resource servers (the audiences
//! a token may name). They change rarely, so they are kept in memory as of the clients'
//! revision ([`crate::freshness`]): a change this process commits applies to its next
//! request, one another process commits (the CLI, another server on the same database)
//! to every request that begins `CHECKED_WITHIN` after it.
//!
//! Only clients that exist are kept (an unknown id is read again each time, so made-up ids
//! cannot fill the memory), at most [`MAX_CLIENTS`] of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{Client, ClientKind, Store, StoreError, secret_matches};

/// Clients kept at most; the whole set is dropped when it is full (a server with more
/// active clients than this reads some of them again, as it did without the directory).
const MAX_CLIENTS: usize = 4096;

/// A registered client and its secret's hash (`None` without a secret).
pub struct Registered {
    pub client: Client,
    secret_hash: Option<String>,
}

impl Registered {
    /// Whether `secret` is the client's secret (constant time); false without a secret.
    pub fn secret_matches(&self, secret: &str) -> bool {
        self.secret_hash
            .as_deref()
            .is_some_and(|stored| secret_matches(stored, secret))
    }
}

#[derive(Default)]
pub struct Directory {
    kept: Mutex<Kept>,
}

/// What was read as of one revision of the clients.
#[derive(Default)]
struct Kept {
    revision: Option<i64>,
    clients: HashMap<String, Arc<Registered>>,
    resource_servers: Option<Arc<Vec<Client>>>,
}

impl Directory {
    /// The client `id` as of `revision` of the clients, or `None` when none is registered.
    pub async fn client(
        &self,
        store: &Store,
        revision: i64,
        id: &str,
    ) -> Result<Option<Arc<Registered>>, StoreError> {
        if let Some(found) = self
            .with_kept(revision, |kept| kept.clients.get(id).cloned())
            .flatten()
        {
            return Ok(Some(found));
        }
        let Some((client, secret_hash)) = store.get_client_and_secret(id).await? else {
            return Ok(None);
        };
        let found = Arc::new(Registered {
            client,
            secret_hash,
        });
        self.with_kept(revision, |kept| {
            if kept.clients.len() >= MAX_CLIENTS {
                kept.clients.clear();
            }
            kept.clients.insert(id.to_owned(), found.clone());
        });
        Ok(Some(found))
    }

    /// The registered resource servers as of `revision` of the clients.
    pub async fn resource_servers(
        &self,
        store: &Store,
        revision: i64,
    ) -> Result<Arc<Vec<Client>>, StoreError> {
        if let Some(found) = self
            .with_kept(revision, |kept| kept.resource_servers.clone())
            .flatten()
        {
            return Ok(found);
        }
        let found = Arc::new(
            store
                .list_clients_of_kind(ClientKind::ResourceServer)
                .await?,
        );
        self.with_kept(revision, |kept| kept.resource_servers = Some(found.clone()));
        Ok(found)
    }

    /// Runs `f` on what is kept as of `revision`: what was kept of an older revision is
    /// dropped first. A caller holding an older revision than the kept one (its read of the
    /// revisions began before another's) neither finds nor keeps anything, so what it read
    /// never replaces newer data.
    fn with_kept<T>(&self, revision: i64, f: impl FnOnce(&mut Kept) -> T) -> Option<T> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.revision {
            Some(r) if r > revision => return None,
            Some(r) if r == revision => {}
            _ => {
                *kept = Kept {
                    revision: Some(revision),
                    ..Kept::default()
                }
            }
        }
        Some(f(&mut kept))
    }
}
