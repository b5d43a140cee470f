//! dpkg/apt: what is installed, what versions exist, installing.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, debver};

/// Installed version of each of `packages` that is installed (packages
/// that are absent, removed or half-installed are left out).
pub fn installed(packages: &[&str]) -> Result<BTreeMap<String, String>> {
    // Exits 1 when some package is unknown, but still lists the others.
    let out = Command::new("dpkg-query")
        .arg("--show")
        .arg("--showformat=${Package}\\t${db:Status-Abbrev}\\t${Version}\\n")
        .args(packages)
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot run dpkg-query (setup needs Debian's dpkg and apt)")?;
    Ok(parse_dpkg_query(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `${Package}\t${db:Status-Abbrev}\t${Version}` lines; keeps the
/// packages whose status is "installed" (second letter `i`: `ii`, `hi`).
fn parse_dpkg_query(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (package, status, version) = (fields.next()?, fields.next()?, fields.next()?);
            let installed = status.as_bytes().get(1) == Some(&b'i');
            (installed && !version.is_empty()).then(|| (package.to_owned(), version.to_owned()))
        })
        .collect()
}

/// `Some(version)` when every package is installed, all at one version.
pub fn same_installed_version<'a>(
    installed: &'a BTreeMap<String, String>,
    packages: &[&str],
) -> Option<&'a str> {
    let mut versions = packages.iter().map(|p| installed.get(*p));
    let first = versions.next()??;
    versions.all(|v| v == Some(first)).then_some(first.as_str())
}

/// `apt-get update` (apt-cache and installs need current lists).
pub fn update() -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update failed (setup must run as root)")
}

/// The newest version that every one of `packages` has available,
/// from `apt-cache madison`.
pub fn newest_common_version(packages: &[&str]) -> Result<String> {
    let out = Command::new("apt-cache")
        .arg("madison")
        .args(packages)
        .output()
        .context("cannot run apt-cache")?;
    if !out.status.success() {
        bail!(
            "apt-cache madison {} failed: {}",
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let available = parse_madison(&String::from_utf8_lossy(&out.stdout));
    pick_common_version(&available, packages).with_context(|| {
        let listed: Vec<String> = packages
            .iter()
            .map(|p| {
                let versions = available.get(*p).map(|v| v.join(", "));
                format!("{p}: {}", versions.as_deref().unwrap_or("none"))
            })
            .collect();
        format!(
            "no version is available for all of {} (available: {})",
            packages.join(", "),
            listed.join("; ")
        )
    })
}

/// Parses `apt-cache madison` lines (`pkg | version | url dist/comp arch
/// Packages`) into the versions per package; source entries are ignored.
fn parse_madison(out: &str) -> BTreeMap<String, Vec<String>> {
    let mut available: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [package, version, origin] = fields[..] else {
            continue;
        };
        if package.is_empty() || version.is_empty() || !origin.ends_with("Packages") {
            continue;
        }
        let versions = available.entry(package.to_owned()).or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_owned());
        }
    }
    available
}

fn pick_common_version(
    available: &BTreeMap<String, Vec<String>>,
    packages: &[&str],
) -> Option<String> {
    let (first, rest) = packages.split_first()?;
    available
        .get(*first)?
        .iter()
        .filter(|v| {
            rest.iter()
                .all(|p| available.get(*p).is_some_and(|vs| vs.contains(v)))
        })
        .max_by(|a, b| debver::compare(a, b))
        .cloned()
}

/// `apt-get install` of `specs` (`name` or `name=version`), without
/// recommended packages.
pub fn install(specs: &[String]) -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-o",
                "DPkg::Lock::Timeout=300",
                "--no-install-recommends",
                // Moving a mismatched set to the common version may go down.
                "--allow-downgrades",
            ])
            .args(specs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install failed (setup must run as root)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUST: [&str; 3] = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];

    // Real output on Debian 12 (2026-11), plus a deb-src line.
    const MADISON: &str = "\
 rustc-web | 1.96.0+dfsg1-1~deb12u2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 rustc-web | 1.85.0+dfsg3-1~deb12u3 | http://deb.debian.org/debian bookworm/main amd64 Packages
 cargo-web | 1.96.0+dfsg1-1~deb12u2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 cargo-web | 1.85.0+dfsg3-1~deb12u3 | http://deb.debian.org/debian bookworm/main amd64 Packages
libstd-rust-web-dev-bpf | 1.96.0+dfsg1-1~deb12u2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
  rustc-web | 1.99.0+dfsg1-1~deb12u1 | http://deb.debian.org/debian-security bookworm-security/main Sources
