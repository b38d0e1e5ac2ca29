//! Asynchronous control of a running bare guest, with no thread besides the vCPU's: SIGTERM and
//! SIGINT sent to the VMM, and the run's deadline (SIGALRM from an interval timer), reach an
//! async-signal-safe interceptor registered with the process's one signal owner
//! (`cvbench-signals`). It records them in atomics, kicks the vCPU with the shared [`VcpuKick`]
//! (its `kvm_run.immediate_exit`: a KVM_RUN about to start returns at once) and writes to an
//! eventfd that blocking host calls also wait on. The signal itself interrupts a KVM_RUN or
//! blocking call in progress: the owner installs its handlers without SA_RESTART. With no guest
//! armed, the interceptor passes, and the VMM (no cleanup registered) dies of the signal.
//!
//! A second thread (a signalfd watcher kicking the vCPU thread) did the same job at first; on
//! this loaded 2-core machine, creating, scheduling and joining it added 0.2-1.5 ms to every run.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use crate::vstate::VcpuKick;
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Errors from setting up the control path.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("creating the wake eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("arming the {0:?} run timer failed")]
    Timer(Duration, #[source] std::io::Error),
}

/// Why the VMM must stop the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    TimedOut,
    /// A host signal the guest has not blocked: the guest dies of it, as a process would.
    Signal(i32),
}

/// State shared between the signal handlers and the vCPU loop.
pub struct Control {
    /// Bit `n-1` set: host signal `n` arrived and has not been consumed by the guest.
    pending: AtomicU64,
    timed_out: AtomicBool,
    /// Stops the vCPU; the handlers run on the vCPU's own thread, so no kick signal is needed.
    kick: VcpuKick,
    /// Readable while something happened that blocking host calls must notice.
    pub wake: EventFd,
}

/// The control the signal handlers report to (at most one per process: the VMM's).
static ACTIVE: AtomicPtr<Control> = AtomicPtr::new(std::ptr::null_mut());

impl Control {
    pub fn new() -> Result<Control, ControlError> {
        Ok(Control {
            pending: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            kick: VcpuKick::new(),
            wake: EventFd::new(EFD_NONBLOCK).map_err(ControlError::EventFd)?,
        })
    }

    /// Host signals received and not yet consumed, as a sigset bit mask.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// Mark the signals in `mask` as consumed (read from a guest signalfd).
    pub fn consume(&self, mask: u64) {
        self.pending.fetch_and(!mask, Ordering::AcqRel);
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// Whether the guest must stop, given the signals it blocks. Called after every exit and
    /// whenever a blocking host call was woken.
    pub fn check(&self, guest_blocked: u64) -> Option<Stop> {
        if self.timed_out() {
            return Some(Stop::TimedOut);
        }
        let deliverable = self.pending() & !guest_blocked;
        (deliverable != 0).then(|| Stop::Signal(deliverable.trailing_zeros() as i32 + 1))
    }

    /// Drain the wake eventfd (after a blocking call returned).
    pub fn clear_wake(&self) {
        let _ = self.wake.read();
    }

    /// Record that host signal `signo` arrived and wake the vCPU loop (async-signal-safe).
    pub fn note_signal(&self, signo: u32) {
        if (1..=64).contains(&signo) {
            self.pending.fetch_or(1 << (signo - 1), Ordering::AcqRel);
        }
        self.kick();
    }

    fn note_deadline(&self) {
        self.timed_out.store(true, Ordering::Release);
        self.kick();
    }

    /// Make the vCPU leave (or not enter) KVM_RUN and wake blocking calls: only atomics and
    /// write(2), so it is async-signal-safe.
    fn kick(&self) {
        self.kick.kick();
        let one = 1u64;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The interceptor (signal context): a stop signal or the deadline goes to the armed guest's
/// control; with none armed it is not consumed.
fn intercept(sig: libc::c_int) -> bool {
    let active = ACTIVE.load(Ordering::Acquire);
    if active.is_null() {
        return false;
    }
    // SAFETY: `ACTIVE` is only non-null while an `Armed` guard holds an `Arc` of the control.
    let control = unsafe { &*active };
    if sig == libc::SIGALRM {
        control.note_deadline();
    } else {
        control.note_signal(sig as u32);
    }
    true
}

fn set_timer(t: Duration) -> Result<(), ControlError> {
    let value = libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros() as libc::suseconds_t };
    let it = libc::itimerval { it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 }, it_value: value };
    // SAFETY: setitimer reads the struct we own; the old value is not requested.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) } != 0 {
        return Err(ControlError::Timer(t, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// While alive, host signals and the deadline reach `control` and kick the vCPU.
pub struct Armed {
    control: Arc<Control>,
    timer: bool,
}

/// Route SIGTERM, SIGINT and the deadline (`timeout`) to `control`; `immediate_exit` is the
/// vCPU's `kvm_run.immediate_exit` byte.
///
/// # Safety
/// `immediate_exit` must stay valid (the vCPU and its kvm_run mapping alive) until the returned
/// guard is dropped, and only one guard may exist at a time in the process.
pub unsafe fn arm(
    control: &Arc<Control>,
    immediate_exit: Option<NonNull<u8>>,
    timeout: Option<Duration>,
) -> Result<Armed, ControlError> {
    // SAFETY: the caller keeps the vCPU alive until the guard drops, which disarms the kick.
    unsafe { control.kick.arm(immediate_exit, None) };
    ACTIVE.store(Arc::as_ptr(control).cast_mut(), Ordering::Release);
    let mut armed = Armed { control: Arc::clone(control), timer: false };
    // The owner's handlers (SIGTERM, SIGINT, SIGALRM; it also unblocks them) send them here.
    cvbench_signals::install_alarm();
    cvbench_signals::set_interceptor(Some(intercept));
    if let Some(t) = timeout.filter(|t| !t.is_zero()) {
        set_timer(t)?;
        armed.timer = true;
    }
    Ok(armed)
}

impl Drop for Armed {
    fn drop(&mut self) {
        if self.timer {
            let _ = set_timer(Duration::ZERO);
        }
        self.control.kick.disarm();
        ACTIVE.store(std::ptr::null_mut(), Ordering::Release);
        cvbench_signals::set_interceptor(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_unblocked_signals_and_ignores_blocked_ones() {
        let c = Control::new().unwrap();
        c.note_signal(libc::SIGTERM as u32);
        assert_eq!(c.check(0), Some(Stop::Signal(libc::SIGTERM)));
        assert_eq!(c.check(1 << (libc::SIGTERM - 1)), None);
        c.consume(1 << (libc::SIGTERM - 1));
        assert_eq!(c.check(0), None);
    }

    #[test]
    fn a_kick_sets_immediate_exit_and_wakes_the_eventfd() {
        let c = Control::new().unwrap();
        let mut flag = 0u8;
        // SAFETY: `flag` outlives the armed period.
        unsafe { c.kick.arm(Some(NonNull::from(&mut flag)), None) };
        c.note_signal(libc::SIGINT as u32);
        c.kick.disarm();
        assert_eq!(flag, 1);
        assert_eq!(c.wake.read().unwrap(), 1);
    }
}
