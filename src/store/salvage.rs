//! Finishing `.part` files left by a crash, before a new run records.
//!
//! The writer appends whole gzip members, so after `kill -9` a `.part` file is usually valid to
//! its last byte and only needs its final name. Otherwise every gzip member is checked (inflated,
//! CRC and length compared) and the file is split in two: the intact members, copied byte for byte
//! in their order into the finished file, and everything else (a member cut by the kill, a
//! member with a flipped bit, garbage) into `<finished>.damaged`, so that nothing recovery cannot
//! read is destroyed and nothing that failed its check ends up in a file whose checks pass. After
//! damage, reading resumes at the next member header that starts an intact member.
//!
//! Each step leaves a state the next start resolves. The part is removed last, once its intact
//! members are in a complete, fsynced and re-checked file under the finished name; until then
//! the copy is `<part>.salvage`, which a later start discards (part still there: recovery starts
//! over) or removes (part gone: the copy was already linked). A part beside a finished twin that
//! already holds its intact members is removed; a twin that holds something else keeps its name
//! and the part is finished under the next free one. A file that cannot be recovered is logged and
//! left as it is; the others are recovered all the same.
//!
//! A `.part` file that another running recorder holds locked is left alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::gzip::{check_member, find_header, open_recording};
use crate::store::names::is_part_of_series;
use crate::store::staged::{link_no_replace, sync_dir};

/// Added to a part's name for the copy of its intact members while it is written.
const COPY_SUFFIX: &str = ".salvage";
/// Added to the finished name for the bytes that failed their check.
const DAMAGED_SUFFIX: &str = ".damaged";
/// Give up finding a free name after this many: something else is writing here.
const MAX_NAMES: u32 = 1000;

/// What recovery did with one file.
#[derive(Debug, PartialEq, Eq)]
pub struct Salvaged {
    pub part: PathBuf,
    /// The finished file holding the part's intact members; `None` when it had none.
    pub finished: Option<PathBuf>,
    /// Lines in the intact members.
    pub lines: u64,
    /// Compressed bytes that failed their check (0 when the file was intact).
    pub damaged_bytes: u64,
    /// Where those bytes were kept.
    pub damaged: Option<PathBuf>,
}

/// Finishes every unlocked `.part` file in `dir` of one of `series` (`ethusdt_depth`, …). A file
/// that cannot be recovered is logged and left for a later start; it never stops the others.
/// Intact members are copied as they are, never re-encoded.
pub fn salvage_dir(dir: &Path, series: &[String]) -> Result<Vec<Salvaged>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if is_part_of_series(name, series) {
            parts.push(path);
        } else if let Some(part) = name.strip_suffix(COPY_SUFFIX)
            && is_part_of_series(part, series)
            && !path.with_file_name(part).exists()
        {
            // The part is removed only after its copy was linked under the finished name.
            remove(&path).unwrap_or_else(|e| log::warn!("crash recovery: {e}"));
        }
    }
    parts.sort();
    let mut done = Vec::new();
    for part in parts {
        match salvage_file(&part) {
            Ok(Some(s)) => {
                report(&s);
                done.push(s);
            }
            Ok(None) => log::info!("{} is being written by a live recorder", part.display()),
            Err(e) => log::error!("crash recovery left a file as it was: {e}"),
        }
    }
    Ok(done)
}

fn report(s: &Salvaged) {
    let part = s.part.display();
    match (&s.finished, &s.damaged) {
        (Some(f), None) => log::info!("recovered {}: {} lines, intact", f.display(), s.lines),
        (Some(f), Some(d)) => log::warn!(
            "recovered {}: {} lines of intact gzip members; {} damaged bytes kept in {}",
            f.display(),
            s.lines,
            s.damaged_bytes,
            d.display()
        ),
        (None, Some(d)) => log::warn!(
            "{part} held no intact gzip member; its {} bytes are kept in {}",
            s.damaged_bytes,
            d.display()
        ),
        (None, None) => log::info!("removed {part}: empty"),
    }
}

