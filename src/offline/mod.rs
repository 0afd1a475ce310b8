//! Commands over recordings already on disk: `replay` (verify, summarise, rebuild books; `kinds`
//! checks the streams beside the book, `trades` prints them between the books), `report` (the
//! same recordings drawn as one HTML page) and the conversions to and from other tools' formats
//! (`export`, `import`), with what they share: how they print, and their progress bar. Which
//! files they read is `store::names::recordings`, shared with `serve`.

mod book;
pub mod console;
pub mod interop;
pub mod kinds;
pub mod progress;
pub mod replay;
pub mod report;
mod trades;
