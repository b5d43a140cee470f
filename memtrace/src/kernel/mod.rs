//! Facts about the running kernel: BTF, symbols, tracefs, privileges, and
//! the attach plan derived from them.
pub mod btf;
pub mod caps;
pub mod memory;
pub mod plan;
pub mod symbols;
pub mod tracefs;
