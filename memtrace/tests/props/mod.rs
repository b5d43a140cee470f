//! The properties memtrace's parsers of untrusted input must hold, whatever
//! the input: one copy, checked by the coverage-guided fuzz targets
//! (`fuzz/fuzz_targets/`, nightly, `cargo xtask fuzz`) and by the proptest
//! generators of `tests/properties.rs` (stable, every `cargo test`).
//!
//! Each function takes one input, runs the parser and panics (with what
//! broke) when a property does not hold; a parser's own panic fails it too.

use std::io::{BufReader, Cursor};

use memtrace::cgroup::container::attribute;
use memtrace::cgroup::mounts::parse_mountinfo;
use memtrace::cgroup::path::canonical;
use memtrace::output::escape::{self, is_dangerous};
use memtrace::output::json;
use memtrace::source::kmsg::{
    KmsgRecord, OomAssembler, OomLine, OomReport, parse_oom_line, parse_record, unescape,
};
use memtrace::source::ndjson::{Item, Lines, MAX_LINE};

/// Longest summary the assembler keeps (its `MAX_SUMMARY`).
const MAX_SUMMARY: usize = 16 * 1024;

/// One `/dev/kmsg` read: parses or is None; a parsed message is printable
/// ASCII (the kernel's escaping kept, anything else escaped) and then goes
/// through the OOM grammar.
pub fn kmsg_record(buf: &[u8]) {
    let Some(r) = parse_record(buf) else { return };
    assert!(
        r.message.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "raw byte in message {:?}",
        r.message
    );
    let line_len = buf.split(|&b| b == b'\n').next().map_or(0, <[u8]>::len);
    assert!(
        r.message.len() <= 4 * line_len,
        "message grew beyond \\xNN escaping"
    );
    assert!(unescape(&r.message).len() <= r.message.len());
    oom_line(&r.message);
}

/// One kernel log message: recognised or not, every string the grammar
/// returns is a piece of the message (it never invents text).
pub fn oom_line(message: &str) {
    let Some(line) = parse_oom_line(message) else {
        return;
    };
    let from_message = |what: &str, s: &str| {
        assert!(
            message.contains(s),
            "{what} {s:?} is not in the message {message:?}"
        );
    };
    match &line {
        OomLine::Invoked { comm, gfp_mask, .. } => {
            from_message("comm", comm);
            if let Some(g) = gfp_mask {
                from_message("gfp_mask", g);
            }
        }
        OomLine::Summary {
            constraint,
            oom_memcg,
            task_memcg,
            task,
            ..
        } => {
            from_message("constraint", constraint);
            from_message("task", task);
            for m in [oom_memcg, task_memcg].into_iter().flatten() {
                from_message("memcg", m);
            }
        }
        OomLine::Killed { victim, .. } => from_message("comm", &victim.comm),
        OomLine::GroupKill { memcg } => from_message("memcg", memcg),
    }
}

/// A sequence of kernel messages (facility 0, one per record, 1 ms apart):
/// at most one report per message, carrying its `Killed process` line's
/// seq; the comms come from single messages; the summary's fields (which
/// may be joined from pieces split over several records, with other
/// messages between them) are bounded by the summary cap.
pub fn oom_assembler(messages: &[&str]) {
    let mut asm = OomAssembler::new();
    let mut reports = 0;
    for (i, m) in messages.iter().enumerate() {
        let rec = KmsgRecord {
            facility: 0,
            seq: i as u64,
            ts_usec: i as u64 * 1000,
            message: (*m).to_string(),
        };
        let Some(report) = asm.push(&rec) else {
            continue;
        };
        reports += 1;
        let OomReport {
            trigger_comm,
            constraint,
            oom_memcg,
            task_memcg,
            victim,
            seq,
            ..
        } = &report;
        let comm = &victim.comm;
        assert_eq!(*seq, i as u64, "a report carries its Killed line's seq");
        assert!(m.contains(comm.as_str()), "comm {comm:?} not in {m:?}");
        if let Some(t) = trigger_comm {
            assert!(
                messages[..i].iter().any(|m| m.contains(t.as_str())),
                "trigger comm {t:?} is in no earlier message"
            );
        }
        for s in [constraint, oom_memcg, task_memcg].into_iter().flatten() {
            assert!(s.len() <= MAX_SUMMARY, "{s:?} is unbounded");
        }
    }
    assert!(reports <= messages.len());
}

