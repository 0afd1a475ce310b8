//! Files that appear whole or not at all: written under `<name>.part`, created exclusively and
//! locked while written (so crash recovery in another process leaves a live file alone), then
//! fsynced and given their final name without ever replacing an existing file.
//!
//! A file whose write failed (a full disk, a file size limit, an I/O error) is never given its
//! final name: it is cut back to its last whole member and stays `.part` for crash recovery to
//! finish at the next start, or is removed when it holds nothing. So a finished name always
//! means a complete file, and a restart loop on a full disk leaves no empty files behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::store::names::{file_name, part_of};

/// A data file being written: opened by the writer, appended to and finished by the compression
/// stage, one thread at a time.
pub struct OpenFile {
    file: File,
    /// The `.part` name it is written under.
    pub part: PathBuf,
    /// The name it gets when finished.
    pub done: PathBuf,
    /// Bytes of whole members written: what the file is cut back to when a write fails.
    whole: AtomicU64,
    /// A write failed: the file takes no more members and keeps its `.part` name.
    failed: AtomicBool,
}

impl OpenFile {
    pub fn new(file: File, part: PathBuf, done: PathBuf) -> OpenFile {
        OpenFile {
            file,
            part,
            done,
            whole: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Appends one whole gzip member with a single `write`.
    ///
    /// # Errors
    /// The write failed. The bytes of the member that did reach the file are cut off again (a
    /// truncation needs no free space), so the file stays valid gzip to its end; a file left
    /// with nothing is removed. Later members are ignored, and [`finish`] leaves the file as
    /// `.part`: its lines up to the failure are recovered at the next start.
    pub fn append(&self, member: &[u8]) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let whole = self.whole.load(Ordering::Relaxed);
        match (&self.file).write_all(member) {
            Ok(()) => {
                self.whole
                    .store(whole + member.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                if whole == 0 {
                    let _ = fs::remove_file(&self.part);
                } else if let Err(cut) = self.file.set_len(whole) {
                    // Recovery will keep the whole members and set the cut one aside.
                    log::warn!(
                        "{}: cannot cut back a failed write: {cut}",
                        self.part.display()
                    );
                }
                Err(Error::file(&self.part, e))
            }
        }
    }

    /// Makes the members appended so far durable: for a writer that confirms what it wrote to
    /// someone who will not send it again.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::file(&self.part, e))
    }
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
            return Ok(OpenFile::new(file, part, done));
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
/// and locked, so crash recovery in another process never sees an unlocked live `.part`. A file
/// whose write failed keeps its `.part` name (the failure was reported by [`OpenFile::append`]).
pub fn finish(file: &OpenFile) -> Result<()> {
    if file.failed.load(Ordering::Relaxed) {
        if file.whole.load(Ordering::Relaxed) > 0 {
            log::info!("left {} for crash recovery", file.part.display());
        }
        return Ok(());
    }
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

/// The process whose temporary `name` is, when it is one of [`write_atomic`]'s.
fn temp_owner(name: &str) -> Option<u32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut fields = stem.rsplitn(3, '.');
    let (n, pid, _name) = (fields.next()?, fields.next()?, fields.next()?);
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the temporaries of [`write_atomic`] that a killed process left in `dir` between
/// creating and renaming them. Only for a directory this process alone writes (it holds its
/// lock), so that another process's temporary there can only be a dead one's.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let owner = name.to_str().and_then(temp_owner);
        if owner.is_some_and(|pid| pid != std::process::id()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::info!("removed {}, left by a killed run", entry.path().display()),
                Err(e) => log::warn!("{}: {e}", entry.path().display()),
            }
        }
    }
}

/// The directory a run writes its files to, as it was when the run started, so that its removal,
/// its replacement or its becoming unwritable is noticed at the next check. Otherwise a removed
/// directory goes unnoticed until a file is next created in it: writes to files already open
/// succeed while their data goes nowhere anyone can read.
pub struct DirWatch {
    dir: PathBuf,
    /// Device and inode at the start: the path can come to name another directory.
    id: (u64, u64),
    /// A check failed: nothing more can be written or renamed there.
    lost: AtomicBool,
}

impl DirWatch {
    pub fn new(dir: &Path) -> Result<DirWatch> {
        let meta = fs::metadata(dir).map_err(|e| Error::file(dir, e))?;
        Ok(DirWatch {
            dir: dir.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            lost: AtomicBool::new(false),
        })
    }

    /// Checks that the directory is still the one the run started with and that a file can be
    /// created in it (a probe, created and removed at once).
    ///
    /// # Errors
    /// [`Error::File`] naming the directory and what became of it; from then on
    /// [`DirWatch::is_lost`] holds.
    pub fn check(&self) -> Result<()> {
        let why = match fs::metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                io::Error::new(e.kind(), "moved or removed while recording")
            }
            Err(e) => e,
            Ok(meta) if (meta.dev(), meta.ino()) != self.id => {
                io::Error::other("replaced by another directory while recording")
            }
            Ok(_) => match create_temp(&self.dir.join(PROBE)) {
                Ok((_, probe)) => {
                    return fs::remove_file(&probe).map_err(|e| Error::file(probe, e));
                }
                Err(Error::File { cause, .. }) => {
                    io::Error::new(cause.kind(), format!("not writable: {cause}"))
                }
                Err(e) => return Err(e),
            },
        };
        self.lost.store(true, Ordering::Relaxed);
        Err(Error::file(&self.dir, why))
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

/// The name [`DirWatch::check`] creates its probe under (as a temporary, see [`temp_name`]).
const PROBE: &str = "write-probe";

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

    /// A file whose first write fails is removed, and finishing it gives no final name.
    #[test]
    fn a_file_whose_first_write_failed_is_removed_not_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (part, done) = (dir.path().join("b.part"), dir.path().join("b"));
        fs::write(&part, b"").unwrap();
        // Opened for reading only: every write fails.
        let open = OpenFile::new(File::open(&part).unwrap(), part.clone(), done.clone());
        assert!(open.append(b"member").is_err());
        assert!(!part.exists());
        finish(&open).unwrap();
        assert!(!done.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn temporaries_of_other_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let other = std::process::id() + 1;
        let names = [
            format!(".metrics.json.{other}.0.tmp"),
            format!(".connections.json.{other}.12.tmp"),
            temp_name("metrics.json", 3),
            "metrics.json".into(),
            "ethusdt_depth_20260101T000000Z.ndjson.gz.part".into(),
            ".lock".into(),
            ".x.tmp".into(),
        ];
        for name in &names {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        remove_stale_temps(dir.path());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut kept = names[2..].to_vec();
        kept.sort();
        assert_eq!(left, kept);
    }

    #[test]
    fn a_replaced_directory_is_noticed_and_a_probe_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("order_book");
        fs::create_dir(&dir).unwrap();
        let watch = DirWatch::new(&dir).unwrap();
        watch.check().unwrap();
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is removed"
        );
        assert!(!watch.is_lost());
        fs::rename(&dir, root.path().join("old")).unwrap();
        fs::create_dir(&dir).unwrap();
        let err = watch.check().unwrap_err().to_string();
        assert!(
            err.ends_with("order_book: replaced by another directory while recording"),
            "{err}"
        );
        assert!(watch.is_lost());
    }
}
