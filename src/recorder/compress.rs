//! The compression stage: a member's worth of lines in, a complete gzip member on disk out.
//!
//! The writer thread formats lines and decides where members end; this thread does the work
//! whose cost grows with the data — deflate, the `write`, and at the end of a file `fsync` and
//! the rename — so neither a member's compression nor a slow disk holds up the events queued
//! behind it. Jobs are done in the order they were sent, which keeps each file's members in order
//! and lets a file be finished right after its last member with no other coordination.
//!
//! The checks of the data directory are done here too, for the same reason: on a busy disk even
//! creating a file can wait. Once the directory is gone, nothing more is attempted in it, so the
//! run ends on that one failure rather than on one per file.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::store::gzip::MemberEncoder;
use crate::store::staged::{DirWatch, OpenFile, finish, write_atomic};

/// What the writer asks of this stage.
pub enum Job {
    /// Compress `lines` into one member and append it to `file`.
    Member { file: Arc<OpenFile>, lines: Vec<u8> },
    /// Every member of the file has been sent: fsync it and rename it to its final name.
    Finish(Arc<OpenFile>),
    /// Replace a small file whole (`metrics.json`).
    Replace { path: PathBuf, body: Vec<u8> },
    /// Check that the data directory is still there and writable.
    CheckDir,
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
pub fn run(level: u32, dir: &DirWatch, batches: Receiver<Vec<Job>>, done: Sender<Done>) {
    let mut encoder = MemberEncoder::new(level);
    let mut member = Vec::new();
    for batch in batches {
        let mut report = Done {
            lines: 0,
            written: 0,
            result: Ok(()),
        };
        for job in batch {
            if let Job::Member { lines, .. } = &job {
                report.lines += lines.len();
            }
            if dir.is_lost() {
                // Its failure was reported; files already open stay `.part` wherever they went.
                continue;
            }
            let result = match job {
                Job::Member { file, lines } => {
                    member.clear();
                    encoder.encode(&lines, &mut member);
                    file.append(&member)
                        .map(|()| report.written += member.len() as u64)
                }
                Job::Finish(file) => finish(&file),
                Job::Replace { path, body } => write_atomic(&path, &body),
                Job::CheckDir => dir.check(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::fs::{self, File};
    use std::io::Read;

    #[test]
    fn jobs_are_written_in_order_then_finished() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x.ndjson.gz.part");
        let open = Arc::new(OpenFile::new(
            File::create(&part).unwrap(),
            part.clone(),
            dir.path().join("x.ndjson.gz"),
        ));
        let watch = DirWatch::new(dir.path()).unwrap();
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let stage = std::thread::spawn(move || run(1, &watch, jobs_rx, done_tx));
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
        let open = Arc::new(OpenFile::new(
            File::create(&part).unwrap(),
            part,
            // The rename target's directory does not exist.
            dir.path().join("gone").join("y"),
        ));
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        jobs_tx.send(vec![Job::Finish(open)]).unwrap();
        drop(jobs_tx);
        run(1, &DirWatch::new(dir.path()).unwrap(), jobs_rx, done_tx);
        let done = done_rx.recv().unwrap();
        assert!(matches!(done.result, Err(Error::File { .. })));
    }

    /// After the directory is found gone, the jobs queued behind the check are not attempted:
    /// the run ends on that one failure, and the file keeps its `.part` name.
    #[test]
    fn nothing_is_attempted_in_a_directory_found_gone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("order_book");
        fs::create_dir(&dir).unwrap();
        let part = dir.join("z.part");
        let open = Arc::new(OpenFile::new(
            File::create(&part).unwrap(),
            part,
            dir.join("z"),
        ));
        let watch = DirWatch::new(&dir).unwrap();
        let moved = root.path().join("moved");
        fs::rename(&dir, &moved).unwrap();
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let lines = b"{}\n".to_vec();
        let file = Arc::clone(&open);
        jobs_tx
            .send(vec![
                Job::CheckDir,
                Job::Member { file, lines },
                Job::Finish(open),
            ])
            .unwrap();
        drop(jobs_tx);
        run(1, &watch, jobs_rx, done_tx);
        let done = done_rx.recv().unwrap();
        let err = done.result.unwrap_err().to_string();
        assert!(
            err.ends_with("order_book: moved or removed while recording"),
            "{err}"
        );
        assert_eq!((done.lines, done.written), (3, 0));
        assert_eq!(fs::read(moved.join("z.part")).unwrap(), b"");
    }
}
