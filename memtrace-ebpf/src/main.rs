//! memtrace's kernel programs. One module per hook family; every program is
//! loaded and attached (or not) by the agent's attach plan, so each hook has
//! variants for fentry/fexit, kprobe/kretprobe and tracepoints.
#![no_std]
// BPF's atomic add (below `stats::atomic_add`) has no stable Rust spelling.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![no_main]

mod charge;
mod floor;
mod kernel;
mod maps;
mod oom;
mod reclaim;
mod shrink;
mod stats;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: the kernel reads the license from this section; nothing else
// is named LICENSE.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
