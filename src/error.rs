//! The library's error types, below every layer so that each can return them.
//!
//! Two types, split by what a failure calls for. [`FeedError`] is a connection failure: every one
//! is worth a reconnect, so the feed retries it and it never ends a run. [`Error`] ends a run: bad
//! input (exit 2, nothing written) or a host failure such as a file that cannot be written (exit 1).
//!
//! Each variant prints its cause in its own message and does not also return it as a `source`, so
//! that `main`, which prints the whole chain, prints every cause once.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A file or directory could not be opened, created, read or written.
    #[error("{}: {cause}", path.display())]
    File { path: PathBuf, cause: io::Error },
    /// A thread could not be started (the process is out of threads or memory).
    #[error("cannot start the {0} thread: {1}")]
    Spawn(&'static str, io::Error),
    /// A thread the run depends on stopped before its work was done.
    #[error("the {0} thread stopped")]
    Thread(&'static str),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: io::Error },
    /// A check of the recorder's own output failed (`obrec demo`).
    #[error("{0}")]
    Check(String),
    /// Standard output could not be written.
    #[error("writing to standard output: {0}")]
    Stdout(io::Error),
    /// A recording ended without ever having a connection up: where it tried, and why the last
    /// attempt failed.
    #[error("never connected to {url}: {cause}")]
    NeverConnected { url: String, cause: String },
    /// NATS JetStream refused or failed a request the run cannot do without (`obrec archive`).
    #[error("nats: {0}")]
    Nats(String),
}

impl Error {
    pub fn file(path: impl Into<PathBuf>, cause: io::Error) -> Error {
        Error::File {
            path: path.into(),
            cause,
        }
    }
}

/// Why a connection ended or could not be opened. Every variant is worth a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("server closed the connection{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    #[error("read failed: {0}")]
    Read(tungstenite::Error),
    #[error("no data for {0:?}")]
    Stale(std::time::Duration),
    #[error("no pong within {0:?}")]
    PongTimeout(std::time::Duration),
    #[error("REST request failed: {0}")]
    Rest(String),
}

impl FeedError {
    /// A short label for logs and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            FeedError::Connect(_) => "connect",
            FeedError::Handshake(_) => "handshake",
            FeedError::Closed(_) => "closed",
            FeedError::Read(_) => "read",
            FeedError::Stale(_) => "stale",
            FeedError::PongTimeout(_) => "pong-timeout",
            FeedError::Rest(_) => "rest",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `main` prints the whole chain of causes, so a cause kept in a message must not also be a
    /// `source`, or it is printed twice.
    #[test]
    fn each_cause_is_printed_once() {
        let os = || io::Error::new(io::ErrorKind::PermissionDenied, "permission denied");
        for err in [
            Error::file("/data/x.part", os()),
            Error::Spawn("writer", os()),
            Error::Bind {
                addr: "127.0.0.1:1".into(),
                cause: os(),
            },
            Error::Stdout(os()),
            Error::NeverConnected {
                url: "ws://127.0.0.1:1/stream?streams=ethusdt@depth5".into(),
                cause: FeedError::Connect(os()).to_string(),
            },
        ] {
            assert!(std::error::Error::source(&err).is_none(), "{err:?}");
            assert_eq!(err.to_string().matches("permission denied").count(), 1);
        }
    }
}
