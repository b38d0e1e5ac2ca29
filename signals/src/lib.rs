//! The one owner of SIGINT/SIGTERM in a cvbench process, after Firecracker's
//! `src/vmm/src/signal_handler.rs`: installed once, and every part (the container runtime, the
//! VMM, the bench, the labs) registers with it instead of installing a handler of its own.
//!
//! What a stop signal does, in this order:
//! 1. an *interceptor* (at most one, signal context: the bare VMM forwarding host signals to
//!    its guest) may consume it;
//! 2. otherwise the process is marked interrupted ([`interrupted`], [`flag`]) and every
//!    registered pid (containers the runtime started) is sent SIGKILL at once, so blocking
//!    waits on them return;
//! 3. in [`Mode::Graceful`] (the bench, the labs, the Linux VMM) the first signal stops there:
//!    the program notices the flag, unwinds through its guards, and calls [`run_cleanup`];
//!    a second signal, or any signal in [`Mode::Die`] (the default), wakes a watcher thread
//!    that runs the registered cleanup callbacks ([`on_interrupt`]) and then re-raises the
//!    signal with its default action, so the process dies of it.
//!
//! The watcher thread starts with the first cleanup callback. A process that registers none
//! (the jailed bare VMM: one vCPU thread, no other) gets no thread, and a signal its
//! interceptor does not consume ends it from the handler itself, by the default action.
//!
//! Handlers are installed without SA_RESTART: a signal interrupts the blocking call in
//! progress (a poll on a pidfd, KVM_RUN).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

/// What the first stop signal does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Kill registered pids, run the cleanup callbacks, die of the signal.
    Die,
    /// Kill registered pids and set the flag; the program stops by itself. A second signal
    /// dies as in [`Mode::Die`].
    Graceful,
}

const SLOTS: usize = 256;
#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicI32 = AtomicI32::new(0);
/// Pids the handler kills on a stop signal (0 = free slot).
static PIDS: [AtomicI32; SLOTS] = [FREE; SLOTS];
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The first stop signal (or requested reason), 0 before.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicU32 = AtomicU32::new(0);
static MODE: AtomicU8 = AtomicU8::new(0);
/// Write end of the watcher's pipe, -1 before install.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// `fn(i32) -> bool` as usize, 0 when none.
static INTERCEPTOR: AtomicUsize = AtomicUsize::new(0);
/// A `&'static [u8]` printed to stderr on a graceful first signal (pointer, length).
static MESSAGE_PTR: AtomicUsize = AtomicUsize::new(0);
static MESSAGE_LEN: AtomicUsize = AtomicUsize::new(0);
/// Cleanup callbacks, run in an ordinary thread.
static CALLBACKS: Mutex<Vec<Box<dyn Fn() + Send>>> = Mutex::new(Vec::new());

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Install the SIGINT/SIGTERM handlers (once per process; later calls do nothing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in STOP_SIGNALS {
            set_handler(sig);
        }
    });
}

/// Start the cleanup thread (once; before the first callback is registered).
fn ensure_watcher() {
    static ONCE: Once = Once::new();
    ONCE.call_once(start_watcher);
}

/// Also route SIGALRM to the interceptor (the bare VMM's run deadline). Installs the stop
/// handlers too.
pub fn install_alarm() {
    install();
    static ONCE: Once = Once::new();
    ONCE.call_once(|| set_handler(libc::SIGALRM));
}

/// Choose what the first stop signal does (default [`Mode::Die`]).
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::SeqCst);
}

fn mode() -> Mode {
    if MODE.load(Ordering::SeqCst) == Mode::Graceful as u8 {
        Mode::Graceful
    } else {
        Mode::Die
    }
}

/// A line written to stderr when a graceful stop begins.
pub fn set_message(msg: &'static [u8]) {
    MESSAGE_LEN.store(0, Ordering::SeqCst);
    MESSAGE_PTR.store(msg.as_ptr() as usize, Ordering::SeqCst);
    MESSAGE_LEN.store(msg.len(), Ordering::SeqCst);
}

/// Let `f` see every stop signal (and SIGALRM) first, in signal context: it must be
/// async-signal-safe. Returning true consumes the signal. `None` removes it.
pub fn set_interceptor(f: Option<fn(i32) -> bool>) {
    INTERCEPTOR.store(f.map_or(0, |f| f as usize), Ordering::SeqCst);
}

