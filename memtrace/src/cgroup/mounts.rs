//! Finds the cgroup hierarchy that holds the memory controller, from
//! `/proc/self/mountinfo`.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// How the host's cgroups are laid out, as far as the memory controller goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// Memory controller on a cgroup v1 hierarchy; no cgroup2 mount at all.
    V1,
    /// Memory controller on cgroup2 (the unified hierarchy).
    V2,
    /// Memory controller on a cgroup v1 hierarchy while a cgroup2 mount also
    /// exists (systemd's "hybrid" layout, e.g. `/sys/fs/cgroup/unified`).
    Hybrid,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        })
    }
}

/// The mounted hierarchy that holds the memory controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgFs {
    pub mode: CgroupMode,
    /// Mount point of the memory hierarchy (e.g. `/sys/fs/cgroup/memory` on
    /// v1, `/sys/fs/cgroup` on v2).
    pub root: PathBuf,
    /// The memory hierarchy is cgroup2.
    pub v2: bool,
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

const NO_MEMCG: &str = "no memory cgroup hierarchy mounted: mount -t cgroup -o memory none \
                        /sys/fs/cgroup/memory, or cgroup2 with the memory controller enabled";

/// Finds the memory cgroup hierarchy of this mount namespace.
pub fn detect() -> Result<MemcgFs> {
    detect_from(&read_mountinfo()?, &|root| {
        std::fs::read_to_string(root.join("cgroup.controllers")).ok()
    })
}

/// Every mount of this mount namespace, hidden ones included, in
/// mountinfo's order (parents before the mounts on top of them).
pub fn mounts() -> Result<Vec<Mount>> {
    Ok(parse_mountinfo(&read_mountinfo()?))
}

fn read_mountinfo() -> Result<String> {
    std::fs::read_to_string(MOUNTINFO)
        .map_err(|e| anyhow::anyhow!("cannot read {MOUNTINFO}: {e} (is /proc mounted?)"))
}

/// [`detect`] on the text of a mountinfo file. `controllers(root)` returns the
/// contents of `<root>/cgroup.controllers` for a cgroup2 mount point, or None
/// when it cannot be read.
pub(crate) fn detect_from(
    mountinfo: &str,
    controllers: &dyn Fn(&Path) -> Option<String>,
) -> Result<MemcgFs> {
    let mounts = visible(parse_mountinfo(mountinfo));
    let cgroup2: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();

    // The memory controller is bound to at most one hierarchy: a v1 one if
    // any has it (then no cgroup2 lists it), else cgroup2.
    let v1_memory = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == "memory"));
    if let Some(m) = best(v1_memory) {
        let mode = if cgroup2.is_empty() {
            CgroupMode::V1
        } else {
            CgroupMode::Hybrid
        };
        return Ok(MemcgFs {
            mode,
            root: m.mount_point.clone(),
            v2: false,
        });
    }

    let with_memory = cgroup2.iter().copied().filter(|m| {
        controllers(&m.mount_point)
            .is_some_and(|c| c.split_ascii_whitespace().any(|c| c == "memory"))
    });
    if let Some(m) = best(with_memory) {
        return Ok(MemcgFs {
            mode: CgroupMode::V2,
            root: m.mount_point.clone(),
            v2: true,
        });
    }

    match cgroup2.first() {
        Some(m) => bail!(
            "{NO_MEMCG} (cgroup2 is mounted at {} but its cgroup.controllers does not list \
             memory: the memory controller is not enabled for this cgroup)",
            m.mount_point.display()
        ),
        None => bail!("{NO_MEMCG}"),
    }
}

/// One line of mountinfo: the fields memtrace needs, paths unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path of the mount's root within its filesystem (field 4; not `/`
    /// for a bind mount of a subdirectory, e.g. a container's cgroup).
    pub root: PathBuf,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `cgroup`, `cgroup2`, `tmpfs`.
    pub fstype: String,
    /// Per-superblock options; a v1 cgroup's list its controllers.
    pub super_opts: String,
}

