//! Access-token records and audit events: what the server writes about what it did, in one
//! group commit ([`super::group`]). A token request writes its record and its
//! `token.issued` event in one write, before the token is answered; the other audit events
//! (sign-ins, refusals, console changes) join the same groups.

use serde_json::{Value, json};

use super::console::{Audit, NewAuditEvent};
use super::group::Grouped;
use super::oauth::IssuedToken;
use super::{Backend, Store, StoreError};

/// One write of the queue.
#[derive(Debug)]
pub(super) enum Record {
    /// A token record, and the audit event of the request that issued it.
    Issued(IssuedToken, Option<Audit>),
    Audit(Audit),
}

impl Grouped for Record {
    const MAX_GROUP: usize = 1024;
    const WHAT: &'static str = "token record or audit event";

    async fn write_many(store: &Store, group: &[Self]) -> Result<(), StoreError> {
        let issued: Vec<&IssuedToken> = group
            .iter()
            .filter_map(|r| match r {
                Record::Issued(i, _) => Some(i),
                Record::Audit(_) => None,
            })
            .collect();
        let events: Vec<&Audit> = group
            .iter()
            .filter_map(|r| match r {
                Record::Audit(a) | Record::Issued(_, Some(a)) => Some(a),
                Record::Issued(_, None) => None,
            })
            .collect();
        if let Some(inline) = &store.inline {
            let turn = store.turn().await?;
            let written = inline.write(|tx| write_inline(tx, &issued, &events));
            drop(turn);
            if written.is_some() {
                store.count_writes(1);
                return Ok(());
            }
        }
        if store.backend() == Backend::Postgres {
            return write_postgres(store, &issued, &events).await;
        }
        let mut tx = store.begin().await?;
        if !issued.is_empty() {
            Store::write_issued(&mut tx, &issued).await?;
        }
        if !events.is_empty() {
            Store::write_audit(&mut tx, &events).await?;
        }
        tx.commit().await
    }

    async fn write_one(store: &Store, one: &Self) -> Result<(), StoreError> {
        Self::write_many(store, std::slice::from_ref(one)).await
    }
}

/// A group on PostgreSQL in one statement whatever its size: each table's rows one JSON
/// parameter read by `json_to_recordset`, the grants and tokens inserted by data-modifying
/// `WITH` queries of the audit events' insert. A single statement is a transaction of its
/// own: one round trip where `BEGIN`, an insert per table and `COMMIT` took four or five,
/// and one text that stays prepared, where multi-row `VALUES` lists are a new text, parsed
/// and planned, for each size of group. The groups (one at a time) are written on a
/// [`KeptConnection`](super::KeptConnection).
const POSTGRES_RECORDS: &str = "WITH g AS (\
     INSERT INTO oauth_grants (grant_id, client_id, user_id, created_at) \
     SELECT grant_id, client_id, user_id, created_at FROM json_to_recordset($1::json) \
     AS x(grant_id TEXT, client_id TEXT, user_id TEXT, created_at BIGINT)), \
     t AS (\
     INSERT INTO oauth_access_tokens (jti, grant_id, client_id, expires_at) \
     SELECT jti, grant_id, client_id, expires_at FROM json_to_recordset($2::json) \
     AS x(jti TEXT, grant_id TEXT, client_id TEXT, expires_at BIGINT)) \
     INSERT INTO audit_events (at, actor, action, target, outcome, detail, address, context) \
     SELECT at, actor, action, target, outcome, detail, address, context \
     FROM json_to_recordset($3::json) AS x(at BIGINT, actor TEXT, action TEXT, target TEXT, \
     outcome TEXT, detail TEXT, address TEXT, context TEXT)";

async fn write_postgres(
    store: &Store,
    issued: &[&IssuedToken],
    events: &[&Audit],
) -> Result<(), StoreError> {
    let grants: Vec<Value> = issued
        .iter()
        .filter_map(|i| {
            let (user, at) = i.new_grant.as_ref()?;
            Some(json!({"grant_id": i.grant_id, "client_id": i.client_id, "user_id": user, "created_at": at}))
        })
        .collect();
    let tokens: Vec<Value> = issued
        .iter()
        .map(|i| json!({"jti": i.jti, "grant_id": i.grant_id, "client_id": i.client_id, "expires_at": i.expires_at}))
        .collect();
    let events: Vec<Value> = events
        .iter()
        .map(|Audit { at, event }| {
            json!({"at": at, "actor": event.actor, "action": event.action, "target": event.target,
                   "outcome": event.outcome, "detail": event.detail, "address": event.address,
                   "context": event.context})
        })
        .collect();
    let (grants, tokens, events) = (
        Value::Array(grants).to_string(),
        Value::Array(tokens).to_string(),
        Value::Array(events).to_string(),
    );
    store
        .kept
        .records
        .with(store.pool(), async |conn| {
            sqlx::query(POSTGRES_RECORDS)
                .bind(grants)
                .bind(tokens)
                .bind(events)
                .execute(conn)
                .await
        })
        .await?;
    store.count_writes(1);
    Ok(())
}

/// The group on SQLite's inline writer ([`super::inline`]): one prepared single-row
/// insert per row, each a call into SQLite on this thread (the same rows as
/// [`Store::write_issued`] and [`Store::write_audit`]).
fn write_inline(
    tx: &rusqlite::Transaction<'_>,
    issued: &[&IssuedToken],
    events: &[&Audit],
) -> rusqlite::Result<()> {
    let mut grant = tx.prepare_cached(
        "INSERT INTO oauth_grants (grant_id, client_id, user_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut token = tx.prepare_cached(
        "INSERT INTO oauth_access_tokens (jti, grant_id, client_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for i in issued {
        if let Some((user, at)) = &i.new_grant {
            grant.execute((&i.grant_id, &i.client_id, user, at))?;
        }
        token.execute((&i.jti, &i.grant_id, &i.client_id, i.expires_at))?;
    }
    let mut audit = tx.prepare_cached(
        "INSERT INTO audit_events (at, actor, action, target, outcome, detail, address, context) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for Audit { at, event } in events {
        audit.execute((
            at,
            &event.actor,
            &event.action,
            &event.target,
            &event.outcome,
            &event.detail,
            &event.address,
            &event.context,
        ))?;
    }
    Ok(())
}

impl Store {
    /// Records an issued access token (and the grant it opens), with the audit event of
    /// the request that issued it and when it happened, together with the other records of
    /// the moment; returns once committed.
    pub async fn record_issued(
        &self,
        issued: IssuedToken,
        event: Option<(NewAuditEvent, i64)>,
    ) -> Result<(), StoreError> {
        let audit = event.map(|(event, at)| Audit { at, event });
        self.groups
            .records
            .commit(self, Record::Issued(issued, audit))
            .await
            .map(drop)
    }

    /// Records an audit event that happened at `at` together with the other records of the
    /// moment; returns once committed.
    pub async fn record_audit(&self, event: NewAuditEvent, at: i64) -> Result<(), StoreError> {
        self.groups
            .records
            .commit(self, Record::Audit(Audit { at, event }))
            .await
            .map(drop)
    }
}
