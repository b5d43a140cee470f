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
        if printable_ascii(fragment.as_bytes()) {
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

/// Whether every byte is printable ASCII (0x20..=0x7e), eight at a time:
/// every key and string of every record passes through here.
fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // A byte of 0x7f or more has its top bit set, or gets it from +1
        // (a carry out of 0xff only happens where that is so already).
        let high = (w | w.wrapping_add(ONES)) & TOPS;
        // A byte under 0x20 borrows into its clear top bit when 0x20 is
        // subtracted (the "has less than" word trick: exact as a yes/no).
        let low = w.wrapping_sub(0x20 * ONES) & !w & TOPS;
        if high | low != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|b| (0x20..0x7f).contains(b))
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
    fn printable_ascii_word_check_agrees_with_bytes() {
        let naive = |b: &[u8]| b.iter().all(|x| (0x20..0x7f).contains(x));
        // Every byte value at every position of a 17-byte string (two
        // words and a remainder), among printable neighbours.
        for at in 0..17 {
            for v in 0..=255u8 {
                let mut b = *b"abcdefgh~ ijklmno";
                b[at] = v;
                assert_eq!(printable_ascii(&b), naive(&b), "byte {v:#x} at {at}");
            }
        }
        // Pairs of edge values in one word (carries and borrows).
        let edge = [0x00, 0x1f, 0x20, 0x21, 0x7e, 0x7f, 0x80, 0xfe, 0xff];
        for &x in &edge {
            for &y in &edge {
                for gap in 1..8 {
                    let mut b = [b'a'; 8];
                    b[0] = x;
                    b[gap] = y;
                    assert_eq!(printable_ascii(&b), naive(&b), "{x:#x}, {y:#x} +{gap}");
                }
            }
        }
        assert!(printable_ascii(b""));
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
