//! The lines of a recording, read with a bound on memory whatever the input.
//!
//! Every command over recordings (replay, serve, export, import) reads its files through
//! [`LineReader`]. A line that fits in the reader's buffer is lent straight out of it; one that
//! spans reads is assembled, up to [`MAX_LINE`]. A longer line is damage: the reader says so as
//! soon as the bound is passed, having held no more than the bound, and the caller stops reading
//! that file there, as at any other damage. So one 2 GB line in a 2 MB gzip file costs 16 MiB,
//! not 2 GB.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::store::gzip::{CountingReader, MemberDecoder, describe, open_recording};

/// Longest line read from a recording. A 1000-level snapshot is about 40 KB and a depth line a
/// few KB; anything near this is not a recording, and reading it whole could exhaust memory.
pub const MAX_LINE: usize = 16 << 20;

/// Decompressed bytes read ahead of the line parser: many lines per read, and small beside the
/// gzip member the decoder holds, since `serve` keeps a file open per symbol and client.
const READ_BUFFER: usize = 64 << 10;

/// One line, without its `\n`.
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// False for a last line the data ends inside: a cut, or a file without a final newline.
    pub terminated: bool,
}

/// Why the lines of a file end before its end.
#[derive(Debug)]
pub enum LineError {
    /// A line longer than [`MAX_LINE`]; not read into memory.
    TooLong,
    /// The data could not be read (damaged or truncated gzip data).
    Io(io::Error),
}

impl LineError {
    /// `line longer than 16 MiB`, or what the gzip data says, with where it failed when known.
    pub fn describe(&self, compressed_at: Option<u64>) -> String {
        match (self, compressed_at) {
            (LineError::TooLong, _) => format!("line longer than {} MiB", MAX_LINE >> 20),
            (LineError::Io(e), Some(at)) => format!("{} after compressed byte {at}", describe(e)),
            (LineError::Io(e), None) => describe(e),
        }
    }
}

/// Lines of any buffered reader, each at most [`MAX_LINE`] bytes.
pub struct LineReader<R> {
    inner: R,
    /// The line being read when it spans several reads of `inner`.
    carry: Vec<u8>,
    /// Bytes of `inner`'s buffer lent out as the last line, consumed at the next call.
    lent: usize,
    /// Lines returned so far: the number of the last one.
    line_no: u64,
}

/// The lines of a recording file: gzip members checked before use ([`MemberDecoder`]), the
/// compressed position counted to say where damage starts.
pub type FileLines = LineReader<BufReader<MemberDecoder<BufReader<CountingReader<File>>>>>;

/// Opens a recording (a regular file only: [`open_recording`]) for reading line by line.
///
/// # Errors
/// The file cannot be opened or is not a regular file.
pub fn open_lines(path: &Path) -> Result<FileLines> {
    let file = open_recording(path)?;
    let counted = BufReader::new(CountingReader::new(file));
    Ok(LineReader::new(BufReader::with_capacity(
        READ_BUFFER,
        MemberDecoder::new(counted),
    )))
}

impl FileLines {
    /// Compressed bytes read so far: where damage was found.
    pub fn compressed_at(&self) -> u64 {
        self.get_ref().get_ref().get_ref().get_ref().count()
    }
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> LineReader<R> {
        LineReader {
            inner,
            carry: Vec::new(),
            lent: 0,
            line_no: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The number of the last line returned (1 for the first); 0 before it.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The next line; `None` at the end of the data. After an error the file is done: its
    /// damage is at line [`line_no`](Self::line_no)` + 1`.
    ///
    /// # Errors
    /// [`LineError::TooLong`] once a line passes [`MAX_LINE`]; [`LineError::Io`] when the data
    /// cannot be read.
    pub fn next_line(&mut self) -> std::result::Result<Option<Line<'_>>, LineError> {
        self.inner.consume(std::mem::take(&mut self.lent));
        self.carry.clear();
        loop {
            // The borrow of the buffer ends here, so that the branches below may consume.
            let (newline, available) = {
                let buf = self.inner.fill_buf().map_err(LineError::Io)?;
                (memchr::memchr(b'\n', buf), buf.len())
            };
            let taken = newline.unwrap_or(available);
            if self.carry.len() + taken > MAX_LINE {
                return Err(LineError::TooLong);
            }
            if available == 0 {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                self.line_no += 1;
                return Ok(Some(Line {
                    bytes: &self.carry,
                    terminated: false,
                }));
            }
            match newline {
                Some(end) if self.carry.is_empty() => {
                    self.lent = end + 1;
                    self.line_no += 1;
                    let buf = self.inner.fill_buf().map_err(LineError::Io)?;
                    return Ok(Some(Line {
                        bytes: &buf[..end],
                        terminated: true,
                    }));
                }
                Some(end) => {
                    let buf = self.inner.fill_buf().map_err(LineError::Io)?;
                    self.carry.extend_from_slice(&buf[..end]);
                    self.inner.consume(end + 1);
                    self.line_no += 1;
                    return Ok(Some(Line {
                        bytes: &self.carry,
                        terminated: true,
                    }));
                }
                None => {
                    let buf = self.inner.fill_buf().map_err(LineError::Io)?;
                    self.carry.extend_from_slice(buf);
                    self.inner.consume(available);
                }
            }
        }
    }
}

/// Reads chosen lines of recordings again: what a command indexed in a first pass (a snapshot's
/// file and line) and needs whole only later. It reads on from the line it read last when the
/// next is further in the same file, so lines asked for in file order cost one pass.
#[derive(Default)]
pub struct LineCursor {
    open: Option<(PathBuf, FileLines)>,
}

impl LineCursor {
    pub fn new() -> LineCursor {
        LineCursor::default()
    }

