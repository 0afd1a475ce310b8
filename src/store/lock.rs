//! One recorder per data directory: `order_book/.lock`, held with an OS file lock.
//!
//! Two recorders writing one directory would salvage each other's `.part` files and race on
//! `metrics.json`. The lock is the kernel's (`flock`), so it goes away with its process however
//! that ends: a lock file left by `kill -9` does not block the next start. The holder's pid is
//! written inside only to name it when another recorder is refused.
//!
//! A lock is held until the process exits: `obrec record` takes it before it starts logging, and
//! keeps it through the run without carrying a guard from one to the other.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The lock file's name inside `<data-dir>/order_book/`.
pub const LOCK_FILE: &str = ".lock";

/// The locks this process holds, by directory: each is released when the process exits.
static HELD: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Makes this process the only recorder of `book_dir` until it exits; holding it already is fine.
///
/// # Errors
/// [`Error::Invalid`] naming the holder when another process holds it; [`Error::File`] when the
/// lock file cannot be opened or written.
pub fn hold(book_dir: &Path) -> Result<()> {
    let path = book_dir.join(LOCK_FILE);
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(p, _)| *p == path) {
        return Ok(());
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::file(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = match file.read_to_string(&mut text) {
                Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
                _ => "another process".to_string(),
            };
            return Err(Error::Invalid(format!(
                "{} is in use: another recorder ({holder}) holds {}",
                book_dir.display(),
                path.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::file(&path, e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| Error::file(&path, e))?;
    held.push((path, file));
    Ok(())
}
