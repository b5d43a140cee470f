//! Builds memtrace's eBPF object and embeds it (`MEMTRACE_EBPF_OBJ` names it
//! for `include_bytes_aligned!` in source/loader.rs).
//!
//! The object is memtrace-ebpf built for bpfel-unknown-none with Debian's
//! rustc and bpf-linker; the recipe lives in the ebpf-build crate, which
//! `cargo xtask` uses too, and both build into `<target dir>/ebpf`, so they
//! share one cached build. `MEMTRACE_EBPF_OBJ=<object>` skips the build and
//! embeds that object instead.
//!
//! Without the toolchain the build does not fail: xtask depends on this
//! crate, and `cargo xtask setup`, which installs the toolchain, must build
//! on a bare machine. It warns, embeds an empty object, and tells the loader
//! why (`MEMTRACE_EBPF_MISSING`), which then refuses to load with that
//! reason. A toolchain that is present but fails to build the crate fails
//! the build, with the compiler's output.

use std::{
    env, fmt, fs,
    path::{Path, PathBuf},
    process::{Stdio, exit},
};

/// Set by the user to embed a prebuilt object; set by us for the loader.
const OBJ_VAR: &str = "MEMTRACE_EBPF_OBJ";
/// For the loader: why the embedded object is empty (empty when it is not).
const MISSING_VAR: &str = "MEMTRACE_EBPF_MISSING";

/// What memtrace-ebpf is built from, relative to the workspace root: its
/// sources, the shared ABI crate, and the workspace manifest and lock file
/// (profile settings, dependency versions).
const INPUTS: &[&str] = &[
    "memtrace-ebpf/src",
    "memtrace-ebpf/Cargo.toml",
    "memtrace-common/src",
    "memtrace-common/Cargo.toml",
    "Cargo.toml",
    "Cargo.lock",
];

fn main() {
    println!("cargo:rerun-if-env-changed={OBJ_VAR}");
    println!("cargo:rerun-if-env-changed={}", ebpf_build::RUSTC_VAR);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    if let Some(obj) = env::var_os(OBJ_VAR).filter(|v| !v.is_empty()) {
        let obj = PathBuf::from(obj);
        if !obj.is_file() {
            fail(format_args!(
                "{OBJ_VAR}={} does not exist (unset it to build the eBPF object)",
                obj.display()
            ));
        }
        println!("cargo:rerun-if-changed={}", obj.display());
        embed(&obj, "");
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("memtrace's manifest dir has a parent");
    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }

    let toolchain = match ebpf_build::Toolchain::find() {
        Ok(toolchain) => toolchain,
        Err(missing) => {
            // Missing files make cargo rerun this script every build, so
            // the warning stays until the toolchain is there, and then the
            // object gets built without a `cargo clean`.
            for path in &missing.watch {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            let why = format!("{}; {}", missing.cause, ebpf_build::FIX);
            println!(
                "cargo:warning=memtrace is built without its eBPF object and will not \
                 trace: {why}"
            );
            let empty = out_dir.join("memtrace-ebpf-missing.o");
            fs::write(&empty, b"")
                .unwrap_or_else(|e| fail(format_args!("writing {}: {e}", empty.display())));
            embed(&empty, &why);
            return;
        }
    };
    // A new rustc or bpf-linker may build a different object.
    println!("cargo:rerun-if-changed={}", toolchain.rustc.display());
    println!("cargo:rerun-if-changed={}", toolchain.bpf_linker.display());

    let target = env::var("TARGET").expect("cargo sets TARGET");
    // Unknown OUT_DIR layout: a private build is slower, not wrong.
    let host_target_dir = ebpf_build::host_target_dir(&out_dir, &target).unwrap_or(out_dir.clone());
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let mut build =
        ebpf_build::command(&toolchain, root, &host_target_dir, &arch).unwrap_or_else(|e| fail(e));
    // Our stdout carries cargo's directives: the nested cargo's goes to
    // stderr, which cargo shows when this script fails.
    build.stdout(Stdio::from(std::io::stderr()));
    eprintln!("+ {build:?}");
    let status = build.status().unwrap_or_else(|e| {
        fail(format_args!(
            "cannot run cargo for {}: {e}",
            ebpf_build::PACKAGE
        ))
    });
    if !status.success() {
        fail(format_args!(
            "building {} failed ({status}); the compiler's output is above",
            ebpf_build::PACKAGE
        ));
    }
    let built = ebpf_build::object_path(&host_target_dir);
    ebpf_build::check_bpf_elf(&built).unwrap_or_else(|e| fail(e));

    // Embed a copy that only this script writes: `cargo xtask build` or
    // `rm -rf target/ebpf` cannot change or remove what an unchanged
    // memtrace embeds. Unchanged contents keep their mtime.
    let copy = out_dir.join("memtrace-ebpf.o");
    let object =
        fs::read(&built).unwrap_or_else(|e| fail(format_args!("reading {}: {e}", built.display())));
    if fs::read(&copy).ok().as_deref() != Some(&object[..]) {
        fs::write(&copy, &object)
            .unwrap_or_else(|e| fail(format_args!("writing {}: {e}", copy.display())));
    }
    embed(&copy, "");
}

/// Tells rustc which object to embed, and why it is empty (if it is).
fn embed(object: &Path, missing: &str) {
    println!("cargo:rustc-env={OBJ_VAR}={}", object.display());
    println!("cargo:rustc-env={MISSING_VAR}={missing}");
}

fn fail(msg: impl fmt::Display) -> ! {
    eprintln!("error: {msg}");
    exit(1);
}
