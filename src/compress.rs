//! The compression stage: a member's worth of lines in, a complete gzip member on disk out; and
//! [`MemberDecoder`], which reads such files back.
//!
//! The writer thread formats lines and decides where members end; this thread does the work
//! whose cost grows with the data — deflate, the `write`, and at the end of a file `fsync` and
//! the rename — so neither a member's compression nor a slow disk holds up the events queued
//! behind it. Jobs are done in the order they were sent, which keeps each file's members in order
//! and lets a file be finished right after its last member with no other coordination.

use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};

/// A gzip member encoder that reuses one compressor for every member.
pub struct MemberEncoder {
    compress: Compress,
}

/// RFC 1952 header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl MemberEncoder {
    pub fn new(level: u32) -> MemberEncoder {
        MemberEncoder {
            compress: Compress::new(Compression::new(level), false),
        }
    }

    /// Appends one complete gzip member holding `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&GZIP_HEADER);
        self.compress.reset();
        let start_in = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start_in) as usize;
            out.reserve((input.len() - consumed) / 2 + 64);
            let status = self
                .compress
                .compress_vec(&input[consumed..], out, FlushCompress::Finish)
                .expect("deflate over an in-memory buffer cannot fail");
            if status == Status::StreamEnd {
                break;
            }
        }
        // crc32fast uses the CPU's carry-less multiply; the deflate backend's own CRC does not.
        out.extend_from_slice(&crc32fast::hash(input).to_le_bytes());
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    }
}

/// Reads a file of gzip members (any gzip file) as one stream, checking each member's CRC and
/// length.
///
/// flate2's own gzip reader checks CRCs with a portable table-driven routine that took a sixth of
/// `obrec replay`'s time; crc32fast uses the CPU's carry-less multiply.
pub struct MemberDecoder<R> {
    inner: R,
    inflate: Decompress,
    crc: crc32fast::Hasher,
    /// Uncompressed length of the current member, modulo 2^32 as the trailer stores it.
    len: u32,
    in_member: bool,
}

/// Header flag bits (RFC 1952).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

