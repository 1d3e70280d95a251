//! Writes of several versions in one transaction (a transaction Bundle's, a group of
//! creates, an import's updates), in the fastest form the database has for them.

use super::fhir::{VersionRows, write_many_rows};
use super::{Backend, StoreError, WriteTx};

/// Writes one new version of each of several distinct resources in `tx`, as
/// [`super::fhir::fhir_write`] does for one: history rows, current rows, and (unless
/// deleted) fresh index rows. A version whose number is taken (a concurrent write got
/// there first) fails the whole call with a conflict.
///
/// On PostgreSQL the first versions go in the one statement of a group of creates
/// ([`super::pg_creates`]), a text prepared once; the other versions, and every version on
/// SQLite, in multi-row statements ([`write_many_rows`]).
pub async fn fhir_write_many(tx: &mut WriteTx, writes: &[VersionRows]) -> Result<(), StoreError> {
    let postgres = tx.backend() == Backend::Postgres;
    let conn = tx.sql();
    if postgres {
        let (firsts, rest): (Vec<&VersionRows>, Vec<&VersionRows>) = writes
            .iter()
            .partition(|(v, _)| v.version_id == 1 && !v.deleted);
        if !firsts.is_empty() {
            super::pg_creates::write_creates_in(conn, &firsts).await?;
            return write_many_rows(conn, &rest).await;
        }
    }
    write_many_rows(conn, &writes.iter().collect::<Vec<_>>()).await
}
