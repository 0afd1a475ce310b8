//! Symbols: validated once, where they enter, and trusted everywhere after.

use std::fmt;
use std::str::FromStr;

/// Shortest and longest symbol accepted; Binance's are 5 to 19 characters today
/// (`1000SHIBUSDT_260925`), so 30 leaves room for longer listings.
const SYMBOL_LEN: std::ops::RangeInclusive<usize> = 2..=30;

/// A Binance symbol such as `ETHUSDT`, `BTCUSDT_260925` (a quarterly contract) or `BTCUSD_PERP`
/// (COIN-M): upper-case ASCII letters and digits, and underscores between them. A symbol becomes
/// part of file names, URLs and stream names, so nothing else gets in: no separators, no dots, no
/// control characters.
///
/// Non-ASCII symbols (Binance lists a few, such as `币安人生USDT`) are refused, by name, with
/// their own error: an escaped form (percent-encoding) would make a file name that no longer
/// reads as the symbol, case folding is not defined for them the way it is for ASCII (Binance's
/// stream names lower-case the symbol), and two spellings could map to one file. Refusing keeps
/// every file name the symbol itself, unique and safe; nothing is ever recorded under an altered
/// name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

/// Why a text is not a [`Symbol`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a symbol: {why}", why = why_invalid(.0))]
pub struct InvalidSymbol(pub String);

/// The reason a text is refused, in words a user can act on.
fn why_invalid(text: &str) -> &'static str {
    if text.is_ascii() {
        "use 2 to 30 ASCII letters and digits, underscores between them, like ETHUSDT or BTCUSD_PERP"
    } else {
        "obrec records ASCII symbols only; non-ASCII ones are refused, never recorded under an altered name"
    }
}

impl Symbol {
    /// Upper-cases and checks `text`.
    pub fn new(text: &str) -> Result<Symbol, InvalidSymbol> {
        let upper = text.trim().to_ascii_uppercase();
        let ok = SYMBOL_LEN.contains(&upper.len())
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && !upper.starts_with('_')
            && !upper.ends_with('_')
            && !upper.contains("__");
        if ok {
            Ok(Symbol(upper))
        } else {
            Err(InvalidSymbol(text.to_string()))
        }
    }

    /// `text` exactly as a symbol is spelled in payloads and lines: no case folding, so a line
    /// that names `ethusdt` is not taken for one that names `ETHUSDT`.
    pub fn exact(text: &str) -> Result<Symbol, InvalidSymbol> {
        match Symbol::new(text) {
            Ok(symbol) if symbol.0 == text => Ok(symbol),
            _ => Err(InvalidSymbol(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case form that stream and file names use.
    pub fn lower(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl FromStr for Symbol {
    type Err = InvalidSymbol;

    fn from_str(s: &str) -> Result<Symbol, InvalidSymbol> {
        Symbol::new(s)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Index of a symbol in a run's symbol table: the writer's file slot and the metrics' row.
pub type SymbolId = usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_upper_cased_and_checked() {
        assert_eq!(Symbol::new("ethusdt").unwrap().as_str(), "ETHUSDT");
        assert_eq!(
            Symbol::new(" 1000PEPEUSDT ").unwrap().as_str(),
            "1000PEPEUSDT"
        );
        assert_eq!(Symbol::new("ethusdt").unwrap().lower(), "ethusdt");
        for listed in ["BTCUSDT_260925", "ethusd_perp", "1000SHIBUSDT_260925"] {
            assert!(Symbol::new(listed).is_ok(), "{listed}");
        }
        for bad in [
            "../x",
            "eth usdt",
            "E",
            "",
            "ETH-USDT",
            "ETH.USDT",
            "_ETHUSDT",
            "ETHUSDT_",
            "ETH__USDT",
            "ETH/USDT",
            "币安人生USDT",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE",
        ] {
            assert!(Symbol::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_ascii_symbols_are_refused_by_name() {
        for bad in ["币安人生USDT", "ÉTHUSDT", "ETH\u{0}USDT", "ETHUSDT\u{200b}"] {
            let e = Symbol::new(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{bad:?} is not a symbol: ")), "{e}");
        }
        let e = Symbol::new("币安人生USDT").unwrap_err().to_string();
        assert!(e.contains("ASCII symbols only"), "{e}");
        let e = Symbol::new("../X").unwrap_err().to_string();
        assert!(e.contains("like ETHUSDT"), "{e}");
    }

    #[test]
    fn exact_symbols_are_not_case_folded() {
        assert!(Symbol::exact("ETHUSDT").is_ok());
        assert!(Symbol::exact("ethusdt").is_err());
        assert!(Symbol::exact(" ETHUSDT").is_err());
    }
}
