//! Column titles and cell text, shared by the TUI and `--batch`: one
//! place decides how a row reads. Names are escaped here, so neither
//! output can receive a raw control character from a cgroup name.
use super::model::{Column, Model, Row, Summary};
use crate::output::fields::Field;
use crate::output::{escape, units::bytes};

pub fn title(c: Column) -> &'static str {
    match c {
        Column::Name => "NAME",
        Column::Runtime => "RUNTIME",
        Column::Usage => "USAGE/LIMIT",
        Column::WorkingSet => "WSET",
        Column::LimitHits => "LIMIT/s",
        Column::ChargeFail => "CFAIL/s",
        Column::Reclaim => "RECLAIM",
        Column::P99 => "P99",
        Column::Kswapd => "KSWAPD",
        Column::ShrinkSlab => "SHRINK/s",
        Column::DoShrink => "DOSHR/s",
        Column::Zero => "ZERO%",
        Column::Freed => "FREED/s",
        Column::Ooms => "OOM",
    }
}

/// What each column means, for the help overlay and the README.
pub fn meaning(c: Column) -> &'static str {
    match c {
        Column::Name => "container short id, systemd unit, or memcg path",
        Column::Runtime => "docker, containerd, cri-o, podman, systemd, cgroup",
        Column::Usage => "memory usage / effective limit (lowest on the path to the root)",
        Column::WorkingSet => "usage - inactive_file",
        Column::LimitHits => "times the limit was hit, per second",
        Column::ChargeFail => "failed charges per second (try_charge_memcg)",
        Column::Reclaim => "ms per second its tasks spent in direct and limit reclaim",
        Column::P99 => "99th percentile reclaim latency",
        Column::Kswapd => "ms per second kswapd spent shrinking its slab caches",
        Column::ShrinkSlab => "shrink_slab passes over its memcgs per second",
        Column::DoShrink => "do_shrink_slab calls per second",
        Column::Zero => "% of do_shrink_slab calls that freed nothing",
        Column::Freed => "slab objects freed per second",
        Column::Ooms => "OOM kills of its tasks since memtrace started",
    }
}

pub fn width(c: Column) -> usize {
    match c {
        Column::Name => 32,
        Column::Runtime => 10,
        Column::Usage => 13,
        Column::WorkingSet => 6,
        Column::Ooms => 4,
        Column::Zero => 6,
        _ => 8,
    }
}

/// Fields unseen by the attach plan read "-", never 0.
const UNSEEN: &str = "-";

