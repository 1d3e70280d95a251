//! Password checks under the sign-in limits, shared by the login page and the FHIR
//! server's Basic compatibility mode: failures within [`LOGIN_WINDOW`] seconds are counted
//! per account and per client address in the database (so every host of a cluster counts
//! the same attempts), and once either limit is reached no password is checked at all.

use crate::store::{Store, StoreError, User};

/// Sign-in rate limits: failures allowed within [`LOGIN_WINDOW`] seconds.
pub const LOGIN_WINDOW: i64 = 900;
pub const MAX_FAILURES_PER_USER: i64 = 5;
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;

/// What one attempt came to.
pub enum Attempt {
    /// The password is right.
    SignedIn(User),
    /// Wrong (or no such account, or not the account asked for): this many attempts are
    /// left for the account before it is paused.
    Wrong { left: i64 },
    /// Refused by a limit before any password was checked.
    Paused(Pause),
}

/// Which limit refused an attempt, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub per_account: bool,
    /// Failures counted within the window, this attempt not included.
    pub failures: i64,
    /// Minutes until the oldest counted failure leaves the window.
    pub minutes: i64,
}

impl Pause {
    /// The refusal in words: `account` names the account as the caller may see it, and
    /// `address` the client's address.
    pub fn describe(&self, account: &str, address: &str) -> String {
        let whose = if self.per_account {
            format!("for {account}")
        } else {
            format!("from your address ({address})")
        };
        format!(
            "Too many failed sign-ins {whose}: {} in the last {} minutes (at most {} per account and {} per address). Try again in {} minutes.",
            self.failures,
            LOGIN_WINDOW / 60,
            MAX_FAILURES_PER_USER,
            MAX_FAILURES_PER_ADDRESS,
            self.minutes
        )
    }
}

/// Checks `password` for account `username` from `address` under the limits. With
/// `expected` false the caller already knows the answer is no (the credentials name
/// another account than the one asked for): the attempt counts, and costs the same
/// argon2id work, but no account's password is checked.
pub async fn attempt(
    store: &Store,
    username: &str,
    password: &str,
    address: &str,
    expected: bool,
    now: i64,
) -> Result<Attempt, StoreError> {
    // Recorded before the check, so that parallel guesses cannot all pass the limit.
    let marker = (rand::random::<u64>() >> 2) as i64 + 2;
    let (user_failures, user_first, addr_failures, addr_first) = store
        .begin_login_attempt(username, address, now, now - LOGIN_WINDOW, marker)
        .await?;
    let minutes = |first: i64| ((first + LOGIN_WINDOW - now).max(60) + 59) / 60;
    let pause = if user_failures > MAX_FAILURES_PER_USER {
        Some(Pause {
            per_account: true,
            failures: user_failures - 1,
            minutes: minutes(user_first),
        })
    } else if addr_failures > MAX_FAILURES_PER_ADDRESS {
        Some(Pause {
            per_account: false,
            failures: addr_failures - 1,
            minutes: minutes(addr_first),
        })
    } else {
        None
    };
    if let Some(pause) = pause {
        store.finish_login_attempt(marker, None).await?;
        return Ok(Attempt::Paused(pause));
    }
    let user = if expected {
        store.verify_user(username, password).await
    } else {
        store.verify_no_user(password).await;
        Ok(None)
    };
    store
        .finish_login_attempt(marker, Some(matches!(user, Ok(Some(_)))))
        .await?;
    Ok(match user? {
        Some(user) => Attempt::SignedIn(user),
        None => Attempt::Wrong {
            left: MAX_FAILURES_PER_USER - user_failures,
        },
    })
}