/// Parses mountinfo (proc(5)): `id parent maj:min root mount_point opts
/// [optional fields...] - fstype source super_opts`. Malformed lines are
/// skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Optional fields end at the first lone "-" after the six fixed ones.
    let sep = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    let post = fields.get(sep + 1..)?;
    if post.len() < 3 {
        return None;
    }
    Some(Mount {
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        fstype: post[0].to_string(),
        super_opts: post[2].to_string(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). Paths need not be UTF-8.
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Drops mounts hidden by a later mount on the same mount point.
fn visible(mounts: Vec<Mount>) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::with_capacity(mounts.len());
    for m in mounts {
        out.retain(|o| o.mount_point != m.mount_point);
        out.push(m);
    }
    out
}

/// Of several mounts of the same kind (bind mounts, a container's view),
/// prefers one of the whole hierarchy (root `/`), then one under
/// `/sys/fs/cgroup`, then the first.
fn best<'a>(mounts: impl Iterator<Item = &'a Mount>) -> Option<&'a Mount> {
    mounts.min_by_key(|m| {
        (
            m.root != Path::new("/"),
            !m.mount_point.starts_with("/sys/fs/cgroup"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_controllers(_: &Path) -> Option<String> {
        None
    }

    /// `mountinfo` puts the memory hierarchy of this mode at `root`.
    fn assert_detects(
        mountinfo: &str,
        controllers: &dyn Fn(&Path) -> Option<String>,
        mode: CgroupMode,
        root: &str,
    ) {
        let fs = detect_from(mountinfo, controllers).unwrap();
        let v2 = mode == CgroupMode::V2;
        assert_eq!(
            fs,
            MemcgFs {
                mode,
                root: root.into(),
                v2
            }
        );
    }

    fn memory_at_sys_fs_cgroup(root: &Path) -> Option<String> {
        (root == Path::new("/sys/fs/cgroup"))
            .then(|| "cpuset cpu io memory hugetlb pids rdma misc\n".to_string())
    }

    /// CentOS 7 style: v1 only, systemd's tmpfs at /sys/fs/cgroup.
    const V1_ONLY: &str = "\
18 60 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
19 60 0:3 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
60 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/centos-root rw,attr2,inode64,noquota
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
29 24 0:25 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,net_cls,net_prio
30 24 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
31 24 0:27 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,blkio
";

    /// Fedora / Ubuntu 22.04+ style: pure cgroup2.
    const V2: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:14 - proc proc rw
28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 22 0:27 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:5 - pstore pstore rw
";

    /// Ubuntu 20.04 / Debian 10 style systemd hybrid: v1 controllers plus an
    /// empty cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
32 24 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
33 32 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 32 0:29 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
38 32 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
41 32 0:36 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,memory
42 32 0:37 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,pids
";

    /// The development host: no systemd, a plain tmpfs holding v1
    /// hierarchies, and a cgroup2 at /sys/fs/cgroup/unified without memory.
    const HOST: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k,nr_inodes=3083615,mode=755
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mode_names() {
        let names = [CgroupMode::V1, CgroupMode::V2, CgroupMode::Hybrid].map(|m| m.to_string());
        assert_eq!(names, ["v1", "v2", "hybrid"]);
    }

    #[test]
    fn v1_only() {
        assert_detects(
            V1_ONLY,
            &no_controllers,
            CgroupMode::V1,
            "/sys/fs/cgroup/memory",
        );
    }

    #[test]
    fn v2() {
        assert_detects(
            V2,
            &memory_at_sys_fs_cgroup,
            CgroupMode::V2,
            "/sys/fs/cgroup",
        );
    }

    #[test]
    fn v2_without_memory_controller() {
        // memory_recursiveprot is a mount option, not the controller.
        let err = detect_from(V2, &|_| Some("cpuset cpu io pids\n".into())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(NO_MEMCG), "{msg}");
        assert!(
            msg.contains("cgroup2 is mounted at /sys/fs/cgroup"),
            "{msg}"
        );
        // Unreadable cgroup.controllers counts as no memory controller.
        assert!(detect_from(V2, &no_controllers).is_err());
    }

    #[test]
    fn hybrid() {
        assert_detects(
            HYBRID,
            &no_controllers,
            CgroupMode::Hybrid,
            "/sys/fs/cgroup/memory",
        );
    }

    #[test]
    fn host_tmpfs_v1_layout() {
        // cgroup.controllers of the unified mount does not matter: memory is
        // bound to the v1 hierarchy.
        assert_detects(
            HOST,
            &|_| Some("cpu io pids\n".into()),
            CgroupMode::Hybrid,
            "/sys/fs/cgroup/memory",
        );
    }

    #[test]
    fn nothing_mounted() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
        let err = detect_from(text, &memory_at_sys_fs_cgroup).unwrap_err();
        assert_eq!(err.to_string(), NO_MEMCG);
        assert!(detect_from("", &no_controllers).is_err());
    }

    #[test]
    fn v1_without_memory() {
        let text: String = V1_ONLY
            .lines()
            .filter(|l| !l.ends_with("rw,memory"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = detect_from(&text, &no_controllers).unwrap_err();
        assert_eq!(err.to_string(), NO_MEMCG);
    }

    #[test]
    fn escaped_mount_point_and_optional_fields() {
        let text = "\
100 1 0:50 / /mnt/my\\040cgroups/mem\\134ory\\011x rw,relatime shared:50 master:3 propagate_from:2 - cgroup memcg rw,cpu,memory
";
        let fs = detect_from(text, &no_controllers).unwrap();
        assert_eq!(fs.root, PathBuf::from("/mnt/my cgroups/mem\\ory\tx"));
        assert_eq!(fs.mode, CgroupMode::V1);
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/a\\012"), PathBuf::from("/a\n"));
        // Not an octal escape: kept as is.
        assert_eq!(unescape("/a\\04"), PathBuf::from("/a\\04"));
        assert_eq!(unescape("/a\\089"), PathBuf::from("/a\\089"));
        assert_eq!(unescape("\\"), PathBuf::from("\\"));
        // Non-UTF-8 bytes survive.
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(unescape("/\\377").as_os_str().as_bytes(), b"/\xff");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "garbage\n1 2 3\n30 22 0:26 / /x rw - cgroup\n\n";
        assert!(parse_mountinfo(text).is_empty());
        let text = format!("junk line - here\n{HYBRID}");
        assert_eq!(
            detect_from(&text, &no_controllers).unwrap().mode,
            CgroupMode::Hybrid
        );
    }

    #[test]
    fn shadowed_and_bind_mounts() {
        // A container's view (root /docker/abc) and the host's whole
        // hierarchy bind-mounted elsewhere: prefer the whole hierarchy.
        let text = "\
500 400 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
501 400 0:32 / /host/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
";
        let fs = detect_from(text, &no_controllers).unwrap();
        assert_eq!(fs.root, PathBuf::from("/host/cgroup/memory"));

        // A memory mount hidden by a later mount on the same mount point.
        let text = "\
30 24 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 24 0:27 / /sys/fs/cgroup/memory rw - tmpfs tmpfs rw
";
        assert!(detect_from(text, &no_controllers).is_err());
    }

    #[test]
    fn detect_on_this_host() {
        // Whatever the layout, detect() either finds a hierarchy whose root
        // exists or explains why not.
        match detect() {
            Ok(fs) => {
                assert!(fs.root.is_dir(), "{fs:?}");
                assert_eq!(fs.v2, fs.mode == CgroupMode::V2);
            }
            Err(e) => assert!(e.to_string().starts_with(NO_MEMCG), "{e}"),
        }
    }
}
