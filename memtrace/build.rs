//! Embeds the eBPF object built by `cargo xtask build` (Debian's rustc and
//! bpf-linker; see xtask/src/ebpf.rs). Cargo cannot build it itself here.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=MEMTRACE_EBPF_OBJ");
    let path = match std::env::var_os("MEMTRACE_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ebpf/bpfel-unknown-none/release/memtrace-ebpf"),
    };
    if !path.exists() {
        panic!(
            "memtrace's eBPF object {} does not exist: build with `cargo xtask build` \
             (or set MEMTRACE_EBPF_OBJ to a built object)",
            path.display()
        );
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=MEMTRACE_EBPF_OBJ={}", path.display());
}
