//! Guest kernels: Debian's own linux-image packages, resolved through their
//! meta packages, fetched with `apt-get download`, and unpacked (only the
//! files the harness needs) under `target/vm/`. Kernels of another Debian
//! release than the host's (5.10 from bullseye) are resolved and fetched
//! through a private apt configuration under `target/vm/apt-<label>/`: the
//! host's sources and package lists are never touched.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A guest kernel series of the test matrix.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// Short name used on the command line and in test names: "6.1".
    pub label: &'static str,
    /// Debian meta package that depends on the current image package.
    pub meta: &'static str,
    /// Appended to the package the meta package names (bullseye's meta
    /// names the signed image; its `-unsigned` twin is the same kernel
    /// without the Secure Boot wrapper and needs no shim).
    pub suffix: &'static str,
    /// Debian suites to read through a private apt configuration; empty:
    /// the host's own (bookworm) sources.
    pub suites: &'static [&'static str],
    /// cgroup layouts to boot, of those the kernel supports (`cgroup_modes`).
    pub cgroups: &'static [&'static str],
}

/// The matrix: bookworm's kernel, the bookworm-security 6.12 backport, and
/// bullseye's 5.10 (the oldest kernel of a supported Debian release: no
/// try_charge_memcg, no shrinker names, superblock shrinkers embedded, no
/// bpf_map_lookup_percpu_elem).
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "5.10",
        meta: "linux-image-amd64",
        suffix: "-unsigned",
        suites: &["bullseye", "bullseye-security"],
        // systemd's hybrid layout is covered on 6.1; 5.10 boots the two
        // hierarchies themselves to keep the matrix within its time.
        cgroups: &["v2", "v1"],
    },
    KernelSpec {
        label: "6.1",
        meta: "linux-image-amd64",
        suffix: "",
        suites: &[],
        cgroups: &["v2", "v1", "hybrid"],
    },
    KernelSpec {
        label: "6.12",
        meta: "linux-image-6.12-amd64",
        suffix: "",
        suites: &[],
        cgroups: &["v2", "v1", "hybrid"],
    },
];

/// Modules loaded (in this order) for the virtio disk, when not built in.
const DISK_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
];

/// An unpacked guest kernel, ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub spec: KernelSpec,
    /// e.g. linux-image-6.1.0-56-amd64
    pub package: String,
    /// e.g. 6.1.0-56-amd64
    pub release: String,
    /// Uncompressed ELF, booted directly by qemu (PVH entry point).
    pub vmlinux: PathBuf,
    pub config: PathBuf,
    /// Decompressed .ko files in load order (virtio disk support).
    pub modules: Vec<PathBuf>,
}

impl Kernel {
    fn config_value(&self, key: &str) -> Option<String> {
        let text = fs::read_to_string(&self.config).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(str::to_owned)
    }

    /// cgroup layouts this kernel can run: v1's memory controller exists
    /// before 6.12 and from 6.12 only with CONFIG_MEMCG_V1=y (Debian: unset).
    /// "hybrid" is systemd's layout: v1 memory plus a controller-less v2
    /// tree that tasks also move in.
    pub fn cgroup_modes(&self) -> Vec<&'static str> {
        let config = fs::read_to_string(&self.config).unwrap_or_default();
        let v1 = if config.contains("CONFIG_MEMCG_V1") {
            self.config_value("CONFIG_MEMCG_V1").as_deref() == Some("y")
        } else {
            self.config_value("CONFIG_MEMCG").as_deref() == Some("y")
        };
        self.spec
            .cgroups
            .iter()
            .copied()
            .filter(|&c| v1 || c == "v2")
            .collect()
    }
}

