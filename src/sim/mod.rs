//! `obrec sim`: a local Binance USD-M look-alike exchange (placeholder, being built).
