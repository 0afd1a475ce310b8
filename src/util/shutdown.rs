//! A cloneable shutdown token shared by every thread of a run.
//!
//! SIGINT, SIGTERM, SIGHUP, the end of `--run-minutes` and tests all trigger the same token; threads
//! poll it on their read-timeout ticks (the offline commands between lines) and wind down. Nothing
//! here joins threads: owners do that after triggering, so the order (readers stop, senders drop,
//! writer drains) stays explicit.
//!
//! A second signal means the user will not wait for the wind-down: the process exits at once with
//! the shell's status for death by that signal, 128 + its number (130 for SIGINT, 143 for SIGTERM,
//! 129 for SIGHUP), leaving `.part` files for crash recovery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    flag: Arc<AtomicBool>,
    /// Set by a signal only, not by [`Shutdown::trigger`]: whether the user cut the run short.
    signalled: Arc<AtomicBool>,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Triggers the token on SIGINT, SIGTERM and SIGHUP (a closed terminal stops a recording as
    /// SIGTERM does); a second one exits the process at once.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            // Registered first, so it runs before the flag is set: it sees the flag of the signals
            // before this one, and exits only on a second.
            let status = 128 + signal;
            signal_hook::flag::register_conditional_shutdown(
                signal,
                status,
                Arc::clone(&self.inner.flag),
            )?;
            signal_hook::flag::register(signal, Arc::clone(&self.inner.signalled))?;
            signal_hook::flag::register(signal, Arc::clone(&self.inner.flag))?;
        }
        // A file-size limit (`ulimit -f`) would otherwise kill the process mid-write; with the
        // signal handled the write fails with EFBIG, which the recorder treats like a full disk:
        // the file stays `.part` and the run ends with exit 1.
        signal_hook::flag::register(
            signal_hook::consts::SIGXFSZ,
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        )?;
        Ok(())
    }

    /// Whether a signal triggered the token (rather than the end of the run's time).
    pub fn by_signal(&self) -> bool {
        self.inner.signalled.load(Ordering::Relaxed)
    }

    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.wake.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed)
    }

    /// Sleeps up to `timeout`, returning early (true) once the token is triggered.
    ///
    /// A signal handler can only set the flag, not notify the condvar, so the wait is sliced: a
    /// signal is noticed within `SIGNAL_POLL`.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        /// How late a signal may be noticed by a sleeping thread.
        const SIGNAL_POLL: Duration = Duration::from_millis(50);
        let deadline = Instant::now() + timeout;
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_triggered() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(SIGNAL_POLL);
            guard = match self.inner.wake.wait_timeout(guard, slice) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_early_when_triggered_from_another_thread() {
        let token = Shutdown::new();
        let other = token.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.trigger();
        });
        let start = Instant::now();
        assert!(token.wait_timeout(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn wait_times_out_when_not_triggered() {
        let token = Shutdown::new();
        assert!(!token.wait_timeout(Duration::from_millis(10)));
    }
}
