//! The compression stage: a member's worth of lines in, a complete gzip member on disk out.
//!
//! The writer thread formats lines and decides where members end; this thread does the work
//! whose cost grows with the data — deflate, the `write`, and at the end of a file `fsync` and
//! the rename — so neither a member's compression nor a slow disk holds up the events queued
//! behind it. Jobs are done in the order they were sent, which keeps each file's members in order
//! and lets a file be finished right after its last member with no other coordination.
//!
//! When the stage falls behind, it compresses faster rather than let the queue in front of it
//! fill: with more line bytes waiting than [`FAST_AT`], members are compressed at level 1; past
//! [`STORE_AT`] they are stored (level 0, no compression, bounded only by the disk); once the
//! backlog is down to [`CALM_AT`] the run's `--gzip-level` comes back. A member's level changes
//! its size only: every member is a complete gzip member of the same lines.
//!
//! The checks of the data directory are done here too, for the same reason: on a busy disk even
//! creating a file can wait. Once the directory is gone, nothing more is attempted in it, so the
//! run ends on that one failure rather than on one per file.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::store::gzip::{MEMBER_BYTES, MemberEncoder};
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

/// Line bytes waiting past which members are compressed at level 1: four members, a quarter of
/// what the writer lets wait before it stops taking events.
pub const FAST_AT: usize = 4 * MEMBER_BYTES;
/// Line bytes waiting past which members are stored uncompressed: three quarters of what the
/// writer lets wait, so the stage empties its backlog at disk speed before the readers must wait.
pub const STORE_AT: usize = 12 * MEMBER_BYTES;
/// Line bytes waiting at or below which the run's own level comes back: one member, so that a
/// backlog hovering around [`FAST_AT`] does not flip the level at every member.
pub const CALM_AT: usize = MEMBER_BYTES;
/// gzip levels 0 (stored) to 9.
pub const LEVELS: usize = 10;

/// The level each member is compressed at, from the backlog behind it.
#[derive(Debug)]
struct Gears {
    /// `--gzip-level`: the level of a stage that keeps up.
    chosen: u32,
    /// The level in use, kept between [`CALM_AT`] and [`FAST_AT`].
    current: u32,
}

impl Gears {
    fn new(chosen: u32) -> Gears {
        Gears {
            chosen,
            current: chosen,
        }
    }

    /// The level for the next member with `backlog` line bytes waiting behind it.
    fn level(&mut self, backlog: usize) -> u32 {
        self.current = if backlog > STORE_AT {
            0
        } else if backlog > FAST_AT {
            self.chosen.min(1)
        } else if backlog <= CALM_AT {
            self.chosen
        } else {
            self.current
        };
        self.current
    }
}

/// What became of one batch of jobs.
pub struct Done {
    /// Line bytes the batch held, so the writer can account for memory in flight.
    pub lines: usize,
    /// Compressed bytes appended to files.
    pub written: u64,
    /// Members written, by the gzip level they were compressed at.
    pub members_by_level: [u64; LEVELS],
    /// The first failure; the batch's other jobs are still done, so one bad file costs no other.
    pub result: Result<()>,
}

/// Line bytes of a batch's members.
fn member_bytes(batch: &[Job]) -> usize {
    batch
        .iter()
        .map(|job| match job {
            Job::Member { lines, .. } => lines.len(),
            _ => 0,
        })
        .sum()
}

