//! Files that appear whole or not at all: written under `<name>.part`, created exclusively and
//! locked while written (so crash recovery in another process leaves a live file alone), then
//! fsynced and given their final name without ever replacing an existing file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::store::names::{file_name, part_of};

/// A data file being written: opened by the writer, written and finished by this stage.
pub struct OpenFile {
    pub file: File,
    /// The `.part` name it is written under.
    pub part: PathBuf,
    /// The name it gets when finished.
    pub done: PathBuf,
}

/// Creates `part` exclusively and locks it; `Ok(None)` when the name is taken.
pub fn create_part(part: &Path) -> Result<Option<File>> {
    match OpenOptions::new().write(true).create_new(true).open(part) {
        Ok(file) => {
            // Tells crash recovery in another process that this file is live.
            if let Err(e) = file.try_lock() {
                drop(file);
                let _ = fs::remove_file(part);
                return Err(Error::file(part, io::Error::other(e.to_string())));
            }
            Ok(Some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::file(part, e)),
    }
}

/// Opens a new file of `series` for data that starts at `secs`. An existing name (finished or
/// `.part`) is never reused: the timestamp moves on a second, which keeps name order equal to
/// time order because the existing file's data is older.
pub fn create_unique(dir: &Path, series: &str, mut secs: u64) -> Result<OpenFile> {
    /// Give up after this many taken names: something else is writing here.
    const MAX_TRIES: u32 = 1000;
    for _ in 0..MAX_TRIES {
        let done = dir.join(file_name(series, secs));
        let part = part_of(&done);
        if !done.exists()
            && let Some(file) = create_part(&part)?
        {
            return Ok(OpenFile { file, part, done });
        }
        secs += 1;
    }
    Err(Error::file(
        dir,
        io::Error::other(format!("no free file name for {series}")),
    ))
}

/// Gives `part` the name `done` unless that name exists: a hard link fails rather than replace.
/// `Ok(false)` when `done` is taken, which callers explain in their own terms. The caller
/// removes `part` afterwards.
pub fn link_no_replace(part: &Path, done: &Path) -> Result<bool> {
    match fs::hard_link(part, done) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // A filesystem without hard links: check, then rename (a narrow race, as good as it gets).
        Err(_) if done.exists() => Ok(false),
        Err(_) => fs::rename(part, done)
            .map(|()| true)
            .map_err(|e| Error::file(done, e)),
    }
}

/// Makes the file durable under its final name. The rename happens while the file is still open
/// and locked, so crash recovery in another process never sees an unlocked live `.part`.
pub fn finish(file: &OpenFile) -> Result<()> {
    file.file
        .sync_all()
        .map_err(|e| Error::file(&file.part, e))?;
    fs::rename(&file.part, &file.done).map_err(|e| Error::file(&file.done, e))?;
    if let Some(dir) = file.done.parent() {
        sync_dir(dir);
    }
    log::info!("finished {}", file.done.display());
    Ok(())
}

/// Replaces `path` by writing a temporary file beside it and renaming it over. The temporary is
/// created fresh under a name of its own (never opened if anything, a symbolic link included,
/// already has that name), so nothing planted beside `path` can redirect the write; the rename
/// replaces a link at `path` itself, not what it points to. A failed write leaves nothing behind.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    let (mut file, tmp) = create_temp(path)?;
    let written = file.write_all(body).map_err(|e| Error::file(&tmp, e));
    drop(file);
    let renamed = written.and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::file(path, e)));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// Creates `.<name>.<pid>.<n>.tmp` beside `path` with `O_CREAT | O_EXCL`, moving on to the next
/// `n` while a name is taken.
fn create_temp(path: &Path) -> Result<(File, PathBuf)> {
    /// Taken names tried before giving up: only something planted on purpose takes more than one.
    const MAX_TRIES: u32 = 100;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut last = None;
    for _ in 0..MAX_TRIES {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(temp_name(&name, n));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => return Err(Error::file(&tmp, e)),
        }
    }
    let (tmp, e) = last.expect("at least one try");
    Err(Error::file(tmp, e))
}

/// Distinguishes the temporaries of this process's concurrent writers.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &str, n: u64) -> String {
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

/// Makes a rename durable. Best effort: some filesystems cannot sync a directory.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_unique_never_reuses_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = create_unique(dir.path(), "x_depth", 100).unwrap();
        fs::write(&first.done, b"old").unwrap();
        let second = create_unique(dir.path(), "x_depth", 100).unwrap();
        assert_ne!(first.done, second.done);
        assert!(first.done < second.done, "names sort by time");
        assert!(first.part.exists() && second.part.exists());
        assert_eq!(fs::read(&first.done).unwrap(), b"old");
    }

    #[test]
    fn a_finished_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (part, done) = (dir.path().join("a.part"), dir.path().join("a"));
        fs::write(&part, b"new").unwrap();
        fs::write(&done, b"old").unwrap();
        assert!(!link_no_replace(&part, &done).unwrap());
        assert!(part.exists(), "left for the caller");
        assert_eq!(fs::read(&done).unwrap(), b"old");
    }

    /// Symbolic links planted at the old fixed temporary name and at the next names this process
    /// would use: none is written through, and the file is replaced all the same.
    #[test]
    fn write_atomic_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let target = dir.path().join("metrics.json");
        let next = NEXT.load(Ordering::Relaxed);
        let mut planted = vec![dir.path().join("metrics.json.tmp")];
        planted.extend((0..8).map(|i| dir.path().join(temp_name("metrics.json", next + i))));
        for link in &planted {
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&target).unwrap(), b"{}");
        assert!(!fs::symlink_metadata(&target).unwrap().is_symlink());
        let left = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, planted.len() + 2, "no temporary left behind");
    }
}
