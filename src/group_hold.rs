//! The hold of N instances that must be up together (density): each stays up after its READY
//! until every one of the N has reported (READY, or ended without it), then for one fixed
//! window more, and never longer than a bound. A fixed hold per instance had to cover the
//! slowest backend's launch spread (docker's 50 launches spread over ~15 s here), so every
//! other backend idled for most of it; this hold ends a measured window after the last READY.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One unit's shared hold (see the module header).
#[derive(Debug)]
pub struct GroupHold {
    n: u32,
    window: Duration,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    ready: u32,
    failed: u32,
    /// When the last of the N reported.
    all_reported: Option<Instant>,
}

impl State {
    fn reported(&self) -> u32 {
        self.ready + self.failed
    }
}

impl GroupHold {
    /// A hold for `n` instances, each kept up `window` past the last READY.
    pub fn new(n: u32, window: Duration) -> GroupHold {
        GroupHold { n, window, state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    /// The measurement window every instance stays up for once all are READY.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// One instance's membership; an instance that ends without calling
    /// [`Member::ready_and_hold`] counts as failed when the member drops, so the others stop
    /// waiting for it.
    pub fn join(&self) -> Member<'_> {
        Member { group: self, ready: false }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking member cannot leave the counts half-updated (each update is one add).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, ready: bool) {
        let mut s = self.lock();
        if ready {
            s.ready += 1;
        } else {
            s.failed += 1;
        }
        if s.reported() >= self.n && s.all_reported.is_none() {
            s.all_reported = Some(Instant::now());
            self.changed.notify_all();
        }
    }

    /// Block until every member has reported and the window has passed (no window when one of
    /// them failed: the unit has no figure to measure), or until `bound` from now.
    fn hold(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            let release = s.all_reported.map(|t| if s.failed > 0 { t } else { t + self.window });
            let until = release.map_or(deadline, |r| r.min(deadline));
            if now >= until {
                return;
            }
            s = self.changed.wait_timeout(s, until - now).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// One instance of a [`GroupHold`].
#[derive(Debug)]
pub struct Member<'a> {
    group: &'a GroupHold,
    ready: bool,
}

impl Member<'_> {
    /// This instance is READY: hold it until the group's release, at most `bound`.
    pub fn ready_and_hold(&mut self, bound: Duration) {
        if !self.ready {
            self.ready = true;
            self.group.report(true);
        }
        self.group.hold(bound);
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        if !self.ready {
            self.group.report(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_released_a_window_after_the_last_ready() {
        let g = GroupHold::new(3, Duration::from_millis(60));
        let t0 = Instant::now();
        let released: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3u64)
                .map(|k| {
                    let g = &g;
                    s.spawn(move || {
                        std::thread::sleep(Duration::from_millis(40 * k));
                        g.join().ready_and_hold(Duration::from_secs(10));
                        t0.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // The last READY comes at ~80 ms: nobody leaves before 80 + 60 ms, nor near the bound.
        for r in released {
            assert!(r >= Duration::from_millis(140), "released at {r:?}");
            assert!(r < Duration::from_secs(5), "released at {r:?}");
        }
    }

    #[test]
    fn a_member_that_ends_without_ready_releases_the_others() {
        let g = GroupHold::new(2, Duration::from_secs(30));
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| drop(g.join()));
            g.join().ready_and_hold(Duration::from_secs(30));
        });
        // One failed: no window to measure, so no 30 s wait either.
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn the_bound_ends_a_hold_whose_group_never_completes() {
        let g = GroupHold::new(2, Duration::from_secs(30));
        let t0 = Instant::now();
        g.join().ready_and_hold(Duration::from_millis(50));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(50) && took < Duration::from_secs(5), "{took:?}");
    }
}
