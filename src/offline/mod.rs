//! Commands over recordings already on disk: `replay` (verify, summarise, rebuild books) and the
//! conversions to and from other tools' formats (`export`, `import`), with what they share: where
//! their inputs are and how they print.

pub mod console;
pub mod inputs;
pub mod interop;
pub mod replay;
