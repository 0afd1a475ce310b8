//! One input's lines of one series: its files in name order, each read up to its damage, event
//! lines parsed for where they stand in the series, meta lines handed over as they come.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::market::kind::{Kind, KindIds};
use crate::market::sequence::Ids;
use crate::offline::progress::file_done;
use crate::store::line::{is_meta, parse_depth, parse_kind, parse_meta, parse_snapshot};
use crate::store::lines::{FileLines, LineError, open_lines};
use crate::store::names::FileKind;
use crate::util::shutdown::Shutdown;

/// What an event's ids say about its place in its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// A depth event's `U`, `u` and `pu`.
    Depth(Ids),
    /// An event of a stream beside the book: its ids and event time.
    Kind { ids: KindIds, event_ms: u64 },
    /// A REST snapshot's `lastUpdateId`.
    Snapshot(u64),
}

/// One event line, owned: it waits as its input's head while the other inputs catch up.
pub(super) struct Event {
    /// The line as recorded, with its newline: copied to the output as is.
    pub bytes: Vec<u8>,
    /// Where it stands in its series.
    pub place: Place,
    /// Receipt, ns since the Unix epoch: the earliest of two copies is kept, and it dates gaps.
    pub recv_ns: u64,
    /// Fetched over REST after the stream lost it: a live copy of the same event is preferred.
    pub backfill: bool,
    /// Where the payload is in `bytes`: two events at one time are told apart by it.
    data: Range<usize>,
    /// Where the stream name is in `bytes` (depth only): copies of different streams (speeds,
    /// partial or diff) do not merge.
    stream: Range<usize>,
}

impl Event {
    /// Where the event stands in its series: depth `u`, trade `t`, aggTrade `a`, bookTicker `u`,
    /// mark price and liquidation `E`, snapshot `lastUpdateId`.
    pub fn pos(&self) -> u64 {
        match self.place {
            Place::Depth(ids) => ids.last,
            Place::Kind { ids, event_ms } => match ids {
                KindIds::Trade { t } => t,
                KindIds::AggTrade { a, .. } => a,
                KindIds::BookTicker { u } => u,
                KindIds::None => event_ms,
            },
            Place::Snapshot(last_update_id) => last_update_id,
        }
    }

    /// The event's identity: its position, and where that is a time (mark price, liquidations:
    /// two may share a millisecond) its payload's CRC-32; copies of one event have one identity.
    pub fn identity(&self) -> (u64, u32) {
        let tag = match self.place {
            Place::Kind {
                ids: KindIds::None, ..
            } => crc32fast::hash(&self.bytes[self.data.clone()]),
            _ => 0,
        };
        (self.pos(), tag)
    }

    pub fn stream(&self) -> &[u8] {
        &self.bytes[self.stream.clone()]
    }
}

