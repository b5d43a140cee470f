//! The report as text. Every string that came from the file (cgroup paths,
//! container names, comms, shrinker labels, host names, timestamps) goes
//! through `escape::text`; `render` finally escapes anything dangerous that
//! is left, so no control character from a record reaches the terminal.
use crate::output::fields::Field;
use std::fmt::Write;

use super::{
    oom::{LimitOf, OomStory},
    storm::Verdict,
    summary::{Kind, Report, ShrinkerSummary, Usage},
};
use crate::output::{
    escape::{self, is_dangerous},
    records::{Header, Memcg, OomHistory, Slow, TaskRss, Victim},
    units::bytes,
};

/// What a value the attach plan cannot see reads as, in prose.
pub const NOT_VISIBLE: &str = "not visible on this plan";
/// Kills from before the start listed (one line each).
const EARLIER_SHOWN: usize = 5;
/// And in table cells.
const UNSEEN: &str = "-";

fn e(s: &str) -> String {
    escape::text(s)
}

/// 1234567 -> "1,234,567".
pub fn count(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in ns, to about three significant digits.
pub fn dur(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0 => "0 s".into(),
        n if n >= 10_000_000_000 => format!("{:.1} s", f / 1e9),
        n if n >= 1_000_000_000 => format!("{:.2} s", f / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", f / 1e6),
        n if n >= 1_000 => format!("{:.0} us", f / 1e3),
        n => format!("{n} ns"),
    }
}

fn secs(s: f64) -> String {
    dur((s * 1e9).round().max(0.0) as u64)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| NOT_VISIBLE.into())
}

fn cell<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| UNSEEN.into())
}

fn memcgs(n: u64) -> String {
    format!("{} memcg{}", count(n), if n == 1 { "" } else { "s" })
}

fn pct(v: f64) -> String {
    format!("{v:.1}%")
}

