//! NDJSON output: whole lines, flushed as written, to stdout or a file that
//! is created 0600 and never opened through a symlink.
//!
//! A file memtrace appends to is always a sequence of whole lines, also on
//! a full disk: a write that fails part-way (ENOSPC after a short write)
//! is cut back to the file's length before it, and a file found at open
//! without a final newline (left by an older memtrace, a crash or power
//! loss mid-write) is repaired before anything is appended to it.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::source::ndjson::MAX_LINE;

pub struct NdjsonWriter {
    out: Box<dyn Write>,
    /// Reused by [`NdjsonWriter::write_all`].
    buf: Vec<u8>,
    file: Option<(File, PathBuf)>,
    /// `file` is a regular file, so a torn write can be cut back.
    regular: bool,
}

/// Opens `path` for appending (records already there are kept), creating
/// it with mode `mode`. A symlink at `path` is refused: in a shared output
/// directory it could point at a file we must not write. A regular file
/// that does not end in a newline is repaired first (see [`repair_tail`])
/// and the repair is reported on stderr.
pub fn open_append(path: &Path, mode: u32) -> Result<File> {
    // Read access is for the repair, and only for what is (or will be
    // created as) a regular file: a FIFO opened read-write would count
    // itself as its reader and never see EPIPE.
    let readable = std::fs::symlink_metadata(path).map_or(true, |m| m.file_type().is_file());
    let file = OpenOptions::new()
        .append(true)
        .read(readable)
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
    if ft.is_file() && readable {
        match repair_tail(&file).with_context(|| format!("repairing {}", path.display()))? {
            Repair::Whole => {}
            Repair::Cut(n) => eprintln!(
                "memtrace: {}: removed a torn last line ({n} bytes without a newline, left by an interrupted write or a full disk)",
                path.display()
            ),
            Repair::Newline => eprintln!(
                "memtrace: {}: added the missing newline after its last line (1 byte; the line itself is whole JSON and was kept)",
                path.display()
            ),
        }
    }
    Ok(file)
}

/// What [`repair_tail`] did to a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Repair {
    /// Empty, or ends in a newline: untouched.
    Whole,
    /// A torn last line of this many bytes was cut off.
    Cut(u64),
    /// The last line was whole JSON without its newline: one was added.
    Newline,
}

/// Makes a file that does not end in a newline end in one.
///
/// A torn tail is cut back to the last newline rather than closed with a
/// newline: the torn bytes are no record (a proper prefix of a JSON object
/// never parses), cutting works on a full disk where appending a newline
/// would fail, and it frees the space. Only a tail that parses as whole
/// JSON (a file written by another tool without a final newline) gets a
/// newline instead, so no record is ever removed.
pub fn repair_tail(file: &File) -> io::Result<Repair> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Repair::Whole);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(Repair::Whole);
    }
    // Back to the last newline, 64 KiB at a time.
    let mut keep = 0u64;
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    let tail_len = len - keep;
    if tail_len <= MAX_LINE as u64 {
        let mut tail = Vec::with_capacity(tail_len as usize);
        let mut f = file;
        f.seek(SeekFrom::Start(keep))?;
        f.take(tail_len).read_to_end(&mut tail)?;
        let whole = serde_json::from_slice::<serde::de::IgnoredAny>(&tail).is_ok()
            && tail.first() == Some(&b'{');
        if whole {
            // O_APPEND: the newline goes at the end whatever the offset.
            f.write_all(b"\n")?;
            return Ok(Repair::Newline);
        }
    }
    file.set_len(keep)?;
    Ok(Repair::Cut(tail_len))
}

/// Writes `buf` (whole lines) through `out`; if that fails part-way, cuts
/// `file` (the regular file `out` appends to, if it is one) back to its
/// length before the write, so the file never ends in a torn line. The
/// write's error is returned either way.
pub fn append_whole<W: Write>(out: &mut W, file: Option<&File>, buf: &[u8]) -> io::Result<()> {
    let before = match file {
        Some(f) => Some(f.metadata()?.len()),
        None => None,
    };
    let res = out.write_all(buf).and_then(|()| out.flush());
    if let (Err(_), Some(f), Some(len)) = (&res, file, before) {
        // Shrinking needs no space, so this works on a full disk.
        if let Err(e) = f.set_len(len) {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{}; cutting the torn line back also failed: {e}",
                    res.unwrap_err()
                ),
            ));
        }
    }
    res
}

impl NdjsonWriter {
    pub fn stdout() -> Self {
        Self {
            out: Box::new(io::stdout()),
            buf: Vec::new(),
            file: None,
            regular: false,
        }
    }

    pub fn create(path: &Path) -> Result<Self> {
        let file = open_append(path, 0o600)?;
        let out = Box::new(file.try_clone().context("duplicating output fd")?);
        let regular = file.metadata()?.file_type().is_file();
        Ok(Self {
            out,
            buf: Vec::new(),
            file: Some((file, path.to_path_buf())),
            regular,
        })
    }

