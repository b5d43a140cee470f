use super::*;
use crate::output::records::{Container, MemcgState, OomKill, PlanEntry, ShrinkerRow};

fn header(unseen: &[Field]) -> Header {
    Header {
        memtrace_version: "0.1.0".into(),
        plan: vec![PlanEntry::new("shrink_slab", None)],
        unavailable: Unseen::new(unseen.iter().copied()),
        ..Default::default()
    }
}

fn memcg(id: u64, path: &str, deleted: bool) -> Memcg {
    Memcg {
        id,
        path: Some(path.into()),
        deleted,
        container: Some(Container::from_path(
            "docker",
            "abc".into(),
            "abc".into(),
            None,
            None,
            path.into(),
        )),
    }
}

fn interval(m: Memcg, ts_ns: u64) -> Record {
    let row = |name: &str, calls| ShrinkerRow {
        shrinker: "0x1".into(),
        count_objects: None,
        name: Some(name.into()),
        fs_type: None,
        device: None,
        calls,
        zero: Some(1),
        freed: 2,
        ns: 1000,
    };
    MemcgInterval {
        ts_ns,
        memcg: m,
        reclaim_memcg_ns: Some(2_000_000_000),
        reclaim_memcg_count: Some(3),
        do_shrink_slab_calls: Some(100),
        do_shrink_slab_zero: Some(50),
        do_shrink_slab_freed: Some(10),
        do_shrink_slab_ns: Some(10_000),
        shrinkers: Some((0..7).map(|i| row(&format!("s{i}"), 10)).collect()),
        state: Some(MemcgState {
            usage_bytes: Some(4096),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

fn system(ts_ns: u64) -> Record {
    Record::System(System {
        ts_ns,
        ..Default::default()
    })
}

fn page(m: &Metrics) -> String {
    m.render(Format::Text004, None)
}

#[test]
fn unseen_fields_have_no_series_and_seen_ones_count() {
    let mut m = Metrics::new(
        header(&[Field::ChargeFailures, Field::DoShrinkSlabZero]),
        100_000,
        (16, 16),
    );
    m.observe(&interval(memcg(7, "/docker/abc", false), 1));
    m.observe(&interval(memcg(7, "/docker/abc", false), 2));
    let p = page(&m);
    assert!(!p.contains("memtrace_charge_failures"), "{p}");
    assert!(!p.contains("memtrace_shrinker_zero_calls"), "{p}");
    assert!(
        p.contains(r#"memtrace_reclaim_seconds_total{container_id="abc",runtime="docker",cgroup="/docker/abc",kind="memcg"} 4"#),
        "{p}"
    );
    // Five shrinkers by name, the other two and the rows' remainder
    // (100 - 70 calls per interval) as `other`.
    assert!(p.contains(r#"shrinker="s4"} 20"#), "{p}");
    assert!(!p.contains(r#"shrinker="s5""#), "{p}");
    assert!(p.contains(r#"memtrace_shrinker_calls_total{container_id="abc",runtime="docker",cgroup="/docker/abc",shrinker="other"} 100"#), "{p}");
    assert!(p.contains(r#"memtrace_memory_usage_bytes{container_id="abc",runtime="docker",cgroup="/docker/abc"} 4096"#), "{p}");
    // No state seen for the limit: no series, not 0.
    assert!(!p.contains("memtrace_memory_limit_bytes{"), "{p}");
}

#[test]
fn gone_memcgs_stay_five_minutes_then_go() {
    let mut m = Metrics::new(header(&[]), 100_000, (16, 16));
    let s = 1_000_000_000;
    m.observe(&interval(memcg(7, "/gone", false), s));
    m.observe(&interval(memcg(7, "/gone", true), 2 * s));
    m.observe(&system(2 * s + GONE_KEEP_NS - 1));
    assert!(page(&m).contains(r#"cgroup="/gone""#));
    m.observe(&system(2 * s + GONE_KEEP_NS));
    assert!(!page(&m).contains(r#"cgroup="/gone""#));
    assert_eq!(m.memcgs(), 0);
}

#[test]
fn a_memcg_created_at_a_removed_ones_path_continues_its_series() {
    // A restarted container: the old memcg is removed (kept 5 minutes),
    // a new one with another id appears at the same path.
    let mut m = Metrics::new(header(&[]), 100_000, (16, 16));
    let s = 1_000_000_000;
    m.observe(&interval(memcg(7, "/docker/abc", false), s));
    m.observe(&interval(memcg(7, "/docker/abc", true), 2 * s));
    m.observe(&interval(memcg(8, "/docker/abc", false), 3 * s));
    let p = page(&m);
    let usage: Vec<&str> = p
        .lines()
        .filter(|l| l.starts_with("memtrace_reclaims_total{") && l.contains(r#"kind="memcg""#))
        .collect();
    assert_eq!(usage.len(), 1, "one series per label set: {p}");
    assert!(usage[0].ends_with(" 9"), "the counts continue: {p}");
    assert_eq!(m.memcgs(), 1);
    // The new memcg is alive: the series outlives the old one's removal.
    m.observe(&system(3 * s + GONE_KEEP_NS));
    assert!(page(&m).contains(r#"cgroup="/docker/abc""#));
}

#[test]
fn the_cap_leaves_whole_memcgs_out_and_says_so() {
    let mut m = Metrics::new(header(&[]), 150, (16, 16));
    for i in 0..20 {
        m.observe(&interval(memcg(i, &format!("/m{i}"), false), 1));
    }
    let p = page(&m);
    let series = p.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series <= 150, "{series}");
    assert!(p.contains("memtrace_metrics_series_limit_reached 1"), "{p}");
    // The oldest memcgs are the ones kept.
    assert!(p.contains(r#"cgroup="/m0""#));
    assert!(!p.contains(r#"cgroup="/m19""#));
}

#[test]
fn hostile_names_stay_inside_their_label() {
    let mut m = Metrics::new(header(&[]), 100_000, (16, 16));
    let evil = "/x\"} 1\nmemtrace_oom_kills_total 9\n\x1b[2J\\";
    m.observe(&interval(memcg(9, evil, false), 1));
    let p = page(&m);
    assert!(!p.contains("\x1b"));
    for l in p.lines().filter(|l| !l.starts_with('#')) {
        assert!(!l.starts_with("memtrace_oom_kills_total 9"), "{p}");
    }
    assert!(
        p.contains(r#"cgroup="/x\"} 1\\x0amemtrace_oom_kills_total 9\\x0a\\x1b[2J\\\\""#),
        "{p}"
    );
}

#[test]
fn churned_memcgs_are_bounded_in_count() {
    // A cap of 400 series tracks at most 100 memcgs.
    let mut m = Metrics::new(header(&[]), 400, (16, 16));
    for i in 0..1000u64 {
        m.observe(&interval(memcg(i, &format!("/churn{i}"), false), i + 1));
        m.observe(&system(i + 1));
    }
    assert!(m.memcgs() <= 100, "{}", m.memcgs());
    let p = page(&m);
    // The least recently active went, and each one is counted.
    assert!(!p.contains(r#"cgroup="/churn0""#), "{p}");
    let evicted = format!(
        "memtrace_metrics_memcgs_evicted_total {}\n",
        1000 - m.memcgs()
    );
    assert!(p.contains(&evicted), "{p}");
}

#[test]
fn idle_memcgs_go_after_their_idle_time() {
    let mut m = Metrics::new(header(&[]), 100_000, (16, 16));
    m.observe(&interval(memcg(7, "/idle", false), 1));
    m.observe(&system(IDLE_KEEP_NS));
    assert_eq!(m.memcgs(), 1);
    m.observe(&system(IDLE_KEEP_NS + 1));
    assert_eq!(m.memcgs(), 0);
}

#[test]
fn oom_kills_name_the_limit_when_it_is_not_the_victims() {
    let mut m = Metrics::new(header(&[]), 100_000, (16, 16));
    let kill = |victim: &str, limit: Option<&str>, constraint: &str| {
        Record::from(OomKill {
            ts_ns: 1,
            constraint: Some(constraint.into()),
            victim_memcg: Some(memcg(1, victim, false)),
            oom_memcg: limit.map(|l| memcg(2, l, false)),
            ..Default::default()
        })
    };
    m.observe(&kill("/pod/ctr", Some("/pod"), "memcg"));
    m.observe(&kill("/pod/ctr", Some("/pod"), "memcg"));
    m.observe(&kill("/own", Some("/own"), "memcg"));
    m.observe(&kill("/big", None, "global"));
    let p = page(&m);
    assert!(p.contains(r#"memtrace_oom_kills_total{scope="memcg",container_id="abc",runtime="docker",cgroup="/pod/ctr",limit_cgroup="/pod"} 2"#), "{p}");
    assert!(p.contains(r#"memtrace_oom_kills_total{scope="memcg",container_id="abc",runtime="docker",cgroup="/own"} 1"#), "{p}");
    assert!(p.contains(r#"memtrace_oom_kills_total{scope="global",container_id="abc",runtime="docker",cgroup="/big"} 1"#), "{p}");
}
