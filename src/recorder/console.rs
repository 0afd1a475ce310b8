//! Standard output, kept off the recording's path.
//!
//! A recorder's stdout is often a pipe: `obrec record | head -1`, a terminal paused with Ctrl-S, a
//! supervisor that stopped reading. A `println!` on the writer thread would panic on a closed pipe
//! and block on a full one, and either stops the recording. So the recorder hands its lines to a
//! console thread through a bounded queue and never waits: a full queue drops the line (the log
//! file has every SUMMARY anyway), and a closed stdout ends the printing, never the recording.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::{Error, Result};

/// Lines a reader of stdout may fall behind before lines are dropped: a few minutes of SUMMARY
/// lines at the default interval, so a terminal paused for a moment loses nothing.
const QUEUED_LINES: usize = 64;
/// How long the end of a run waits for the last lines to reach stdout. Past it a stalled reader
/// is left behind, so that a stop is never held up by a pipe nobody reads.
const FINAL_WAIT: Duration = Duration::from_secs(1);
/// How often the end of a run looks whether the console thread is done.
const FINAL_POLL: Duration = Duration::from_millis(10);

/// A line for stdout.
pub struct ConsoleLine(pub String);

/// Where the recorder's threads put their lines; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Printer {
    lines: Sender<ConsoleLine>,
    dropped: Arc<AtomicU64>,
}

impl Printer {
    /// Queues `line` for stdout, or drops it when stdout has fallen [`QUEUED_LINES`] behind.
    pub fn print(&self, line: String) {
        match self.lines.try_send(ConsoleLine(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    // Info, not a warning: warnings go to stderr too, which may be the same pipe.
                    log::info!("stdout is not being read: console lines are dropped meanwhile");
                }
            }
        }
    }
}

/// The console thread and the first [`Printer`].
pub struct Console {
    printer: Printer,
    thread: JoinHandle<()>,
}

impl Console {
    pub fn start() -> Result<Console> {
        let (lines, rx) = crossbeam_channel::bounded(QUEUED_LINES);
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || print_all(&rx))
            .map_err(|e| Error::Spawn("console", e))?;
        Ok(Console {
            printer: Printer {
                lines,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            thread,
        })
    }

    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    /// Lets the lines queued so far reach stdout, waiting at most [`FINAL_WAIT`]. Every other
    /// printer must be gone, or this waits the whole time.
    pub fn finish(self) {
        let dropped = self.printer.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            log::info!("{dropped} console line(s) were not printed: stdout was not being read");
        }
        drop(self.printer);
        let deadline = Instant::now() + FINAL_WAIT;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(FINAL_POLL);
        }
        if self.thread.is_finished() && self.thread.join().is_err() {
            log::error!("the console thread panicked");
        }
    }
}

/// Prints each line until the queue closes; after a failed write (a closed pipe), only drains.
fn print_all(lines: &Receiver<ConsoleLine>) {
    let stdout = std::io::stdout();
    let mut open = true;
    for ConsoleLine(line) in lines {
        if !open {
            continue;
        }
        let mut out = stdout.lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            open = false;
            log::info!("stdout closed ({e}): console output stops, the recording goes on");
        }
    }
}
