//! The on-disk format, in one home: line layouts, file names, gzip members, staged files and
//! crash recovery. The recorder writes through it; replay, serve, import and export read through
//! it; nothing else knows what a recording looks like.

pub mod conn_numbers;
pub mod continuity;
pub mod gzip;
pub mod line;
pub mod lines;
pub mod lock;
pub mod names;
pub mod relayed;
pub mod salvage;
pub mod staged;
