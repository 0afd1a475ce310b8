//! One recorder per data directory: `order_book/.lock`, held with an OS file lock.
//!
//! Two recorders writing one directory would salvage each other's `.part` files and race on
//! `metrics.json`. The lock is the kernel's (`flock`), so it goes away with its process however
//! that ends: a lock file left by `kill -9` does not block the next start. The holder's pid is
//! written inside only to name it when another recorder is refused.
//!
//! The lock lives as long as its [`DirLock`]: `obrec record` takes it before it starts logging and
//! hands it to the run, which cannot start without one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside `<data-dir>/order_book/`.
pub const LOCK_FILE: &str = ".lock";

/// This process's claim on a data directory; dropping it (or exiting) releases the lock.
#[derive(Debug)]
pub struct DirLock {
    book_dir: PathBuf,
    /// Open for as long as the lock holds: the kernel releases it when the file is closed.
    _file: File,
}

impl DirLock {
    /// The `order_book/` directory this lock holds.
    pub fn book_dir(&self) -> &Path {
        &self.book_dir
    }
}

/// Makes this process the only recorder of `book_dir` for as long as the returned lock lives.
///
/// # Errors
/// [`Error::Invalid`] naming the holder when another process (or another lock of this one) holds
/// it; [`Error::File`] when the lock file cannot be opened or written.
pub fn hold(book_dir: &Path) -> Result<DirLock> {
    let path = book_dir.join(LOCK_FILE);
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
    Ok(DirLock {
        book_dir: book_dir.to_path_buf(),
        _file: file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_excludes_others_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let held = hold(dir.path()).unwrap();
        assert_eq!(held.book_dir(), dir.path());
        let refused = hold(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        hold(dir.path()).unwrap();
    }
}
