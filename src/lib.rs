pub mod book;
pub mod error;
pub mod record;
pub mod sequence;
pub mod shutdown;
pub mod sim;

pub use error::{Error, FeedError, Result};