pub fn select(which: &str) -> Result<Vec<KernelSpec>> {
    if which == "all" {
        return Ok(KERNELS.to_vec());
    }
    let mut out = Vec::new();
    for w in which.split(',') {
        match KERNELS.iter().find(|k| k.label == w.trim()) {
            Some(k) => out.push(*k),
            None => bail!(
                "unknown kernel {w:?}: expected one of {} or \"all\"",
                KERNELS
                    .iter()
                    .map(|k| k.label)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

/// Resolves, downloads (cached) and unpacks the kernel of `spec`.
pub fn prepare(vm_dir: &Path, spec: KernelSpec) -> Result<Kernel> {
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs)?;
    let apt = PrivateApt::for_spec(vm_dir, spec)?;
    let package = resolve_package(vm_dir, spec, apt.as_ref())?;
    let deb = download(&debs, &package, apt.as_ref())?;
    let root = vm_dir.join("kernels").join(&package);
    unpack(&deb, &root)?;

    let boot = root.join("boot");
    let vmlinuz = single_match(&boot, "vmlinuz-")?;
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let config = boot.join(format!("config-{release}"));
    let vmlinux = root.join("vmlinux");
    if !vmlinux.exists() {
        extract_vmlinux(&vmlinuz, &vmlinux)?;
    }
    let modules = decompress_modules(&root, &release)?;
    Ok(Kernel {
        spec,
        package,
        release,
        vmlinux,
        config,
        modules,
    })
}

/// An apt configuration of its own (sources, lists, cache, no dpkg status)
/// for suites the host does not use, passed to apt through APT_CONFIG.
struct PrivateApt {
    dir: PathBuf,
    config: PathBuf,
}

impl PrivateApt {
    /// Lists older than this are fetched again (kernel security updates
    /// replace the image package, and the old one leaves the archive).
    const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    const KEYRING: &'static str = "/usr/share/keyrings/debian-archive-keyring.gpg";

    fn for_spec(vm_dir: &Path, spec: KernelSpec) -> Result<Option<PrivateApt>> {
        if spec.suites.is_empty() {
            return Ok(None);
        }
        let dir = vm_dir.join(format!("apt-{}", spec.label));
        for d in ["lists/partial", "cache/archives/partial", "etc/apt.conf.d"] {
            fs::create_dir_all(dir.join(d))?;
        }
        for d in ["etc/sources.list.d", "etc/preferences.d"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let sources: String = spec
            .suites
            .iter()
            .map(|suite| {
                // bullseye-security lives in the security archive.
                let archive = if suite.ends_with("-security") {
                    "debian-security"
                } else {
                    "debian"
                };
                format!(
                    "deb [signed-by={}] http://deb.debian.org/{archive} {suite} main\n",
                    Self::KEYRING
                )
            })
            .collect();
        fs::write(dir.join("etc/sources.list"), sources)?;
        let d = dir.display();
        let config = dir.join("apt.conf");
        fs::write(
            &config,
            format!(
                "Dir::State \"{d}\";\n\
                 Dir::State::Lists \"{d}/lists\";\n\
                 Dir::State::status \"/dev/null\";\n\
                 Dir::Cache \"{d}/cache\";\n\
                 Dir::Etc \"{d}/etc\";\n\
                 Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
                 Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
                 Dir::Etc::Parts \"{d}/etc/apt.conf.d\";\n\
                 Dir::Etc::Preferences \"{d}/etc/preferences\";\n\
                 Dir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
                 APT::Architecture \"amd64\";\n\
                 APT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\n"
            ),
        )?;
        Ok(Some(PrivateApt { dir, config }))
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.config);
        c
    }

    /// The lists are missing or older than MAX_AGE.
    fn stale(&self) -> bool {
        let newest = fs::read_dir(self.dir.join("lists"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max();
        newest.is_none_or(|t| t.elapsed().unwrap_or_default() > Self::MAX_AGE)
    }

    /// `apt-get update` on the private lists; the error quotes apt's own
    /// words (e.g. a suite that has left the archive: "does not have a
    /// Release file").
    fn update(&self) -> Result<()> {
        let out = self
            .command("apt-get")
            .args(["-q", "update"])
            .output()
            .context("running apt-get update")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 with only a warning for some failures.
        if !out.status.success() || stderr.contains("E: ") || stderr.contains("W: Failed") {
            bail!(
                "apt-get update with {} failed ({}): {}",
                self.config.display(),
                out.status,
                stderr.trim()
            );
        }
        Ok(())
    }
}

/// `apt-cache depends <meta>` -> the linux-image package it depends on (plus
/// the spec's suffix). The answer is remembered so a later offline run can
/// reuse the cache.
fn resolve_package(vm_dir: &Path, spec: KernelSpec, apt: Option<&PrivateApt>) -> Result<String> {
    let memo = vm_dir.join(format!("kernel-{}.package", spec.label));
    let ask = || -> Result<Option<String>> {
        let mut c = match apt {
            Some(a) => a.command("apt-cache"),
            None => Command::new("apt-cache"),
        };
        let out = c
            .args(["depends", spec.meta])
            .output()
            .context("running apt-cache")?;
        Ok(parse_depends(&String::from_utf8_lossy(&out.stdout))
            .map(|p| format!("{p}{}", spec.suffix)))
    };
    let mut update_error = None;
    if let Some(a) = apt.filter(|a| a.stale()) {
        if let Err(e) = a.update() {
            eprintln!("vm-test: {e:#} (trying the lists already there)");
            update_error = Some(e);
        }
    }
    let mut found = ask()?;
    if found.is_none() {
        // Package lists may be absent on a fresh machine.
        let updated = match apt {
            Some(a) => a.update(),
            None => crate::apt::update(),
        };
        match updated {
            Ok(()) => found = ask()?,
            Err(e) => update_error = Some(e),
        }
    }

    match found {
        Some(p) => {
            fs::write(&memo, &p)?;
            Ok(p)
        }
        None => match fs::read_to_string(&memo) {
            Ok(p) => {
                eprintln!(
                    "vm-test: cannot resolve {}; using cached {}",
                    spec.meta,
                    p.trim()
                );
                Ok(p.trim().to_owned())
            }
            Err(_) => match update_error {
                Some(e) => Err(e.context(format!(
                    "cannot resolve the kernel package behind {} ({})",
                    spec.meta,
                    spec.suites.join(", ")
                ))),
                None => bail!(
                    "cannot resolve the kernel package behind {} (apt-cache depends found nothing)",
                    spec.meta
                ),
            },
        },
    }
}

fn parse_depends(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.trim_start_matches('<').trim_end_matches('>');
        (dep.starts_with("linux-image-") && !dep.contains("dbg")).then(|| dep.to_owned())
    })
}

fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(debs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".deb")
        })
}

