//! Commands over recordings already on disk: `replay` (verify, summarise, rebuild books; `kinds`
//! checks the streams beside the book, `trades` prints them between the books), `report` (the
//! same recordings drawn as one HTML page), the conversions to and from other tools' formats
//! (`export`, `import`) and `merge` (one archive from several recorders'), with what they share:
//! how they print, and their progress bar. Which files they read is `store::names::recordings`,
//! shared with `serve`.

mod book;
pub mod console;
pub mod interop;
pub mod kinds;
pub mod merge;
pub mod progress;
pub mod replay;
pub mod report;
mod trades;