/// A table: every column but the last right-aligned to its widest cell;
/// the last (a name of any length) left as is.
fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let n = head.len();
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n - 1) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < n {
                let _ = write!(s, "{c:>width$}  ", width = w[i]);
            } else {
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    out.push_str(&line(head.to_vec()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
}

fn memcg_label(m: &Memcg) -> String {
    let mut s = match &m.path {
        Some(p) => e(p),
        None if m.id == 0 => "(no memcg)".into(),
        None => format!("memcg id {} (path unknown)", m.id),
    };
    if m.deleted {
        s.push_str(" (deleted)");
    }
    if let Some(c) = &m.container
        && (c.runtime != "cgroup" || c.pod.is_some())
    {
        let _ = write!(s, " [{} {}", e(&c.runtime), e(&c.display_name()));
        if let Some(i) = &c.image {
            let _ = write!(s, " image {}", e(i));
        }
        s.push(']');
    }
    s
}

fn usage_label(u: &Usage, memcg: bool) -> String {
    let mut s = e(&u.name);
    if u.deleted {
        s.push_str(" (deleted)");
    }
    if memcg {
        if let (Some(c), Some(rt)) = (&u.container, &u.runtime)
            && rt != "cgroup"
        {
            let _ = write!(s, " [{} {}]", e(rt), e(c));
        }
    } else {
        let rt = u.runtime.as_deref().unwrap_or("cgroup");
        let _ = write!(s, " [{}", e(rt));
        if let Some(cg) = &u.cgroup
            && cg != &u.name
        {
            let _ = write!(s, " {}", e(cg));
        }
        let _ = write!(s, ", {}]", memcgs(u.memcgs));
    }
    s
}

fn reclaim_rows(v: &[Usage], memcg: bool) -> Vec<Vec<String>> {
    v.iter()
        .map(|u| {
            vec![
                dur(u.reclaim_ns),
                cell(u.reclaim_count, count),
                cell(u.reclaim_pages, count),
                cell(u.reclaim_p99_ns, dur),
                cell(u.limit_hits, count),
                cell(u.charge_failures, count),
                u.oom_kills.to_string(),
                usage_label(u, memcg),
            ]
        })
        .collect()
}

fn shrink_rows(v: &[Usage], memcg: bool) -> Vec<Vec<String>> {
    v.iter()
        .map(|u| {
            vec![
                cell(u.do_shrink_slab_calls, count),
                cell(u.zero_pct, |z| format!("{z:.1}")),
                cell(u.do_shrink_slab_freed, count),
                cell(u.do_shrink_slab_ns, dur),
                cell(u.shrink_slab_kswapd_ns, dur),
                usage_label(u, memcg),
            ]
        })
        .collect()
}

const RECLAIM_HEAD: [&str; 8] = [
    "RECLAIM", "EPISODES", "PAGES", "P99", "LIMIT", "CFAIL", "OOM", "",
];
const SHRINK_HEAD: [&str; 6] = ["CALLS", "ZERO%", "FREED", "TIME", "KSWAPD", ""];

fn shrinker_label(s: &ShrinkerSummary) -> String {
    let mut out = match &s.count_objects {
        Some(c) => e(c),
        None => "(count_objects unknown)".into(),
    };
    let mut extra = vec![e(&s.shrinker)];
    for (k, v) in [("name", &s.name), ("fs", &s.fs_type), ("device", &s.device)] {
        if let Some(v) = v {
            extra.push(format!("{k} {}", e(v)));
        }
    }
    let _ = write!(out, " ({})", extra.join(", "));
    out
}

fn history_line(h: &OomHistory, from: &str, zero_seen: bool) -> String {
    if h.intervals == 0 {
        return format!(
            "before the kill ({from}): no interval of this memcg recorded in the {} before it",
            dur(h.window_ns)
        );
    }
    let mut s = format!(
        "before the kill ({from}, {} over {} interval{}): reclaim {} in {} episodes ({} pages), \
         limit hits {}, charge failures {}, do_shrink_slab calls {}",
        dur(h.window_ns),
        h.intervals,
        if h.intervals == 1 { "" } else { "s" },
        dur(h.reclaim_ns),
        count(h.reclaim_count),
        count(h.reclaim_pages),
        opt(h.limit_hits, count),
        opt(h.charge_failures, count),
        opt(h.do_shrink_slab_calls, count),
    );
    match (h.do_shrink_slab_calls, h.do_shrink_slab_zero) {
        (Some(c), Some(z)) if c > 0 => {
            let _ = write!(s, " ({:.1}% freed nothing)", z as f64 * 100.0 / c as f64);
        }
        (Some(c), None) if c > 0 && !zero_seen => {
            let _ = write!(s, " (share that freed nothing {NOT_VISIBLE})");
        }
        _ => {}
    }
    if let Some(n) = h.shrink_slab_ns {
        let _ = write!(s, ", shrink_slab time {}", dur(n));
    }
    s
}

/// "cpu N", or "cpu ?" when the record does not say which.
fn cpu(c: Option<u32>) -> String {
    c.map(|c| format!("cpu {c}"))
        .unwrap_or_else(|| "cpu ?".into())
}

/// The report as text: its sections in order.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let o = &mut out;
    file_section(o, r);
    trigger_section(o, r);
    host_section(o, r);
    reclaim_section(o, r);
    if r.record_counts.contains_key("memcg_interval") {
        rankings_section(o, r);
        shrinkers_section(o, r);
        o.push('\n');
        storm_section(o, r);
    }
    oom_sections(o, r);
    slow_section(o, r);
    loss_section(o, r);
    safe(&out)
}

/// The first lines: the file, what was read of it, the recording run, what
/// the plan cannot see, the span and the notes.
fn file_section(o: &mut String, r: &Report) {
    let _ = writeln!(o, "memtrace report: {} ({})", e(&r.file), r.kind.describe());
    read_line(o, r);
    if let Some(h) = &r.header {
        let _ = writeln!(
            o,
            "  host {}, kernel {}, cgroup {}, memtrace {}, --attach {}",
            e(&h.hostname),
            e(&h.kernel_release),
            e(&h.cgroup_mode),
            e(&h.memtrace_version),
            e(&h.attach_mode)
        );
        let _ = writeln!(o, "  attach plan: {}", plan(h));
    }
    if !r.not_visible.is_empty() {
        let f: Vec<String> = r.not_visible.iter().map(|x| x.name().to_string()).collect();
        let _ = writeln!(
            o,
            "  {NOT_VISIBLE} (\"-\" in tables, never 0): {}",
            f.join(", ")
        );
    }
    span_line(o, r);
    for n in &r.notes {
        let _ = writeln!(o, "  note: {}", e(n));
    }
}

/// Records and lines read, and the bad lines skipped.
fn read_line(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "  {} records in {} lines",
        count(r.records),
        count(r.lines)
    );
    if r.bad_lines_total > 0 {
        let nums: Vec<String> = r
            .bad_lines
            .iter()
            .take(10)
            .map(|b| b.line.to_string())
            .collect();
        let more = if r.bad_lines_total > 10 { ", ..." } else { "" };
        let _ = write!(
            o,
            "; {} bad line{} skipped (line {}{more}; details on stderr)",
            r.bad_lines_total,
            if r.bad_lines_total == 1 { "" } else { "s" },
            nums.join(", ")
        );
    }
    o.push('\n');
}

