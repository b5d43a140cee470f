//! JSON encoding for every record memtrace writes. serde_json already
//! escapes quotes, backslashes and C0 controls; this formatter also escapes
//! DEL, C1 controls (U+009B is a CSI on many terminals), line separators and
//! bidi overrides, so `cat`-ing a stream is as safe as parsing it.
use std::io::{self, Write};

use serde::Serialize;

use super::escape::is_dangerous;

struct SafeFormatter;

impl serde_json::ser::Formatter for SafeFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Every dangerous character is a control or non-ASCII: printable
        // ASCII, nearly every string, goes through without decoding
        // characters.
        if fragment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_dangerous(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// One record as one line of JSON, newline included.
pub fn line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    append_line(&mut buf, value);
    buf
}

/// Appends one record as one line of JSON, newline included, to `buf`.
pub fn append_line<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *buf, SafeFormatter);
    // Serializing our own record types cannot fail (no maps with non-string keys).
    value.serialize(&mut ser).expect("records serialize");
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct R<'a> {
        path: &'a str,
        comm: &'a str,
    }

    #[test]
    fn hostile_strings_stay_on_one_line_and_escaped() {
        let out = line(&R {
            path: "/x\x1b]0;pwned\x07\n{\"type\":\"fake\"}",
            comm: "a\u{9b}b\u{7f}\u{2028}\"\\",
        });
        let s = std::str::from_utf8(&out).unwrap();
        assert_eq!(s.matches('\n').count(), 1, "exactly one line: {s}");
        assert!(s.ends_with('\n'));
        assert!(
            !s.bytes().any(|b| b < 0x20 && b != b'\n'),
            "no raw C0: {s:?}"
        );
        assert!(
            !s.contains('\u{9b}') && !s.contains('\u{7f}') && !s.contains('\u{2028}'),
            "{s:?}"
        );
        assert!(s.contains("\\u001b]0;pwned\\u0007\\n"), "{s}");
        assert!(s.contains("a\\u009bb\\u007f\\u2028\\\"\\\\"), "{s}");
        // And it round-trips to the original strings.
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).unwrap();
        assert_eq!(v["path"], "/x\x1b]0;pwned\x07\n{\"type\":\"fake\"}");
        assert_eq!(v["comm"], "a\u{9b}b\u{7f}\u{2028}\"\\");
    }
}
