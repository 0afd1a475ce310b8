//! The local order book (placeholder, being built).
