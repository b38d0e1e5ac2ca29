//! The one way to stop a running vCPU, for both guest kinds: set its `kvm_run.immediate_exit`
//! (a KVM_RUN about to start returns at once) and, when the vCPU runs on another thread than
//! the stopper, send that thread [`kick_signal`] (a KVM_RUN in progress returns EINTR). Either
//! way the vCPU sees [`VmExit::Interrupted`](super::VmExit::Interrupted); its handler clears
//! the flag and then checks why, so a kick landing in between is never lost.
//!
//! Also [`StopRequest`]: a stop asked for from outside the vCPU loop (a stop signal collected
//! by the VMM binary), which the loop that owns the vCPUs polls.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

/// The signal that interrupts a vCPU thread's KVM_RUN (its handler does nothing).
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the no-op handler for [`kick_signal`] (without SA_RESTART, so KVM_RUN returns).
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
}

/// Stops one vCPU. Armed by the thread running it; kicked from a signal handler or any
/// thread (async-signal-safe: an atomic load, a byte store and pthread_kill).
#[derive(Debug, Default)]
pub struct VcpuKick {
    immediate_exit: AtomicPtr<u8>,
    /// `pthread_t` of the vCPU thread, 0 when the kick needs no signal.
    thread: AtomicU64,
}

impl VcpuKick {
    pub fn new() -> VcpuKick {
        VcpuKick::default()
    }

    /// Point the kick at a vCPU's `immediate_exit` byte and (optionally) its thread.
    ///
    /// # Safety
    /// `flag` must stay valid (the vCPU and its kvm_run mapping alive) and `thread` joinable
    /// (not yet joined) until [`VcpuKick::disarm`] is called.
    pub unsafe fn arm(&self, flag: Option<NonNull<u8>>, thread: Option<libc::pthread_t>) {
        self.thread.store(thread.unwrap_or(0), Ordering::Release);
        self.immediate_exit.store(flag.map_or(std::ptr::null_mut(), NonNull::as_ptr), Ordering::Release);
    }

    /// Stop pointing at the vCPU (before it is dropped or its thread joined).
    pub fn disarm(&self) {
        self.immediate_exit.store(std::ptr::null_mut(), Ordering::Release);
        self.thread.store(0, Ordering::Release);
    }

    /// Make the vCPU leave KVM_RUN, or not enter it.
    pub fn kick(&self) {
        let flag = self.immediate_exit.load(Ordering::Acquire);
        if !flag.is_null() {
            // SAFETY: `arm`'s contract keeps the kvm_run mapping alive while the pointer is
            // published; a volatile byte store is async-signal-safe.
            unsafe { std::ptr::write_volatile(flag, 1) };
        }
        self.interrupt();
    }

    /// Only signal the vCPU thread (interrupt a KVM_RUN in progress, e.g. to sample its RIP).
    pub fn interrupt(&self) {
        let thread = self.thread.load(Ordering::Acquire);
        if thread != 0 {
            // SAFETY: `arm`'s contract keeps the thread joinable while published, so the id is
            // valid; pthread_kill is async-signal-safe.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }
}

/// A request, from outside the vCPU loop, to stop the guest; carries the reason (a signal).
/// Optionally it also collects SIGTERM/SIGINT pending for the process (the VMM binary blocks
/// them in every thread), so no thread needs to wait for them.
#[derive(Clone, Debug, Default)]
pub struct StopRequest {
    reason: Arc<AtomicI32>,
    collect_stop_signals: bool,
}

impl StopRequest {
    pub fn new() -> StopRequest {
        StopRequest::default()
    }

    /// A request that also fires on a pending SIGTERM/SIGINT; they must be blocked in every
    /// thread (else their default action kills the process first).
    pub fn collecting_stop_signals() -> StopRequest {
        StopRequest { reason: Arc::default(), collect_stop_signals: true }
    }

    /// Ask for the stop; `reason` is the signal number (at least 1 is stored).
    pub fn request(&self, reason: i32) {
        self.reason.store(reason.max(1), Ordering::SeqCst);
    }

    /// The reason, once a stop was requested.
    pub fn requested(&self) -> Option<i32> {
        if self.collect_stop_signals {
            if let Some(sig) = take_pending_stop_signal() {
                self.request(sig);
            }
        }
        Some(self.reason.load(Ordering::SeqCst)).filter(|r| *r != 0)
    }
}

/// A pending SIGTERM or SIGINT, consumed, without waiting.
fn take_pending_stop_signal() -> Option<i32> {
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: the set is initialised by sigemptyset before use; sigtimedwait reads it and
    // the timespec, and may write a siginfo we do not ask for (null).
    let sig = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero)
    };
    (sig > 0).then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_sets_the_armed_flag_and_nothing_once_disarmed() {
        let k = VcpuKick::new();
        let mut flag = 0u8;
        // SAFETY: `flag` outlives the armed period; no thread is named.
        unsafe { k.arm(Some(NonNull::from(&mut flag)), None) };
        k.kick();
        k.disarm();
        k.kick();
        assert_eq!(flag, 1);
    }

    #[test]
    fn a_stop_request_keeps_its_reason() {
        let s = StopRequest::new();
        assert_eq!(s.requested(), None);
        s.clone().request(libc::SIGTERM);
        assert_eq!(s.requested(), Some(libc::SIGTERM));
    }
}