";

    #[test]
    fn parses_madison() {
        let available = parse_madison(MADISON);
        assert_eq!(
            available["rustc-web"],
            ["1.96.0+dfsg1-1~deb12u2", "1.85.0+dfsg3-1~deb12u3"]
        );
        assert_eq!(
            available["libstd-rust-web-dev-bpf"],
            ["1.96.0+dfsg1-1~deb12u2"]
        );
        assert_eq!(available.len(), 3);
    }

    /// The version of the Rust packages `madison` (apt-cache output) picks.
    fn pick(madison: &str) -> Option<String> {
        pick_common_version(&parse_madison(madison), &RUST)
    }

    #[test]
    fn picks_newest_version_all_three_have() {
        assert_eq!(pick(MADISON).as_deref(), Some("1.96.0+dfsg1-1~deb12u2"));
    }

    #[test]
    fn skips_versions_one_package_lacks() {
        // A new rustc-web/cargo-web whose bpf core is not published yet, and
        // a security update ordered by version, not by line.
        let madison = "\
 rustc-web | 1.96.0+dfsg1-1~deb12u3 | http://x bookworm-security/main amd64 Packages
 rustc-web | 1.96.0+dfsg1-1~deb12u10 | http://x bookworm-security/main amd64 Packages
 rustc-web | 1.96.0+dfsg1-1~deb12u2 | http://x bookworm-security/main amd64 Packages
 cargo-web | 1.96.0+dfsg1-1~deb12u10 | http://x bookworm-security/main amd64 Packages
 cargo-web | 1.96.0+dfsg1-1~deb12u3 | http://x bookworm-security/main amd64 Packages
 cargo-web | 1.96.0+dfsg1-1~deb12u2 | http://x bookworm-security/main amd64 Packages
libstd-rust-web-dev-bpf | 1.96.0+dfsg1-1~deb12u3 | http://x bookworm-security/main amd64 Packages
libstd-rust-web-dev-bpf | 1.96.0+dfsg1-1~deb12u2 | http://x bookworm-security/main amd64 Packages
";
        assert_eq!(pick(madison).as_deref(), Some("1.96.0+dfsg1-1~deb12u3"));
    }

    #[test]
    fn no_common_version() {
        let madison = "\
 rustc-web | 1.85.0+dfsg3-1~deb12u3 | http://x bookworm/main amd64 Packages
 cargo-web | 1.85.0+dfsg3-1~deb12u3 | http://x bookworm/main amd64 Packages
";
        assert_eq!(pick(madison), None);
        assert_eq!(pick(""), None);
    }

    #[test]
    fn parses_dpkg_query() {
        let out = "rustc-web\tii \t1.96.0+dfsg1-1~deb12u2\n\
                   cargo-web\trc \t1.85.0+dfsg3-1~deb12u3\n\
                   llvm-22-dev\thi \t1:22.1.8-1~deb12u1\n\
                   busybox-static\tun \t\n\
                   qemu-system-x86\tiU \t1:7.2\n";
        let installed = parse_dpkg_query(out);
        assert_eq!(installed["rustc-web"], "1.96.0+dfsg1-1~deb12u2");
        assert_eq!(installed["llvm-22-dev"], "1:22.1.8-1~deb12u1");
        assert_eq!(installed.len(), 2);
    }

    #[test]
    fn same_version_needs_all_three_equal() {
        let v96 = "1.96.0+dfsg1-1~deb12u2";
        let mut installed: BTreeMap<String, String> = RUST
            .iter()
            .map(|p| (p.to_string(), v96.to_owned()))
            .collect();
        assert_eq!(same_installed_version(&installed, &RUST), Some(v96));
        installed.insert("cargo-web".into(), "1.85.0+dfsg3-1~deb12u3".into());
        assert_eq!(same_installed_version(&installed, &RUST), None);
        installed.remove("cargo-web");
        assert_eq!(same_installed_version(&installed, &RUST), None);
        installed.clear();
        assert_eq!(same_installed_version(&installed, &RUST), None);
    }

    // Against this machine's dpkg/apt (read-only): `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore = "reads the machine's dpkg database and apt lists"]
    fn real_dpkg_and_apt_cache() {
        let installed = installed(&["dpkg", "no-such-package-memtrace"]).unwrap();
        assert!(installed.contains_key("dpkg"));
        assert!(!installed.contains_key("no-such-package-memtrace"));
        let version = newest_common_version(&RUST).unwrap();
        eprintln!("newest common version: {version}");
        assert!(newest_common_version(&["rustc-web", "no-such-package-memtrace"]).is_err());
    }
}
