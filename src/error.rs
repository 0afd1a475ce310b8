//! The library's error type.
//!
//! Two types, split by what a failure calls for. [`FeedError`] is a connection failure: every one
//! is worth a reconnect, so the feed retries it and it never ends a run. [`Error`] ends a run: bad
//! input (exit 2, nothing written) or a host failure such as a file that cannot be written (exit 1).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A file or directory could not be created or written.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
}

impl Error {
    pub fn file(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::File {
            path: path.into(),
            source,
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
    #[error("{streams} subscribed stream(s) delivered nothing within {after:?}")]
    Silent {
        streams: usize,
        after: std::time::Duration,
    },
    #[error("no pong within {0:?}")]
    PongTimeout(std::time::Duration),
    #[error("snapshot request failed: {0}")]
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
            FeedError::Silent { .. } => "silent-stream",
            FeedError::PongTimeout(_) => "pong-timeout",
            FeedError::Rest(_) => "rest",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
