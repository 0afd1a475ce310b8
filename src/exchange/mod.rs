//! A Binance-compatible front (WebSocket streams, control messages, REST) and what stands behind
//! it: the simulated market (`obrec sim`), recordings played back (`obrec serve`), or a running
//! recorder's accepted frames, live (`obrec record --tap`).

pub mod serve;
pub mod sim;
pub mod tap;
