//! Finishing `.part` files left by a crash, before a new run records.
//!
//! The writer appends whole gzip members, so after `kill -9` a `.part` file is usually valid to
//! its last byte and only needs its final name. If the kill (or a full disk) cut a member short,
//! every whole line that can still be decoded is kept and rewritten as a new file; the cut is
//! logged. The damaged file is never appended to, and nothing is overwritten: the finished name
//! is only used if it is free.
//!
//! A `.part` file that another running recorder holds locked is left alone.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::gzip::{MemberDecoder, MemberEncoder};
use crate::store::names::is_part_of_series;

/// What recovery did with one file.
#[derive(Debug, PartialEq, Eq)]
pub struct Salvaged {
    pub part: PathBuf,
    pub finished: PathBuf,
    /// Whole lines kept.
    pub lines: u64,
    /// Decoded bytes of a cut last line, dropped (0 when the file was intact).
    pub dropped_bytes: u64,
    /// Whether the compressed data was damaged (and the file therefore rewritten).
    pub rewritten: bool,
}

/// Finishes every unlocked `.part` file in `dir` of one of `series` (`ethusdt_depth`, …).
pub fn salvage_dir(dir: &Path, series: &[String], gzip_level: u32) -> Result<Vec<Salvaged>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            is_part_of_series(&name, series)
        })
        .collect();
    parts.sort();
    let mut done = Vec::new();
    for part in parts {
        if let Some(s) = salvage_file(&part, gzip_level)? {
            if s.rewritten {
                log::warn!(
                    "recovered {}: kept {} whole lines, dropped {} bytes of a cut line and the damaged gzip tail",
                    s.finished.display(),
                    s.lines,
                    s.dropped_bytes
                );
            } else {
                log::info!(
                    "recovered {}: {} lines, intact",
                    s.finished.display(),
                    s.lines
                );
            }
            done.push(s);
        }
    }
    Ok(done)
}

/// Finishes one `.part` file; `None` when another process holds it.
pub fn salvage_file(part: &Path, gzip_level: u32) -> Result<Option<Salvaged>> {
    let file = File::open(part).map_err(|e| Error::file(part, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(None),
        Err(fs::TryLockError::Error(e)) => return Err(Error::file(part, e)),
    }
    let finished = free_name(part)?;
    let scan = scan(&file, part)?;
    if !scan.damaged {
        fs::rename(part, &finished).map_err(|e| Error::file(&finished, e))?;
        return Ok(Some(Salvaged {
            part: part.to_path_buf(),
            finished,
            lines: scan.lines,
            dropped_bytes: 0,
            rewritten: false,
        }));
    }
    // Rewrite the whole lines into a fresh file, then retire the damaged one.
    let tmp = finished.with_extension("gz.salvage");
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::file(&tmp, e))?;
    let mut encoder = MemberEncoder::new(gzip_level);
    let mut member = Vec::new();
    let source = File::open(part).map_err(|e| Error::file(part, e))?;
    let mut reader = BufReader::new(MemberDecoder::new(BufReader::new(source)));
    let mut chunk = Vec::new();
    let mut line = Vec::new();
    for _ in 0..scan.lines {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            break;
        }
        chunk.extend_from_slice(&line);
        if chunk.len() >= 1 << 20 {
            write_member(&mut encoder, &mut chunk, &mut member, &mut out, &tmp)?;
        }
    }
    write_member(&mut encoder, &mut chunk, &mut member, &mut out, &tmp)?;
    out.sync_all().map_err(|e| Error::file(&tmp, e))?;
    drop(out);
    fs::rename(&tmp, &finished).map_err(|e| Error::file(&finished, e))?;
    fs::remove_file(part).map_err(|e| Error::file(part, e))?;
    Ok(Some(Salvaged {
        part: part.to_path_buf(),
        finished,
        lines: scan.lines,
        dropped_bytes: scan.cut_bytes,
        rewritten: true,
    }))
}

