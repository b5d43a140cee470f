//! NDJSON output: whole lines, flushed as written, to stdout or a file that
//! is created 0600 and never opened through a symlink.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub struct NdjsonWriter {
    out: Box<dyn Write>,
    file: Option<(File, PathBuf)>,
}

/// Opens `path` for appending (records already there are kept), creating
/// it with mode 0600. A symlink at `path` is refused: in a shared output
/// directory it could point at a file we must not write.
pub fn open_append(path: &Path, mode: u32) -> Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow::anyhow!(
                    "refusing to write {}: it is a symlink; remove it or choose another path",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening {} for writing", path.display()))
            }
        })?;
    let ft = file.metadata()?.file_type();
    if !(ft.is_file() || ft.is_fifo() || ft.is_char_device()) {
        bail!("{} is not a regular file", path.display());
    }
    Ok(file)
}

impl NdjsonWriter {
    pub fn stdout() -> Self {
        Self {
            out: Box::new(io::stdout()),
            file: None,
        }
    }

    pub fn create(path: &Path) -> Result<Self> {
        let file = open_append(path, 0o600)?;
        let out = Box::new(file.try_clone().context("duplicating output fd")?);
        Ok(Self {
            out,
            file: Some((file, path.to_path_buf())),
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        let line = super::json::line(record);
        self.out.write_all(&line)?;
        self.out.flush()
    }

    /// Forces written records to disk (on exit, and after OOM records).
    pub fn sync(&mut self) -> Result<()> {
        self.out.flush()?;
        if let Some((f, path)) = &self.file {
            f.sync_data()
                .with_context(|| format!("syncing {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memtrace-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_0600_and_appends() {
        let d = tmpdir("append");
        let p = d.join("out.ndjson");
        std::fs::write(&p, "{\"kept\":true}\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut w = NdjsonWriter::create(&p).unwrap();
        w.write(&serde_json::json!({"type":"x"})).unwrap();
        w.sync().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"kept\":true}\n{\"type\":\"x\"}\n"
        );
        let fresh = d.join("new.ndjson");
        NdjsonWriter::create(&fresh).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_symlinks() {
        let d = tmpdir("symlink");
        let target = d.join("victim");
        std::fs::write(&target, "precious\n").unwrap();
        let link = d.join("out.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = NdjsonWriter::create(&link)
            .err()
            .expect("symlink must be refused")
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
