use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
};

use super::{
    model::{By, Column, Model, ROW_GRACE_NS},
    table, tui,
};
use crate::{
    cgroup::state::MemcgState,
    output::{
        build::named,
        records::{
            Family, Field, Header, Memcg, MemcgInterval, OomKill, PlanEntry, Record, ShrinkerRow,
            System, Unseen, Victim,
        },
    },
};

const ID: &str = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

fn memcg(path: &str, id: u64) -> Memcg {
    named(id, Some(path.into()), false)
}

/// The host's plan: no charge or shrink_slab hook, no zero-call counts.
fn header() -> Record {
    Record::Header(Header {
        unavailable: Unseen::new([
            Field::ChargeFailures,
            Field::ChargeCalls,
            Field::ShrinkSlabCalls,
            Field::ShrinkSlabKswapdNs,
            Field::DoShrinkSlabZero,
        ]),
        plan: vec![
            PlanEntry::new("try_charge_memcg", None),
            PlanEntry::new("do_shrink_slab", Some(Family::TpBtf)),
        ],
        ..Default::default()
    })
}

fn interval(m: Memcg, reclaim_ms: u64, do_shrink: u64, usage: Option<u64>) -> Record {
    Record::from(MemcgInterval {
        interval_ns: 2_000_000_000,
        memcg: m,
        reclaim_memcg_ns: Some(reclaim_ms * 1_000_000),
        reclaim_direct_ns: Some(0),
        reclaim_p99_ns: Some(8_388_608),
        do_shrink_slab_calls: Some(do_shrink),
        do_shrink_slab_freed: Some(10),
        limit_hits: Some(40),
        shrinkers: Some(vec![ShrinkerRow {
            shrinker: "0xffff1".into(),
            count_objects: Some("super_cache_count".into()),
            name: None,
            fs_type: Some("tmpfs".into()),
            device: Some("tmpfs".into()),
            calls: do_shrink,
            zero: None,
            freed: 10,
            ns: 1000,
        }]),
        state: usage.map(|u| MemcgState {
            usage_bytes: Some(u),
            effective_limit_bytes: Some(64 << 20),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn system(ts: &str) -> Record {
    Record::System(System {
        ts: ts.into(),
        sys_pct: 12.5,
        live_memcgs: 7,
        dying_memcgs: Some(2),
        ..Default::default()
    })
}

fn docker_model() -> Model {
    let mut m = Model::new(By::Container);
    let root = format!("/system.slice/docker-{ID}.scope");
    for r in [
        header(),
        interval(memcg(&root, 10), 100, 40, Some(50 << 20)),
        interval(memcg(&format!("{root}/child"), 11), 60, 20, Some(20 << 20)),
        interval(memcg("/system.slice/nginx.service", 12), 10, 0, None),
        system("2026-11-22T00:00:02Z"),
    ] {
        m.apply(&r);
    }
    m
}

#[test]
fn rows_aggregate_a_containers_memcgs_per_second() {
    let m = docker_model();
    let rows = m.rows(Column::Reclaim, "");
    assert_eq!(rows.len(), 2);
    let d = rows[0];
    assert_eq!((d.runtime.as_str(), d.name.as_str()), ("docker", &ID[..12]));
    assert_eq!(d.memcgs, 2);
    assert_eq!(d.reclaim_ms_per_s, Some(80.0), "(100 + 60) ms over 2 s");
    assert_eq!(d.do_shrink_slab_per_s, Some(30.0));
    assert_eq!(d.limit_hits_per_s, Some(40.0));
    assert_eq!(
        d.usage_bytes,
        Some(50 << 20),
        "state of the memcg nearest the container root"
    );
    // Not visible on this plan: None, never 0.
    assert_eq!(d.charge_failures_per_s, None);
    assert_eq!(d.shrink_slab_per_s, None);
    assert_eq!(d.zero_pct, None);
    assert_eq!(rows[1].name, "nginx.service");
    assert_eq!(m.summary.reclaim_ms_per_s, 85.0);
}

#[test]
fn idle_rows_stay_with_zero_rates() {
    let mut m = docker_model();
    m.apply(&system("2026-11-22T00:00:04Z"));
    let rows = m.rows(Column::Name, "");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.reclaim_ms_per_s == Some(0.0) && r.charge_failures_per_s.is_none())
    );
}

#[test]
fn rows_of_gone_memcgs_leave_after_the_grace_period() {
    let mut m = docker_model();
    let at = |ns: u64| {
        Record::System(System {
            ts_ns: ns,
            ..Default::default()
        })
    };
    m.apply(&at(ROW_GRACE_NS));
    assert_eq!(m.rows(Column::Name, "").len(), 2, "still within the grace");
    // One memcg keeps reporting; the others' rows go once the grace is over.
    let mut busy = interval(memcg("/system.slice/nginx.service", 12), 10, 0, None);
    if let Record::MemcgInterval(i) = &mut busy {
        i.ts_ns = ROW_GRACE_NS + 1;
    }
    m.apply(&busy);
    m.apply(&at(ROW_GRACE_NS + 1));
    let rows = m.rows(Column::Name, "");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "nginx.service");
}

#[test]
fn oom_kills_count_in_the_victims_row_but_not_from_before_start() {
    let mut m = docker_model();
    let kill = |before_start| {
        Record::from(OomKill {
            before_start,
            victim: Victim {
                pid: 7,
                comm: "java".into(),
                ..Default::default()
            },
            victim_memcg: Some(memcg(&format!("/system.slice/docker-{ID}.scope/child"), 11)),
            ..Default::default()
        })
    };
    m.apply(&kill(true));
    m.apply(&kill(false));
    let rows = m.rows(Column::Ooms, "");
    assert_eq!((rows[0].name.as_str(), rows[0].oom_kills), (&ID[..12], 1));
    assert_eq!(m.summary.oom_kills, 1);
    assert_eq!(m.ooms.len(), 2, "both listed in the detail view");
}

#[test]
fn zero_share_when_the_plan_sees_it() {
    let mut m = Model::new(By::Memcg);
    m.apply(&Record::Header(Header::default()));
    let mut rec = interval(memcg("/a", 1), 1, 200, None);
    if let Record::MemcgInterval(i) = &mut rec {
        i.do_shrink_slab_zero = Some(150);
    }
    m.apply(&rec);
    m.apply(&system("t"));
    assert_eq!(m.rows(Column::Zero, "")[0].zero_pct, Some(75.0));
}

fn render(m: &Model, ui: &tui::Ui) -> String {
    let mut t = Terminal::new(TestBackend::new(170, 24)).unwrap();
    t.draw(|f| tui::draw(f, m, ui)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

#[test]
fn screen_shows_rows_header_and_plan() {
    let m = docker_model();
    let screen = render(&m, &tui::Ui::new(Column::Reclaim));
    assert!(
        screen.contains("NAME") && screen.contains("RECLAIM") && screen.contains("DOSHR/s"),
        "{screen}"
    );
    assert!(
        screen.contains(&ID[..12]) && screen.contains("docker") && screen.contains("nginx.service"),
        "{screen}"
    );
    assert!(screen.contains("50.0M/64.0M"), "{screen}");
    assert!(
        screen.contains("sys 12.5%") && screen.contains("2 dying"),
        "{screen}"
    );
    assert!(
        screen.contains("plan tp_btf: do_shrink_slab")
            && screen.contains("unavailable: try_charge_memcg"),
        "{screen}"
    );
    assert!(screen.contains("not visible (-)"), "{screen}");
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

#[test]
fn keys_drive_help_detail_filter_sort_and_quit() {
    let m = docker_model();
    let mut ui = tui::Ui::new(Column::Reclaim);
    assert_eq!(
        tui::on_key(&mut ui, key(KeyCode::Char('?')), 2),
        tui::Action::Redraw
    );
    assert!(render(&m, &ui).contains("99th percentile reclaim latency"));
    tui::on_key(&mut ui, key(KeyCode::Esc), 2);
    tui::on_key(&mut ui, key(KeyCode::Enter), 2);
    let detail = render(&m, &ui);
    assert!(
        detail.contains("super_cache_count") && detail.contains("shrinkers (last interval)"),
        "{detail}"
    );
    tui::on_key(&mut ui, key(KeyCode::Esc), 2);
    for k in [
        KeyCode::Char('/'),
        KeyCode::Char('n'),
        KeyCode::Char('g'),
        KeyCode::Enter,
    ] {
        tui::on_key(&mut ui, key(k), 2);
    }
    assert_eq!(m.rows(ui.sort, &ui.filter).len(), 1);
    let filtered = render(&m, &ui);
    assert!(
        filtered.contains("nginx.service") && !filtered.contains(&ID[..12]),
        "{filtered}"
    );
    tui::on_key(&mut ui, key(KeyCode::Char('s')), 1);
    assert_eq!(ui.sort, Column::P99);
    tui::on_key(&mut ui, key(KeyCode::Char('S')), 1);
    assert_eq!(ui.sort, Column::Reclaim);
    assert_eq!(
        tui::on_key(&mut ui, key(KeyCode::Char('q')), 1),
        tui::Action::Quit
    );
    assert_eq!(
        tui::on_key(
            &mut tui::Ui::new(Column::Name),
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
            0
        ),
        tui::Action::Quit
    );
}

#[test]
fn hostile_names_never_reach_the_terminal_raw() {
    let mut m = Model::new(By::Memcg);
    m.apply(&header());
    m.apply(&interval(
        memcg("/evil\x1b]0;owned\x07\u{9b}31m", 5),
        1,
        1,
        None,
    ));
    m.apply(&system("t\x1b[2J"));
    let mut ui = tui::Ui::new(Column::Reclaim);
    ui.detail = true;
    let screen = render(&m, &ui);
    assert!(
        !screen.chars().any(|c| c.is_control() && c != '\n'),
        "{screen:?}"
    );
    assert!(screen.contains("\\x1b]0;owned\\x07"), "{screen}");
    let frame = table::frame(&m, &m.rows(Column::Reclaim, ""));
    assert!(
        !frame.chars().any(|c| c.is_control() && c != '\n'),
        "{frame:?}"
    );
}

#[test]
fn batch_frame_is_plain_text_columns() {
    let m = docker_model();
    let frame = table::frame(&m, &m.rows(Column::Reclaim, ""));
    let lines: Vec<&str> = frame.lines().collect();
    assert!(
        lines[0].starts_with("memtrace top  2026-11-22T00:00:02Z  sys 12.5%"),
        "{frame}"
    );
    assert!(lines[1].starts_with("NAME"));
    assert!(
        lines[2].starts_with(&ID[..12]) && lines[2].contains("docker"),
        "{frame}"
    );
    assert!(lines[3].starts_with("nginx.service"));
    assert!(lines[4].starts_with("plan "));
}

#[test]
fn empty_table_renders_before_the_first_interval() {
    // An empty table once underflowed computing the selected row.
    let m = Model::new(By::Container);
    let mut ui = tui::Ui::new(Column::Reclaim);
    ui.selected = 3;
    let screen = render(&m, &ui);
    assert!(
        screen.contains("waiting for the first interval"),
        "{screen}"
    );
    ui.detail = true;
    render(&m, &ui);
}

/// A Kubernetes container's memcg as the pipeline names it: the path's
/// identity plus what the runtime's state files gave.
fn k8s_memcg(pod_uid: &str, ctr_id: &str, ns: &str, pod: &str, ctr: &str, id: u64) -> Memcg {
    let mut m = memcg(&format!("/kubepods/burstable/pod{pod_uid}/{ctr_id}"), id);
    let c = m.container.as_mut().unwrap();
    c.namespace = Some(ns.into());
    c.pod = Some(pod.into());
    c.runtime_name = Some(ctr.into());
    m
}

#[test]
fn rows_show_kubernetes_names_and_by_pod_groups_a_pods_containers() {
    let uid = "0a1b2c3d-1111-2222-3333-444455556666";
    let (a, b) = ("a1".repeat(32), "b2".repeat(32));
    let recs = [
        header(),
        interval(
            k8s_memcg(uid, &a, "payments", "api-7f9c", "worker", 20),
            100,
            10,
            Some(1 << 20),
        ),
        interval(
            k8s_memcg(uid, &b, "payments", "api-7f9c", "sidecar", 21),
            50,
            10,
            Some(1 << 20),
        ),
        interval(memcg(&format!("/docker/{ID}"), 22), 10, 0, None),
        system("2026-11-22T00:00:02Z"),
    ];
    let mut by_ctr = Model::new(By::Container);
    let mut by_pod = Model::new(By::Pod);
    for r in &recs {
        by_ctr.apply(r);
        by_pod.apply(r);
    }
    let names = |m: &Model| -> Vec<String> {
        m.rows(Column::Name, "")
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    assert_eq!(
        names(&by_ctr),
        [
            &ID[..12],
            "payments/api-7f9c/sidecar",
            "payments/api-7f9c/worker"
        ]
    );
    assert_eq!(names(&by_pod), [&ID[..12], "payments/api-7f9c"]);
    let pod = by_pod.rows(Column::Name, "payments/")[0];
    assert_eq!(pod.memcgs, 2);
    assert_eq!(pod.reclaim_ms_per_s, Some(75.0));
    assert_eq!(pod.cgroup, format!("/kubepods/burstable/pod{uid}"));
    // The `/` filter matches the names.
    assert_eq!(by_ctr.rows(Column::Name, "sidecar").len(), 1);
    assert_eq!(by_ctr.rows(Column::Name, "api-7f9c").len(), 2);
}