/// Finishes one `.part` file; `None` when another process holds it.
pub fn salvage_file(part: &Path) -> Result<Option<Salvaged>> {
    let Some(file) = open_part(part)? else {
        return Ok(None);
    };
    let mut done = Salvaged {
        part: part.to_path_buf(),
        finished: None,
        lines: 0,
        damaged_bytes: 0,
        damaged: None,
    };
    let len = file.metadata().map_err(|e| Error::file(part, e))?.len();
    if len == 0 {
        remove(part)?;
        return Ok(Some(done));
    }
    let spans = scan(&file, len).map_err(|e| Error::file(part, e))?;
    let (intact, damage): (Vec<&Span>, Vec<&Span>) = spans.iter().partition(|s| s.lines.is_some());
    done.lines = intact.iter().filter_map(|s| s.lines).sum();
    done.damaged_bytes = damage.iter().map(|s| s.len()).sum();
    let copy = with_suffix(part, COPY_SUFFIX);
    let twin = part.with_extension("");
    if twin.symlink_metadata().is_ok() && holds(&twin, &file, &intact)? {
        // An earlier recovery linked its copy and was stopped before it removed the part.
        remove(part)?;
        remove(&copy)?;
        done.finished = Some(twin);
        return Ok(Some(done));
    }
    let damaged_twin = with_suffix(&twin, DAMAGED_SUFFIX);
    if damaged_twin.symlink_metadata().is_ok() && holds(&damaged_twin, &file, &damage)? {
        // An earlier recovery kept the damage and was stopped before it linked the copy.
        remove(&damaged_twin)?;
    }
    let finished = free_name(&twin)?;
    if done.damaged_bytes > 0 {
        let damaged = with_suffix(&finished, DAMAGED_SUFFIX);
        copy_spans(&file, damage.iter().copied(), &damaged)?;
        done.damaged = Some(damaged);
    }
    let dir = part.parent().unwrap_or(Path::new("."));
    if intact.is_empty() {
        sync_dir(dir);
        remove(part)?;
        return Ok(Some(done));
    }
    if done.damaged_bytes == 0 {
        link(part, &finished)?;
    } else {
        remove(&copy)?;
        let kept = copy_spans(&file, intact.iter().copied(), &copy)?;
        check_copy(&copy, kept, done.lines)?;
        link(&copy, &finished)?;
    }
    sync_dir(dir);
    remove(part)?;
    remove(&copy)?;
    done.finished = Some(finished);
    Ok(Some(done))
}

