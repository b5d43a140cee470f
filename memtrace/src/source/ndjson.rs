//! The one NDJSON reader: every record file memtrace reads (`--replay`,
//! `report`, `record`'s own OOM log) goes through it. Every line is either
//! a record or a bad line with its number and what is wrong with it; the
//! caller decides whether a bad line ends the read (`--replay`) or is
//! named and skipped (`report`). Lines are read as bytes (a file may hold
//! anything) and capped, so a binary file or a runaway line cannot exhaust
//! memory.
use std::{
    fs::File,
    io::{self, BufRead},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use serde::Serialize;

use super::plausible;
use crate::output::records::Record;

/// A longer line ends the read (the longest real record is a few KiB): a
/// file that has one is not a record file (`/dev/zero`, a binary), and
/// reading on would take unbounded time, if not memory.
pub const MAX_LINE: usize = 16 << 20;
/// How long a FIFO may wait for a writer's first bytes.
pub const FIFO_WAIT: Duration = Duration::from_secs(10);

/// Opens a record file for reading. A FIFO is opened without blocking and
/// waited on for at most [`FIFO_WAIT`], so a FIFO nobody writes to is an
/// error naming the cause, not a hang; a directory is an error too.
pub fn open(path: &Path) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let kind = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .file_type();
    if kind.is_dir() {
        bail!(
            "{} is a directory: give a capture, stream file or OOM log",
            path.display()
        );
    }
    if kind.is_fifo() && !wait_readable(&file, FIFO_WAIT)? {
        bail!(
            "{} is a FIFO and nothing wrote to it within {} s: start the writer first \
             (e.g. `memtrace stream > FIFO`), or give a file",
            path.display(),
            FIFO_WAIT.as_secs()
        );
    }
    blocking(&file).with_context(|| format!("reading {}", path.display()))?;
    Ok(file)
}

/// Whether `file` has data (or its writer went away) within `wait`.
fn wait_readable(file: &File, wait: Duration) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut fds = [libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `fds` is a valid array of one pollfd that outlives the
        // call, and its fd is open (owned by `file`).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("waiting for the FIFO's writer");
        }
    }
}

/// Clears O_NONBLOCK: reads then wait for data like any file read.
fn blocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an open fd owned by `file`; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Error texts quoted in the report are cut to this many characters.
const MAX_ERROR: usize = 200;

/// A line that is not a memtrace record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadLine {
    /// 1-based line number in the file.
    pub line: u64,
    pub error: String,
}

pub enum Item {
    Record(Box<Record>),
    Bad(BadLine),
}

pub struct Lines<R> {
    reader: R,
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line_no: 0,
            buf: Vec::new(),
        }
    }

    /// The reader, to see what it holds buffered.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The next non-blank line, parsed; None at the end of the file. A
    /// line longer than [`MAX_LINE`] is an error (`InvalidData`) naming
    /// its number, read no further than the cap.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            let Some(read) = self.read_line()? else {
                return Ok(None);
            };
            self.line_no += 1;
            let line = self.line_no;
            if read.too_long {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "line {line} is longer than {} MiB: not a memtrace record file \
                         (stopped reading there)",
                        MAX_LINE >> 20
                    ),
                ));
            }
            // memtrace's own lines first, straight from the bytes: a line
            // that parses so is valid UTF-8 (serde_json checks every string;
            // anything else in a JSON object is ASCII), so it is not
            // checked twice. Anything else is judged as before.
            let ascii = self.buf.trim_ascii();
            let start = ascii.as_ptr() as usize - self.buf.as_ptr() as usize;
            let end = start + ascii.len();
            if let Some(record) = parse_tag_first(&mut self.buf[start..end]) {
                return Ok(Some(match plausible::check(&record) {
                    Ok(()) => Item::Record(Box::new(record)),
                    Err(error) => Item::Bad(BadLine {
                        line,
                        error: cut(&error, MAX_ERROR),
                    }),
                }));
            }
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return Ok(Some(Item::Bad(BadLine {
                    line,
                    error: "not UTF-8 text (binary data or a torn write)".into(),
                })));
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            return Ok(Some(match serde_json::from_str::<Record>(text) {
                Ok(record) => match plausible::check(&record) {
                    Ok(()) => Item::Record(Box::new(record)),
                    Err(error) => Item::Bad(BadLine {
                        line,
                        error: cut(&error, MAX_ERROR),
                    }),
                },
                Err(e) => Item::Bad(BadLine {
                    line,
                    error: describe(text, &e, read.newline),
                }),
            }));
        }
    }

    /// Reads one line into `buf` (without its newline), keeping at most
    /// MAX_LINE bytes; None at the end of the file.
    fn read_line(&mut self) -> io::Result<Option<ReadLine>> {
        self.buf.clear();
        let mut any = false;
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(any.then_some(ReadLine {
                    too_long: false,
                    newline: false,
                }));
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            let room = MAX_LINE.saturating_sub(self.buf.len());
            if chunk.len() > room {
                // Not a record file: stop here instead of reading on to a
                // newline that may never come.
                return Ok(Some(ReadLine {
                    too_long: true,
                    newline: false,
                }));
            }
            self.buf.extend_from_slice(chunk);
            self.reader.consume(used);
            if done {
                return Ok(Some(ReadLine {
                    too_long: false,
                    newline: true,
                }));
            }
        }
    }
}

