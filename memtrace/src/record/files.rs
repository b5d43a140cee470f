//! `record`'s output directory: captures and text post-mortems are new
//! files (created exclusively, never through a planted symlink), the OOM log
//! is appended, fsynced and rotated by size.
//!
//! On a full disk every file stays whole: an OOM log append that fails
//! part-way is cut back to the last whole line (and a torn tail left by an
//! older run is repaired when the log is opened), and a capture or text
//! post-mortem that cannot be written whole is removed, not left half
//! written: the caller says it was not written (and keeps a post-mortem to
//! write it again when space returns).
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::output::{
    json,
    records::Record,
    writer::{append_whole, open_append},
};

pub struct OutDir {
    dir: PathBuf,
    oom_log: PathBuf,
    oom_log_max: u64,
    max_captures: usize,
}

/// A file name from an RFC 3339 time: "2026-11-22T03:10:00.123456Z" ->
/// "20261122T031000Z".
pub fn stamp(rfc3339: &str) -> String {
    let base = rfc3339.split('.').next().unwrap_or(rfc3339);
    let mut s: String = base.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if !s.ends_with('Z') {
        s.push('Z');
    }
    s
}

impl OutDir {
    /// Creates `dir` (0750) if needed and checks it is writable now, so a
    /// bad directory fails at start rather than at the first incident.
    pub fn open(
        dir: &Path,
        oom_log: Option<&Path>,
        oom_log_max: u64,
        max_captures: usize,
    ) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .with_context(|| {
                format!(
                    "creating output directory {} (choose another with --dir)",
                    dir.display()
                )
            })?;
        let probe = dir.join(format!(".memtrace-write-test-{}", std::process::id()));
        create_new(&probe, 0o600).map_err(|e| {
            anyhow!(
                "output directory {} is not writable: {e:#} (choose another with --dir)",
                dir.display()
            )
        })?;
        let _ = fs::remove_file(&probe);
        let oom_log = oom_log
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("oom.ndjson"));
        Ok(Self {
            dir: dir.to_path_buf(),
            oom_log,
            oom_log_max,
            max_captures,
        })
    }

    pub fn oom_log(&self) -> &Path {
        &self.oom_log
    }

    /// A new file in the directory, named `<prefix>-<stamp>[-N].<ext>`.
    fn new_file(&self, prefix: &str, stamp: &str, ext: &str, mode: u32) -> Result<(PathBuf, File)> {
        for n in 0..100 {
            let name = if n == 0 {
                format!("{prefix}-{stamp}.{ext}")
            } else {
                format!("{prefix}-{stamp}-{n}.{ext}")
            };
            let path = self.dir.join(name);
            match create_new(&path, mode) {
                Ok(f) => return Ok((path, f)),
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        bail!(
            "too many files named {prefix}-{stamp} in {}",
            self.dir.display()
        )
    }

    /// Writes a capture: whole lines, fsynced; then prunes the oldest
    /// captures beyond `--max-captures`.
    pub fn write_capture(&self, stamp: &str, records: &[Record]) -> Result<PathBuf> {
        let (path, mut f) = self.new_file("capture", stamp, "ndjson", 0o640)?;
        let mut buf = Vec::new();
        for r in records {
            buf.extend(json::line(r));
        }
        write_whole(&path, &mut f, &buf, true)?;
        self.prune_captures();
        Ok(path)
    }

    fn prune_captures(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut caps: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n.starts_with("capture-") && n.ends_with(".ndjson")
            })
            .collect();
        // Names sort by time; a same-second twin "-N" sorts after its first.
        caps.sort_by_key(|p| {
            let stem = p
                .file_stem()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            match stem.rsplit_once('-') {
                Some((base, n)) if n.chars().all(|c| c.is_ascii_digit()) && base.contains('-') => {
                    (base.to_string(), n.parse::<u32>().unwrap_or(0))
                }
                _ => (stem, 0),
            }
        });
        while caps.len() > self.max_captures {
            let old = caps.remove(0);
            match fs::remove_file(&old) {
                Ok(()) => log::warn!(
                    "removed old capture {} (--max-captures {})",
                    old.display(),
                    self.max_captures
                ),
                Err(e) => log::warn!("could not remove old capture {}: {e}", old.display()),
            }
        }
    }

    /// The text post-mortem; fsynced when `durable`.
    pub fn write_postmortem_text(
        &self,
        stamp: &str,
        pid: u32,
        text: &str,
        durable: bool,
    ) -> Result<PathBuf> {
        let (path, mut f) = self.new_file("oom", &format!("{stamp}-{pid}"), "txt", 0o640)?;
        write_whole(&path, &mut f, text.as_bytes(), durable)?;
        Ok(path)
    }

    /// Flushes everything written without `durable` (one sync of the
    /// file system instead of two per post-mortem).
    pub fn sync(&self) {
        if let Ok(f) = File::open(&self.dir) {
            // SAFETY: syncfs only reads the fd, which `f` keeps open for
            // the call; a failure is reported through the return value.
            let _ = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
        }
    }

    #[cfg(test)]
    pub fn append_oom_log(&self, r: &Record, durable: bool) -> Result<()> {
        self.append_oom_line(&json::line(r), durable)
    }

    /// Appends one serialized record (a whole line) to the OOM log
    /// (fsynced when `durable`), rotating the log to `<log>.1` first when
    /// it would grow past `--oom-log-max`. On failure the log still ends
    /// with a whole line.
    pub fn append_oom_line(&self, line: &[u8], durable: bool) -> Result<()> {
        if let Ok(md) = fs::symlink_metadata(&self.oom_log) {
            if md.len() + line.len() as u64 > self.oom_log_max && md.len() > 0 {
                let old = self.oom_log.with_extension("ndjson.1");
                fs::rename(&self.oom_log, &old)
                    .with_context(|| format!("rotating {}", self.oom_log.display()))?;
            }
        }
        let f = open_append(&self.oom_log, 0o600)?;
        append_whole(&mut &f, Some(&f), line)
            .and_then(|()| if durable { f.sync_data() } else { Ok(()) })
            .with_context(|| format!("writing {}", self.oom_log.display()))?;
        Ok(())
    }
}

