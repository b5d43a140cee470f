//! Where events come from: the kernel programs (`live`, via `loader`) and
//! the kernel log (`kmsg`).
pub mod batch;
pub mod kmsg;
pub mod kretprobe;
pub mod live;
pub mod loader;
pub mod map_memory;
pub mod ndjson;
pub mod plausible;
pub mod replay;
