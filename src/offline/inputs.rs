//! Which files a command over recordings reads.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::store::names::{self, FileKind, is_kind, resolve_book_dir};

/// Expands `paths` as [`names::expand`] does, reading a data directory (`--data-dir`, which holds
/// `order_book/`) as its `order_book/`.
///
/// # Errors
/// [`Error::Invalid`] for a path that does not exist, a pattern that matches nothing, or inputs
/// without a single depth file (any file named otherwise than a snapshot file is read as one):
/// `no recordings in PATH`.
pub fn recordings(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let resolved: Vec<PathBuf> = paths.iter().map(|p| resolve_book_dir(p)).collect();
    let files = names::expand(&resolved)?;
    if files.iter().all(|f| is_kind(f, FileKind::Snapshot)) {
        return Err(no_recordings(paths));
    }
    Ok(files)
}

/// `no recordings in PATH…`: inputs without a depth event.
pub fn no_recordings(paths: &[PathBuf]) -> Error {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Error::Invalid(format!("no recordings in {}", shown.join(" ")))
}