/// The offset of `part` in `whole`, which holds it.
fn range_in(whole: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// What [`Input::advance`] found next.
pub(super) enum Next {
    /// A new head event.
    Event,
    /// A meta line, in [`Input::meta`], to be written where it stands.
    Meta,
    /// The input has no more lines of the series.
    End,
}

/// What every input shares while it is read: where damage is noted, the progress bar, and the
/// token that stops the merge.
pub(super) struct Reading {
    /// Inputs read only up to damage: `<file>: line N: <what> (read up to line N-1)`.
    pub damaged: Vec<String>,
    /// Over the compressed bytes of every input, on a terminal only.
    pub progress: Option<indicatif::ProgressBar>,
    /// Once triggered, the merge stops between two lines.
    pub shutdown: Shutdown,
}

/// One input's files of one series.
pub(super) struct Input {
    /// What the files hold: how their event lines are read.
    kind: FileKind,
    /// Files still to open, in name order (time order).
    files: std::vec::IntoIter<PathBuf>,
    /// The file being read.
    open: Option<(PathBuf, FileLines)>,
    /// The next event of the input, not yet merged; `None` once the input is spent.
    pub head: Option<Event>,
    /// The meta line last found, with its newline.
    pub meta: Vec<u8>,
    /// That meta line's receipt: which output file it goes to.
    pub meta_recv_ns: u64,
    /// A spent head's buffer, reused for the next line.
    spare: Vec<u8>,
}

impl Input {
    pub fn new(kind: FileKind, files: Vec<PathBuf>) -> Input {
        Input {
            kind,
            files: files.into_iter(),
            open: None,
            head: None,
            meta: Vec::new(),
            meta_recv_ns: 0,
            spare: Vec::new(),
        }
    }

    /// Reads on to the next event (the new [`head`](Self::head)) or meta line. A file's damage
    /// ends that file: it is noted and the next file is read.
    ///
    /// # Errors
    /// A file cannot be opened.
    pub fn advance(&mut self, reading: &mut Reading) -> Result<Next> {
        if let Some(spent) = self.head.take() {
            self.spare = spent.bytes;
        }
        loop {
            let Some((path, lines)) = &mut self.open else {
                let Some(path) = self.files.next() else {
                    return Ok(Next::End);
                };
                let lines = open_lines(&path)?;
                self.open = Some((path, lines));
                continue;
            };
            let line_no = lines.line_no() + 1;
            let damage = match lines.next_line() {
                Ok(Some(line)) if line.terminated => {
                    let mut bytes = std::mem::take(&mut self.spare);
                    bytes.clear();
                    bytes.extend_from_slice(line.bytes);
                    bytes.push(b'\n');
                    if is_meta(&bytes) {
                        match parse_meta(&bytes) {
                            Ok(meta) => {
                                self.meta_recv_ns = meta.recv_ns;
                                self.spare = std::mem::replace(&mut self.meta, bytes);
                                return Ok(Next::Meta);
                            }
                            Err(what) => what,
                        }
                    } else {
                        match parse(self.kind, bytes) {
                            Ok(event) => {
                                self.head = Some(event);
                                return Ok(Next::Event);
                            }
                            Err(what) => what,
                        }
                    }
                }
                Ok(Some(_)) => "last line is cut short".to_string(),
                Ok(None) => {
                    file_done(reading.progress.as_ref(), path);
                    self.open = None;
                    continue;
                }
                Err(e @ LineError::TooLong) => e.describe(None),
                Err(e) => e.describe(Some(lines.compressed_at())),
            };
            reading.damaged.push(damaged(path, line_no, &damage));
            file_done(reading.progress.as_ref(), path);
            self.open = None;
        }
    }
}

/// `<file>: line N: <what> (read up to line N-1)`.
fn damaged(path: &Path, line_no: u64, what: &str) -> String {
    format!(
        "{}: line {line_no}: {what} (read up to line {})",
        path.display(),
        line_no - 1
    )
}

/// Reads an event line of a `kind` file.
fn parse(kind: FileKind, bytes: Vec<u8>) -> std::result::Result<Event, String> {
    let (place, recv_ns, backfill, data, stream) = match kind {
        FileKind::Depth => {
            let line = parse_depth(&bytes)?;
            (
                Place::Depth(line.ids),
                line.recv_ns,
                false,
                range_in(&bytes, line.data),
                range_in(&bytes, line.stream),
            )
        }
        FileKind::Stream(stream_kind) => {
            let line = parse_kind(&bytes)?;
            let fits = matches!(
                (stream_kind, line.ids),
                (Kind::Trade, KindIds::Trade { .. })
                    | (Kind::AggTrade, KindIds::AggTrade { .. })
                    | (Kind::BookTicker, KindIds::BookTicker { .. })
                    | (Kind::MarkPrice | Kind::ForceOrder, KindIds::None)
            );
            if !fits {
                return Err(format!(
                    "not a {stream_kind} line: its ids are another kind's"
                ));
            }
            let place = Place::Kind {
                ids: line.ids,
                event_ms: line.event_ms,
            };
            (
                place,
                line.recv_ns,
                line.backfill,
                range_in(&bytes, line.data),
                0..0,
            )
        }
        FileKind::Snapshot => {
            let line = parse_snapshot(&bytes)?;
            (
                Place::Snapshot(line.last_update_id),
                line.recv_ns,
                false,
                range_in(&bytes, line.data),
                0..0,
            )
        }
    };
    Ok(Event {
        bytes,
        place,
        recv_ns,
        backfill,
        data,
        stream,
    })
}
