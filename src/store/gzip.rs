//! gzip as obrec writes it: files made of complete members, so that a file is readable up to
//! its last flush at any instant; and [`MemberDecoder`], which reads any gzip file back and checks
//! every member's CRC.

use std::io::{self, BufRead, Read};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
}