    /// Replaces `out` with line `number` (1 for the first) of `path`, without its newline.
    ///
    /// # Errors
    /// What went wrong, for a message about the line: the file cannot be opened, is damaged
    /// before the line, or is shorter.
    pub fn read(
        &mut self,
        path: &Path,
        number: u64,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        let reusable = self
            .open
            .as_ref()
            .is_some_and(|(open, lines)| open == path && lines.line_no() < number);
        let lines = match &mut self.open {
            Some((_, lines)) if reusable => lines,
            open => {
                let lines = open_lines(path).map_err(|e| e.to_string())?;
                &mut open.insert((path.to_path_buf(), lines)).1
            }
        };
        loop {
            let this = lines.line_no() + 1;
            match lines.next_line() {
                Ok(Some(line)) if this == number => {
                    out.clear();
                    out.extend_from_slice(line.bytes);
                    return Ok(());
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("the file is shorter than it was".into()),
                Err(e) => return Err(e.describe(None)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read};

    /// Every line with its terminated flag, then the error if any.
    fn all(reader: &mut LineReader<impl BufRead>) -> (Vec<(Vec<u8>, bool)>, Option<LineError>) {
        let mut lines = Vec::new();
        loop {
            match reader.next_line() {
                Ok(Some(l)) => lines.push((l.bytes.to_vec(), l.terminated)),
                Ok(None) => return (lines, None),
                Err(e) => return (lines, Some(e)),
            }
        }
    }

    #[test]
    fn lines_come_whole_across_reads() {
        let text = b"alpha\n\nbeta gamma\ndelta";
        for capacity in [1, 2, 3, 7, 64] {
            let mut reader = LineReader::new(BufReader::with_capacity(capacity, &text[..]));
            let (lines, err) = all(&mut reader);
            assert!(err.is_none());
            let want: Vec<(Vec<u8>, bool)> = vec![
                (b"alpha".to_vec(), true),
                (b"".to_vec(), true),
                (b"beta gamma".to_vec(), true),
                (b"delta".to_vec(), false),
            ];
            assert_eq!(lines, want, "capacity {capacity}");
            assert_eq!(reader.line_no(), 4);
        }
    }

    /// A line over the bound is refused as soon as the bound is passed: the reader never holds
    /// it, however long it is (here 4 GiB that are never produced).
    #[test]
    fn a_line_over_the_bound_is_damage_not_memory() {
        let endless = io::repeat(b'x').take(4 << 30);
        let input = Cursor::new(b"first\n".to_vec()).chain(endless);
        let mut reader = LineReader::new(BufReader::with_capacity(1 << 16, input));
        let (lines, err) = all(&mut reader);
        assert_eq!(lines, vec![(b"first".to_vec(), true)]);
        assert!(matches!(err, Some(LineError::TooLong)));
        assert!(reader.carry.capacity() <= 2 * MAX_LINE);
        assert_eq!(reader.line_no(), 1, "the damage is line 2");

        let exact = [vec![b'y'; MAX_LINE], b"\n".to_vec()].concat();
        let mut reader = LineReader::new(BufReader::new(&exact[..]));
        let line = reader.next_line().unwrap().unwrap();
        assert_eq!((line.bytes.len(), line.terminated), (MAX_LINE, true));
    }

    #[test]
    fn a_cursor_reads_chosen_lines_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = Vec::new();
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        crate::store::gzip::MemberEncoder::new(1).encode(text.as_bytes(), &mut file);
        let path = dir.path().join("x.ndjson.gz");
        std::fs::write(&path, file).unwrap();
        let mut cursor = LineCursor::new();
        let mut out = Vec::new();
        for number in [1, 2, 30, 7, 7, 50] {
            cursor.read(&path, number, &mut out).unwrap();
            assert_eq!(out, format!("line {number}").as_bytes());
        }
        let err = cursor.read(&path, 51, &mut out).unwrap_err();
        assert_eq!(err, "the file is shorter than it was");
    }
}