/// Does batches of jobs in order until the writer drops its sender. The writer batches what one
/// turn of its loop produces: with hundreds of symbols each flushing once a `--flush-ms`, a wake-up
/// per member would cost more than compressing it.
///
/// Every batch sent is taken off the channel before the next member is compressed, so the stage
/// knows its whole backlog; the writer bounds what it sends, so this holds no more than the
/// channel would.
pub fn run(level: u32, dir: &DirWatch, batches: Receiver<Vec<Job>>, done: Sender<Done>) {
    let mut gears = Gears::new(level);
    // One encoder per level used, made on first use: at most three (the run's, 1 and 0).
    let mut encoders: [Option<MemberEncoder>; LEVELS] = Default::default();
    let mut member = Vec::new();
    let mut waiting = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match batches.recv() {
                Ok(batch) => waiting.push_back(batch),
                Err(_) => return,
            }
        }
        waiting.extend(batches.try_iter());
        // Counted down as members are done: each is compressed knowing what waits behind it.
        let mut backlog: usize = waiting.iter().map(|b: &Vec<Job>| member_bytes(b)).sum();
        let Some(batch) = waiting.pop_front() else {
            continue;
        };
        let mut report = Done {
            lines: 0,
            written: 0,
            members_by_level: [0; LEVELS],
            result: Ok(()),
        };
        for job in batch {
            if let Job::Member { lines, .. } = &job {
                report.lines += lines.len();
                backlog -= lines.len();
            }
            if dir.is_lost() {
                // Its failure was reported; files already open stay `.part` wherever they went.
                continue;
            }
            let result = match job {
                Job::Member { file, lines } => {
                    let level = gears.level(backlog);
                    let encoder =
                        encoders[level as usize].get_or_insert_with(|| MemberEncoder::new(level));
                    member.clear();
                    encoder.encode(&lines, &mut member);
                    report.members_by_level[level as usize] += 1;
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

    /// A staged file `<name>.part` in `dir`, to be renamed to `<name>`.
    fn staged(dir: &std::path::Path, name: &str) -> (Arc<OpenFile>, PathBuf) {
        let part = dir.join(format!("{name}.part"));
        let open = OpenFile::new(File::create(&part).unwrap(), part.clone(), dir.join(name));
        (Arc::new(open), part)
    }

    #[test]
    fn jobs_are_written_in_order_then_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (open, part) = staged(dir.path(), "x.ndjson.gz");
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
        // Far below any backlog threshold: every member at the run's level.
        let members: u64 = reports.iter().map(|d| d.members_by_level[1]).sum();
        assert_eq!(members, 50);
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
    fn the_level_drops_as_the_backlog_grows_and_comes_back_once_it_drains() {
        // (backlog behind the member, level expected), in order, from a run at level 6.
        let steps = [
            (0, 6),
            (FAST_AT, 6),
            (FAST_AT + 1, 1),
            // Between calm and fast the level in use is kept, either way.
            (2 * MEMBER_BYTES, 1),
            (STORE_AT + 1, 0),
            (STORE_AT, 1),
            (CALM_AT + 1, 1),
            (CALM_AT, 6),
            (2 * MEMBER_BYTES, 6),
        ];
        let mut gears = Gears::new(6);
        for (backlog, level) in steps {
            assert_eq!(gears.level(backlog), level, "backlog {backlog}");
        }
        // A run already at level 1 has only storing left to speed up with.
        let mut fast = Gears::new(1);
        assert_eq!(fast.level(FAST_AT + 1), 1);
        assert_eq!(fast.level(STORE_AT + 1), 0);
    }

    /// A backlog past every threshold, waiting before the stage starts: the first members are
    /// stored, later ones compressed faster, the last at the run's level, and the file holds
    /// every line in order whatever each member's level.
    #[test]
    fn a_backlog_is_written_faster_and_the_lines_stay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (open, _) = staged(dir.path(), "b.ndjson.gz");
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut expected = Vec::new();
        let members = STORE_AT / MEMBER_BYTES + 4;
        for i in 0..members {
            let line = format!("{{\"member\":{i},\"pad\":\"{}\"}}\n", "p".repeat(100));
            let lines = line.repeat(MEMBER_BYTES / line.len() + 1).into_bytes();
            expected.extend_from_slice(&lines);
            let file = Arc::clone(&open);
            jobs_tx.send(vec![Job::Member { file, lines }]).unwrap();
        }
        jobs_tx.send(vec![Job::Finish(open)]).unwrap();
        drop(jobs_tx);
        run(6, &DirWatch::new(dir.path()).unwrap(), jobs_rx, done_tx);
        let mut by_level = [0; LEVELS];
        for done in done_rx.iter() {
            assert!(done.result.is_ok());
            for (level, n) in done.members_by_level.iter().enumerate() {
                by_level[level] += n;
            }
        }
        assert!(by_level[0] > 0, "{by_level:?}");
        assert!(by_level[1] > 0, "{by_level:?}");
        assert!(by_level[6] > 0, "{by_level:?}");
        assert_eq!(by_level.iter().sum::<u64>(), members as u64);
        let bytes = fs::read(dir.path().join("b.ndjson.gz")).unwrap();
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
