//! Sinks and the record schema they share.
pub mod build;
pub mod escape;
pub mod fields;
pub mod json;
pub mod records;
pub mod units;
pub mod writer;

#[cfg(test)]
mod visibility_tests;