fn download(debs: &Path, package: &str, apt: Option<&PrivateApt>) -> Result<PathBuf> {
    if let Some(p) = find_deb(debs, package) {
        return Ok(p);
    }
    eprintln!("vm-test: downloading {package}");
    let mut c = match apt {
        Some(a) => a.command("apt-get"),
        None => Command::new("apt-get"),
    };
    let status = c
        // Running as root in a root-owned dir: skip the _apt sandbox warning.
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
        .current_dir(debs)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!("apt-get download {package} failed ({status})");
    }
    find_deb(debs, package).with_context(|| format!("apt-get download left no {package}_*.deb"))
}

/// Extracts the kernel image, its config and what the virtio modules need.
fn unpack(deb: &Path, root: &Path) -> Result<()> {
    let stamp = root.join(".unpacked");
    if stamp.exists() {
        return Ok(());
    }
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::create_dir_all(root)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(root)
        .args([
            "./boot/vmlinuz-*",
            "./boot/config-*",
            "./lib/modules/*/modules.builtin",
            "./lib/modules/*/kernel/drivers/virtio/*",
            "./lib/modules/*/kernel/drivers/block/virtio_blk.ko*",
        ])
        .stdin(dpkg.stdout.take().unwrap())
        .status()
        .context("running tar")?;
    let dpkg_status = dpkg.wait()?;
    if !tar.success() || !dpkg_status.success() {
        bail!(
            "unpacking {} failed (dpkg-deb {dpkg_status}, tar {tar})",
            deb.display()
        );
    }
    fs::write(stamp, "")?;
    Ok(())
}

fn single_match(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    if found.len() != 1 {
        bail!(
            "expected one {prefix}* in {}, found {}",
            dir.display(),
            found.len()
        );
    }
    Ok(found.pop().unwrap())
}

/// Compression of the payload inside a bzImage.
#[derive(Debug, PartialEq)]
enum Codec {
    Xz,
    Zstd,
    Gzip,
}

