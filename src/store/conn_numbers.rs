//! Connection numbers that keep rising across runs in one data directory.
//!
//! Every depth line names the connection that delivered it, and replay reads a change of number
//! as a reconnect: the chain restarts, and the missed events are a reconnect gap, not the
//! exchange's loss. A run that started again at 1 would look, to replay, like the previous run's
//! connection carrying on with a hole in it, i.e. a break. So the last number handed out is kept
//! in `order_book/connections.json` and saved before each new number is used: a crash (even
//! SIGKILL) right after a connect cannot make the next run reuse it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::staged::write_atomic;

/// Beside the recordings it numbers, so that moving a data dir moves its numbering too.
const CONNECTIONS_FILE: &str = "connections.json";

/// `connections.json`.
#[derive(Serialize, Deserialize)]
struct Saved {
    last_conn: u64,
}

/// Hands out connection numbers above every number used before in its directory.
#[derive(Debug)]
pub struct ConnNumbers {
    path: PathBuf,
    last: Mutex<u64>,
}

impl ConnNumbers {
    /// Continues after the last number saved in `dir` (none saved: starts at 1).
    ///
    /// # Errors
    /// The file exists but cannot be read. A file that can be read but not parsed (edited by hand)
    /// is logged and numbering starts at 1 again: recording matters more than numbering.
    pub fn open(dir: &Path) -> Result<ConnNumbers> {
        let path = dir.join(CONNECTIONS_FILE);
        let last = match fs::read(&path) {
            Ok(body) => match serde_json::from_slice::<Saved>(&body) {
                Ok(saved) => saved.last_conn,
                Err(e) => {
                    log::warn!(
                        "{}: {e}; connection numbers start at 1 again, so replay will see this \
                         restart as a break",
                        path.display()
                    );
                    0
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::file(&path, e)),
        };
        Ok(ConnNumbers {
            path,
            last: Mutex::new(last),
        })
    }

    /// The next number, saved first. A failed save is logged and the number still used: the
    /// connection matters more than the next run's numbering.
    pub fn take(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last += 1;
        let body = serde_json::to_vec(&Saved { last_conn: *last }).expect("plain struct");
        if let Err(e) = write_atomic(&self.path, &body) {
            log::warn!("cannot save connection number {}: {e}", *last);
        }
        *last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_continue_after_the_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        let first = ConnNumbers::open(dir.path()).unwrap();
        assert_eq!([first.take(), first.take()], [1, 2]);
        // No orderly end: the next run continues from what was saved at each take.
        let second = ConnNumbers::open(dir.path()).unwrap();
        assert_eq!(second.take(), 3);
    }

    #[test]
    fn an_unparsable_file_restarts_at_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CONNECTIONS_FILE), b"{oops").unwrap();
        assert_eq!(ConnNumbers::open(dir.path()).unwrap().take(), 1);
    }
}