impl<R: BufRead> MemberDecoder<R> {
    pub fn new(inner: R) -> MemberDecoder<R> {
        MemberDecoder {
            inner,
            inflate: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            len: 0,
            in_member: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn header(&mut self) -> io::Result<()> {
        let mut fixed = [0u8; 10];
        self.inner.read_exact(&mut fixed)?;
        if fixed[..3] != GZIP_HEADER[..3] {
            return Err(corrupt("not a gzip member header"));
        }
        let flags = fixed[3];
        if flags & FEXTRA != 0 {
            let mut len = [0u8; 2];
            self.inner.read_exact(&mut len)?;
            let len = u64::from(u16::from_le_bytes(len));
            if io::copy(&mut (&mut self.inner).take(len), &mut io::sink())? != len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        for flag in [FNAME, FCOMMENT] {
            if flags & flag != 0 {
                let mut text = Vec::new();
                self.inner.read_until(0, &mut text)?;
                if text.last() != Some(&0) {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        if flags & FHCRC != 0 {
            self.inner.read_exact(&mut [0u8; 2])?;
        }
        self.inflate.reset(false);
        self.crc = crc32fast::Hasher::new();
        self.len = 0;
        Ok(())
    }

    fn trailer(&mut self) -> io::Result<()> {
        let mut trailer = [0u8; 8];
        self.inner.read_exact(&mut trailer)?;
        let crc = std::mem::take(&mut self.crc).finalize();
        if trailer[..4] != crc.to_le_bytes() {
            return Err(corrupt("crc mismatch"));
        }
        if trailer[4..] != self.len.to_le_bytes() {
            return Err(corrupt("length mismatch"));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for MemberDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_member {
                if self.inner.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                self.header()?;
                self.in_member = true;
            }
            let input = self.inner.fill_buf()?;
            let at_eof = input.is_empty();
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(input, out, FlushDecompress::None)
                .map_err(|e| corrupt(&e.to_string()))?;
            let used = (self.inflate.total_in() - in_before) as usize;
            let produced = (self.inflate.total_out() - out_before) as usize;
            self.inner.consume(used);
            self.crc.update(&out[..produced]);
            self.len = self.len.wrapping_add(produced as u32);
            if status == Status::StreamEnd {
                self.trailer()?;
                self.in_member = false;
            } else if at_eof && produced == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }
}

/// Counts the compressed bytes read, to say where damage starts.
pub struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> CountingReader<R> {
        CountingReader { inner, count: 0 }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// What a read error says about a gzip file.
pub fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "truncated gzip data".into(),
        _ => format!("corrupt gzip data: {e}"),
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A data file being written: opened by the writer, written and finished by this stage.
pub struct OpenFile {
    pub file: File,
    /// The `.part` name it is written under.
    pub part: PathBuf,
    /// The name it gets when finished.
    pub done: PathBuf,
}

/// What the writer asks of this stage.
pub enum Job {
    /// Compress `lines` into one member and append it to `file`.
    Member { file: Arc<OpenFile>, lines: Vec<u8> },
    /// Every member of the file has been sent: fsync it and rename it to its final name.
    Finish(Arc<OpenFile>),
    /// Replace a small file whole (`metrics.json`).
    Replace { path: PathBuf, body: Vec<u8> },
}

/// What became of one batch of jobs.
pub struct Done {
    /// Line bytes the batch held, so the writer can account for memory in flight.
    pub lines: usize,
    /// Compressed bytes appended to files.
    pub written: u64,
    /// The first failure; the batch's other jobs are still done, so one bad file costs no other.
    pub result: Result<()>,
}

/// Does batches of jobs in order until the writer drops its sender. The writer batches what one
/// turn of its loop produces: with hundreds of symbols each flushing once a `--flush-ms`, a wake-up
/// per member would cost more than compressing it.
pub fn run(level: u32, batches: Receiver<Vec<Job>>, done: Sender<Done>) {
    let mut encoder = MemberEncoder::new(level);
    let mut member = Vec::new();
    for batch in batches {
        let mut report = Done {
            lines: 0,
            written: 0,
            result: Ok(()),
        };
        for job in batch {
            let result = match job {
                Job::Member { file, lines } => {
                    member.clear();
                    encoder.encode(&lines, &mut member);
                    report.lines += lines.len();
                    report.written += member.len() as u64;
                    (&file.file)
                        .write_all(&member)
                        .map_err(|e| Error::file(&file.part, e))
                }
                Job::Finish(file) => finish(&file),
                Job::Replace { path, body } => write_atomic(&path, &body),
            };
            report.result = report.result.and(result);
        }
        // The writer only goes away after dropping its sender, so this cannot fail while jobs
        // remain; stop quietly if it does.
        if done.send(report).is_err() {
            return;
        }
    }
}

/// Makes the file durable under its final name. The rename happens while the file is still open
/// and locked, so crash recovery in another process never sees an unlocked live `.part`.
fn finish(file: &OpenFile) -> Result<()> {
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

/// Replaces `path` by writing a temporary file beside it and renaming it over.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, body).map_err(|e| Error::file(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::file(path, e))
}

/// Makes a rename durable. Best effort: some filesystems cannot sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_concatenate_into_one_readable_stream() {
        let mut enc = MemberEncoder::new(3);
        let mut file = Vec::new();
        let a = b"{\"a\":1}\n".repeat(1000);
        let b = b"{\"b\":2}\n".to_vec();
        enc.encode(&a, &mut file);
        enc.encode(&b, &mut file);
        enc.encode(b"", &mut file);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&file[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [a, b].concat());
    }

    /// Every gzip file the decoder may meet: obrec's members, and a member with a file name from
    /// another tool.
    #[test]
    fn decoder_reads_members_and_foreign_gzip() {
        let mut file = Vec::new();
        let mut enc = MemberEncoder::new(1);
        let a = b"{\"a\":1}\n".repeat(50_000);
        enc.encode(&a, &mut file);
        enc.encode(b"", &mut file);
        let mut named = flate2::GzBuilder::new()
            .filename("x.ndjson")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::new(6));
        named.write_all(b"tail\n").unwrap();
        file.extend_from_slice(&named.finish().unwrap());
        let mut out = Vec::new();
        MemberDecoder::new(&file[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, [&a[..], b"tail\n"].concat());
    }

    #[test]
    fn decoder_reports_truncation_and_corruption() {
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&b"line\n".repeat(1000), &mut file);
        for cut in [5, 12, file.len() / 2, file.len() - 3] {
            let err = MemberDecoder::new(&file[..cut])
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let mut bad_crc = file.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let err = MemberDecoder::new(&bad_crc[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "crc mismatch");
        let mut trailing = file.clone();
        trailing.extend_from_slice(b"garbage after the member");
        let err = MemberDecoder::new(&trailing[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn jobs_are_written_in_order_then_finished() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x.ndjson.gz.part");
        let open = Arc::new(OpenFile {
            file: File::create(&part).unwrap(),
            part: part.clone(),
            done: dir.path().join("x.ndjson.gz"),
        });
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let stage = std::thread::spawn(move || run(1, jobs_rx, done_tx));
        let mut expected = Vec::new();
        let mut batch = Vec::new();
        for i in 0..50 {
            let lines = format!("{{\"n\":{i}}}\n").repeat(i + 1).into_bytes();
            expected.extend_from_slice(&lines);
            let file = Arc::clone(&open);
            // Single jobs and a batch of several, as the writer sends them.
            batch.push(Job::Member { file, lines });
            if i < 10 || i == 49 {
                jobs_tx.send(std::mem::take(&mut batch)).unwrap();
            }
        }
        jobs_tx.send(vec![Job::Finish(open)]).unwrap();
        drop(jobs_tx);
        stage.join().unwrap();
        let reports: Vec<Done> = done_rx.iter().collect();
        assert_eq!(reports.len(), 12);
        assert!(reports.iter().all(|d| d.result.is_ok()));
        let lines: usize = reports.iter().map(|d| d.lines).sum();
        assert_eq!(lines, expected.len());
        assert!(!part.exists(), "renamed");
        let bytes = fs::read(dir.path().join("x.ndjson.gz")).unwrap();
        let written: u64 = reports.iter().map(|d| d.written).sum();
        assert_eq!(written, bytes.len() as u64);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_failed_finish_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("y.part");
        let open = Arc::new(OpenFile {
            file: File::create(&part).unwrap(),
            part,
            // The rename target's directory does not exist.
            done: dir.path().join("gone").join("y"),
        });
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        jobs_tx.send(vec![Job::Finish(open)]).unwrap();
        drop(jobs_tx);
        run(1, jobs_rx, done_tx);
        let done = done_rx.recv().unwrap();
        assert!(matches!(done.result, Err(Error::File { .. })));
    }
}