/// Locates the compressed kernel inside a bzImage using the boot protocol
/// header (payload_offset/payload_length, protocol 2.08+). The payload ends
/// with a 4-byte uncompressed size that is not part of the stream.
fn bzimage_payload(img: &[u8]) -> Result<(Codec, &[u8])> {
    if img.len() < 0x250 || &img[0x202..0x206] != b"HdrS" {
        bail!("not a bzImage (no HdrS header)");
    }
    let version = u16::from_le_bytes([img[0x206], img[0x207]]);
    if version < 0x208 {
        bail!("boot protocol {version:#x} too old to locate the payload");
    }
    let setup_sects = match img[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let off = u32::from_le_bytes(img[0x248..0x24c].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(img[0x24c..0x250].try_into().unwrap()) as usize;
    let start = (setup_sects + 1) * 512 + off;
    let end = start + len;
    if end > img.len() || len < 8 {
        bail!(
            "payload {start}..{end} outside the image ({} bytes)",
            img.len()
        );
    }
    let payload = &img[start..end - 4];
    let codec = if payload.starts_with(b"\xfd7zXZ\x00") {
        Codec::Xz
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        Codec::Zstd
    } else if payload.starts_with(b"\x1f\x8b") {
        Codec::Gzip
    } else {
        bail!("unknown payload compression (magic {:02x?})", &payload[..6]);
    };
    Ok((codec, payload))
}

fn decompress(codec: &Codec, data: &[u8]) -> Result<Vec<u8>> {
    let (tool, args): (&str, &[&str]) = match codec {
        Codec::Xz => ("xz", &["-dc", "--single-stream"]),
        Codec::Zstd => ("zstd", &["-dcq"]),
        Codec::Gzip => ("gzip", &["-dc"]),
    };
    pipe_through(tool, args, data)
}

/// Runs `tool args` with `input` on stdin and returns its stdout.
fn pipe_through(tool: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out)?;
    let status = child.wait()?;
    let _ = writer.join();
    if !status.success() {
        bail!("{tool} {} failed ({status})", args.join(" "));
    }
    Ok(out)
}

/// vmlinuz -> the uncompressed vmlinux ELF. Booting the ELF directly (PVH)
/// skips the in-guest decompression, which costs ~5 s under TCG.
pub fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let img = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let (codec, payload) = bzimage_payload(&img)?;
    let elf = decompress(&codec, payload)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("{codec:?} payload of {} is not an ELF", vmlinuz.display());
    }
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, elf)?;
    fs::rename(&tmp, out)?;
    Ok(())
}

/// Decompresses the virtio disk modules that are not built in, in load order.
fn decompress_modules(root: &Path, release: &str) -> Result<Vec<PathBuf>> {
    let moddir = root.join("lib/modules").join(release);
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    // modules.dep is generated at install time, not shipped: find by name.
    let mut files = Vec::new();
    walk(&moddir.join("kernel"), &mut files);
    let out_dir = root.join("ko");
    fs::create_dir_all(&out_dir)?;
    let mut out = Vec::new();
    for name in DISK_MODULES {
        let is_builtin = builtin.lines().any(|l| module_name(l) == *name);
        if is_builtin {
            continue;
        }
        let Some(src) = files
            .iter()
            .find(|p| module_name(&p.to_string_lossy()) == *name)
        else {
            // Not every kernel has every helper module (e.g. legacy_dev).
            continue;
        };
        let rel = src.to_string_lossy();
        let dst = out_dir.join(format!("{name}.ko"));
        if !dst.exists() {
            let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
            let plain = if rel.ends_with(".xz") {
                pipe_through("xz", &["-dc"], &data)?
            } else if rel.ends_with(".zst") {
                pipe_through("zstd", &["-dcq"], &data)?
            } else if rel.ends_with(".gz") {
                pipe_through("gzip", &["-dc"], &data)?
            } else {
                data
            };
            fs::write(&dst, plain)?;
        }
        out.push(dst);
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// "kernel/drivers/virtio/virtio_pci.ko.xz" -> "virtio_pci"
fn module_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_parsing() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_depends("foo\n  Recommends: bar\n"), None);
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci.ko.xz"),
            "virtio_pci"
        );
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko"),
            "virtio_blk"
        );
    }

    #[test]
    fn bzimage_header() {
        let mut img = vec![0u8; 4096];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&20u32.to_le_bytes());
        img[1024 + 16..1024 + 20].copy_from_slice(b"\x28\xb5\x2f\xfd");
        let (codec, payload) = bzimage_payload(&img).unwrap();
        assert_eq!(codec, Codec::Zstd);
        assert_eq!(payload.len(), 16);
    }
}