/// Opens and locks a part; `None` when another process holds it or has just finished it.
fn open_part(part: &Path) -> Result<Option<File>> {
    // A part is never a link: recovery renames and removes it, which must not reach elsewhere.
    let meta = part.symlink_metadata().map_err(|e| Error::file(part, e))?;
    if meta.is_symlink() {
        return Err(Error::file(
            part,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link, not a recording",
            ),
        ));
    }
    let file = match open_recording(part) {
        Ok(file) => file,
        Err(Error::File { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(None),
        Err(fs::TryLockError::Error(e)) => return Err(Error::file(part, e)),
    }
    // A recorder that finished this part between our open and our lock removed its name.
    let opened = file.metadata().map_err(|e| Error::file(part, e))?;
    match part.symlink_metadata() {
        Ok(now) if (now.dev(), now.ino()) == (opened.dev(), opened.ino()) => Ok(Some(file)),
        _ => Ok(None),
    }
}

/// A stretch of a part: an intact member (`lines` is its line count) or damage (`None`).
struct Span {
    start: u64,
    end: u64,
    lines: Option<u64>,
}

impl Span {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Splits the file into intact members and damage, resuming after damage at the next header
/// that starts an intact member.
fn scan(file: &File, len: u64) -> io::Result<Vec<Span>> {
    let mut reader = BufReader::with_capacity(1 << 18, file);
    let mut scratch = Vec::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut pos = 0;
    while pos < len {
        let (damage_end, next) = match member_at(&mut reader, pos, &mut scratch)? {
            Some(member) => (pos, Some(member)),
            None => match next_member(&mut reader, pos + 1, &mut scratch)? {
                Some(member) => (member.start, Some(member)),
                None => (len, None),
            },
        };
        if damage_end > pos {
            spans.push(Span {
                start: pos,
                end: damage_end,
                lines: None,
            });
        }
        pos = damage_end;
        if let Some(member) = next {
            pos = member.end;
            spans.push(member);
        }
    }
    Ok(spans)
}

/// The intact member at `pos`, if one starts there.
fn member_at(
    reader: &mut BufReader<&File>,
    pos: u64,
    scratch: &mut Vec<u8>,
) -> io::Result<Option<Span>> {
    if reader.stream_position()? != pos {
        reader.seek(SeekFrom::Start(pos))?;
    }
    match check_member(reader, scratch) {
        Ok(lines) => Ok(Some(Span {
            start: pos,
            end: reader.stream_position()?,
            lines: Some(lines),
        })),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The first intact member that starts at or after `from`.
fn next_member(
    reader: &mut BufReader<&File>,
    mut from: u64,
    scratch: &mut Vec<u8>,
) -> io::Result<Option<Span>> {
    loop {
        reader.seek(SeekFrom::Start(from))?;
        let Some(offset) = find_header(reader)? else {
            return Ok(None);
        };
        let candidate = from + offset;
        if let Some(member) = member_at(reader, candidate, scratch)? {
            return Ok(Some(member));
        }
        from = candidate + 1;
    }
}

/// Whether `path` holds exactly these spans of the part.
fn holds(path: &Path, file: &File, spans: &[&Span]) -> Result<bool> {
    // Not a regular file (a FIFO would block): not ours.
    let Ok(other) = open_recording(path) else {
        return Ok(false);
    };
    let expected: u64 = spans.iter().map(|s| s.len()).sum();
    if other.metadata().map_err(|e| Error::file(path, e))?.len() != expected {
        return Ok(false);
    }
    let mut other = BufReader::new(other);
    let (mut ours, mut theirs) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut src = file;
    for span in spans {
        src.seek(SeekFrom::Start(span.start))
            .map_err(|e| Error::file(path, e))?;
        let mut left = span.len();
        while left > 0 {
            let n = left.min(ours.len() as u64) as usize;
            src.read_exact(&mut ours[..n])
                .and_then(|()| other.read_exact(&mut theirs[..n]))
                .map_err(|e| Error::file(path, e))?;
            if ours[..n] != theirs[..n] {
                return Ok(false);
            }
            left -= n as u64;
        }
    }
    Ok(true)
}

/// Creates `to` (never over an existing file), copies `spans` of `file` into it in order and
/// fsyncs it; returns the bytes copied. A failed copy is removed.
fn copy_spans<'a>(file: &File, spans: impl Iterator<Item = &'a Span>, to: &Path) -> Result<u64> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| Error::file(to, e))?;
    let copy = || -> io::Result<u64> {
        let mut src = file;
        let mut total = 0;
        for span in spans {
            src.seek(SeekFrom::Start(span.start))?;
            let n = io::copy(&mut src.take(span.len()), &mut out)?;
            if n != span.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the part shrank while it was copied",
                ));
            }
            total += n;
        }
        out.sync_all()?;
        Ok(total)
    };
    copy().map_err(|e| {
        let _ = fs::remove_file(to);
        Error::file(to, e)
    })
}

/// Reads the copy back from disk: every member intact, as many bytes and lines as were copied.
fn check_copy(copy: &Path, bytes: u64, lines: u64) -> Result<()> {
    let failed = |why: String| Error::file(copy, io::Error::other(why));
    let file = File::open(copy).map_err(|e| Error::file(copy, e))?;
    let len = file.metadata().map_err(|e| Error::file(copy, e))?.len();
    if len != bytes {
        return Err(failed(format!("copy holds {len} bytes, not {bytes}")));
    }
    let spans = scan(&file, len).map_err(|e| Error::file(copy, e))?;
    let read: u64 = spans.iter().filter_map(|s| s.lines).sum();
    if spans.iter().any(|s| s.lines.is_none()) || read != lines {
        return Err(failed("copy does not read back intact".into()));
    }
    Ok(())
}

