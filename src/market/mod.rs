//! Binance's vocabulary, pure: symbols, stream names, frames, the continuity rules and the order
//! book. No I/O: everything here is a function of its input, table-tested, and shared by the live
//! recorder and the offline commands.

pub mod book;
pub mod frame;
pub mod kind;
pub mod listing;
pub mod sequence;
pub mod stream;
pub mod symbol;
pub mod tee;
pub mod venue;
