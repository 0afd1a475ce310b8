//! A Binance-compatible front (WebSocket streams, control messages, REST) and what stands behind
//! it: the simulated market (`obrec sim`) or recordings played back (`obrec serve`).

pub mod serve;
pub mod sim;
pub mod tap;