/// The attach plan's hooks grouped by family, in plan order; the hooks
/// without a family last, as unavailable.
fn plan(h: &Header) -> String {
    let (fams, missing) = h.plan_by_family();
    let hooks = |v: &[&str]| v.iter().map(|x| e(x)).collect::<Vec<_>>().join(" ");
    let mut parts: Vec<String> = fams
        .iter()
        .map(|(f, v)| format!("{}: {}", f.as_str(), hooks(v)))
        .collect();
    if !missing.is_empty() {
        parts.push(format!("unavailable: {}", hooks(&missing)));
    }
    parts.join("; ")
}

fn span_line(o: &mut String, r: &Report) {
    let span = match (&r.span.first_ts, &r.span.last_ts) {
        (Some(a), Some(b)) => format!(
            "{} .. {}{}",
            e(a),
            e(b),
            r.span
                .duration_s
                .map(|d| format!(" ({})", secs(d)))
                .unwrap_or_default()
        ),
        _ => "unknown".into(),
    };
    let _ = write!(o, "  span: {span}");
    if r.kind != Kind::OomLog || r.span.intervals > 0 {
        let _ = write!(o, ", {} intervals", r.span.intervals);
    }
    if r.span.runs > 1 {
        let _ = write!(o, ", {} runs", r.span.runs);
    }
    o.push('\n');
}

/// What triggered a capture, and the window it holds.
fn trigger_section(o: &mut String, r: &Report) {
    let Some(c) = &r.capture else { return };
    let t = &c.trigger;
    let _ = writeln!(o, "\nTRIGGER");
    let _ = writeln!(
        o,
        "  host sys above {} from {} ({}): peak {} (busiest {} at {}), sustained {} when \
         captured",
        pct(t.threshold_pct),
        e(&t.ts),
        e(&t.kind),
        pct(t.peak_sys_pct),
        cpu(t.peak_cpu),
        pct(t.peak_cpu_sys_pct),
        dur(t.sustained_ns)
    );
    let _ = write!(
        o,
        "  window: {} before to {} after the trigger",
        secs(c.before_s),
        secs(c.after_s)
    );
    if c.truncated_records > 0 {
        let _ = write!(
            o,
            "; {} records left out (--max-capture-bytes)",
            count(c.truncated_records)
        );
    }
    o.push('\n');
}

fn host_section(o: &mut String, r: &Report) {
    let Some(h) = &r.host else { return };
    let _ = writeln!(o, "\nHOST");
    let _ = writeln!(
        o,
        "  sys: mean {}, max {} at {}; busiest single CPU: {} at {} ({}); iowait mean {}",
        pct(h.sys_pct_mean),
        pct(h.sys_pct_max),
        e(&h.sys_pct_max_ts),
        cpu(h.busiest_cpu),
        pct(h.busiest_cpu_sys_pct),
        e(&h.busiest_cpu_ts),
        pct(h.iowait_pct_mean)
    );
    let _ = writeln!(
        o,
        "  kswapd CPU: mean {}, max {} of one CPU; memcgs: up to {} live, {} dying",
        pct(h.kswapd_cpu_pct_mean),
        pct(h.kswapd_cpu_pct_max),
        h.live_memcgs_max,
        h.dying_memcgs_max
            .map(|d| format!("up to {d}"))
            .unwrap_or_else(|| "? (not reported by this kernel)".into())
    );
}

