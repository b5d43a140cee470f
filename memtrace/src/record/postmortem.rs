//! OOM post-mortems: the kill as the pipeline reported it, plus what the
//! memcg looked like right after (read at once, before it changes or goes
//! away) and what it went through before, from the history.
use crate::{
    output::{
        escape,
        fields::Unseen,
        records::{Memcg, OomHistory, OomKill, OomPostmortem, Unreclaimable},
        units::bytes,
    },
    pipeline::OomSnapshot,
    record::history::History,
};

/// `snapshot`: the memcgs' state as the pipeline read it at the kill.
pub fn build(
    kill: &OomKill,
    snapshot: Option<&OomSnapshot>,
    history: &History,
    unseen: &Unseen,
) -> OomPostmortem {
    let snap = snapshot.cloned().unwrap_or_default();
    let mut notes = snap.notes;
    let (limit_state, victim_state) = (snap.limit_state, snap.victim_state);
    // The memcg the story is about: the one whose limit fired, else the victim's.
    let focus = kill.oom_memcg.as_ref().or(kill.victim_memcg.as_ref());
    let focus_state = limit_state.as_ref().or(victim_state.as_ref());
    let task_list = snap.tasks;
    let unreclaimable = focus_state.map(|s| {
        let parts = [
            s.shmem_bytes,
            s.unevictable_bytes,
            s.dirty_bytes,
            s.writeback_bytes,
        ];
        let sum: u64 = parts.iter().flatten().sum();
        Unreclaimable {
            shmem_bytes: s.shmem_bytes,
            unevictable_bytes: s.unevictable_bytes,
            dirty_bytes: s.dirty_bytes,
            writeback_bytes: s.writeback_bytes,
            share_pct: s
                .usage_bytes
                .filter(|u| *u > 0)
                .map(|u| sum as f64 * 100.0 / u as f64),
        }
    });
    let history: Option<OomHistory> = focus
        .filter(|m| m.id != 0)
        .map(|m| history.memcg_history(m.id, unseen));
    if kill.before_start {
        notes.push("this kill happened before memtrace started (found in the kernel log)".into());
    }
    notes.extend(attribution_notes(kill));
    OomPostmortem {
        ts: kill.ts.clone(),
        ts_ns: kill.ts_ns,
        kill: kill.clone(),
        // Unknown (no log summary, no BPF memcg) is not global.
        global: matches!(
            kill.constraint.as_deref(),
            Some("global" | "cpuset" | "mempolicy")
        ),
        limit_memcg: kill.oom_memcg.clone(),
        limit_state,
        victim_state,
        tasks: task_list,
        unreclaimable,
        history,
        notes,
    }
}

/// How the kill's memcgs were known, when that is less than the kernel's
/// own word (see docs/events.md, "How an OOM kill is attributed").
fn attribution_notes(kill: &OomKill) -> Vec<String> {
    let has = |s: &str| kill.sources.iter().any(|x| x == s);
    let mut notes = Vec::new();
    if kill.oom_memcg_source.as_deref() == Some("inferred") {
        notes.push(format!(
            "the limiting memcg was inferred from the page counters the kernel programs read at the kill (the lowest memcg at its limit){}",
            if has("kmsg") {
                "; the kernel log has the kill but not its OOM summary: rate-limited by the kernel"
            } else {
                ""
            }
        ));
    }
    if has("trigger_memcg_chain") {
        notes.push("this kernel's mark_victim gives only the victim's pid: the victim's memcg comes from the kernel log or a lookup by id (lost when the log is rate-limited and the memcg is removed at once); the limiting memcg from the memcg chain of the task that ran the OOM killer".into());
    }
    notes
}