/// True once a stop signal arrived (or [`request_stop`] was called).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The interrupted flag itself, for loops that take a `&AtomicBool` stop flag.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// The first stop signal, if one arrived.
pub fn stop_signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Mark the process interrupted without a signal (`reason`, usually a signal number, is
/// what [`stop_signal`] reports). Kills nothing.
pub fn request_stop(reason: i32) {
    let _ = SIGNAL.compare_exchange(0, reason.max(1), Ordering::SeqCst, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// A registered pid; give it back with [`unregister_pid`].
#[derive(Debug, PartialEq, Eq)]
pub struct PidSlot(usize);

/// Have `pid` (a process this program started) SIGKILLed on a stop signal. `None` when the
/// table is full.
pub fn register_pid(pid: i32) -> Option<PidSlot> {
    PIDS.iter().position(|s| s.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok()).map(PidSlot)
}

pub fn unregister_pid(slot: PidSlot) {
    if let Some(s) = PIDS.get(slot.0) {
        s.store(0, Ordering::SeqCst);
    }
}

/// Run `f` on interruption, in an ordinary thread before the process dies of the signal,
/// or from [`run_cleanup`] in graceful mode: for whatever must not outlive the program (a
/// private daemon, tracked containers). Installs the handlers.
pub fn on_interrupt(f: impl Fn() + Send + 'static) {
    install();
    ensure_watcher();
    if let Ok(mut c) = CALLBACKS.lock() {
        c.push(Box::new(f));
    }
}

/// Remove `path` (a temp file or directory this program made) on interruption, or when a
/// graceful program runs [`run_cleanup`] at its end: so it is gone even when the guard that
/// owns it is never dropped (the process dies of the signal, or exits from elsewhere).
pub fn remove_on_interrupt(path: std::path::PathBuf) {
    on_interrupt(move || {
        let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
    });
}

/// Run (and forget) every cleanup callback now.
pub fn run_cleanup() {
    let callbacks = CALLBACKS.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
    for f in callbacks {
        f();
    }
}

/// Exit with `code`; but if a stop signal is being handled in [`Mode::Die`], wait (up to
/// 10 s) for the watcher to finish the cleanup and end the process by the signal, so the
/// exit status says what happened.
pub fn exit(code: i32) -> ! {
    let signals = COUNT.load(Ordering::SeqCst);
    if signals > 0 && (mode() == Mode::Die || signals > 1) {
        std::thread::sleep(Duration::from_secs(10));
    }
    std::process::exit(code)
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe only: atomics, kill(2), write(2), and the interceptor (which must be).
    let f = INTERCEPTOR.load(Ordering::SeqCst);
    if f != 0 {
        // SAFETY: only `set_interceptor` stores non-zero values, each a valid `fn(i32) -> bool`.
        let f: fn(i32) -> bool = unsafe { std::mem::transmute::<usize, fn(i32) -> bool>(f) };
        if f(sig) {
            return;
        }
    }
    if sig == libc::SIGALRM {
        return;
    }
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
    let n = COUNT.fetch_add(1, Ordering::SeqCst);
    for s in PIDS.iter() {
        let pid = s.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) of a pid this program started and registered.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if mode() == Mode::Graceful && n == 0 {
        let (p, len) = (MESSAGE_PTR.load(Ordering::SeqCst), MESSAGE_LEN.load(Ordering::SeqCst));
        if p != 0 && len != 0 {
            // SAFETY: (p, len) is a `&'static [u8]` stored by `set_message`.
            unsafe { libc::write(2, p as *const libc::c_void, len) };
        }
        return;
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: one byte from a stack variable to our own pipe.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    } else {
        // No cleanup registered, so no watcher: die of the signal now.
        // SAFETY: signal(2) and raise(3) are async-signal-safe; the default action of a
        // stop signal ends the process.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

fn set_handler(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction with an emptied mask is valid; `on_signal` only makes
    // async-signal-safe calls. This crate is the only code in the process that installs a
    // handler for the stop signals and SIGALRM.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = 0; // no SA_RESTART: interrupt blocking calls and KVM_RUN
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
        // Signals blocked by whoever started us would never arrive.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The thread that runs the cleanup callbacks and ends the process by the signal.
fn start_watcher() {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [rd, wr] = fds;
    // The watcher blocks the stop signals so the handler always runs in another thread.
    let spawned = std::thread::Builder::new().name("cvbench-signals".into()).spawn(move || {
        block_stop_signals();
        let mut b = 0u8;
        loop {
            // SAFETY: reading one byte into a stack variable from our own pipe.
            let r = unsafe { libc::read(rd, (&mut b as *mut u8).cast(), 1) };
            if r == 1 {
                break;
            }
            if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
        run_cleanup();
        let sig = b as libc::c_int;
        // SAFETY: restoring the default action and re-raising ends the process the way the
        // signal would have.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
    });
    if spawned.is_ok() {
        WAKE_FD.store(wr, Ordering::SeqCst);
    }
}

/// Block SIGTERM and SIGINT in the calling thread (and the threads it spawns later), so they
/// can be collected with sigwait/signalfd instead of a handler (the Linux guest's VMM).
pub fn block_stop_signals() {
    // SAFETY: sigemptyset/sigaddset initialise a set we own; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_slots_are_reused() {
        let a = register_pid(-5).unwrap();
        let n = a.0;
        unregister_pid(a);
        let b = register_pid(-6).unwrap();
        assert_eq!(b.0, n);
        unregister_pid(b);
    }

    #[test]
    fn request_stop_sets_the_flag_and_keeps_the_first_reason() {
        request_stop(15);
        request_stop(2);
        assert!(interrupted());
        assert!(flag().load(Ordering::SeqCst));
        assert_eq!(stop_signal(), Some(15));
    }
}
