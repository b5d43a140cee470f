//! Host-side prerequisites: qemu, a static busybox, the accelerator choice,
//! and a small ELF check used to refuse dynamically linked guest binaries.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const QEMU: &str = "qemu-system-x86_64";

/// qemu and a static busybox: installed by `cargo xtask setup --vm`'s
/// `setup_vm()` (a no-op when present), then checked.
pub fn ensure_tools() -> Result<()> {
    crate::setup::setup_vm().context("installing the vm-test packages")?;
    if find_in_path(QEMU).is_none() {
        bail!("{QEMU} not found although setup_vm() ran (package qemu-system-x86)");
    }
    static_busybox().map(|_| ())
}

/// The static busybox that becomes the guest's userland.
pub fn static_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = Path::new(p);
        if p.exists() && is_static_elf(p).unwrap_or(false) {
            return Ok(p.to_path_buf());
        }
    }
    bail!("no static busybox found (install the busybox-static package)")
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `-accel` for qemu: KVM only with real VT-x/AMD-V. Some machines expose a
/// software-nested /dev/kvm on which stock kernels crawl and then die, so
/// /dev/kvm alone proves nothing. `MEMTRACE_VM_ACCEL=tcg|kvm` overrides.
pub fn accel() -> &'static str {
    match std::env::var("MEMTRACE_VM_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    let kvm_usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let hw_virt = fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|w| w == "vmx" || w == "svm"))
        })
        .unwrap_or(false);
    if kvm_usable && hw_virt { "kvm" } else { "tcg" }
}

/// True for an x86-64 ELF executable without a PT_INTERP program header,
/// i.e. one that runs in an initramfs holding no dynamic loader.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    elf_is_static(&data).with_context(|| format!("{} is not a 64-bit ELF", path.display()))
}

fn elf_is_static(d: &[u8]) -> Result<bool> {
    if d.len() < 64 || &d[..4] != b"\x7fELF" || d[4] != 2 || d[5] != 1 {
        bail!("bad ELF header");
    }
    let u16_at = |o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    let phoff = u64::from_le_bytes(d[32..40].try_into().unwrap()) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > d.len() {
            bail!("truncated program headers");
        }
        if u32_at(o) == 3 {
            return Ok(false); // PT_INTERP
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(phdr_types: &[u32]) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 56 * phdr_types.len()];
        d[..6].copy_from_slice(b"\x7fELF\x02\x01");
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&(phdr_types.len() as u16).to_le_bytes());
        for (i, t) in phdr_types.iter().enumerate() {
            d[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        d
    }

    #[test]
    fn static_vs_dynamic_elf() {
        assert!(elf_is_static(&elf(&[6, 1, 1])).unwrap());
        assert!(!elf_is_static(&elf(&[6, 3, 1])).unwrap());
        assert!(elf_is_static(b"#!/bin/sh\n").is_err());
    }
}
