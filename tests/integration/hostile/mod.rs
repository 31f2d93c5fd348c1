//! Hostile input, by what it attacks: the cache's keys and entries, request framing (also under TLS and the
//! PROXY protocol), the limits, memory, what one client can hold, and a failing upstream; and the fuzz
//! targets' properties over seeded random inputs.

mod cache;
mod framing;
mod framing_layers;
mod fuzz;
mod limits;
mod memory;
mod resources;
mod upstream;
