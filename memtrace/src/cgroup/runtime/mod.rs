//! Tiers 2 and 3 of a container's identity: the names people use (pod,
//! namespace, container, image), read from the runtimes' own state files
//! and the kubelet's log layout. Read-only and file-first: no daemon socket.
pub mod roots;

pub use roots::Roots;
