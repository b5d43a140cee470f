//! The `/dev/kmsg` record format, and the kernel's `\xNN` escaping of
//! the messages in it. Messages are kept exactly as the kernel escaped them
//! (`\xNN` for control, non-ASCII bytes and `\`): only [`unescape`] undoes
//! it, for a fragment that names something on disk.

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Syslog facility (PRIO >> 3): 0 for the kernel's own messages, non-zero
    /// for records user space wrote to /dev/kmsg (which may be forgeries).
    pub facility: u32,
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC based, as `dmesg` shows).
    pub ts_usec: u64,
    /// The message, still escaped by the kernel; pure printable ASCII.
    pub message: String,
}

/// Parses one record as returned by one `read()` of `/dev/kmsg`:
/// `PRIO,SEQ,TS_USEC,FLAGS[,more];MESSAGE\n` plus ` KEY=VALUE\n` continuation
/// lines (ignored). Returns `None` for anything malformed.
pub fn parse_record(buf: &[u8]) -> Option<KmsgRecord> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let semi = line.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&line[..semi]).ok()?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    Some(KmsgRecord {
        facility: prio >> 3,
        seq,
        ts_usec,
        message: printable(&line[semi + 1..]),
    })
}

/// Keeps the kernel's escaping as is and escapes, the way the kernel does,
/// any byte that should not be there (control or non-ASCII), so a message can
/// never carry a raw control character.
fn printable(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Undoes the kernel's `\xNN` escaping of a message fragment (a cgroup
/// path, a comm) to the original bytes, e.g. to find that cgroup on disk.
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_restores_escaped_bytes() {
        assert_eq!(
            unescape("/a\\x1b]0;x\\x07\\xc2\\x9bb"),
            b"/a\x1b]0;x\x07\xc2\x9bb"
        );
        assert_eq!(unescape("plain/path"), b"plain/path");
        assert_eq!(unescape("odd\\x1"), b"odd\\x1");
        assert_eq!(unescape("\\x5c"), b"\\");
    }

    #[test]
    fn record_with_continuation_lines() {
        let raw =
            b"6,1234,5678901,-,caller=T42;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n";
        let r = parse_record(raw).unwrap();
        assert_eq!((r.seq, r.ts_usec), (1234, 5678901));
        assert_eq!(r.message, "usb 1-1: new device");
        let r = parse_record(b"3,9,10,-;Memory cgroup out of memory: x;y\n").unwrap();
        assert_eq!(r.message, "Memory cgroup out of memory: x;y");
        // 3.x-era header without flags, no trailing newline.
        assert_eq!(parse_record(b"4,7,8;m").unwrap().message, "m");
    }

    #[test]
    fn record_message_stays_escaped() {
        let r = parse_record(b"4,1,2,-;a\\x1bb\x1b\x7f\xff\tz\n").unwrap();
        assert_eq!(r.message, "a\\x1bb\\x1b\\x7f\\xff\\x09z");
        assert!(r.message.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn garbage_records_are_none() {
        for raw in [
            &b""[..],
            b"\n",
            b"hello",
            b";msg",
            b"6,1;msg",
            b"6,x,1,-;msg",
            b"x,1,2,-;msg",
            b"6,-1,2,-;msg",
            b"6,1,2\xff,-;msg",
            b" SUBSYSTEM=usb\n",
        ] {
            assert_eq!(parse_record(raw), None, "{raw:?}");
        }
    }
}
