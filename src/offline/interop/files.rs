//! Reading inputs up to their damage, and writing outputs that appear whole or not at all.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Outcome, Written};
use crate::error::{Error, Result};
use crate::market::kind::Kind;
use crate::store::gzip::{MEMBER_BYTES, MemberEncoder};
use crate::store::lines::{FileLines, open_lines};
use crate::store::names::part_of;
use crate::store::staged::{create_part, link_no_replace, sync_dir};
use crate::util::shutdown::Shutdown;

/// The lines of a gzip file (any number of members), up to the first damage.
pub(super) struct GzLines {
    path: PathBuf,
    reader: FileLines,
    /// The number of the line last read.
    pub(super) line_no: u64,
    /// Once triggered, the lines end: the conversion is abandoned.
    shutdown: Shutdown,
}

impl GzLines {
    pub(super) fn open(path: &Path, shutdown: &Shutdown) -> Result<GzLines> {
        Ok(GzLines {
            path: path.to_path_buf(),
            reader: open_lines(path)?,
            line_no: 0,
            shutdown: shutdown.clone(),
        })
    }

    /// Reads the next line into `buf`, without its line ending. False at the end of the data, at
    /// damage (which goes to `outcome`) or once the shutdown token is triggered; an error when the
    /// very first line cannot be read.
    pub(super) fn next_line(&mut self, buf: &mut Vec<u8>, outcome: &mut Outcome) -> Result<bool> {
        buf.clear();
        if self.shutdown.is_triggered() {
            return Ok(false);
        }
        let failed = match self.reader.next_line() {
            Ok(Some(line)) => {
                let bytes = line.bytes.strip_suffix(b"\r").unwrap_or(line.bytes);
                buf.extend_from_slice(bytes);
                None
            }
            Ok(None) => return Ok(false),
            Err(e) => Some(e),
        };
        self.line_no += 1;
        match failed {
            None => Ok(true),
            Some(e) => {
                let what = e.describe(Some(self.reader.compressed_at()));
                self.bad_line(&what, outcome)?;
                Ok(false)
            }
        }
    }

    /// Records damage at the line last read: refusal ([`Error::Invalid`]) when it is the first,
    /// else a note in `outcome` (the caller stops reading this file).
    pub(super) fn bad_line(&self, what: &str, outcome: &mut Outcome) -> Result<()> {
        let file = self.path.display();
        let line = self.line_no;
        if line <= 1 {
            return Err(Error::Invalid(format!("{file}: line 1: {what}")));
        }
        outcome.damaged.push(format!(
            "{file}: line {line}: {what} (read up to line {})",
            line - 1
        ));
        Ok(())
    }
}

/// An output of a [`Staged`] set.
pub(in crate::offline) type OutId = usize;

/// What a line written is, for the counts reported.
#[derive(Clone, Copy)]
pub(in crate::offline) enum Line {
    Depth,
    Snapshot,
    /// A line of a stream beside the book.
    Kind(Kind),
    Meta,
    /// A CSV header: not a record, so not counted.
    Header,
}

/// Output files of one conversion. Each is written as `<name>.part` (created exclusively and
/// locked, so a recorder's crash recovery leaves it alone) and linked to its name by
/// [`Staged::commit`] without replacing anything; dropped uncommitted, every part file goes, and
/// so do the directories it created.
pub(in crate::offline) struct Staged {
    dir: PathBuf,
    encoder: MemberEncoder,
    member: Vec<u8>,
    files: Vec<StagedFile>,
    /// Directories this conversion created, each outermost first: removed in reverse order.
    created_dirs: Vec<PathBuf>,
    committed: bool,
}

struct StagedFile {
    part: PathBuf,
    done: PathBuf,
    /// `None` once closed.
    file: Option<File>,
    pending: Vec<u8>,
    counts: Written,
}

impl Staged {
    pub(in crate::offline) fn new(dir: &Path, gzip_level: u32) -> Staged {
        Staged {
            dir: dir.to_path_buf(),
            encoder: MemberEncoder::new(gzip_level),
            member: Vec::new(),
            files: Vec::new(),
            created_dirs: Vec::new(),
            committed: false,
        }
    }

    /// Starts the output `name` in the directory; a name with `/` puts it in subdirectories,
    /// created when missing (and removed again when the conversion is abandoned).
    pub(in crate::offline) fn create(&mut self, name: &str) -> Result<OutId> {
        let done = self.dir.join(name);
        let dir = done
            .parent()
            .map_or_else(|| self.dir.clone(), Path::to_path_buf);
        self.make_dir(&dir)?;
        let part = part_of(&done);
        if done.exists() || self.files.iter().any(|f| f.done == done) {
            return Err(taken(&done));
        }
        let Some(file) = create_part(&part)? else {
            return Err(Error::Invalid(format!(
                "{} exists: another conversion is writing it, or one was interrupted \
                 (remove it)",
                part.display()
            )));
        };
        self.files.push(StagedFile {
            part,
            done: done.clone(),
            file: Some(file),
            pending: Vec::new(),
            counts: Written {
                path: done,
                ..Written::default()
            },
        });
        Ok(self.files.len() - 1)
    }

