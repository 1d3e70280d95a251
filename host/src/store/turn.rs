//! SQLite's write turn. SQLite has one writer at a time and no queue for its write lock:
//! a connection that finds it taken retries in its busy handler after sleeps of 1, 2, 5,
//! 10, 15, 20, 25, 25, 25, 50, 50 ms and then every 100 ms, so a writer that takes the lock
//! again as soon as it commits wins every race against one that sleeps. Every write of
//! this process therefore takes the turn first (a FIFO queue: [`WriteTurn::take`]), and
//! a run of turns taken back to back leaves the lock free for [`PROBE_PAUSE`] every
//! [`PROBE_EVERY`], so that the writers of other processes (`hestia user add`,
//! `hestia fhir import` while `serve` runs) get in before their busy timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
// tokio's clock: the same as std's, and one that tests can pause and advance.
use tokio::time::Instant;

use super::StoreError;

/// How long a writer waits for its turn on SQLite: the `busy_timeout` of its connections.
pub(super) const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long turns may follow each other without the lock being free for [`PROBE_PAUSE`]:
/// well under [`WRITE_TURN_TIMEOUT`], so a writer of another process always gets in.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(4);
/// Longer than the longest sleep of SQLite's busy handler (100 ms).
pub(super) const PROBE_PAUSE: Duration = Duration::from_millis(110);

/// The process's write turn (SQLite only; cheap to clone).
#[derive(Clone, Debug, Default)]
pub(super) struct WriteTurn(Arc<Mutex<Run>>);

/// The current run of turns taken back to back.
#[derive(Debug, Default)]
struct Run {
    /// When the run began (the lock had been free for [`PROBE_PAUSE`] before it).
    since: Option<Instant>,
    /// When the last turn ended.
    released: Option<Instant>,
    /// Turns taken so far.
    taken: u64,
}

/// A turn: the holder may take SQLite's write lock until it drops this.
pub(super) struct Turn(OwnedMutexGuard<Run>);

impl Turn {
    /// This turn's number: the turns taken in the process up to and including it.
    pub(super) fn number(&self) -> u64 {
        self.0.taken
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.released = Some(Instant::now());
    }
}

impl WriteTurn {
    /// Waits for the turn, at most [`WRITE_TURN_TIMEOUT`]; when turns have followed each
    /// other for [`PROBE_EVERY`], first leaves the lock free for [`PROBE_PAUSE`].
    pub(super) async fn take(&self) -> Result<Turn, StoreError> {
        let mut run = tokio::time::timeout(WRITE_TURN_TIMEOUT, self.0.clone().lock_owned())
            .await
            .map_err(|_| {
                StoreError::Busy(format!(
                    "no turn to write within {} s",
                    WRITE_TURN_TIMEOUT.as_secs()
                ))
            })?;
        let now = Instant::now();
        let rested = run.released.is_none_or(|t| now - t >= PROBE_PAUSE);
        match run.since {
            Some(since) if !rested && now - since >= PROBE_EVERY => {
                tokio::time::sleep(PROBE_PAUSE).await;
                run.since = Some(Instant::now());
            }
            Some(_) if !rested => {}
            _ => run.since = Some(now),
        }
        run.taken += 1;
        Ok(Turn(run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns taken back to back leave a pause once their run reaches `PROBE_EVERY`, and
    /// not before; a rest as long as the pause starts a new run.
    #[tokio::test(start_paused = true)]
    async fn a_run_of_turns_pauses_every_probe_interval() {
        let turn = WriteTurn::default();
        let start = Instant::now();
        let mut paused_at = Vec::new();
        while start.elapsed() < Duration::from_secs(9) {
            let before = Instant::now();
            let held = turn.take().await.unwrap();
            if before.elapsed() >= PROBE_PAUSE {
                paused_at.push((before - start).as_millis() / 100);
            }
            tokio::time::sleep(Duration::from_millis(10)).await; // the write
            drop(held);
        }
        assert_eq!(paused_at, vec![40, 81], "pauses at 4 s and 8.1 s");

        tokio::time::sleep(PROBE_PAUSE).await;
        let before = Instant::now();
        drop(turn.take().await.unwrap());
        assert!(
            before.elapsed() < PROBE_PAUSE,
            "a rested lock starts a new run"
        );
    }
}
