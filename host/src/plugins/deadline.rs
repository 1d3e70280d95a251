//! What a plugin call's deadline counts: time the call runs, not time its thread waits for
//! a CPU.
//!
//! The epoch ticker stops a call once `deadline` of wall-clock time has passed. On an
//! oversubscribed machine a thread can be descheduled in the middle of a sound call for
//! longer than that (a 20 ms deadline failed calls at load average 5 on two cores). So the
//! first expiry does not trap at once: the call goes on in grace windows of a quarter of
//! the deadline, and the thread's CPU time over each window decides. A window in which the
//! thread ran for at least half of it means the call had the CPU and still did not finish:
//! it traps. A window in which it mostly waited continues, up to [`MAX_WALL`] times the
//! deadline in all. On a quiet machine a runaway call stops after 1.25 × the deadline.
//!
//! The thread's CPU time is read only when a deadline expires (a system call costs about
//! as much as a warm decision), so a call that finishes in time pays nothing for this.

use std::time::Duration;

use wasmtime::{Trap, UpdateDeadline};

/// At most this many deadlines of wall-clock time per call, however busy the machine.
pub(crate) const MAX_WALL: u64 = 10;

/// A call's progress past its first deadline.
#[derive(Debug, Default)]
pub(crate) struct Overrun {
    /// The call's deadline in epoch ticks.
    ticks: u64,
    /// The thread's CPU time when the current grace window started.
    window_start: Option<Duration>,
    /// Grace windows granted so far.
    windows: u64,
}

impl Overrun {
    /// Starts a call whose deadline is `ticks` epoch ticks.
    pub(crate) fn start(&mut self, ticks: u64) {
        *self = Overrun {
            ticks,
            ..Overrun::default()
        };
    }

    /// What to do when the call's deadline expires, the thread's CPU time being `cpu_now`:
    /// the ticks of another grace window, or `None` to stop the call.
    fn next(&mut self, cpu_now: Option<Duration>) -> Option<u64> {
        let grace = (self.ticks / 4).max(1);
        let max_windows = (MAX_WALL - 1) * self.ticks / grace;
        let cpu_now = cpu_now?;
        if let Some(start) = self.window_start {
            let ran = cpu_now.saturating_sub(start);
            // A tick is a millisecond (`runtime::TICK`).
            let window = Duration::from_millis(grace);
            if ran * 2 >= window || self.windows >= max_windows {
                return None;
            }
        }
        self.window_start = Some(cpu_now);
        self.windows += 1;
        Some(grace)
    }
}

/// What a plugin's store does when its call's deadline expires: another grace window while
/// the thread waits for a CPU, or a trap that classifies as a timeout.
pub(crate) fn on_expiry(overrun: &mut Overrun) -> wasmtime::Result<UpdateDeadline> {
    match overrun.next(thread_cpu_time()) {
        Some(grace) => Ok(UpdateDeadline::Continue(grace)),
        None => Err(Trap::Interrupt.into()),
    }
}

/// CPU time of the calling thread (`std` has no such clock).
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// Without a thread CPU clock, the first deadline is final.
#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_call_that_had_the_cpu_stops_after_one_grace_window() {
        let mut o = Overrun::default();
        o.start(20);
        assert_eq!(o.next(Some(100 * MS)), Some(5));
        // It ran 4 ms of the 5 ms window.
        assert_eq!(o.next(Some(104 * MS)), None);
    }

    #[test]
    fn a_descheduled_call_goes_on_until_ten_deadlines() {
        let mut o = Overrun::default();
        o.start(20);
        let mut cpu = 100 * MS;
        let mut wall = 20;
        while let Some(grace) = o.next(Some(cpu)) {
            cpu += MS; // 1 ms of CPU per 5 ms window: waiting for a CPU
            wall += grace;
        }
        assert_eq!(wall, 20 * MAX_WALL);
    }

    #[test]
    fn without_a_cpu_clock_the_first_deadline_is_final() {
        let mut o = Overrun::default();
        o.start(20);
        assert_eq!(o.next(None), None);
    }

    #[test]
    fn the_thread_clock_moves_with_work() {
        let before = thread_cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time().unwrap() > before);
    }
}