/// Who paid for reclaim: tasks in their allocation path or kswapd.
fn reclaim_section(o: &mut String, r: &Report) {
    if r.kind == Kind::OomLog && !r.record_counts.contains_key("memcg_interval") {
        return;
    }
    let c = &r.reclaim;
    // "TIME (N episodes, N pages)" of one kind of reclaim.
    let kind = |ns: Option<u64>, n: Option<u64>, pages: Option<u64>| {
        format!(
            "{} ({} episodes, {} pages)",
            opt(ns, dur),
            opt(n, count),
            opt(pages, count)
        )
    };
    let _ = writeln!(o, "\nRECLAIM: who paid");
    let _ = writeln!(
        o,
        "  tasks, in their allocation path: {} = direct {} + memcg-limit {}",
        dur(c.tasks_ns),
        kind(c.direct_ns, c.direct_count, c.direct_pages),
        kind(c.memcg_ns, c.memcg_count, c.memcg_pages)
    );
    let _ = writeln!(
        o,
        "  kswapd: CPU {}; awake {} over {} wakes; its slab shrinking {}",
        opt(c.kswapd_cpu_ns, dur),
        opt(c.kswapd_awake_ns, dur),
        opt(c.kswapd_wakes, count),
        opt(c.shrink_slab_kswapd_ns, dur)
    );
    let verdict = match c.paid_by {
        "tasks" => "mostly by tasks (direct and limit reclaim), not kswapd",
        "kswapd" => "mostly by kswapd (background reclaim), not tasks",
        "both" => "by tasks and kswapd alike",
        _ => "for hardly at all (under 1 ms by tasks or kswapd)",
    };
    let _ = writeln!(o, "  => reclaim was paid {verdict}");
}

/// The top memcgs and containers by reclaim time and by shrinker calls.
fn rankings_section(o: &mut String, r: &Report) {
    let rankings: [(&str, &[Usage], bool, bool); 4] = [
        (
            "MEMCGS BY RECLAIM TIME",
            &r.top_memcgs_by_reclaim,
            true,
            true,
        ),
        (
            "MEMCGS BY SHRINKER CALLS",
            &r.top_memcgs_by_shrinker_calls,
            true,
            false,
        ),
        (
            "CONTAINERS BY RECLAIM TIME",
            &r.top_containers_by_reclaim,
            false,
            true,
        ),
        (
            "CONTAINERS BY SHRINKER CALLS",
            &r.top_containers_by_shrinker_calls,
            false,
            false,
        ),
    ];
    for (title, rows, memcg, reclaim) in rankings {
        ranking(o, r, title, rows, memcg, reclaim);
    }
    let _ = writeln!(
        o,
        "  (totals over the span: RECLAIM time in direct + memcg-limit reclaim, P99 the \
         worst interval's, LIMIT limit hits, CFAIL charge failures, OOM kills; ZERO% \
         calls that freed nothing, KSWAPD kswapd's slab-shrinking time)"
    );
}

/// One ranking: of memcgs or containers (`memcg`), by reclaim time or by
/// shrinker calls (`reclaim`).
fn ranking(o: &mut String, r: &Report, title: &str, rows: &[Usage], memcg: bool, reclaim: bool) {
    let of = if memcg {
        r.memcgs_seen
    } else {
        r.containers_seen
    };
    let _ = writeln!(o, "\nTOP {title} (of {of} seen)");
    if rows.is_empty() {
        let what = if reclaim {
            "no reclaim recorded"
        } else if r.shrinker_totals.calls.is_none() {
            "do_shrink_slab calls are not visible on this plan"
        } else {
            "no do_shrink_slab calls recorded"
        };
        let _ = writeln!(o, "  ({what})");
        return;
    }
    let name = if memcg { "MEMCG" } else { "CONTAINER" };
    if reclaim {
        let mut head = RECLAIM_HEAD;
        head[7] = name;
        table(o, &head, &reclaim_rows(rows, memcg));
    } else {
        let mut head = SHRINK_HEAD;
        head[5] = name;
        table(o, &head, &shrink_rows(rows, memcg));
    }
}

/// do_shrink_slab totals and the busiest shrinkers.
fn shrinkers_section(o: &mut String, r: &Report) {
    let zero_seen = r.not_visible.sees(Field::DoShrinkSlabZero);
    let t = &r.shrinker_totals;
    let _ = writeln!(o, "\nSHRINKERS");
    let mut line = format!(
        "  do_shrink_slab: {} calls over {}, {} objects freed, {}",
        opt(t.calls, count),
        memcgs(t.memcgs),
        opt(t.freed, count),
        opt(t.ns, dur)
    );
    match t.zero_pct {
        Some(z) => {
            let _ = write!(line, "; {z:.1}% freed nothing");
        }
        None if t.calls.is_some() && !zero_seen => {
            let _ = write!(
                line,
                "; calls that freed nothing are {NOT_VISIBLE} (only calls that found objects \
                 are counted)"
            );
        }
        None => {}
    }
    let _ = writeln!(o, "{line}");
    if let Some(n) = r.header.as_ref().map(|h| h.shrinker_time_sample.0)
        && n > 1
    {
        let _ = writeln!(
            o,
            "  (shrinker times are estimates: one call in {n} was timed, its time counted {n} \
             times; the counts are exact)"
        );
    }
    if !r.shrinkers.is_empty() {
        shrinker_table(o, &r.shrinkers);
    }
}