fn write_member(
    encoder: &mut MemberEncoder,
    chunk: &mut Vec<u8>,
    member: &mut Vec<u8>,
    out: &mut File,
    path: &Path,
) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    member.clear();
    encoder.encode(chunk, member);
    out.write_all(member).map_err(|e| Error::file(path, e))?;
    chunk.clear();
    Ok(())
}

struct Scan {
    lines: u64,
    /// Decoded bytes after the last newline.
    cut_bytes: u64,
    damaged: bool,
}

/// Counts whole lines and tells whether the gzip data ends cleanly.
fn scan(file: &File, path: &Path) -> Result<Scan> {
    let source = file.try_clone().map_err(|e| Error::file(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 18, MemberDecoder::new(BufReader::new(source)));
    let mut lines = 0;
    let mut cut = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => {
                return Ok(Scan {
                    lines,
                    cut_bytes: cut,
                    damaged: cut > 0,
                });
            }
            Ok(buf) => buf,
            Err(_) => {
                return Ok(Scan {
                    lines,
                    cut_bytes: cut,
                    damaged: true,
                });
            }
        };
        let n = buf.len();
        let newlines = memchr::memchr_iter(b'\n', buf).count() as u64;
        cut = match memchr::memrchr(b'\n', buf) {
            Some(last) => (n - last - 1) as u64,
            None => cut + n as u64,
        };
        lines += newlines;
        reader.consume(n);
    }
}

/// `x.ndjson.gz.part` → `x.ndjson.gz`; an error if that name is taken, since nothing is ever
/// overwritten.
fn free_name(part: &Path) -> Result<PathBuf> {
    let finished = part.with_extension("");
    if !finished.exists() {
        return Ok(finished);
    }
    Err(Error::file(
        finished,
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a finished file of the same name exists; left the .part as it is",
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz_lines(lines: &[&str]) -> Vec<u8> {
        let mut enc = MemberEncoder::new(1);
        let mut out = Vec::new();
        for l in lines {
            enc.encode(format!("{l}\n").as_bytes(), &mut out);
        }
        out
    }

    fn read_all(path: &Path) -> String {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(File::open(path).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    #[test]
    fn intact_part_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir
            .path()
            .join("ethusdt_depth_20261120T000000Z.ndjson.gz.part");
        fs::write(&part, gz_lines(&["a", "b"])).unwrap();
        let done = salvage_dir(dir.path(), &["ethusdt_depth".into()], 1).unwrap();
        assert_eq!(done.len(), 1);
        assert!(!done[0].rewritten);
        assert_eq!(done[0].lines, 2);
        assert!(!part.exists());
        assert_eq!(read_all(&done[0].finished), "a\nb\n");
    }

    #[test]
    fn cut_part_keeps_every_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir
            .path()
            .join("ethusdt_depth_20261120T000000Z.ndjson.gz.part");
        let mut bytes = gz_lines(&["first", "second"]);
        // A third member cut in the middle, as a kill during a write leaves it.
        let third = gz_lines(&["third line that never finished"]);
        bytes.extend_from_slice(&third[..third.len() / 2]);
        fs::write(&part, &bytes).unwrap();
        let s = salvage_file(&part, 1).unwrap().unwrap();
        assert!(s.rewritten);
        assert_eq!(s.lines, 2);
        assert_eq!(read_all(&s.finished), "first\nsecond\n");
        assert!(!part.exists());
    }

    #[test]
    fn other_symbols_and_finished_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir
            .path()
            .join("btcusdt_depth_20261120T000000Z.ndjson.gz.part");
        fs::write(&other, gz_lines(&["x"])).unwrap();
        assert!(
            salvage_dir(dir.path(), &["ethusdt_depth".into()], 1)
                .unwrap()
                .is_empty()
        );
        assert!(other.exists());
    }

    #[test]
    fn a_locked_part_belongs_to_a_live_recorder() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir
            .path()
            .join("ethusdt_depth_20261120T000000Z.ndjson.gz.part");
        fs::write(&part, gz_lines(&["x"])).unwrap();
        let holder = File::open(&part).unwrap();
        holder.lock().unwrap();
        assert_eq!(salvage_file(&part, 1).unwrap(), None);
        assert!(part.exists());
    }
}