/// `name` unless it or its `.damaged` companion exists, else `<stem>_<n>.<extensions>` for the
/// first free `n`, which sorts right after `name`.
fn free_name(name: &Path) -> Result<PathBuf> {
    let free = |p: &Path| {
        p.symlink_metadata().is_err() && with_suffix(p, DAMAGED_SUFFIX).symlink_metadata().is_err()
    };
    if free(name) {
        return Ok(name.to_path_buf());
    }
    let file_name = name.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (stem, extensions) = file_name.split_once('.').unwrap_or((file_name, ""));
    (1..MAX_NAMES)
        .map(|n| name.with_file_name(format!("{stem}_{n}.{extensions}")))
        .find(|p| free(p))
        .ok_or_else(|| {
            Error::file(
                name,
                io::Error::new(io::ErrorKind::AlreadyExists, "no free name to finish under"),
            )
        })
}

/// Gives `from` the name `to`, which [`free_name`] found free.
fn link(from: &Path, to: &Path) -> Result<()> {
    if link_no_replace(from, to)? {
        return Ok(());
    }
    Err(Error::file(
        to,
        io::Error::new(io::ErrorKind::AlreadyExists, "taken while recovering"),
    ))
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::file(path, e)),
        _ => Ok(()),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::gzip::{MemberDecoder, MemberEncoder};
    use std::io::Read;

    const PART: &str = "ethusdt_depth_20261120T000000Z.ndjson.gz.part";

    /// One member per group of lines.
    fn members(groups: &[&[&str]]) -> Vec<Vec<u8>> {
        let mut enc = MemberEncoder::new(1);
        groups
            .iter()
            .map(|lines| {
                let mut out = Vec::new();
                enc.encode(lines.concat().replace(' ', "\n").as_bytes(), &mut out);
                out
            })
            .collect()
    }

    /// The file's text, read with every member's CRC checked (as `gzip -t` would).
    fn read_all(path: &Path) -> String {
        let mut s = String::new();
        MemberDecoder::new(BufReader::new(File::open(path).unwrap()))
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    fn series() -> Vec<String> {
        vec!["ethusdt_depth".into()]
    }

    #[test]
    fn intact_part_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        fs::write(&part, members(&[&["a b "]]).concat()).unwrap();
        let done = salvage_dir(dir.path(), &series()).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].damaged, None);
        assert_eq!(done[0].lines, 2);
        assert!(!part.exists());
        assert_eq!(read_all(done[0].finished.as_ref().unwrap()), "a\nb\n");
    }

    /// A kill during a write cuts the last member: the members before it are kept as they are,
    /// the cut bytes are kept aside.
    #[test]
    fn a_cut_member_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        let m = members(&[
            &["first "],
            &["second "],
            &["third line that never finished "],
        ]);
        let cut = &m[2][..m[2].len() / 2];
        fs::write(&part, [&m[0][..], &m[1], cut].concat()).unwrap();
        let s = salvage_file(&part).unwrap().unwrap();
        assert_eq!(s.lines, 2);
        let finished = s.finished.unwrap();
        assert_eq!(fs::read(&finished).unwrap(), [&m[0][..], &m[1]].concat());
        assert_eq!(fs::read(s.damaged.unwrap()).unwrap(), cut);
        assert!(!part.exists());
    }

    /// One flipped bit in a middle member's CRC loses that member, not the ones after it.
    #[test]
    fn damage_in_the_middle_keeps_every_intact_member_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        let m = members(&[&["a1 a2 "], &["b1 b2 "], &["c1 "], &["d1 d2 "]]);
        let mut bad_crc = m[1].clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let mut bad_data = m[2].clone();
        bad_data[12] ^= 0xff;
        let garbage = b"\x1f\x8b\x08 not a member".to_vec();
        fs::write(
            &part,
            [&m[0][..], &bad_crc, &bad_data, &garbage, &m[3]].concat(),
        )
        .unwrap();
        let s = salvage_file(&part).unwrap().unwrap();
        assert_eq!(s.lines, 4);
        assert_eq!(read_all(s.finished.as_ref().unwrap()), "a1\na2\nd1\nd2\n");
        let kept = [&bad_crc[..], &bad_data, &garbage].concat();
        assert_eq!(fs::read(s.damaged.unwrap()).unwrap(), kept);
        assert_eq!(s.damaged_bytes, kept.len() as u64);
        assert!(!part.exists());
    }

    #[test]
    fn a_part_with_nothing_readable_gets_no_finished_name() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        fs::write(&part, b"\x1f\x8b\x08\x00 torn").unwrap();
        let s = salvage_file(&part).unwrap().unwrap();
        assert_eq!(s.finished, None);
        assert!(!part.with_extension("").exists());
        assert_eq!(
            fs::read(s.damaged.unwrap()).unwrap(),
            b"\x1f\x8b\x08\x00 torn"
        );
    }

    #[test]
    fn an_empty_part_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        fs::write(&part, b"").unwrap();
        let s = salvage_file(&part).unwrap().unwrap();
        assert_eq!((s.finished, s.damaged), (None, None));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Stopped while writing its copy, after the damage was kept: the copy is discarded and
    /// recovery starts over under the same name.
    #[test]
    fn a_leftover_copy_beside_its_part_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        let m = members(&[&["a "], &["b "]]);
        fs::write(&part, [&m[0][..], b"torn", &m[1]].concat()).unwrap();
        fs::write(with_suffix(&part, COPY_SUFFIX), &m[0][..5]).unwrap();
        let damaged = dir
            .path()
            .join("ethusdt_depth_20261120T000000Z.ndjson.gz.damaged");
        fs::write(&damaged, b"torn").unwrap();
        let done = salvage_dir(dir.path(), &series()).unwrap();
        assert_eq!(
            done[0].finished,
            Some(part.with_extension("")),
            "the name is kept"
        );
        assert_eq!(done[0].damaged.as_ref(), Some(&damaged));
        assert_eq!(fs::read(&damaged).unwrap(), b"torn");
        assert_eq!(read_all(done[0].finished.as_ref().unwrap()), "a\nb\n");
        assert!(!with_suffix(&part, COPY_SUFFIX).exists());
        assert!(!part.exists());
    }

    /// Stopped after its copy was linked: the part and the copy go, the finished file stays.
    #[test]
    fn a_part_beside_its_finished_twin_is_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        let twin = part.with_extension("");
        let m = members(&[&["a "], &["b "]]);
        fs::write(&part, [&m[0][..], b"torn", &m[1]].concat()).unwrap();
        fs::write(&twin, m.concat()).unwrap();
        fs::hard_link(&twin, with_suffix(&part, COPY_SUFFIX)).unwrap();
        let done = salvage_dir(dir.path(), &series()).unwrap();
        assert_eq!(done[0].finished.as_ref(), Some(&twin));
        assert_eq!(read_all(&twin), "a\nb\n");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the finished file: {left:?}");

        // Stopped between the link of an intact part and its removal.
        fs::remove_file(&twin).unwrap();
        fs::write(&part, m.concat()).unwrap();
        fs::hard_link(&part, &twin).unwrap();
        salvage_file(&part).unwrap().unwrap();
        assert!(!part.exists());
        assert_eq!(read_all(&twin), "a\nb\n");
    }

    /// A finished file that holds something else is never replaced; the part gets the next name.
    #[test]
    fn a_different_twin_is_kept_and_the_part_finished_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        let twin = part.with_extension("");
        fs::write(&part, members(&[&["new "]]).concat()).unwrap();
        fs::write(&twin, members(&[&["old "]]).concat()).unwrap();
        let s = salvage_file(&part).unwrap().unwrap();
        let finished = s.finished.unwrap();
        assert_eq!(
            finished.file_name().unwrap(),
            "ethusdt_depth_20261120T000000Z_1.ndjson.gz"
        );
        assert_eq!(read_all(&finished), "new\n");
        assert_eq!(read_all(&twin), "old\n");
        assert!(!part.exists());
    }

    /// A FIFO named like a part would block its reader forever; it is refused, and the other
    /// parts are recovered all the same.
    #[test]
    fn a_stuck_file_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(PART);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = salvage_file(&fifo).unwrap_err();
        assert!(err.to_string().ends_with(": not a regular file"), "{err}");
        let good = dir
            .path()
            .join("ethusdt_depth_20261120T010000Z.ndjson.gz.part");
        fs::write(&good, members(&[&["x "]]).concat()).unwrap();
        let done = salvage_dir(dir.path(), &series()).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].part, good);
        assert!(fifo.exists());
    }

    #[test]
    fn other_symbols_and_finished_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir
            .path()
            .join("btcusdt_depth_20261120T000000Z.ndjson.gz.part");
        fs::write(&other, members(&[&["x "]]).concat()).unwrap();
        assert!(salvage_dir(dir.path(), &series()).unwrap().is_empty());
        assert!(other.exists());
    }

    #[test]
    fn a_locked_part_belongs_to_a_live_recorder() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(PART);
        fs::write(&part, members(&[&["x "]]).concat()).unwrap();
        let holder = File::open(&part).unwrap();
        holder.lock().unwrap();
        assert_eq!(salvage_file(&part).unwrap(), None);
        assert!(part.exists());
    }

    /// How a generated member is damaged.
    #[derive(Debug, Clone)]
    enum Damage {
        None,
        /// One byte changed at this position (modulo the member's length).
        Flip(usize, u8),
        /// Garbage written after the member.
        Garbage(Vec<u8>),
    }

    fn damage() -> impl proptest::strategy::Strategy<Value = Damage> {
        use proptest::prelude::*;
        prop_oneof![
            2 => Just(Damage::None),
            2 => (any::<usize>(), 1..=255u8).prop_map(|(at, x)| Damage::Flip(at, x)),
            1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Garbage),
        ]
    }

    /// Member `i`'s text: lines that name their member, so that the output says where each
    /// line came from.
    fn member_text(i: usize, lines: &[String]) -> String {
        lines.iter().map(|l| format!("m{i}:{l}\n")).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Recovery keeps every member that was not damaged, emits only whole members as they
        /// were written and in their order, and keeps every other byte in `.damaged`.
        #[test]
        fn recovery_loses_no_intact_member_and_emits_no_damaged_one(
            members in proptest::collection::vec(
                (proptest::collection::vec("[a-z0-9 ]{0,30}", 1..20), damage()),
                1..6,
            ),
            cut in proptest::option::of(1..200usize),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let part = dir.path().join(PART);
            let mut enc = MemberEncoder::new(1);
            let mut bytes = Vec::new();
            let mut must_keep = Vec::new();
            let mut last_start = 0;
            for (i, (lines, damage)) in members.iter().enumerate() {
                last_start = bytes.len();
                let mut member = Vec::new();
                enc.encode(member_text(i, lines).as_bytes(), &mut member);
                match damage {
                    Damage::None => must_keep.push(i),
                    Damage::Flip(at, x) => {
                        let at = at % member.len();
                        member[at] ^= x;
                    }
                    Damage::Garbage(_) => must_keep.push(i),
                }
                bytes.extend_from_slice(&member);
                if let Damage::Garbage(g) = damage {
                    bytes.extend_from_slice(g);
                }
            }
            if let Some(cut) = cut {
                // A kill during the last write: the last member is no longer intact.
                let cut = cut.min(bytes.len() - last_start);
                bytes.truncate(bytes.len() - cut);
                if must_keep.last() == Some(&(members.len() - 1)) {
                    must_keep.pop();
                }
            }
            fs::write(&part, &bytes).unwrap();
            let s = salvage_file(&part).unwrap().unwrap();
            proptest::prop_assert!(!part.exists());
            let size = |p: &Option<PathBuf>| p.as_ref().map_or(0, |p| fs::metadata(p).unwrap().len());
            proptest::prop_assert_eq!(size(&s.finished) + size(&s.damaged), bytes.len() as u64);
            let text = s.finished.as_ref().map(|f| read_all(f)).unwrap_or_default();
            // The member numbers of the output, each member's text whole and unaltered.
            let mut kept: Vec<usize> = Vec::new();
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let i: usize = rest[1..rest.find(':').unwrap()].parse().unwrap();
                let whole = member_text(i, &members[i].0);
                proptest::prop_assert!(rest.starts_with(&whole), "member {} altered", i);
                proptest::prop_assert!(kept.last().is_none_or(|&last| last < i));
                kept.push(i);
                rest = &rest[whole.len()..];
            }
            for i in must_keep {
                proptest::prop_assert!(kept.contains(&i), "intact member {} lost", i);
            }
        }
    }
}