/// Whether `limit` is another memcg than `victim` (an ancestor): by path
/// when both are known, else by id.
fn is_ancestor(victim: &Memcg, limit: &Memcg) -> bool {
    match (&victim.path, &limit.path) {
        (Some(v), Some(l)) => v != l,
        _ => victim.id != 0 && limit.id != 0 && victim.id != limit.id,
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn memcg_line(m: &Memcg) -> String {
    let t = escape::text;
    let path = m
        .path
        .as_deref()
        .map(t)
        .unwrap_or_else(|| format!("(id {})", m.id));
    match &m.container {
        Some(c) if c.runtime != "cgroup" || c.pod.is_some() => {
            format!("{path}  [{} {}]", c.runtime, t(&c.display_name()))
        }
        _ => path,
    }
}

/// Who the victim's container is, as the runtimes name it: None when only
/// the path is known (the memcg line already shows that).
fn container_line(m: &Memcg) -> Option<String> {
    let t = escape::text;
    let c = m.container.as_ref()?;
    let mut parts = Vec::new();
    if let Some(ns) = &c.namespace {
        parts.push(format!("namespace {}", t(ns)));
    }
    if let Some(pod) = &c.pod {
        parts.push(format!("pod {}", t(pod)));
    }
    if let Some(n) = &c.runtime_name {
        parts.push(format!("container {}", t(n)));
    }
    if let Some(i) = &c.image {
        parts.push(format!("image {}", t(i)));
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(format!("id {}", t(&c.name)));
    Some(parts.join("  "))
}

/// The human-readable block (every system string escaped).
pub fn text(p: &OomPostmortem) -> String {
    let t = escape::text;
    let k = &p.kill;
    let v = &k.victim;
    let mut out = format!("=== OOM kill at {} ===\n", t(&p.ts));
    out.push_str(&format!(
        "victim      pid {} ({}) uid {} oom_score_adj {}\n            rss anon {} kB, file {} kB, shmem {} kB, page tables {} kB\n",
        v.pid,
        t(&v.comm),
        opt(v.uid),
        opt(v.oom_score_adj),
        opt(v.rss_anon_kb),
        opt(v.rss_file_kb),
        opt(v.rss_shmem_kb),
        opt(v.pgtables_kb)
    ));
    if let Some(m) = &k.victim_memcg {
        out.push_str(&format!("memcg       {}\n", memcg_line(m)));
        if let Some(line) = container_line(m) {
            out.push_str(&format!("container   {line}\n"));
        }
    }
    match (&p.limit_memcg, p.global) {
        (Some(l), _) => {
            let ancestor = k.victim_memcg.as_ref().is_some_and(|v| is_ancestor(v, l));
            out.push_str(&format!(
                "limit       memcg OOM: the limit of {} fired{}\n",
                memcg_line(l),
                if ancestor {
                    " (an ancestor of the victim's memcg: its limit binds the children)"
                } else {
                    ""
                }
            ));
        }
        (None, true) => out.push_str(&format!(
            "limit       global OOM ({}): the machine ran out, no memcg limit fired\n",
            t(k.constraint.as_deref().unwrap_or("unknown constraint"))
        )),
        (None, false) => out.push_str(&format!(
            "limit       the limiting memcg is unknown ({})\n",
            if k.sources.iter().any(|s| s == "kmsg") {
                "the kernel log has the kill but not its OOM summary: rate-limited by the kernel, and no memcg was at its limit in what the kernel programs read"
            } else {
                "no kernel log report joined this kill, and no memcg was at its limit in what the kernel programs read"
            }
        )),
    }
    if let Some(s) = p.limit_state.as_ref().or(p.victim_state.as_ref()) {
        out.push_str(&format!(
            "usage       {} of limit {}{}\n",
            s.usage_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.effective_limit_bytes
                .map(bytes)
                .unwrap_or_else(|| "none".into()),
            s.limited_by
                .as_deref()
                .map(|b| format!(" (set by {})", t(b)))
                .unwrap_or_default()
        ));
        out.push_str(&format!(
            "memory.stat anon {}  file {}  shmem {}  unevictable {}  dirty {}  writeback {}  inactive_file {}\n",
            s.anon_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.file_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.shmem_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.unevictable_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.dirty_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.writeback_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            s.inactive_file_bytes.map(bytes).unwrap_or_else(|| "-".into()),
        ));
        if s.oom_kill_disable == Some(true) {
            out.push_str(
                "            oom_kill_disable=1: tasks hang in the charge path instead of dying\n",
            );
        }
    }
    if let Some(u) = &p.unreclaimable {
        out.push_str(&format!(
            "unreclaimable {} of usage: shmem/tmpfs {}, unevictable (mlock) {}, dirty {}, writeback {}\n",
            u.share_pct.map(|x| format!("{x:.1}%")).unwrap_or_else(|| "-".into()),
            u.shmem_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            u.unevictable_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            u.dirty_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            u.writeback_bytes.map(bytes).unwrap_or_else(|| "-".into()),
        ));
    }
    match &p.tasks {
        Some(ts) if !ts.is_empty() => {
            out.push_str("tasks left  (biggest anonymous rss first)\n");
            for task in ts {
                out.push_str(&format!(
                    "            pid {:>7} {:<16} anon {} kB  file {} kB  shmem {} kB\n",
                    task.pid,
                    t(&task.comm),
                    opt(task.rss_anon_kb),
                    opt(task.rss_file_kb),
                    opt(task.rss_shmem_kb)
                ));
            }
        }
        Some(_) => out.push_str("tasks left  none\n"),
        None => {}
    }
    if let Some(h) = p.history.as_ref().filter(|h| h.intervals == 0) {
        out.push_str(&format!(
            "before      no interval recorded for this memcg in the last {:.0} s (activity since the last interval is not included)\n",
            h.window_ns as f64 / 1e9
        ));
    }
    if let Some(h) = p.history.as_ref().filter(|h| h.intervals > 0) {
        let secs = h.window_ns as f64 / 1e9;
        out.push_str(&format!(
            "before      over {secs:.0} s: {} reclaims taking {:.1} ms ({} pages), limit hits {}, charge failures {}, shrinker calls {}, of which freed nothing: {}\n",
            h.reclaim_count,
            h.reclaim_ns as f64 / 1e6,
            h.reclaim_pages,
            h.limit_hits.map(|x| x.to_string()).unwrap_or_else(|| "unknown".into()),
            h.charge_failures.map(|x| x.to_string()).unwrap_or_else(|| "not visible on this plan".into()),
            h.do_shrink_slab_calls.map(|x| x.to_string()).unwrap_or_else(|| "not visible".into()),
            h.do_shrink_slab_zero.map(|x| x.to_string()).unwrap_or_else(|| "not visible on this plan".into()),
        ));
    }
    for n in &p.notes {
        out.push_str(&format!("note        {}\n", t(n)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memcg(id: u64, path: Option<&str>) -> Memcg {
        Memcg {
            id,
            path: path.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_memcg_is_not_called_an_ancestor_and_silence_is_explained() {
        assert!(!is_ancestor(&memcg(5, None), &memcg(5, Some("/a"))));
        assert!(is_ancestor(&memcg(6, Some("/a/b")), &memcg(5, Some("/a"))));
        assert!(!is_ancestor(&memcg(0, None), &memcg(5, Some("/a"))));
        // The log has the kill but no summary, nothing at its limit.
        let kill = OomKill {
            victim_memcg: Some(memcg(5, Some("/a"))),
            sources: vec!["mark_victim".into(), "kmsg".into()],
            ..Default::default()
        };
        let pm = build(&kill, None, &History::new(1, 1), &Unseen::default());
        let t = text(&pm);
        assert!(t.contains("rate-limited by the kernel"), "{t}");
        assert!(!t.contains("unreadable"), "{t}");
        // Inferred: said so in the notes.
        let kill = OomKill {
            oom_memcg: Some(memcg(5, Some("/a"))),
            oom_memcg_source: Some("inferred".into()),
            ..kill
        };
        let pm = build(&kill, None, &History::new(1, 1), &Unseen::default());
        assert!(
            pm.notes.iter().any(|n| n.contains("inferred")),
            "{:?}",
            pm.notes
        );
        assert!(!text(&pm).contains("an ancestor"));
    }
}
