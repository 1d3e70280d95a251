//! Access-token records and audit events: what the server writes about what it did, in one
//! group commit ([`super::group`]). A token request writes its record and its
//! `token.issued` event in one write, before the token is answered; the other audit events
//! (sign-ins, refusals, console changes) join the same groups.

use super::console::{Audit, NewAuditEvent};
use super::group::Grouped;
use super::oauth::IssuedToken;
use super::{Store, StoreError};

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
