//! The clock of the FHIR layer.

use std::sync::atomic::{AtomicI64, Ordering};

/// The latest `lastUpdated` this process has given a version.
static LATEST_STAMP: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch: the one clock of the FHIR layer.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `lastUpdated` of a new version whose predecessor has `previous` (0 for none): now,
/// or one millisecond after the predecessor when the clock has not moved past it (several
/// writes of one resource within a millisecond, or a clock stepped back), so that the
/// versions of a resource are ordered by time.
pub fn version_stamp(previous: i64) -> i64 {
    let stamp = now_ms().max(previous + 1);
    LATEST_STAMP.fetch_max(stamp, Ordering::Relaxed);
    stamp
}

/// The time a search or history snapshot is taken at: now, or the latest version stamp
/// this process has given when that is ahead of the clock, so that a read sees every
/// write acknowledged before it. (A version another process stamped ahead of the clock
/// is seen once the clock reaches it: a few milliseconds at most.)
pub fn snapshot_now() -> i64 {
    now_ms().max(LATEST_STAMP.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_ahead_of_the_clock_move_the_snapshot_with_them() {
        let ahead = now_ms() + 60_000;
        let stamp = version_stamp(ahead);
        assert_eq!(stamp, ahead + 1);
        assert!(snapshot_now() >= stamp);
        assert!(version_stamp(0) >= now_ms() - 1);
    }
}
