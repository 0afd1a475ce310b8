//! Commands over recordings already on disk: `replay` (verify, summarise, rebuild books) and the
//! conversions to and from other tools' formats (`export`, `import`).

pub mod interop;
pub mod replay;
