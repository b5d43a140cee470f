//! What the running kernel lets a root process attach, found out with raw
//! bpf(2) and perf_event_open(2) calls and none of memtrace's code, so the
//! tests can check `memtrace doctor` and the stream header against it
//! instead of against what some machine happened to support.
//!
//! Each family is tried for real on a kernel function (or tracepoint) that
//! memtrace hooks and every supported kernel has, with the smallest
//! program the verifier accepts, and detached again at once.

use std::{
    ffi::CString,
    fs, io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::Command,
};

use aya_obj::generated::{
    PERF_EVENT_IOC_SET_BPF, PERF_FLAG_FD_CLOEXEC, bpf_attach_type, bpf_attr, bpf_cmd,
    bpf_prog_type, perf_event_attr, perf_type_id,
};
use btf_rs::{Btf, Type};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Not inlined on any kernel memtrace supports, and one of its hooks.
const FUNCTION: &str = "oom_kill_process";
/// (category, name): the OOM killer's tracepoint, present since 4.8.
const TRACEPOINT: (&str, &str) = ("oom", "mark_victim");

/// `r0 = 0; exit` (BPF_ALU64|BPF_MOV|BPF_K, BPF_JMP|BPF_EXIT): valid for
/// every program type used here. Opcode in the first byte, all else zero,
/// so the bytes are the same on either endianness.
const RETURN_ZERO: [[u8; 8]; 2] = [[0xb7, 0, 0, 0, 0, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]];

/// `Ok` if the family attached, else what failed.
pub type Verdict = Result<(), String>;

pub struct Probe {
    fentry: Verdict,
    kprobe: Verdict,
    tp_btf: Verdict,
    tracepoint: Verdict,
}

impl Probe {
    /// Tries every family once (needs root; takes well under a second).
    pub fn run() -> Self {
        let btf = Btf::from_file(VMLINUX_BTF).map_err(|e| format!("{VMLINUX_BTF}: {e}"));
        Self {
            fentry: fentry(&btf),
            kprobe: kprobe(),
            tp_btf: tp_btf(&btf),
            tracepoint: tracepoint(),
        }
    }

    /// The verdict for a family as memtrace names it (`fentry`, `kprobe`,
    /// `tp_btf`, `tracepoint`).
    pub fn family(&self, name: &str) -> &Verdict {
        match name {
            "fentry" => &self.fentry,
            "kprobe" => &self.kprobe,
            "tp_btf" => &self.tp_btf,
            "tracepoint" => &self.tracepoint,
            _ => panic!("unknown program family {name:?}"),
        }
    }

    pub fn works(&self, family: &str) -> bool {
        self.family(family).is_ok()
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                ["fentry", "kprobe", "tp_btf", "tracepoint"].map(|n| (n, self.family(n).clone())),
            )
            .finish()
    }
}

/// fentry: a BPF_TRACE_FENTRY program on FUNCTION's BTF id, attached
/// (BPF_RAW_TRACEPOINT_OPEN builds the trampoline) and closed again.
fn fentry(btf: &Result<Btf, String>) -> Verdict {
    let id = btf_id(btf, FUNCTION, |t| matches!(t, Type::Func(_)))?;
    let prog = load(
        bpf_prog_type::BPF_PROG_TYPE_TRACING,
        Some((bpf_attach_type::BPF_TRACE_FENTRY, id)),
    )?;
    attach_raw_tracepoint(&prog)
}

/// tp_btf: a BPF_TRACE_RAW_TP program on the `btf_trace_<name>` typedef.
fn tp_btf(btf: &Result<Btf, String>) -> Verdict {
    let typedef = format!("btf_trace_{}", TRACEPOINT.1);
    let id = btf_id(btf, &typedef, |t| matches!(t, Type::Typedef(_)))?;
    let prog = load(
        bpf_prog_type::BPF_PROG_TYPE_TRACING,
        Some((bpf_attach_type::BPF_TRACE_RAW_TP, id)),
    )?;
    attach_raw_tracepoint(&prog)
}