/// Writes a new file's whole content; if that fails (a full disk), the
/// file is removed, so no half capture or half post-mortem is left to be
/// taken for a whole one.
fn write_whole(path: &Path, f: &mut File, buf: &[u8], durable: bool) -> Result<()> {
    let res = f
        .write_all(buf)
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) });
    if let Err(e) = res {
        let _ = fs::remove_file(path);
        return Err(anyhow::Error::new(e).context(format!("writing {}", path.display())));
    }
    Ok(())
}

/// Creates a file that must not exist yet, never following a symlink.
fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(anyhow::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::records::System;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> TempDir {
        TempDir::new(&format!("files-{name}"))
    }

    fn sys() -> Record {
        Record::System(System {
            ts: "t".into(),
            ..Default::default()
        })
    }

    #[test]
    fn stamps() {
        assert_eq!(stamp("2026-11-22T03:10:00.123456Z"), "20261122T031000Z");
        assert_eq!(stamp("2026-11-22T03:10:00Z"), "20261122T031000Z");
    }

    #[test]
    fn captures_are_new_0640_files_and_old_ones_pruned() {
        let d = tmp("caps");
        let out = OutDir::open(d.path(), None, 1 << 20, 2).unwrap();
        let a = out.write_capture("20261122T000001Z", &[sys()]).unwrap();
        let b = out.write_capture("20261122T000001Z", &[sys()]).unwrap();
        assert_ne!(a, b, "same second: a new name, nothing overwritten");
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o640
        );
        out.write_capture("20261122T000002Z", &[sys()]).unwrap();
        let n = fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("capture-")
            })
            .count();
        assert_eq!(n, 2, "--max-captures 2");
        assert!(!a.exists(), "the oldest went");
    }

    #[test]
    fn planted_symlinks_are_not_followed() {
        let d = tmp("symlink");
        let out = OutDir::open(d.path(), None, 1 << 20, 10).unwrap();
        let victim = d.write("victim", "keep\n");
        std::os::unix::fs::symlink(&victim, d.join("oom.ndjson")).unwrap();
        assert!(out.append_oom_log(&sys(), true).is_err());
        std::os::unix::fs::symlink(&victim, d.join("capture-20261122T000003Z.ndjson")).unwrap();
        let p = out.write_capture("20261122T000003Z", &[sys()]).unwrap();
        assert!(p.ends_with("capture-20261122T000003Z-1.ndjson"), "{p:?}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
    }

    #[test]
    fn oom_log_rotates_keeping_the_newest() {
        let d = tmp("rotate");
        let line = json::line(&sys()).len() as u64;
        let out = OutDir::open(d.path(), None, 3 * line, 10).unwrap();
        for _ in 0..20 {
            out.append_oom_log(&sys(), true).unwrap();
        }
        let cur = fs::read_to_string(out.oom_log()).unwrap();
        // Three lines fit: 20 appends leave the last 2 in the log.
        assert_eq!(cur.lines().count(), 2, "the newest whole lines stay");
        assert!(d.join("oom.ndjson.1").exists());
        assert_eq!(
            fs::metadata(out.oom_log()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let d = tmp("ro");
        let file = d.write("not-a-dir", "");
        let e = OutDir::open(&file.join("sub"), None, 1, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--dir"), "{e}");
    }
}