/// Upper bound on the items read from `data`, so a reader that stops
/// advancing fails instead of hanging.
fn max_items(data: &[u8]) -> usize {
    data.iter().filter(|&&b| b == b'\n').count() + 2
}

/// Any bytes as a record file: the reader ends (at the end or at an
/// over-long line), numbers lines strictly increasing and within the file,
/// keeps error texts short, and every record it accepts writes back as
/// one line with no raw control or bidi character that reads back as the
/// same record.
pub fn ndjson(data: &[u8]) {
    let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut lines = Lines::new(BufReader::new(Cursor::new(data)));
    let mut last = 0;
    for _ in 0..max_items(data) {
        let item = match lines.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(e) => {
                assert!(data.len() > MAX_LINE, "error on a short file: {e}");
                return;
            }
        };
        let n = lines.line_no();
        assert!(n > last && n <= newlines + 1, "line {n} after {last}");
        last = n;
        match item {
            Item::Bad(bad) => {
                assert_eq!(bad.line, n);
                assert!(bad.error.chars().count() <= 203, "{}", bad.error);
            }
            Item::Record(rec) => {
                let out = json::line(&rec);
                let text = std::str::from_utf8(&out).expect("records write UTF-8");
                assert!(text.ends_with('\n'));
                no_dangerous(&text[..text.len() - 1], "a record written back");
                let mut again = Lines::new(BufReader::new(Cursor::new(out.as_slice())));
                match again.next_item() {
                    Ok(Some(Item::Record(back))) => assert_eq!(
                        serde_json::to_value(&back).unwrap(),
                        serde_json::to_value(&rec).unwrap(),
                        "record changed on the way back"
                    ),
                    Ok(Some(Item::Bad(b))) => panic!("written record reads back bad: {b:?}"),
                    other => panic!("written record reads back as {:?}", other.is_ok()),
                }
            }
        }
    }
    panic!("the reader did not stop after {} items", max_items(data));
}

/// A cgroup path (any string): attribution never panics, and the cgroup
/// it names is the memcg's canonical path or a component-wise ancestor.
pub fn cgroup_attribute(path: &str) {
    let c = attribute(path);
    let full = canonical(path);
    let under = c.cgroup == "/"
        || c.cgroup == full
        || full
            .strip_prefix(c.cgroup.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    assert!(under, "cgroup {:?} is not a prefix of {:?}", c.cgroup, full);
    assert!(!c.runtime.is_empty() && !c.name.is_empty());
    if c.runtime == "cgroup" && c.pod_uid.is_none() {
        assert_eq!(c.cgroup, full, "a plain cgroup is the memcg itself");
    }
}

/// mountinfo text: at most one mount per line, filesystem types are one
/// field.
pub fn mountinfo(text: &str) {
    let mounts = parse_mountinfo(text);
    assert!(mounts.len() <= text.lines().count());
    for m in &mounts {
        assert!(!m.fstype.contains(' '));
        assert!(!m.super_opts.contains(' '));
    }
}

/// Output escaping: no raw control, DEL, C1, line separator or bidi
/// override survives, in text or in JSON; `comm` takes any bytes.
pub fn escape(s: &str, raw: &[u8]) {
    let t = escape::text(s);
    no_dangerous(&t, "escape::text");
    assert!(t.len() >= s.len());
    let j = json::line(&s);
    let j = std::str::from_utf8(&j).unwrap();
    no_dangerous(j.strip_suffix('\n').unwrap(), "json::line");
    let back: String = serde_json::from_str(j).unwrap();
    assert_eq!(back, s, "JSON escaping is lossless");
    let c = escape::comm(raw);
    no_dangerous(&escape::text(&c), "an escaped comm");
}

fn no_dangerous(s: &str, what: &str) {
    if let Some(c) = s.chars().find(|&c| is_dangerous(c)) {
        panic!("{what} holds raw {c:?}: {s:?}");
    }
}
