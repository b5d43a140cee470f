//! The guest's root filesystem: an uncompressed newc cpio archive (the
//! kernel unpacks it into its rootfs; no compression keeps TCG boots fast).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writer for the "newc" (SVR4, no CRC) cpio format the kernel accepts.
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    pub fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            write!(self.buf, "{f:08x}").unwrap();
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Everything the guest needs: busybox as its userland, the /init script,
/// the binary under test as /bin/memtrace, and kernel modules.
pub struct Contents<'a> {
    pub busybox: &'a Path,
    pub init_script: &'a str,
    pub payload: &'a Path,
    pub modules: &'a [std::path::PathBuf],
}

pub fn build(out: &Path, c: &Contents) -> Result<()> {
    let mut a = Cpio::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "lib",
        "lib/modules",
        "mnt",
    ] {
        a.dir(d);
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs exists.
    a.char_dev("dev/console", 0o600, 5, 1);
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    a.file("bin/busybox", 0o755, &read(c.busybox)?);
    a.symlink("bin/sh", "busybox");
    a.file("init", 0o755, c.init_script.as_bytes());
    a.file("bin/memtrace", 0o755, &read(c.payload)?);
    // /init loads the modules in the order of lib/modules/load.order.
    let mut order = String::new();
    for m in c.modules {
        let name = m.file_name().unwrap().to_string_lossy();
        a.file(&format!("lib/modules/{name}"), 0o644, &read(m)?);
        order.push_str(name.trim_end_matches(".ko"));
        order.push('\n');
    }
    a.file("lib/modules/load.order", 0o644, order.as_bytes());
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, a.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Cpio::new();
        a.file("/init", 0o755, b"abc");
        let buf = a.finish();
        assert_eq!(&buf[..6], b"070701");
        // header 110 + "init\0" = 115 -> padded to 116, data 3 -> padded to 4
        assert_eq!(&buf[110..115], b"init\0");
        assert_eq!(&buf[116..119], b"abc");
        assert_eq!(&buf[120..126], b"070701");
        assert_eq!(buf.len() % 4, 0);
        let mode = std::str::from_utf8(&buf[14..22]).unwrap();
        assert_eq!(u32::from_str_radix(mode, 16).unwrap(), 0o100755);
        // trailer name
        assert_eq!(&buf[120 + 110..120 + 120], b"TRAILER!!!");
    }
}
