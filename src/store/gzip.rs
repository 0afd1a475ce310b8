//! gzip as obrec writes it: files made of complete members, so that a file is readable up to
//! its last flush at any instant; and [`MemberDecoder`], which reads any gzip file back and
//! yields a member's bytes only once its CRC is checked.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};

/// Raw line bytes that trigger a member before the flush timer does. Large enough that a member
/// boundary (which resets the compression dictionary) costs nothing measurable in ratio, small
/// enough that hundreds of symbols' buffers stay a few MB.
pub const MEMBER_BYTES: usize = 1 << 20;

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

/// Decoded bytes of one member held back until its CRC is checked. Holds any member obrec writes
/// ([`MEMBER_BYTES`] of lines plus the line that crossed it) with room to spare; a larger member
/// (another tool's single-member file, a hostile one) is checked in a first pass that keeps
/// nothing and read in a second, so memory stays at this bound whatever the input.
const MAX_HELD: usize = 4 * MEMBER_BYTES;

/// Reads a file of gzip members (any gzip file) as one stream, and yields no byte of a member
/// before that member's CRC and length are checked: a damaged member ends the stream with an
/// error before its first byte, so a reader counting lines reports the damage at the first line
/// of that member and never uses altered data.
///
/// The one exception is a member the file ends inside, as a killed writer leaves it (another
/// tool's single-member file, a live `.part`): its CRC was never written, so nothing can check
/// its bytes; they are yielded up to the cut, then the truncation is reported. Crash recovery,
/// which must not copy unchecked bytes, uses [`check_member`] instead.
///
/// flate2's own gzip reader checks CRCs with a portable table-driven routine that took a sixth of
/// `obrec replay`'s time; crc32fast uses the CPU's carry-less multiply.
pub struct MemberDecoder<R> {
    inner: R,
    inflate: Decompress,
    /// The current member's checked bytes are `held[..len]`, and `held[at..len]` are not yet
    /// read. Only grows, so that its bytes are zeroed once, not once a member.
    held: Vec<u8>,
    len: usize,
    at: usize,
    /// The second pass over a member too large to hold, already checked once.
    streaming: Option<Check>,
    /// The file ends inside the held member: reported once its bytes are read.
    cut: Option<io::Error>,
}

/// A member's running CRC and length, compared with its trailer at its end.
#[derive(Default)]
struct Check {
    crc: crc32fast::Hasher,
    /// Uncompressed length modulo 2^32, as the trailer stores it.
    len: u32,
}

impl Check {
    fn update(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.len = self.len.wrapping_add(bytes.len() as u32);
    }

    /// Reads the 8-byte trailer and compares it.
    fn verify(self, inner: &mut impl Read) -> io::Result<()> {
        let mut trailer = [0u8; 8];
        inner.read_exact(&mut trailer)?;
        if trailer[..4] != self.crc.finalize().to_le_bytes() {
            return Err(corrupt("crc mismatch"));
        }
        if trailer[4..] != self.len.to_le_bytes() {
            return Err(corrupt("length mismatch"));
        }
        Ok(())
    }
}

/// Header flag bits (RFC 1952).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// Reads a member header, any flags included.
fn read_header(inner: &mut impl BufRead) -> io::Result<()> {
    let mut fixed = [0u8; 10];
    inner.read_exact(&mut fixed)?;
    if fixed[..3] != GZIP_HEADER[..3] {
        return Err(corrupt("not a gzip member header"));
    }
    let flags = fixed[3];
    if flags & FEXTRA != 0 {
        let mut len = [0u8; 2];
        inner.read_exact(&mut len)?;
        let len = u64::from(u16::from_le_bytes(len));
        if io::copy(&mut inner.take(len), &mut io::sink())? != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            // Bounded like the rest: a name without its end is damage, not a reason to buffer.
            let mut skipped = 0usize;
            loop {
                let buf = inner.fill_buf()?;
                if buf.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                match memchr::memchr(0, buf) {
                    Some(end) => {
                        inner.consume(end + 1);
                        break;
                    }
                    None => {
                        skipped += buf.len();
                        let n = buf.len();
                        inner.consume(n);
                    }
                }
                if skipped > MAX_HELD {
                    return Err(corrupt("gzip header name too long"));
                }
            }
        }
    }
    if flags & FHCRC != 0 {
        inner.read_exact(&mut [0u8; 2])?;
    }
    Ok(())
}