    /// Writes one record as one line; on a failed write (a full disk) the
    /// file is left ending with the previous whole line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        let line = super::json::line(record);
        let regular = self.file.as_ref().map(|(f, _)| f).filter(|_| self.regular);
        append_whole(&mut self.out, regular, &line)
    }

    /// Writes records as lines with one write. If that fails (a full
    /// disk), the file is cut back to before it and the records are
    /// written one by one, so every record that fits is kept whole; the
    /// first failure is returned.
    pub fn write_all<T: Serialize>(&mut self, records: &[&T]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for r in records {
            super::json::append_line(&mut buf, r);
        }
        let regular = self.file.as_ref().map(|(f, _)| f).filter(|_| self.regular);
        let mut res = append_whole(&mut self.out, regular, &buf);
        if res.is_err() && records.len() > 1 && regular.is_some() {
            res = records.iter().try_for_each(|r| self.write(r));
        }
        // Keep a modest buffer for the next batch, not the largest ever.
        if buf.capacity() <= 1 << 20 {
            self.buf = buf;
        }
        res
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

    use crate::testutil::TempDir;

    fn tmpdir(name: &str) -> TempDir {
        TempDir::new(&format!("writer-{name}"))
    }

    #[test]
    fn creates_0600_and_appends() {
        let d = tmpdir("append");
        let p = d.write("out.ndjson", "{\"kept\":true}\n");
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
    }

    #[test]
    fn refuses_symlinks() {
        let d = tmpdir("symlink");
        let target = d.write("victim", "precious\n");
        let link = d.join("out.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = NdjsonWriter::create(&link)
            .err()
            .expect("symlink must be refused")
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }
    /// Writes through to `file` until `left` bytes are used up, then fails
    /// as a full disk does: a short write, then ENOSPC.
    struct FailAfter {
        file: File,
        left: usize,
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            self.file.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A disk of `size` bytes holding only `file`: a write past it is
    /// short, then fails with ENOSPC; cutting the file back frees space.
    struct Disk {
        file: File,
        size: u64,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let used = self.file.metadata()?.len();
            if used >= self.size {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min((self.size - used) as usize);
            self.file.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_that_does_not_fit_keeps_the_lines_that_do() {
        let d = tmpdir("batch");
        let p = d.join("out.ndjson");
        let recs: Vec<serde_json::Value> = (0..4).map(|i| serde_json::json!({"i": i})).collect();
        let refs: Vec<&serde_json::Value> = recs.iter().collect();
        let mut w = NdjsonWriter::create(&p).unwrap();
        w.write_all(&refs).unwrap();
        w.write_all::<serde_json::Value>(&[]).unwrap();
        let whole = "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n{\"i\":3}\n";
        assert_eq!(std::fs::read_to_string(&p).unwrap(), whole);
        // Room for two and a half lines: the batch is cut back, then the
        // two lines that fit are written one by one.
        std::fs::write(&p, "").unwrap();
        let file = open_append(&p, 0o600).unwrap();
        w.out = Box::new(Disk {
            file: file.try_clone().unwrap(),
            size: 20,
        });
        w.file = Some((file, p.clone()));
        let e = w.write_all(&refs).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"i\":0}\n{\"i\":1}\n"
        );
    }

    #[test]
    fn a_write_failing_part_way_is_cut_back_to_the_last_whole_line() {
        let d = tmpdir("failafter");
        let p = d.write("out.ndjson", "{\"a\":1}\n");
        let line = b"{\"b\":2,\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}\n";
        for n in [0, 1, 7, line.len() - 1] {
            let file = open_append(&p, 0o600).unwrap();
            let mut out = FailAfter {
                file: file.try_clone().unwrap(),
                left: n,
            };
            let e = append_whole(&mut out, Some(&file), line).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "after {n} bytes");
            assert_eq!(
                std::fs::read_to_string(&p).unwrap(),
                "{\"a\":1}\n",
                "after {n} bytes"
            );
        }
        // Space back: the next write lands on a line boundary.
        let file = open_append(&p, 0o600).unwrap();
        let mut out = FailAfter {
            file: file.try_clone().unwrap(),
            left: usize::MAX,
        };
        append_whole(&mut out, Some(&file), line).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            [b"{\"a\":1}\n".as_slice(), line].concat()
        );
    }

    fn repaired(name: &str, content: &[u8]) -> (Repair, Vec<u8>) {
        let d = tmpdir(name);
        let p = d.write("f", content);
        let f = OpenOptions::new().read(true).append(true).open(&p).unwrap();
        let r = repair_tail(&f).unwrap();
        let after = std::fs::read(&p).unwrap();
        (r, after)
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_whole_one_closed() {
        assert_eq!(repaired("empty", b""), (Repair::Whole, b"".to_vec()));
        assert_eq!(
            repaired("whole", b"{\"a\":1}\n"),
            (Repair::Whole, b"{\"a\":1}\n".to_vec())
        );
        assert_eq!(
            repaired("torn", b"{\"a\":1}\n{\"b\":2,\"c"),
            (Repair::Cut(9), b"{\"a\":1}\n".to_vec())
        );
        assert_eq!(
            repaired("torn-only", b"{\"b\":"),
            (Repair::Cut(5), b"".to_vec())
        );
        // Another tool's file without a final newline: no record is lost.
        assert_eq!(
            repaired("nonl", b"{\"a\":1}\n{\"b\":2}"),
            (Repair::Newline, b"{\"a\":1}\n{\"b\":2}\n".to_vec())
        );
        // A torn line longer than the 64 KiB the search reads at a time.
        let mut big = b"{\"a\":1}\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 200_000));
        assert_eq!(
            repaired("big", &big),
            (Repair::Cut(200_000), b"{\"a\":1}\n".to_vec())
        );
    }

    #[test]
    fn the_next_run_does_not_glue_its_header_to_a_torn_line() {
        let d = tmpdir("glue");
        let p = d.write("out.ndjson", "{\"kept\":true}\n{\"torn\":");
        let mut w = NdjsonWriter::create(&p).unwrap();
        w.write(&serde_json::json!({"type":"header"})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"kept\":true}\n{\"type\":\"header\"}\n"
        );
    }
}