/// The record on a line shaped as memtrace writes it, `{"type":"NAME",`
/// first, parsed straight into its variant's struct. serde's internally
/// tagged enums (`Record`) first buffer the whole object into a tree of
/// values to find the tag: a third of a replay's time. None when the line
/// is not of that shape or does not parse so; then `line` is as it was, and
/// the parse through `Record` decides (and words the error).
fn parse_tag_first(line: &mut [u8]) -> Option<Record> {
    const TAG: &[u8] = br#"{"type":""#;
    let rest = line.strip_prefix(TAG)?;
    let len = rest.iter().position(|&b| b == b'"')?;
    let comma = TAG.len() + len + 1;
    if line.get(comma) != Some(&b',') {
        return None;
    }
    // A second `"type"` key (no record has a field of that name, and inside
    // a JSON string the quotes would be escaped) would be ignored by the
    // variant's struct: the parse through `Record` refuses it instead.
    if memchr::memmem::find(&line[comma..], br#""type""#).is_some() {
        return None;
    }
    // The same object without its tag: `{` where the comma after it was.
    line[comma] = b'{';
    let (name, object) = line.split_at(comma);
    let name = &name[TAG.len()..TAG.len() + len];
    fn parse<'a, T: serde::Deserialize<'a>>(
        object: &'a [u8],
        to: impl FnOnce(T) -> Record,
    ) -> Option<Record> {
        serde_json::from_slice(object).ok().map(to)
    }
    let record = match name {
        b"memcg_interval" => parse(object, |r| Record::MemcgInterval(Box::new(r))),
        b"system" => parse(object, Record::System),
        b"slow_charge" => parse(object, Record::SlowCharge),
        b"slow_reclaim" => parse(object, Record::SlowReclaim),
        b"oom_kill" => parse(object, |r| Record::OomKill(Box::new(r))),
        b"header" => parse(object, Record::Header),
        b"capture" => parse(object, |r| Record::Capture(Box::new(r))),
        b"oom_postmortem" => parse(object, |r| Record::OomPostmortem(Box::new(r))),
        _ => None,
    };
    if record.is_none() {
        line[comma] = b',';
    }
    record
}

struct ReadLine {
    too_long: bool,
    /// The line ended with a newline (the last line of a file cut short
    /// mid-write does not).
    newline: bool,
}

