//! The offline commands' terminal output. A reader that goes away (`obrec replay … | head`) has
//! seen all it wants: a closed pipe ends the printing, quietly, and changes neither the work nor
//! the exit status. Rust ignores SIGPIPE, so without this `println!` would panic on it.

use std::fmt;
use std::io::{self, Write};

use crate::error::{Error, Result};

/// Standard output, line by line, until the reader goes away. Locked a line at a time, so that
/// other threads (the recorder's SUMMARY in `obrec demo`) print in between.
pub struct Console {
    out: io::Stdout,
    /// The reader closed its end: nothing more is printed.
    gone: bool,
}

impl Console {
    pub fn new() -> Console {
        Console {
            out: io::stdout(),
            gone: false,
        }
    }

    /// Prints `line` and a newline; nothing once the reader has gone.
    ///
    /// # Errors
    /// [`Error::Stdout`] when standard output fails otherwise (a full disk behind `>`).
    pub fn line(&mut self, line: fmt::Arguments<'_>) -> Result<()> {
        if self.gone {
            return Ok(());
        }
        let mut out = self.out.lock();
        let written = out
            .write_fmt(line)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        match written {
            Err(e) if reader_gone(&e) => {
                self.gone = true;
                Ok(())
            }
            other => other.map_err(Error::Stdout),
        }
    }
}

/// Whether a write failed because the reader closed its end of the pipe.
pub fn reader_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Prints `line` on standard error, which may be closed too (`2>&-`, `|&`): a message that cannot
/// be shown is dropped rather than turned into a panic.
pub fn warn(line: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}
