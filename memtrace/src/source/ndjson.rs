//! The one NDJSON reader: every record file memtrace reads (`--replay`,
//! `report`, `record`'s own OOM log) goes through it. Every line is either
//! a record or a bad line with its number and what is wrong with it; the
//! caller decides whether a bad line ends the read (`--replay`) or is
//! named and skipped (`report`). Lines are read as bytes (a file may hold
//! anything) and capped, so a binary file or a runaway line cannot exhaust
//! memory.
use std::io::{self, BufRead};

use serde::Serialize;

use crate::output::records::Record;

/// Longer lines are bad lines (the longest real record is a few KiB).
const MAX_LINE: usize = 16 << 20;
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

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The next non-blank line, parsed; None at the end of the file.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            let Some(read) = self.read_line()? else {
                return Ok(None);
            };
            self.line_no += 1;
            let line = self.line_no;
            if read.too_long {
                return Ok(Some(Item::Bad(BadLine {
                    line,
                    error: format!("line longer than {} MiB: not a record", MAX_LINE >> 20),
                })));
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
                Ok(record) => Item::Record(Box::new(record)),
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
        let mut too_long = false;
        let mut any = false;
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(any.then_some(ReadLine {
                    too_long,
                    newline: false,
                }));
            }
            any = true;
            let (chunk, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            let room = MAX_LINE.saturating_sub(self.buf.len());
            if chunk.len() > room {
                too_long = true;
            }
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.reader.consume(used);
            if done {
                return Ok(Some(ReadLine {
                    too_long,
                    newline: true,
                }));
            }
        }
    }
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