/// What is wrong with a line, for a human: not JSON at all, JSON cut
/// short, an unknown record type, or a known type with bad fields.
fn describe(text: &str, err: &serde_json::Error, newline: bool) -> String {
    let what = match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) if e.is_eof() => format!("truncated JSON ({e})"),
        Err(e) => format!("not JSON ({e})"),
        Ok(v) => match v.get("type").and_then(|t| t.as_str()) {
            None => format!("JSON but not a memtrace record (no \"type\"): {err}"),
            Some(t) if err.to_string().starts_with("unknown variant") => {
                format!("unknown record type \"{t}\"")
            }
            Some(t) => format!("not a valid \"{t}\" record: {err}"),
        },
    };
    let what = if newline {
        what
    } else {
        format!("{what}; last line, no newline: the file was cut short")
    };
    cut(&what, MAX_ERROR)
}

/// At most `max` characters of `s`.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor, Read};

    use super::*;

    #[test]
    fn a_second_type_key_is_a_bad_line_not_a_record_of_either_type() {
        let dup = "{\"type\":\"system\",\"type\":\"memcg_interval\",\"ts\":\"\",\"ts_ns\":1,\
            \"interval_ns\":1,\"sys_pct\":1.0,\"max_cpu_sys_pct\":1.0,\"max_cpu\":null,\
            \"iowait_pct\":0.0,\"kswapd_cpu_pct\":0.0,\"dying_memcgs\":null,\"live_memcgs\":1,\
            \"kswapd_wakes\":null,\"kswapd_ns\":null,\"ringbuf_drops\":0,\"memcg_map_full\":0,\
            \"shrinker_map_full\":0,\"inflight_map_full\":0,\"unmatched_returns\":0,\
            \"missed_returns\":0,\"map_evictions\":0,\"prog_recursion_misses\":null,\
            \"memcg_entries\":0,\"shrinker_entries\":0}\n";
        // Without the second key the line is a good record.
        let good = dup.replacen("\"type\":\"memcg_interval\",", "", 1);
        let mut lines = Lines::new(Cursor::new(good));
        assert!(matches!(lines.next_item(), Ok(Some(Item::Record(_)))));
        let mut lines = Lines::new(Cursor::new(dup));
        match lines.next_item() {
            Ok(Some(Item::Bad(b))) => assert!(b.error.contains("duplicate field"), "{}", b.error),
            _ => panic!("a duplicate tag must be a bad line"),
        }
    }

    #[test]
    fn an_endless_line_ends_the_read_at_the_cap_naming_its_line() {
        // /dev/zero: no newline, ever. One good line first.
        let good = b"{\"type\":\"system\",\"ts\":\"\",\"ts_ns\":1,\"interval_ns\":1,\"sys_pct\":1.0,\
            \"max_cpu_sys_pct\":1.0,\"max_cpu\":null,\"iowait_pct\":0.0,\"kswapd_cpu_pct\":0.0,\
            \"dying_memcgs\":null,\"live_memcgs\":1,\"kswapd_wakes\":null,\"kswapd_ns\":null,\
            \"ringbuf_drops\":0,\"memcg_map_full\":0,\"shrinker_map_full\":0,\"inflight_map_full\":0,\
            \"unmatched_returns\":0,\"missed_returns\":0,\"map_evictions\":0,\
            \"prog_recursion_misses\":null,\"memcg_entries\":0,\"shrinker_entries\":0}\n";
        let endless = Cursor::new(good.to_vec()).chain(io::repeat(0));
        let mut lines = Lines::new(BufReader::new(endless));
        assert!(matches!(lines.next_item(), Ok(Some(Item::Record(_)))));
        let e = lines.next_item().err().expect("the cap ends the read");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("line 2 is longer than 16 MiB"),
            "{e}"
        );
        assert!(lines.buf.capacity() <= 2 * MAX_LINE, "memory stays bounded");
    }

    #[test]
    fn tag_first_lines_parse_as_through_the_enum() {
        let system = r#"{"type":"system","ts":"","ts_ns":1,"interval_ns":1,"sys_pct":1.0,"max_cpu_sys_pct":1.0,"max_cpu":null,"iowait_pct":0.0,"kswapd_cpu_pct":0.0,"dying_memcgs":null,"live_memcgs":1,"kswapd_wakes":null,"kswapd_ns":null,"ringbuf_drops":0,"memcg_map_full":0,"shrinker_map_full":0,"inflight_map_full":0,"unmatched_returns":0,"missed_returns":0,"map_evictions":0,"prog_recursion_misses":null,"memcg_entries":0,"shrinker_entries":0}"#;
        let interval = r#"{"type":"memcg_interval","ts":"t","ts_ns":5,"interval_ns":1,"memcg":{"id":7,"path":"/a","deleted":false,"container":null},"charge_calls":null,"charge_failures":null,"charge_ns":null,"charge_pages":null,"charge_p50_ns":null,"charge_p99_ns":null,"reclaim_direct_count":0,"reclaim_direct_ns":0,"reclaim_direct_pages":0,"reclaim_memcg_count":0,"reclaim_memcg_ns":0,"reclaim_memcg_pages":0,"reclaim_p50_ns":null,"reclaim_p99_ns":null,"shrink_slab_calls":null,"shrink_slab_ns":null,"shrink_slab_freed":null,"shrink_slab_kswapd_ns":null,"do_shrink_slab_calls":3,"do_shrink_slab_zero":null,"do_shrink_slab_freed":1,"do_shrink_slab_ns":9,"limit_hits":0,"shrinkers":[{"shrinker":"0x1","count_objects":null,"name":null,"fs_type":"tmpfs","device":"tmpfs","calls":3,"zero":null,"freed":1,"ns":9}],"state":null}"#;
        for text in [system, interval] {
            let mut bytes = text.as_bytes().to_vec();
            let fast = parse_tag_first(&mut bytes).expect("memtrace's own shape");
            assert_eq!(fast, serde_json::from_str::<Record>(text).unwrap());
            // And it writes back the same line.
            assert_eq!(
                crate::output::json::line(&fast),
                crate::output::json::line(&serde_json::from_str::<Record>(text).unwrap())
            );
        }
        // Other shapes, and lines that do not parse, are left as they were
        // for the parse through the enum.
        for text in [
            r#"{"ts":"","type":"system"}"#,
            r#"{"type":"system"}"#,
            r#"{"type":"system","ts_ns":"x"}"#,
            r#"{"type":"nope","a":1}"#,
            r#"{"type":"system""#,
            r#"{"type":""#,
        ] {
            let mut bytes = text.as_bytes().to_vec();
            assert!(parse_tag_first(&mut bytes).is_none(), "{text}");
            assert_eq!(bytes, text.as_bytes());
        }
        // Through the reader: the same bad-line message as before.
        let mut lines = Lines::new(Cursor::new("{\"type\":\"system\",\"ts_ns\":\"x\"}\n"));
        match lines.next_item().unwrap() {
            Some(Item::Bad(b)) => assert!(
                b.error.starts_with("not a valid \"system\" record"),
                "{}",
                b.error
            ),
            _ => panic!("a bad system line is a bad line"),
        }
    }

    #[test]
    fn impossible_values_are_bad_lines() {
        let text = "{\"type\":\"system\",\"ts\":\"\",\"ts_ns\":1,\"interval_ns\":1,\"sys_pct\":1e308,\
            \"max_cpu_sys_pct\":1.0,\"max_cpu\":null,\"iowait_pct\":0.0,\"kswapd_cpu_pct\":0.0,\
            \"dying_memcgs\":null,\"live_memcgs\":1,\"kswapd_wakes\":null,\"kswapd_ns\":null,\
            \"ringbuf_drops\":0,\"memcg_map_full\":0,\"shrinker_map_full\":0,\"inflight_map_full\":0,\
            \"unmatched_returns\":0,\"missed_returns\":0,\"map_evictions\":0,\
            \"prog_recursion_misses\":null,\"memcg_entries\":0,\"shrinker_entries\":0}\n";
        let mut lines = Lines::new(Cursor::new(text));
        match lines.next_item().unwrap() {
            Some(Item::Bad(b)) => {
                assert_eq!(b.line, 1);
                assert!(b.error.contains("sys_pct = 1e308"), "{}", b.error);
            }
            _ => panic!("an impossible sys_pct is a bad line"),
        }
    }
}
