//! Commands over recordings already on disk: `replay` (verify, summarise, rebuild books) and the
//! conversions to and from other tools' formats (`export`, `import`), with what they share: how
//! they print. Which files they read is `store::names::recordings`, shared with `serve`.

pub mod console;
pub mod interop;
pub mod progress;
pub mod replay;