/// Inflates from `inner` into `out` until `out` has data or the member's deflate data ends;
/// returns the bytes produced and whether the deflate data ended.
fn inflate_some(
    inflate: &mut Decompress,
    inner: &mut impl BufRead,
    out: &mut [u8],
) -> io::Result<(usize, bool)> {
    loop {
        let input = inner.fill_buf()?;
        let at_eof = input.is_empty();
        let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(input, out, FlushDecompress::None)
            .map_err(|e| corrupt(&e.to_string()))?;
        let used = (inflate.total_in() - in_before) as usize;
        let produced = (inflate.total_out() - out_before) as usize;
        inner.consume(used);
        if status == Status::StreamEnd {
            return Ok((produced, true));
        }
        if produced > 0 {
            return Ok((produced, false));
        }
        if at_eof && used == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Checks one whole member at the reader's position (header, deflate data, CRC and length),
/// keeping none of its bytes, and returns the number of line ends in it; `scratch` is reused
/// output space. Crash recovery uses it to tell intact members from damage.
pub fn check_member(inner: &mut impl BufRead, scratch: &mut Vec<u8>) -> io::Result<u64> {
    scratch.resize(SCRATCH, 0);
    read_header(inner)?;
    let mut inflate = Decompress::new(false);
    let mut check = Check::default();
    let mut lines = 0;
    loop {
        let (n, end) = inflate_some(&mut inflate, inner, scratch)?;
        check.update(&scratch[..n]);
        lines += memchr::memchr_iter(b'\n', &scratch[..n]).count() as u64;
        if end {
            return check.verify(inner).map(|()| lines);
        }
    }
}

/// Output space for a pass that keeps nothing.
const SCRATCH: usize = 1 << 16;

impl<R: BufRead + Seek> MemberDecoder<R> {
    pub fn new(inner: R) -> MemberDecoder<R> {
        MemberDecoder {
            inner,
            inflate: Decompress::new(false),
            held: Vec::new(),
            len: 0,
            at: 0,
            streaming: None,
            cut: None,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads the next member: holds it whole once checked, or checks it and rewinds for a
    /// second, streamed pass when it is larger than [`MAX_HELD`]. False at the end of the input.
    fn next_member(&mut self) -> io::Result<bool> {
        self.len = 0;
        self.at = 0;
        if self.inner.fill_buf()?.is_empty() {
            return Ok(false);
        }
        read_header(&mut self.inner)?;
        self.inflate.reset(false);
        let mut check = Check::default();
        let checked = loop {
            let filled = self.len;
            if filled == MAX_HELD {
                return self.check_then_stream(check);
            }
            if filled == self.held.len() {
                // Grows with the largest member, never past the bound.
                let want = (filled + SCRATCH).max(2 * filled).min(MAX_HELD);
                self.held.resize(want, 0);
            }
            let step = inflate_some(&mut self.inflate, &mut self.inner, &mut self.held[filled..]);
            let Ok((n, end)) = step else {
                break step.map(|_| ());
            };
            self.len += n;
            check.update(&self.held[filled..self.len]);
            if end {
                break check.verify(&mut self.inner);
            }
        };
        match checked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.cut = Some(e);
                Ok(true)
            }
            Err(e) => {
                self.len = 0;
                Err(e)
            }
        }
    }

    /// The first pass over a member too large to hold: check it to its trailer, then go back to
    /// its deflate data for the pass that yields it.
    fn check_then_stream(&mut self, mut check: Check) -> io::Result<bool> {
        let data_start = self.inner.stream_position()? - self.inflate.total_in();
        let checked = loop {
            match inflate_some(&mut self.inflate, &mut self.inner, &mut self.held) {
                Ok((n, end)) => {
                    check.update(&self.held[..n]);
                    if end {
                        break check.verify(&mut self.inner);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        self.len = 0;
        match checked {
            // Cut short: the second pass yields up to the cut and reports it there.
            Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => return Err(e),
            _ => {}
        }
        self.inner.seek(SeekFrom::Start(data_start))?;
        self.inflate.reset(false);
        self.streaming = Some(Check::default());
        Ok(true)
    }

    /// The second pass over a large member. Its bytes were checked in the first (unless the file
    /// ends inside it); a mismatch now means the file changed between the passes.
    fn stream(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let (n, end) = inflate_some(&mut self.inflate, &mut self.inner, out)?;
        let check = self.streaming.as_mut().expect("streaming");
        check.update(&out[..n]);
        if end {
            let check = self.streaming.take().expect("streaming");
            match check.verify(&mut self.inner) {
                Ok(()) => {}
                // The trailer is cut: these last bytes are read, the cut reported next.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.cut = Some(e),
                Err(_) => return Err(corrupt("file changed while read")),
            }
        }
        Ok(n)
    }
}

impl<R: BufRead + Seek> Read for MemberDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.at < self.len {
                let n = out.len().min(self.len - self.at);
                out[..n].copy_from_slice(&self.held[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if let Some(cut) = self.cut.take() {
                return Err(cut);
            }
            if self.streaming.is_some() {
                let n = self.stream(out)?;
                if n > 0 {
                    return Ok(n);
                }
                continue;
            }
            if !self.next_member()? {
                return Ok(0);
            }
        }
    }
}

/// Where the next member header (`1f 8b 08`) starts at or after the reader's position, read
/// forward from there; `None` when there is none before the end.
pub fn find_header(inner: &mut impl BufRead) -> io::Result<Option<u64>> {
    const MAGIC: [u8; 3] = [GZIP_HEADER[0], GZIP_HEADER[1], GZIP_HEADER[2]];
    let finder = memchr::memmem::Finder::new(&MAGIC);
    let keep = MAGIC.len() - 1;
    let mut offset = 0u64;
    // The last bytes before `offset`, in case the magic straddles two reads.
    let mut tail: Vec<u8> = Vec::with_capacity(2 * keep);
    let mut window: Vec<u8> = Vec::with_capacity(2 * keep);
    loop {
        let buf = inner.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        window.clear();
        window.extend_from_slice(&tail);
        window.extend_from_slice(&buf[..buf.len().min(keep)]);
        if let Some(i) = finder.find(&window) {
            return Ok(Some(offset - tail.len() as u64 + i as u64));
        }
        if let Some(i) = finder.find(buf) {
            return Ok(Some(offset + i as u64));
        }
        let n = buf.len();
        tail.extend_from_slice(&buf[n.saturating_sub(keep)..]);
        tail.drain(..tail.len().saturating_sub(keep));
        offset += n as u64;
        inner.consume(n);
    }
}

/// Opens a recording for reading. Anything but a regular file (a FIFO, a device, a directory) is
/// refused before it is opened, since opening or reading it could block forever; the open file
/// is checked again in case the name was swapped in between.
pub fn open_recording(path: &Path) -> Result<File> {
    let not_regular = || {
        Error::file(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path).map_err(|e| Error::file(path, e))?;
    let meta = file.metadata().map_err(|e| Error::file(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(file)
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

/// A seek (the second pass over a large member) moves the count to the new position, so that it
/// still says where in the compressed file reading is.
impl<R: Seek> Seek for CountingReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.count = self.inner.seek(pos)?;
        Ok(self.count)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Read, Write};

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
        MemberDecoder::new(Cursor::new(&file))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [&a[..], b"tail\n"].concat());
    }

    #[test]
    fn decoder_reports_truncation_and_corruption() {
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&b"line\n".repeat(1000), &mut file);
        for cut in [5, 12, file.len() / 2, file.len() - 3] {
            let err = MemberDecoder::new(Cursor::new(&file[..cut]))
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let mut bad_crc = file.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let err = MemberDecoder::new(Cursor::new(&bad_crc))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "crc mismatch");
        let mut trailing = file.clone();
        trailing.extend_from_slice(b"garbage after the member");
        let err = MemberDecoder::new(Cursor::new(&trailing))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    /// The lines a reader gets before the first error, and that error.
    fn lines_until_error(file: &[u8]) -> (Vec<String>, Option<io::Error>) {
        let mut reader = BufReader::new(MemberDecoder::new(Cursor::new(file)));
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return (lines, None),
                Ok(_) => lines.push(line),
                Err(e) => return (lines, Some(e)),
            }
        }
    }

    /// A member whose deflate data was replaced (it inflates, to other bytes of the same length)
    /// under its original trailer: none of its lines may come out, and the lines before it all do.
    #[test]
    fn an_altered_member_yields_none_of_its_lines() {
        let mut enc = MemberEncoder::new(1);
        let first = b"{\"p\":\"17.461\"}\n".repeat(2000);
        let second = b"{\"p\":\"17.463\"}\n".repeat(2000);
        let third = b"{\"p\":\"17.465\"}\n".repeat(2000);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        enc.encode(&first, &mut a);
        enc.encode(&second, &mut b);
        enc.encode(&third, &mut c);
        let mut forged = Vec::new();
        enc.encode(&b"{\"p\":\"17.468\"}\n".repeat(2000), &mut forged);
        let at = forged.len() - 8;
        forged[at..].copy_from_slice(&b[b.len() - 8..]);
        let file = [&a[..], &forged, &c].concat();
        let (lines, err) = lines_until_error(&file);
        assert_eq!(lines.len(), 2000, "exactly the first member's lines");
        assert!(lines.iter().all(|l| l.contains("17.461")));
        assert_eq!(err.unwrap().to_string(), "crc mismatch");
    }

    /// A member larger than the decoder holds is checked before its first byte comes out, in
    /// either pass, and read whole when intact.
    #[test]
    fn a_member_too_large_to_hold_is_checked_first() {
        let big: Vec<u8> = (0..MAX_HELD / 8 + 1000)
            .flat_map(|i| format!("{:07}\n", i % 10_000_000).into_bytes())
            .collect();
        assert!(big.len() > MAX_HELD);
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&big, &mut file);
        MemberEncoder::new(1).encode(b"after\n", &mut file);
        let mut out = Vec::new();
        MemberDecoder::new(Cursor::new(&file))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [&big[..], b"after\n"].concat());

        let mut bad = Vec::new();
        MemberEncoder::new(1).encode(&big, &mut bad);
        let at = bad.len() - 6;
        bad[at] ^= 1;
        let (lines, err) = lines_until_error(&bad);
        assert!(
            lines.is_empty(),
            "{} lines of a damaged member",
            lines.len()
        );
        assert_eq!(err.unwrap().to_string(), "crc mismatch");
    }

    #[test]
    fn headers_are_found_across_reads() {
        let mut data = vec![0u8; 100];
        data.extend_from_slice(&GZIP_HEADER);
        for capacity in [1, 2, 3, 5, 64] {
            let mut reader = BufReader::with_capacity(capacity, &data[..]);
            assert_eq!(find_header(&mut reader).unwrap(), Some(100), "{capacity}");
        }
        let mut none = BufReader::with_capacity(4, &data[..101]);
        assert_eq!(find_header(&mut none).unwrap(), None);
    }

    /// Opening a FIFO for reading would wait for a writer forever.
    #[test]
    fn a_fifo_named_like_a_recording_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ethusdt_depth_20261120T000000Z.ndjson.gz");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = open_recording(&fifo).unwrap_err();
        assert!(err.to_string().ends_with(": not a regular file"), "{err}");
        assert!(open_recording(dir.path()).is_err(), "a directory");
    }

    /// What a killed writer leaves (no trailer to check) is read up to the cut, then reported,
    /// whether the member is held or streamed.
    #[test]
    fn a_member_cut_by_the_end_of_the_file_is_read_up_to_the_cut() {
        for count in [1000, MAX_HELD / 8 + 1000] {
            let text: Vec<u8> = (0..count)
                .flat_map(|i| format!("{:07}\n", i).into_bytes())
                .collect();
            let mut file = Vec::new();
            MemberEncoder::new(1).encode(&text, &mut file);
            let cut = &file[..file.len() - 4];
            let (lines, err) = lines_until_error(cut);
            assert_eq!(lines.len(), count, "every line before the missing trailer");
            assert_eq!(err.unwrap().kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// With bytes changed anywhere but in the last member, what comes out is the original
        /// text up to a member boundary: never a byte of a member that failed its check. (A
        /// change in the last member can make it look cut by the end of the file, whose bytes
        /// cannot be checked: see [`MemberDecoder`].)
        #[test]
        fn damage_never_yields_altered_bytes(
            texts in proptest::collection::vec("[a-z0-9\n]{0,3000}", 2..6),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1..=255u8), 0..4),
        ) {
            let mut enc = MemberEncoder::new(1);
            let mut file = Vec::new();
            let mut ends = vec![0];
            let mut last_start = 0;
            for t in &texts {
                last_start = file.len();
                enc.encode(t.as_bytes(), &mut file);
                ends.push(ends.last().unwrap() + t.len());
            }
            for (at, x) in &flips {
                file[at % last_start] ^= x;
            }
            let mut out = Vec::new();
            let result = MemberDecoder::new(Cursor::new(&file)).read_to_end(&mut out);
            let original = texts.concat();
            proptest::prop_assert!(original.as_bytes().starts_with(&out));
            proptest::prop_assert!(ends.contains(&out.len()), "stopped inside a member");
            if result.is_ok() {
                proptest::prop_assert_eq!(out.len(), original.len());
            }
        }
    }
}
