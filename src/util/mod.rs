//! Plumbing with no knowledge of markets or files: the clock, retry pacing, shutdown, logging.
//! The bottom layer: it uses nothing else in the crate but [`crate::error`].

pub mod backoff;
pub mod clock;
pub mod logging;
pub mod shutdown;