fn shrinker_table(o: &mut String, shrinkers: &[ShrinkerSummary]) {
    let rows: Vec<Vec<String>> = shrinkers
        .iter()
        .map(|s| {
            vec![
                count(s.calls),
                cell(s.zero_pct, |z| format!("{z:.1}")),
                count(s.freed),
                dur(s.ns),
                s.memcgs.to_string(),
                shrinker_label(s),
            ]
        })
        .collect();
    table(
        o,
        &["CALLS", "ZERO%", "FREED", "TIME", "MEMCGS", "SHRINKER"],
        &rows,
    );
    let _ = writeln!(
        o,
        "  (summed from each memcg's 10 busiest shrinkers per interval)"
    );
}

fn storm_section(out: &mut String, r: &Report) {
    let s = &r.storm;
    let title = match s.verdict {
        Verdict::Present => "PRESENT",
        Verdict::Absent => "not present",
        Verdict::NotConfirmable => "CANNOT BE CONFIRMED on this attach plan",
        Verdict::NoData => "no data",
    };
    let _ = writeln!(out, "SHRINK_SLAB STORM: {title}");
    let _ = writeln!(out, "  signature: {}", e(&s.thresholds.rule));
    for x in &s.explanation {
        let _ = writeln!(out, "  {}", e(x));
    }
    if s.verdict != Verdict::Present && s.verdict != Verdict::NotConfirmable {
        return;
    }
    if let Some(top) = r.shrinkers.first() {
        let zero = match top.zero_pct {
            Some(z) => format!("{z:.1}% freed nothing"),
            None => format!("share that freed nothing {NOT_VISIBLE}"),
        };
        let _ = writeln!(
            out,
            "  busiest shrinker: {}: {} calls over {}, {zero}",
            shrinker_label(top),
            count(top.calls),
            memcgs(top.memcgs)
        );
    }
    if let Some(d) = r.host.as_ref().and_then(|h| h.dying_memcgs_max) {
        let _ = writeln!(
            out,
            "  dying memcgs: up to {d} (removed but still held by the kernel: they still cost \
             shrinker work)"
        );
    }
}

/// The kills in the span, each with its story, then the latest of those
/// found in the kernel log at start-up, one line each.
fn oom_sections(o: &mut String, r: &Report) {
    let (earlier, during): (Vec<&OomStory>, Vec<&OomStory>) =
        r.oom_kills.iter().partition(|k| k.before_start);
    if !during.is_empty() {
        let _ = writeln!(o, "\nOOM KILLS ({})", during.len());
        for (i, k) in during.iter().enumerate() {
            kill(o, i + 1, k, r);
        }
    } else if r.kind != Kind::OomLog {
        let _ = writeln!(o, "\nOOM KILLS: none in the span");
    }
    if earlier.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nEARLIER OOM KILLS ({}, found in the kernel log when memtrace started; latest {} \
         shown)",
        earlier.len(),
        earlier.len().min(EARLIER_SHOWN)
    );
    for k in earlier
        .iter()
        .skip(earlier.len().saturating_sub(EARLIER_SHOWN))
    {
        earlier_kill(o, k);
    }
}

fn earlier_kill(o: &mut String, k: &OomStory) {
    let limit = match (k.limit_of, &k.limit_memcg) {
        (LimitOf::Own, _) => "its own limit".to_string(),
        (LimitOf::Ancestor, Some(m)) => format!("ancestor {}'s limit", memcg_label(m)),
        (LimitOf::Global, _) => "global OOM".into(),
        (_, Some(m)) => format!("limit of {}", memcg_label(m)),
        _ => "limit unknown".into(),
    };
    let _ = writeln!(
        o,
        "  {}  {} (pid {}) in {}: {limit}",
        e(&k.ts),
        e(&k.victim.comm),
        k.victim.pid,
        k.victim_memcg
            .as_ref()
            .map(memcg_label)
            .unwrap_or_else(|| "memcg unknown".into())
    );
}

