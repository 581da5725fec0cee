//! How often each object is polled and how often its status is written, so that a thousand
//! objects with operations in flight neither flood the API server nor go stale.
//!
//! While an operation moves bytes its object is polled every [`PROGRESS_INTERVAL`]; while it
//! is quiet the interval doubles from [`QUIET_FIRST`] to [`QUIET_CAP`], with jitter so that
//! objects started together do not poll together. A status write that only moves progress
//! waits for [`MIN_WRITE_INTERVAL`] since the last one.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use crate::metrics::Metrics;

/// How often an object whose operation moves bytes is looked at again.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// The first wait while an operation is quiet.
pub const QUIET_FIRST: Duration = Duration::from_secs(1);
/// The longest wait while an operation is quiet.
pub const QUIET_CAP: Duration = Duration::from_secs(30);
/// At most one progress-only status write per object in this window.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(2);
/// An object not polled for this long has gone (deleted, or done elsewhere): forget it.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What the last poll of each object saw, by object name.
#[derive(Default)]
pub struct Pacing {
    objects: Mutex<HashMap<String, Seen>>,
    metrics: Metrics,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    bytes_done: u64,
    quiet_polls: u32,
    /// Whether an operation of the object is being polled (it counts as in flight).
    polling: bool,
    last_write: Option<Instant>,
    touched: Instant,
}

impl Seen {
    fn new(bytes_done: u64) -> Seen {
        Seen {
            bytes_done,
            quiet_polls: 0,
            polling: false,
            last_write: None,
            touched: Instant::now(),
        }
    }
}

impl Pacing {
    /// Pacing that reports operations in flight and bytes moved to `metrics`.
    pub fn new(metrics: Metrics) -> Pacing {
        Pacing { objects: Mutex::default(), metrics }
    }

    /// When to poll `object` again, now that its operation has done `bytes_done` bytes: soon
    /// while bytes move; doubling from one second to the cap, with jitter, while they do not.
    pub fn next_poll(&self, object: &str, bytes_done: u64) -> Duration {
        let mut objects = self.lock();
        let seen = objects.entry(object.to_owned()).or_insert_with(|| Seen::new(bytes_done));
        let moved = bytes_done.saturating_sub(seen.bytes_done);
        seen.bytes_done = bytes_done;
        seen.polling = true;
        seen.touched = Instant::now();
        self.metrics.bytes_moved(moved);
        let next = if moved > 0 {
            seen.quiet_polls = 0;
            PROGRESS_INTERVAL
        } else {
            seen.quiet_polls = seen.quiet_polls.saturating_add(1);
            quiet_backoff(seen.quiet_polls) + jitter()
        };
        self.report(&mut objects);
        next
    }

    /// Whether a progress-only status write of `object` is due.
    pub fn may_write(&self, object: &str) -> bool {
        let objects = self.lock();
        objects
            .get(object)
            .and_then(|seen| seen.last_write)
            .is_none_or(|at| at.elapsed() >= MIN_WRITE_INTERVAL)
    }

    /// Records that `object`'s status was just written.
    pub fn wrote(&self, object: &str) {
        let mut objects = self.lock();
        let seen = objects.entry(object.to_owned()).or_insert_with(|| Seen::new(0));
        seen.last_write = Some(Instant::now());
        seen.touched = Instant::now();
    }

    /// Forgets `object`: its operation ended.
    pub fn forget(&self, object: &str) {
        let mut objects = self.lock();
        objects.remove(object);
        self.report(&mut objects);
    }

    /// Drops objects nobody polled for a long time and reports the operations in flight.
    fn report(&self, objects: &mut HashMap<String, Seen>) {
        objects.retain(|_, seen| seen.touched.elapsed() < FORGET_AFTER);
        let in_flight = objects.values().filter(|seen| seen.polling).count();
        self.metrics.operations_in_flight(in_flight);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The wait after `quiet_polls` polls in a row that saw no progress: 1 s, 2 s, 4 s … 30 s.
fn quiet_backoff(quiet_polls: u32) -> Duration {
    let doublings = quiet_polls.clamp(1, 6) - 1;
    (QUIET_FIRST * 2u32.pow(doublings)).min(QUIET_CAP)
}

/// Up to a quarter second, different from one call to the next.
fn jitter() -> Duration {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Duration::from_millis(u64::from(now.subsec_micros()) % 250)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_polls_back_off_exponentially_to_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| quiet_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn moving_bytes_polls_soon_and_resets_the_backoff() {
        let pacing = Pacing::default();
        assert!(pacing.next_poll("a", 0) < Duration::from_secs(2));
        for _ in 0..5 {
            pacing.next_poll("a", 0);
        }
        assert!(pacing.next_poll("a", 0) >= Duration::from_secs(30));
        assert_eq!(pacing.next_poll("a", 10), PROGRESS_INTERVAL);
        assert!(pacing.next_poll("a", 10) < Duration::from_secs(2));
    }

    #[test]
    fn progress_writes_wait_for_the_interval() {
        let pacing = Pacing::default();
        assert!(pacing.may_write("a"));
        pacing.wrote("a");
        assert!(!pacing.may_write("a"));
        assert!(pacing.may_write("b"));
    }
}
