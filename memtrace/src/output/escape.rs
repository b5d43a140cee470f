//! Cgroup names and task comms are chosen by container users. These helpers
//! make sure they can never inject terminal escapes or break a line-based
//! format, whatever bytes they hold.

/// Characters escaped in every output, JSON included: C0/C1 controls, DEL,
/// line/paragraph separators and bidi overrides (which reorder what a
/// terminal shows, hiding text).
pub fn is_dangerous(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f | 0x2028 | 0x2029 | 0x202a..=0x202e | 0x2066..=0x2069)
}

/// For plain-text output: dangerous characters become `\xNN` / `\u{NNNN}`,
/// and backslashes are doubled so the escaping is unambiguous.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_dangerous(c) {
            if (c as u32) < 0x100 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A kernel `comm` (up to 16 bytes, NUL-terminated, any bytes) as a string;
/// invalid UTF-8 becomes U+FFFD. Escaping happens at output time.
pub fn comm(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_terminal_controls() {
        assert_eq!(text("ok-name_1.2"), "ok-name_1.2");
        assert_eq!(text("\x1b[2Jevil\x07"), "\\x1b[2Jevil\\x07");
        assert_eq!(text("a\nb\rc\td"), "a\\x0ab\\x0dc\\x09d");
        assert_eq!(text("\u{9b}31m"), "\\x9b31m", "8-bit CSI");
        assert_eq!(text("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(text("back\\slash"), "back\\\\slash");
        assert_eq!(text("日本"), "日本");
    }

    #[test]
    fn comm_stops_at_nul_and_survives_bad_utf8() {
        assert_eq!(comm(b"tail\0\0\0garbage"), "tail");
        assert_eq!(comm(&[0x66, 0xff, 0x1b, 0]), "f\u{fffd}\u{1b}");
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }
}
