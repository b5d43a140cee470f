//! How every test that touches the kernel starts.

use crate::{Scratch, Serial, require_root, scratch, serial};

/// Root (or a loud failure), the kernel to this test alone, and a scratch
/// directory named `name`. Hold the `Serial` for the whole test.
pub fn as_root(name: &str) -> (Serial, Scratch) {
    require_root();
    (serial(), scratch(name))
}
