//! Classic tracepoints need tracefs: for aya to find their ids and for us
//! to read field offsets from their `format` files (never hard-coded).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Where tracefs is mounted, if it is.
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Threads of this process (1 if /proc cannot tell).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Makes tracefs available, mounting it if nobody has. The mount is made
/// in a private mount namespace of this process, so nothing is left behind
/// on the host when memtrace exits.
///
/// Needs a single-threaded process: unshare(2) moves only the calling
/// thread into the new namespace, so other threads would neither see the
/// mount nor share this thread's view of the host's later mounts. memtrace
/// calls this while loading its programs, before it starts any thread (its
/// tokio runtime is current-thread, and `top` starts crossterm's input
/// thread only after the load); this is checked, not assumed.
pub fn ensure() -> Result<PathBuf> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    let threads = thread_count();
    if threads != 1 {
        bail!(
            "tracefs is not mounted, and mounting it privately needs a single-threaded \
             process ({threads} threads); mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
        );
    }
    // SAFETY: unshare takes no pointers. Its effect on this thread only is
    // the whole process's: the process was just checked to have one thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        bail!(
            "tracefs is not mounted and creating a private mount namespace failed: {}",
            std::io::Error::last_os_error()
        );
    }
    let root = c"/";
    // SAFETY: `root` is a NUL-terminated static string; mount(2) accepts
    // null source, type and data when changing propagation (MS_PRIVATE),
    // and reads nothing else.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "making the private mount namespace private failed: {}",
            std::io::Error::last_os_error()
        );
    }
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    // SAFETY: source, target and type are NUL-terminated static strings;
    // a null data pointer means no mount options.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "tracefs is not mounted and mounting it at {} failed: {} (mount it with `mount -t tracefs nodev /sys/kernel/tracing`)",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(target.to_path_buf())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses a tracepoint `format` file into its fields.
pub fn parse_format(text: &str) -> Vec<Field> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            } else if !part.is_empty() && decl.is_none() && !part.starts_with("signed:") {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // "unsigned long nr_reclaimed", "char comm[16]", "__data_loc char[] comm"
        let Some(name) = decl.split_whitespace().last() else {
            continue;
        };
        let name = name.split('[').next().unwrap_or(name).to_string();
        out.push(Field { name, offset, size });
    }
    out
}

/// Offset of `field` in tracepoint `category/name`, checking its size.
pub fn field_offset(
    root: &Path,
    category: &str,
    name: &str,
    field: &str,
    size: u32,
) -> Result<u32> {
    let path = root.join("events").join(category).join(name).join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let f = parse_format(&text)
        .into_iter()
        .find(|f| f.name == field)
        .ok_or_else(|| {
            anyhow!("tracepoint {category}/{name} has no field `{field}` on this kernel")
        })?;
    if f.size != size {
        bail!(
            "tracepoint {category}/{name} field `{field}` is {} bytes, expected {size}",
            f.size
        );
    }
    Ok(f.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim from a 6.18 kernel.
    const MARK_VICTIM: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s\", REC->pid, __get_str(comm)
";

    #[test]
    fn parses_fields() {
        let f = parse_format(MARK_VICTIM);
        let get = |n: &str| f.iter().find(|x| x.name == n).cloned().unwrap();
        assert_eq!(
            get("pid"),
            Field {
                name: "pid".into(),
                offset: 8,
                size: 4
            }
        );
        assert_eq!(get("comm").offset, 12);
        assert_eq!(
            get("anon_rss"),
            Field {
                name: "anon_rss".into(),
                offset: 24,
                size: 8
            }
        );
        assert_eq!(get("oom_score_adj").size, 2);
        assert_eq!(get("common_pid").offset, 4);
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(parse_format("field:\nfield:int x; offset:zz; size:4;\nnonsense").is_empty());
    }
}
