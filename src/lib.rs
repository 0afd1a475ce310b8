pub mod book;
pub mod shutdown;
pub mod sim;