    /// Starts the output `name` as [`Staged::create`] does, for a format that writes its own
    /// bytes (Parquet): what is written to the returned handle goes into the part file as is,
    /// and [`Staged::count`] counts its records. [`Staged::close`] syncs it.
    pub(in crate::offline) fn create_raw(&mut self, name: &str) -> Result<(OutId, File)> {
        let id = self.create(name)?;
        let f = &self.files[id];
        let file = f.file.as_ref().expect("just created");
        let handle = file.try_clone().map_err(|e| Error::file(&f.part, e))?;
        Ok((id, handle))
    }

    /// The part file an output is written to, until it is committed.
    pub(in crate::offline) fn part(&self, id: OutId) -> &Path {
        &self.files[id].part
    }

    /// Creates `dir` (and its missing parents), remembering which were created.
    fn make_dir(&mut self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        if let Some(blocker) = dir.ancestors().find(|d| d.exists() && !d.is_dir()) {
            return Err(Error::Invalid(format!(
                "{} is not a directory",
                blocker.display()
            )));
        }
        missing.reverse();
        fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        self.created_dirs.extend(missing);
        Ok(())
    }

    /// Appends one line (with its newline).
    pub(in crate::offline) fn push(&mut self, id: OutId, line: &[u8], kind: Line) -> Result<()> {
        self.push_lines(id, line, 1, kind)
    }

    /// Appends `count` lines (each with its newline) of one kind.
    pub(in crate::offline) fn push_lines(
        &mut self,
        id: OutId,
        lines: &[u8],
        count: u64,
        kind: Line,
    ) -> Result<()> {
        self.files[id].pending.extend_from_slice(lines);
        self.count(id, count, kind);
        if self.files[id].pending.len() >= MEMBER_BYTES {
            self.flush(id)?;
        }
        Ok(())
    }

    /// Counts `count` records of one kind written to the output.
    pub(in crate::offline) fn count(&mut self, id: OutId, count: u64, kind: Line) {
        let counts = &mut self.files[id].counts;
        match kind {
            Line::Depth => counts.depth += count,
            Line::Snapshot => counts.snapshots += count,
            Line::Kind(kind) => *counts.kinds.entry(kind).or_default() += count,
            Line::Meta => counts.meta += count,
            Line::Header => {}
        }
    }

    /// Compresses the pending lines into one gzip member and writes it.
    pub(in crate::offline) fn flush(&mut self, id: OutId) -> Result<()> {
        let f = &mut self.files[id];
        let Some(file) = f.file.as_mut() else {
            return Ok(());
        };
        if f.pending.is_empty() {
            return Ok(());
        }
        self.member.clear();
        self.encoder.encode(&f.pending, &mut self.member);
        file.write_all(&self.member)
            .map_err(|e| Error::file(&f.part, e))?;
        f.pending.clear();
        Ok(())
    }

    /// Writes out the file and syncs it.
    pub(in crate::offline) fn close(&mut self, id: OutId) -> Result<()> {
        self.flush(id)?;
        let f = &mut self.files[id];
        if let Some(file) = f.file.take() {
            file.sync_all().map_err(|e| Error::file(&f.part, e))?;
        }
        Ok(())
    }

    /// Closes every file and gives each its name, refusing to replace an existing file (then
    /// nothing stays written). Returns the files in name order.
    pub(in crate::offline) fn commit(mut self) -> Result<Vec<Written>> {
        for id in 0..self.files.len() {
            self.close(id)?;
        }
        let mut linked: Vec<PathBuf> = Vec::new();
        let mut result = Ok(());
        for f in &self.files {
            let placed = link_no_replace(&f.part, &f.done)
                .and_then(|placed| if placed { Ok(()) } else { Err(taken(&f.done)) });
            if let Err(e) = placed {
                result = Err(e);
                break;
            }
            linked.push(f.done.clone());
        }
        if let Err(e) = result {
            for done in &linked {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
        self.committed = true;
        for f in &self.files {
            let _ = fs::remove_file(&f.part);
        }
        let mut dirs: Vec<&Path> = self.files.iter().filter_map(|f| f.done.parent()).collect();
        dirs.sort();
        dirs.dedup();
        dirs.into_iter().for_each(sync_dir);
        let mut written: Vec<Written> = self.files.iter().map(|f| f.counts.clone()).collect();
        written.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(written)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for f in &mut self.files {
            drop(f.file.take());
            let _ = fs::remove_file(&f.part);
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn taken(done: &Path) -> Error {
    Error::Invalid(format!(
        "{} exists: obrec never overwrites a file (remove it, or choose another -o)",
        done.display()
    ))
}