fn rate(v: Option<f64>) -> String {
    match v {
        None => UNSEEN.into(),
        Some(0.0) => "0".into(),
        Some(x) if x >= 10_000.0 => format!("{:.0}k", x / 1000.0),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

fn duration_ns(v: Option<u64>) -> String {
    match v {
        None => UNSEEN.into(),
        Some(ns) if ns >= 1_000_000_000 => format!("{:.1}s", ns as f64 / 1e9),
        Some(ns) if ns >= 1_000_000 => format!("{:.0}ms", ns as f64 / 1e6),
        Some(ns) => format!("{:.0}us", ns as f64 / 1e3),
    }
}

pub fn cell(r: &Row, c: Column) -> String {
    match c {
        Column::Name => escape::text(&r.name),
        Column::Runtime => escape::text(&r.runtime),
        Column::Usage => match (r.usage_bytes, r.limit_bytes) {
            (Some(u), Some(l)) => format!("{}/{}", bytes(u), bytes(l)),
            (Some(u), None) => format!("{}/max", bytes(u)),
            _ => UNSEEN.into(),
        },
        Column::WorkingSet => r
            .working_set_bytes
            .map(bytes)
            .unwrap_or_else(|| UNSEEN.into()),
        Column::LimitHits => rate(r.limit_hits_per_s),
        Column::ChargeFail => rate(r.charge_failures_per_s),
        Column::Reclaim => rate(r.reclaim_ms_per_s),
        Column::P99 => match (r.reclaim_p99_ns, r.reclaim_ms_per_s) {
            (None, Some(_)) => "0".into(),
            (p, _) => duration_ns(p),
        },
        Column::Kswapd => rate(r.kswapd_shrink_ms_per_s),
        Column::ShrinkSlab => rate(r.shrink_slab_per_s),
        Column::DoShrink => rate(r.do_shrink_slab_per_s),
        Column::Zero => match r.zero_pct {
            Some(p) => format!("{p:.0}"),
            None if r.do_shrink_slab_per_s.is_some_and(|c| c == 0.0) => "0".into(),
            None => UNSEEN.into(),
        },
        Column::Freed => rate(r.freed_per_s),
        Column::Ooms => r.oom_kills.to_string(),
    }
}

/// The header line over the table.
pub fn summary_line(s: &Summary) -> String {
    let dying = s
        .dying_memcgs
        .map(|d| d.to_string())
        .unwrap_or_else(|| UNSEEN.into());
    format!(
        "sys {:.1}% (busiest cpu {:.1}%)  kswapd {:.1}%  reclaim {:.1} ms/s  memcgs {} live, {} dying  OOM kills {}  lost events {}",
        s.sys_pct,
        s.max_cpu_sys_pct,
        s.kswapd_cpu_pct,
        s.reclaim_ms_per_s,
        s.live_memcgs,
        dying,
        s.oom_kills,
        s.lost
    )
}

/// The footer: the attach plan and what it cannot see.
pub fn plan_line(m: &Model) -> String {
    let Some(h) = &m.header else {
        return String::new();
    };
    let (by_family, missing) = h.plan_by_family();
    let mut parts: Vec<String> = by_family
        .iter()
        .map(|(f, hooks)| format!("{}: {}", f.as_str(), hooks.join(" ")))
        .collect();
    if !missing.is_empty() {
        parts.push(format!("unavailable: {}", missing.join(" ")));
    }
    let mut unseen = Vec::new();
    for (field, what) in [
        (Field::ChargeFailures, "CFAIL"),
        (Field::ShrinkSlabCalls, "SHRINK"),
        (Field::ShrinkSlabKswapdNs, "KSWAPD"),
        (Field::DoShrinkSlabZero, "ZERO% (calls that found nothing)"),
    ] {
        if !m.plan_sees(field) {
            unseen.push(what);
        }
    }
    let mut line = format!("plan {}", parts.join("; "));
    if !unseen.is_empty() {
        line.push_str(&format!("  |  not visible (-): {}", unseen.join(", ")));
    }
    escape::text(&line)
}

/// A plain-text frame (`--batch`): no escape codes, fixed-width columns.
pub fn frame(m: &Model, rows: &[&Row]) -> String {
    let mut out = format!(
        "memtrace top  {}  {}\n",
        escape::text(&m.summary.ts),
        summary_line(&m.summary)
    );
    let pad = |s: &str, c: Column| {
        let w = width(c);
        let n = s.chars().count();
        let s: String = if n > w {
            s.chars().take(w - 1).chain(std::iter::once('~')).collect()
        } else {
            s.to_string()
        };
        if matches!(c, Column::Name | Column::Runtime) {
            format!("{s:<w$}")
        } else {
            format!("{s:>w$}")
        }
    };
    let head: Vec<String> = Column::ALL.iter().map(|c| pad(title(*c), *c)).collect();
    out.push_str(head.join(" ").trim_end());
    out.push('\n');
    for r in rows {
        let cells: Vec<String> = Column::ALL.iter().map(|c| pad(&cell(r, *c), *c)).collect();
        out.push_str(cells.join(" ").trim_end());
        out.push('\n');
    }
    out.push_str(&plan_line(m));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(0.0)), "0");
        assert_eq!(rate(Some(12.34)), "12.3");
        assert_eq!(rate(Some(123456.0)), "123k");
        assert_eq!(duration_ns(Some(8_388_608)), "8ms");
        assert_eq!(duration_ns(Some(131_072)), "131us");
    }

    #[test]
    fn hostile_names_are_escaped_in_cells() {
        let r = Row {
            name: "\x1b[2Jevil\x07".into(),
            runtime: "cgroup".into(),
            ..Row::default()
        };
        let c = cell(&r, Column::Name);
        assert!(!c.chars().any(|ch| ch.is_control()), "{c:?}");
        assert_eq!(c, "\\x1b[2Jevil\\x07");
    }
}