/// One kill's story: who was killed where, whose limit fired, the victim's
/// rss, what invoked the killer, the post-mortem and the history before it.
fn kill(out: &mut String, n: usize, k: &OomStory, r: &Report) {
    let unseen = |f| !r.not_visible.sees(f);
    kill_title(out, n, k);
    let _ = writeln!(out, "      limit: {}", limit_story(k));
    rss_line(out, &k.victim);
    if let Some(t) = &k.trigger {
        let pid = match t.pid {
            Some(p) => format!("pid {p}"),
            None if unseen(Field::OomTriggerPid) => format!("pid {NOT_VISIBLE}"),
            None => "pid unknown: only the kernel log named it".into(),
        };
        let _ = writeln!(
            out,
            "      allocation that invoked the OOM killer: {} ({pid})",
            e(&t.comm)
        );
    }
    let _ = match (k.chosen_points, k.totalpages) {
        (None, None) => writeln!(
            out,
            "      badness score and the memory weighed (totalpages): {NOT_VISIBLE}"
        ),
        (p, t) => writeln!(
            out,
            "      badness score {}, memory weighed {} pages",
            opt(p, |p| p.to_string()),
            opt(t, count)
        ),
    };
    postmortem_lines(out, k);
    kill_history(out, k, !unseen(Field::DoShrinkSlabZero));
}

fn rss_line(out: &mut String, v: &Victim) {
    let kb = |v: Option<u64>| opt(v, |x| bytes(x.saturating_mul(1024)));
    let _ = writeln!(
        out,
        "      rss: anon {}, file {}, shmem {}; page tables {}, total_vm {}",
        kb(v.rss_anon_kb),
        kb(v.rss_file_kb),
        kb(v.rss_shmem_kb),
        kb(v.pgtables_kb),
        kb(v.total_vm_kb)
    );
}

/// What the victim's memcg went through before the kill, from the file or
/// from the agent's history in a post-mortem.
fn kill_history(out: &mut String, k: &OomStory, zero_seen: bool) {
    match (&k.history, k.history_from) {
        (Some(h), Some(from)) => {
            let from = if from == "file" {
                "from this file"
            } else {
                "agent history"
            };
            let _ = writeln!(out, "      {}", history_line(h, from, zero_seen));
        }
        _ if !k.before_start => {
            let _ = writeln!(
                out,
                "      before the kill: no memcg_interval records of that memcg in this file"
            );
        }
        _ => {}
    }
}

/// `[N] TS  COMM (pid ..) killed in MEMCG`.
fn kill_title(out: &mut String, n: usize, k: &OomStory) {
    let v = &k.victim;
    let _ = write!(out, "  [{n}] {}  {} (pid {}", e(&k.ts), e(&v.comm), v.pid);
    if let Some(t) = v.tgid.filter(|t| *t != v.pid) {
        let _ = write!(out, ", tgid {t}");
    }
    if let Some(u) = v.uid {
        let _ = write!(out, ", uid {u}");
    }
    if let Some(a) = v.oom_score_adj {
        let _ = write!(out, ", oom_score_adj {a}");
    }
    out.push(')');
    match &k.victim_memcg {
        Some(m) => {
            let _ = write!(out, " killed in {}", memcg_label(m));
        }
        None => out.push_str(" killed (memcg unknown)"),
    }
    if k.before_start {
        out.push_str("  [before memtrace started: from the kernel log]");
    }
    out.push('\n');
}

/// Whose limit fired, in prose, with the kernel's constraint.
fn limit_story(k: &OomStory) -> String {
    let limit = k.limit_memcg.as_ref().map(memcg_label);
    let why = match k.limit_of {
        LimitOf::Own => format!(
            "the victim's own memcg {} hit its limit",
            limit.unwrap_or_default()
        ),
        LimitOf::Ancestor => format!(
            "the limit of {}, an ANCESTOR of the victim's memcg, fired (a parent's lower limit \
             binds its children: the victim's own memcg was not at its limit)",
            limit.unwrap_or_default()
        ),
        LimitOf::OtherMemcg => format!(
            "the limit of {} fired, which is not the victim's memcg nor an ancestor of it",
            limit.unwrap_or_default()
        ),
        LimitOf::Global => "global OOM: the whole machine ran out of memory, no memcg limit \
                            fired"
            .into(),
        LimitOf::Cpuset => "cpuset OOM: the allowed NUMA nodes ran out of memory".into(),
        LimitOf::Mempolicy => "mempolicy OOM: the allowed NUMA nodes ran out of memory".into(),
        LimitOf::Unknown => "the memcg whose limit fired is not known".into(),
    };
    let constraint = k
        .constraint
        .as_deref()
        .map(|c| format!(" (constraint {})", e(c)))
        .unwrap_or_default();
    format!("{why}{constraint}")
}

