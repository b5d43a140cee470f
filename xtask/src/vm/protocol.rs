//! The guest-to-host protocol.
//!
//! Console (ttyS0), one item per line:
//! - `VMTEST-INIT key=value...`     /init started
//! - `RESULT <name> pass|fail|skip [detail]`   a check done inside the guest
//! - `INFO key=value ...`            facts the host checks need (pids, memcgs)
//! - `VMTEST-DONE ...`               the guest finished; it powers off next
//!
//! Data channel (ttyS1; the console is also scanned as a fallback), files
//! framed as `@@FILE <name>` ... `@@END <name>`.

use std::collections::BTreeMap;

pub const INIT_MARKER: &str = "VMTEST-INIT";
pub const DONE_MARKER: &str = "VMTEST-DONE";

#[derive(Debug, Clone, PartialEq)]
pub struct GuestResult {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Default)]
pub struct Transcript {
    pub results: Vec<GuestResult>,
    /// Each `INFO` line as its key=value pairs.
    pub infos: Vec<BTreeMap<String, String>>,
    pub files: BTreeMap<String, String>,
    pub done: bool,
}

impl Transcript {
    pub fn parse<'a>(console: impl IntoIterator<Item = &'a str>, data: &str) -> Transcript {
        let mut t = Transcript::default();
        let mut console_text = String::new();
        for line in console {
            // Kernel messages may precede our text on the same line.
            if let Some(i) = line.find("RESULT ") {
                if let Some(r) = parse_result(&line[i + 7..]) {
                    t.results.push(r);
                }
            } else if let Some(i) = line.find("INFO ") {
                t.infos.push(parse_kv(&line[i + 5..]));
            } else if line.contains(DONE_MARKER) {
                t.done = true;
            }
            console_text.push_str(line);
            console_text.push('\n');
        }
        collect_files(&console_text, &mut t.files);
        collect_files(data, &mut t.files);
        t
    }

    /// The INFO lines whose `key` equals `value`.
    pub fn infos_with<'s>(
        &'s self,
        key: &'s str,
        value: &'s str,
    ) -> impl Iterator<Item = &'s BTreeMap<String, String>> + 's {
        self.infos
            .iter()
            .filter(move |m| m.get(key).map(String::as_str) == Some(value))
    }
}

fn parse_result(rest: &str) -> Option<GuestResult> {
    let mut it = rest.trim().splitn(3, ' ');
    let name = it.next()?.to_owned();
    let status = match it.next()? {
        "pass" => Status::Pass,
        "fail" => Status::Fail,
        "skip" => Status::Skip,
        _ => return None,
    };
    let detail = it.next().unwrap_or("").trim().to_owned();
    Some(GuestResult {
        name,
        status,
        detail,
    })
}

/// `a=1 b=two c=` -> map; tokens without '=' are ignored.
pub fn parse_kv(s: &str) -> BTreeMap<String, String> {
    s.split_whitespace()
        .filter_map(|tok| tok.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn collect_files(text: &str, files: &mut BTreeMap<String, String>) {
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@@FILE ") {
            current = Some((name.trim().to_owned(), String::new()));
        } else if let Some(name) = line.strip_prefix("@@END ") {
            if let Some((n, body)) = current.take()
                && n == name.trim()
            {
                files.insert(n, body);
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_console_and_data() {
        let console = [
            "[    1.0] random kernel line",
            "VMTEST-INIT uptime=1.2",
            "RESULT boot pass kernel=6.1.0",
            "RESULT fentry/oom_workload fail no oom_kill in memory.events",
            "RESULT weird maybe",
            "INFO scenario=oom mode=fentry pid=42 memcg=/vt_fentry_oom",
            "VMTEST-DONE uptime=9",
        ];
        let data = "@@FILE a.ndjson\n{\"x\":1}\n\n{\"y\":2}\n@@END a.ndjson\n@@FILE broken\nzzz\n";
        let t = Transcript::parse(console, data);
        assert!(t.done);
        assert_eq!(t.results.len(), 2);
        assert_eq!(t.results[1].status, Status::Fail);
        assert_eq!(t.results[1].detail, "no oom_kill in memory.events");
        assert_eq!(t.infos_with("mode", "fentry").next().unwrap()["pid"], "42");
        assert_eq!(t.files["a.ndjson"], "{\"x\":1}\n\n{\"y\":2}\n");
        assert!(!t.files.contains_key("broken"));
    }
}