/// kprobe: the kprobe PMU, and a kprobe on FUNCTION created through it
/// (closing the perf event deletes the kprobe).
fn kprobe() -> Verdict {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe/type");
    let pmu_type: u32 = fs::read_to_string(pmu)
        .map_err(|e| format!("no kprobe PMU: {}: {e}", pmu.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", pmu.display()))?;
    let function = CString::new(FUNCTION).unwrap();
    // SAFETY: perf_event_attr is plain data; all zero is valid and is what
    // the kernel expects in the fields left unset.
    let mut attr: perf_event_attr = unsafe { mem::zeroed() };
    attr.type_ = pmu_type;
    attr.config = 0; // bit 0 set would make it a kretprobe
    attr.__bindgen_anon_3.kprobe_func = function.as_ptr() as u64; // config1
    attr.__bindgen_anon_4.probe_offset = 0; // config2
    perf_event_open(&mut attr).map(drop)
}

/// Classic tracepoint: its id from tracefs, a perf event on it and a
/// BPF_PROG_TYPE_TRACEPOINT program set on that event.
fn tracepoint() -> Verdict {
    let id = tracepoint_id()?;
    // SAFETY: as in `kprobe`.
    let mut attr: perf_event_attr = unsafe { mem::zeroed() };
    attr.type_ = perf_type_id::PERF_TYPE_TRACEPOINT as u32;
    attr.config = id;
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_2.wakeup_events = 1;
    let event = perf_event_open(&mut attr)?;
    let prog = load(bpf_prog_type::BPF_PROG_TYPE_TRACEPOINT, None)?;
    // SAFETY: both fds are open and owned here; PERF_EVENT_IOC_SET_BPF takes
    // the program fd as its integer argument.
    let r = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd(),
        )
    };
    if r != 0 {
        return Err(format!(
            "PERF_EVENT_IOC_SET_BPF: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The tracepoint's id in tracefs. If nobody mounted tracefs, it is
/// mounted in a child's private mount namespace, so the host's mounts stay
/// as they were (the id is the same in every namespace).
fn tracepoint_id() -> Result<u64, String> {
    let rel = format!("events/{}/{}/id", TRACEPOINT.0, TRACEPOINT.1);
    let text = match ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir())
    {
        Some(dir) => fs::read_to_string(dir.join(&rel))
            .map_err(|e| format!("{}: {e}", dir.join(&rel).display()))?,
        None => {
            let out = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount -t tracefs nodev /sys/kernel/tracing && cat /sys/kernel/tracing/{rel}"
                ))
                .output()
                .map_err(|e| format!("unshare (util-linux): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "mounting tracefs privately: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    text.trim()
        .parse()
        .map_err(|e| format!("tracepoint id {text:?}: {e}"))
}

/// The id of the BTF type called `name` for which `kind` holds.
fn btf_id(btf: &Result<Btf, String>, name: &str, kind: fn(&Type) -> bool) -> Result<u32, String> {
    let btf = btf.as_ref().map_err(Clone::clone)?;
    btf.resolve_ids_by_name(name)
        .unwrap_or_default()
        .into_iter()
        .find(|&id| btf.resolve_type_by_id(id).is_ok_and(|t| kind(&t)))
        .ok_or_else(|| format!("no {name} in {VMLINUX_BTF}"))
}

/// BPF_PROG_LOAD of RETURN_ZERO, GPL (tracing programs must be).
fn load(
    prog_type: bpf_prog_type,
    attach_to: Option<(bpf_attach_type, u32)>,
) -> Result<OwnedFd, String> {
    // SAFETY: bpf_attr is plain data; unused fields must be zero.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: the BPF_PROG_LOAD member of the union; every member is plain
    // data, so any bytes are a valid value of it.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = prog_type as u32;
    load.insn_cnt = RETURN_ZERO.len() as u32;
    load.insns = RETURN_ZERO.as_ptr() as u64;
    load.license = c"GPL".as_ptr() as u64;
    if let Some((attach_type, btf_id)) = attach_to {
        load.expected_attach_type = attach_type as u32;
        load.attach_btf_id = btf_id;
    }
    bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map_err(|e| format!("{prog_type:?}: {e}"))
}

/// Attaches a tracing program where its attach_btf_id says (no name) and
/// detaches it again by closing the link.
fn attach_raw_tracepoint(prog: &OwnedFd) -> Verdict {
    // SAFETY: as in `load`.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map(drop)
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<OwnedFd, String> {
    // SAFETY: attr is a whole, initialised bpf_attr that outlives the call,
    // and its size is passed; the pointers in it (instructions, license)
    // point to statics.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(format!("bpf({cmd:?}): {}", io::Error::last_os_error()));
    }
    // SAFETY: these commands return a new file descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A system-wide perf event on CPU 0.
fn perf_event_open(attr: &mut perf_event_attr) -> Result<OwnedFd, String> {
    attr.size = mem::size_of::<perf_event_attr>() as u32;
    // SAFETY: attr is a whole, initialised perf_event_attr with its size
    // set; the string config1 may point to outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *mut perf_event_attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(format!("perf_event_open: {}", io::Error::last_os_error()));
    }
    // SAFETY: perf_event_open returns a new file descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