/// What `record` read right after the kill: the limit and usage, the
/// unreclaimable share, the tasks left and what it could not read.
fn postmortem_lines(out: &mut String, k: &OomStory) {
    let Some(p) = &k.postmortem else { return };
    let _ = writeln!(
        out,
        "      post-mortem: limit {}, usage {} right after the kill{}",
        p.limit_bytes.map(bytes).unwrap_or_else(|| "none".into()),
        p.usage_bytes.map(bytes).unwrap_or_else(|| "unknown".into()),
        match (p.victim_usage_bytes, k.limit_of) {
            (Some(u), LimitOf::Ancestor) => format!(" (victim's memcg {})", bytes(u)),
            _ => String::new(),
        }
    );
    if let Some(u) = &p.unreclaimable {
        let b = |v: Option<u64>| v.map(bytes).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "      unreclaimable: {} of usage (shmem {}, unevictable {}, dirty {}, writeback {})",
            u.share_pct
                .map(pct)
                .unwrap_or_else(|| "unknown share".into()),
            b(u.shmem_bytes),
            b(u.unevictable_bytes),
            b(u.dirty_bytes),
            b(u.writeback_bytes)
        );
    }
    if !p.top_tasks.is_empty() {
        let _ = writeln!(
            out,
            "      top tasks by rss ({} left): {}",
            p.tasks.unwrap_or(0),
            top_tasks(&p.top_tasks)
        );
    }
    for n in &p.notes {
        let _ = writeln!(out, "      note: {}", e(n));
    }
}

/// `COMM (pid N) RSS, ...`.
fn top_tasks(tasks: &[TaskRss]) -> String {
    let tasks: Vec<String> = tasks
        .iter()
        .map(|t| {
            let rss = t.rss_anon_kb.unwrap_or(0)
                + t.rss_file_kb.unwrap_or(0)
                + t.rss_shmem_kb.unwrap_or(0);
            format!("{} (pid {}) {}", e(&t.comm), t.pid, bytes(rss * 1024))
        })
        .collect();
    tasks.join(", ")
}

/// How many reclaims and charges were slow, and the slowest of each.
fn slow_section(o: &mut String, r: &Report) {
    let s = &r.slow;
    if s.slow_reclaims + s.slow_charges == 0 {
        return;
    }
    let _ = writeln!(o, "\nSLOW EVENTS");
    let slowest = |x: &Slow| {
        format!(
            "slowest {} by {} (pid {}) in {}",
            dur(x.duration_ns),
            e(&x.task.comm),
            x.task
                .pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into()),
            memcg_label(&x.memcg)
        )
    };
    if let Some(x) = &s.slowest_reclaim {
        let _ = writeln!(o, "  {} slow reclaims; {}", s.slow_reclaims, slowest(x));
    }
    if let Some(x) = &s.slowest_charge {
        let _ = writeln!(o, "  {} slow charges; {}", s.slow_charges, slowest(x));
    }
}

fn loss_section(o: &mut String, r: &Report) {
    let lost = r.losses.nonzero();
    if lost.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nLOSS COUNTERS (nonzero; cumulative since each run started)"
    );
    for (name, v, what) in lost {
        let _ = writeln!(o, "  {name} {}: {what}", count(v));
    }
}

/// Escapes whatever dangerous character is left (none should be): a line
/// break is the only control character the report prints.
fn safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c != '\n' && is_dangerous(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Bad lines for stderr, one per line.
pub fn bad_lines(r: &Report, max: usize) -> String {
    let mut out = String::new();
    for b in r.bad_lines.iter().take(max) {
        let _ = writeln!(
            out,
            "memtrace: {}:{}: skipped: {}",
            e(&r.file),
            b.line,
            e(&b.error)
        );
    }
    if r.bad_lines_total > max as u64 {
        let _ = writeln!(
            out,
            "memtrace: {}: {} more bad lines not listed",
            e(&r.file),
            r.bad_lines_total - max as u64
        );
    }
    out
}
