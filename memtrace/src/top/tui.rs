//! The interactive view: drawing and key handling. Drawing only reads the
//! model and the UI state, so it is tested with ratatui's test backend.
use ratatui::{
    Frame,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{
        Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, SparklineBar, Table,
        TableState, Wrap,
    },
};

use super::{
    model::{Column, Model, Row, Sample},
    table,
};
use crate::output::escape;

#[derive(Debug, Clone)]
pub struct Ui {
    pub sort: Column,
    pub filter: String,
    pub editing_filter: bool,
    pub selected: usize,
    pub paused: bool,
    pub help: bool,
    pub detail: bool,
}

impl Ui {
    pub fn new(sort: Column) -> Self {
        Self {
            sort,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            paused: false,
            help: false,
            detail: false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Redraw,
    Quit,
    Nothing,
}

/// Applies one key press. `rows` is how many rows are shown now.
pub fn on_key(ui: &mut Ui, key: KeyEvent, rows: usize) -> Action {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if ui.editing_filter {
        match key.code {
            KeyCode::Enter => ui.editing_filter = false,
            KeyCode::Esc => {
                ui.editing_filter = false;
                ui.filter.clear();
            }
            KeyCode::Backspace => {
                ui.filter.pop();
            }
            // Only printable input: the filter is echoed on screen.
            KeyCode::Char(c) if !c.is_control() && ui.filter.len() < 64 => ui.filter.push(c),
            _ => return Action::Nothing,
        }
        ui.selected = 0;
        return Action::Redraw;
    }
    if ui.help || ui.detail {
        match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?') | KeyCode::Char('q') => {
                ui.help = false;
                ui.detail = false;
                return Action::Redraw;
            }
            _ => return Action::Nothing,
        }
    }
    match key.code {
        KeyCode::Char('q') => return Action::Quit,
        KeyCode::Char('?') | KeyCode::Char('h') => ui.help = true,
        KeyCode::Char('/') => ui.editing_filter = true,
        KeyCode::Char('p') | KeyCode::Char(' ') => ui.paused = !ui.paused,
        KeyCode::Enter => ui.detail = rows > 0,
        KeyCode::Down | KeyCode::Char('j') => {
            ui.selected = (ui.selected + 1).min(rows.saturating_sub(1))
        }
        KeyCode::Up | KeyCode::Char('k') => ui.selected = ui.selected.saturating_sub(1),
        KeyCode::Home | KeyCode::Char('g') => ui.selected = 0,
        KeyCode::End | KeyCode::Char('G') => ui.selected = rows.saturating_sub(1),
        KeyCode::Char('s') | KeyCode::Right | KeyCode::Char('>') => ui.sort = step(ui.sort, 1),
        KeyCode::Char('S') | KeyCode::Left | KeyCode::Char('<') => ui.sort = step(ui.sort, -1),
        _ => return Action::Nothing,
    }
    Action::Redraw
}

fn step(c: Column, by: isize) -> Column {
    let all = Column::ALL;
    let i = all.iter().position(|x| *x == c).unwrap_or(0) as isize;
    all[(i + by).rem_euclid(all.len() as isize) as usize]
}

pub fn draw(f: &mut Frame, m: &Model, ui: &Ui) {
    let [top, filter, body, plan, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let mut title = format!(
        "memtrace top  {}  {}",
        escape::text(&m.summary.ts),
        table::summary_line(&m.summary)
    );
    if ui.paused {
        title.push_str("  [paused]");
    }
    f.render_widget(
        Paragraph::new(title).style(Style::new().add_modifier(Modifier::BOLD)),
        top,
    );
    let filter_line = if ui.editing_filter || !ui.filter.is_empty() {
        format!(
            "filter: {}{}",
            escape::text(&ui.filter),
            if ui.editing_filter { "_" } else { "" }
        )
    } else if m.intervals == 0 {
        "waiting for the first interval...".to_string()
    } else {
        String::new()
    };
    f.render_widget(Paragraph::new(filter_line), filter);

    let rows = m.rows(ui.sort, &ui.filter);
    // A RECLAIM history column where the terminal has room for it.
    let columns_w: usize = Column::ALL.iter().map(|c| table::width(*c) + 1).sum();
    let hist = usize::from(body.width) >= columns_w + HIST_W;
    let mut head: Vec<Cell> = Column::ALL
        .iter()
        .map(|c| {
            let t = table::title(*c);
            let style = if *c == ui.sort {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Cell::from(t).style(style)
        })
        .collect();
    if hist {
        head.push(Cell::from("RECLAIM HIST"));
    }
    let header = TableRow::new(head).style(Style::new().add_modifier(Modifier::BOLD));
    let body_rows = rows.iter().map(|r| {
        let mut cells: Vec<Cell> = Column::ALL
            .iter()
            .map(|c| Cell::from(table::cell(r, *c)))
            .collect();
        if hist {
            cells.push(Cell::from(reclaim_spark(m, &r.key, HIST_W)));
        }
        TableRow::new(cells)
    });
    let mut widths: Vec<Constraint> = Column::ALL
        .iter()
        .map(|c| Constraint::Length(table::width(*c) as u16))
        .collect();
    if hist {
        widths.push(Constraint::Length(HIST_W as u16));
    }
    let t = Table::new(body_rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default()
        .with_selected((!rows.is_empty()).then(|| ui.selected.min(rows.len() - 1)));
    f.render_stateful_widget(t, body, &mut state);

    f.render_widget(Paragraph::new(table::plan_line(m)), plan);
    f.render_widget(
        Paragraph::new("q quit  ? help  / filter  s/S sort  enter details  p pause")
            .style(Style::new().add_modifier(Modifier::DIM)),
        keys,
    );

    if ui.detail {
        if let Some(r) = rows.get(ui.selected.min(rows.len().saturating_sub(1))) {
            draw_detail(f, m, r);
        }
    }
    if ui.help {
        draw_help(f);
    }
}

/// Width of the main table's RECLAIM history column.
pub const HIST_W: usize = 16;

/// A row's last `n` reclaim rates as block characters, scaled to their
/// own maximum; `-` where the plan could not see reclaim.
pub fn reclaim_spark(m: &Model, key: &str, n: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let all: Vec<Option<f64>> = m.history(key).map(Sample::reclaim_ms_per_s).collect();
    let last = &all[all.len().saturating_sub(n)..];
    let max = last.iter().flatten().fold(0.0f64, |a, v| a.max(*v));
    last.iter()
        .map(|v| match v {
            None => '-',
            Some(_) if max <= 0.0 => BARS[0],
            Some(x) => {
                // Any reclaim at all shows at least the lowest bar.
                let i = (x / max * 8.0).ceil() as usize;
                BARS[i.min(8)]
            }
        })
        .collect()
}

fn popup(area: Rect, pct_w: u16, pct_h: u16) -> Rect {
    let w = area.width * pct_w / 100;
    let h = area.height * pct_h / 100;
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn draw_detail(f: &mut Frame, m: &Model, r: &Row) {
    let area = popup(f.area(), 90, 80);
    f.render_widget(Clear, area);
    let t = escape::text;
    let mut lines = vec![
        Line::from(vec![
            Span::styled("id      ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(t(&r.id)),
        ]),
        Line::from(format!("cgroup  {}", t(&r.cgroup))),
        Line::from(format!("runtime {}  memcgs {}", t(&r.runtime), r.memcgs)),
    ];
    if let Some(n) = &r.runtime_name {
        lines.push(Line::from(format!("name    {}", t(n))));
    }
    if let Some(pod) = &r.pod {
        lines.push(Line::from(format!(
            "pod     {}/{}",
            r.namespace.as_deref().map(t).unwrap_or_default(),
            t(pod)
        )));
    }
    if let Some(image) = &r.image {
        lines.push(Line::from(format!("image   {}", t(image))));
    }
    if let Some(uid) = &r.pod_uid {
        lines.push(Line::from(format!(
            "pod uid {}  qos {}",
            t(uid),
            r.qos.as_deref().map(t).unwrap_or_default()
        )));
    }
    if let Some(by) = &r.limited_by {
        lines.push(Line::from(format!("limit set by {}", t(by))));
    }
    if r.under_oom == Some(true) {
        lines.push(Line::from(
            "UNDER OOM: tasks are waiting in the charge path (oom_kill_disable)",
        ));
    }
    lines.push(Line::from(""));
    // Shrinker time is estimated from a sample of calls (the header says
    // how many); the counts are exact.
    let sample = m.header.as_ref().map_or(1, |h| h.shrinker_time_sample.0);
    lines.push(Line::styled(
        if sample > 1 {
            format!("shrinkers (last interval; times estimated from 1 call in {sample})")
        } else {
            "shrinkers (last interval)".to_string()
        },
        Style::new().add_modifier(Modifier::BOLD),
    ));
    if r.shrinkers.is_empty() {
        lines.push(Line::from("  none called"));
    }
    for s in &r.shrinkers {
        let zero = s.zero.map(|z| z.to_string()).unwrap_or_else(|| "-".into());
        lines.push(Line::from(format!(
            "  {:<28} calls {:>8}  freed nothing {:>8}  freed {:>8}  {:.2} ms",
            t(s.count_objects.as_deref().unwrap_or(&s.shrinker)),
            s.calls,
            zero,
            s.freed,
            s.ns as f64 / 1e6
        )));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "OOM kills (most recent)",
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let mut any = false;
    for k in m
        .ooms
        .iter()
        .rev()
        .filter(|k| {
            k.victim_memcg
                .as_ref()
                .is_some_and(|v| m.row_key(v) == r.key)
        })
        .take(10)
    {
        any = true;
        let limit = k
            .oom_memcg
            .as_ref()
            .and_then(|o| o.path.as_deref())
            .unwrap_or("(global)");
        lines.push(Line::from(format!(
            "  {}  pid {} {}  anon {} kB  limit of {}{}",
            t(&k.ts),
            k.victim.pid,
            t(&k.victim.comm),
            k.victim
                .rss_anon_kb
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            t(limit),
            if k.before_start {
                "  (before start)"
            } else {
                ""
            }
        )));
    }
    if !any {
        lines.push(Line::from("  none"));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} ", t(&r.name)));
    let inner = block.inner(area);
    f.render_widget(block, area);
    // Graphs take the lower part: two lines a graph where the terminal
    // is tall enough, one where it is not, none in a tiny one.
    let graph_h = match inner.height {
        h if h >= 30 => 2,
        h if h >= 18 => 1,
        _ => 0,
    };
    let graphs_h = if graph_h == 0 {
        0
    } else {
        GRAPHS * (graph_h + 1) + 2
    };
    let [text_area, graphs_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(graphs_h)]).areas(inner);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text_area);
    if graph_h > 0 {
        draw_graphs(f, m, r, graphs_area, graph_h);
    }
}

/// Graphs in the detail view (each a label line and a sparkline).
const GRAPHS: u16 = 5;

/// A value as a sparkline bar: `scale` keeps decimals (bars are u64).
fn bar(v: Option<f64>, scale: f64) -> Option<u64> {
    v.map(|x| (x.max(0.0) * scale).round() as u64)
}

fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The selected row's last intervals: reclaim, limit hits, usage against
/// the limit, shrinker calls and their zero share, OOM kills marked.
fn draw_graphs(f: &mut Frame, m: &Model, r: &Row, area: Rect, graph_h: u16) {
    let all: Vec<&Sample> = m.history(&r.key).collect();
    // The graphs are indented by 2 columns.
    let width = area.width.saturating_sub(2) as usize;
    let samples = &all[all.len().saturating_sub(width)..];
    let kill = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let mut rows = vec![Constraint::Length(1)];
    for _ in 0..GRAPHS {
        rows.push(Constraint::Length(1));
        rows.push(Constraint::Length(graph_h));
    }
    rows.push(Constraint::Length(1));
    let areas = Layout::vertical(rows).split(area);
    let secs = m
        .header
        .as_ref()
        .and_then(|h| h.interval_ms)
        .map(|ms| format!("{}s", ms as f64 * samples.len() as f64 / 1000.0))
        .unwrap_or_else(|| format!("{} intervals", samples.len()));
    let killed = samples.iter().map(|s| u64::from(s.oom_kills)).sum::<u64>();
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                format!("history: the last {secs}, oldest left"),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw("  (- = not visible on this attach plan)  "),
            Span::styled(format!("X / red bars: OOM kills ({killed})"), kill),
        ])),
        areas[0],
    );
    let max_of = |g: &dyn Fn(&Sample) -> Option<f64>| {
        samples
            .iter()
            .filter_map(|s| g(s))
            .fold(None::<f64>, |a, v| Some(a.map_or(v, |a| a.max(v))))
    };
    let usage_note = match samples.last().and_then(|s| s.limit_bytes()) {
        Some(l) => format!("of limit {}", crate::output::units::bytes(l as u64)),
        None => "(no limit)".into(),
    };
    type Getter = fn(&Sample) -> Option<f64>;
    let graphs: [(&str, Getter, String); GRAPHS as usize] = [
        ("reclaim ms/s", Sample::reclaim_ms_per_s, String::new()),
        ("limit hits/s", Sample::limit_hits_per_s, String::new()),
        ("usage", Sample::usage_bytes, usage_note),
        (
            "shrinker calls/s",
            Sample::do_shrink_slab_per_s,
            String::new(),
        ),
        ("zero share %", Sample::zero_pct, String::new()),
    ];
    for (i, (name, get, note)) in graphs.iter().enumerate() {
        let max = max_of(get);
        let visible = samples.iter().any(|s| get(s).is_some());
        let label = match (max, *name) {
            _ if !visible
                && *name == "zero share %"
                && !m.plan_sees(crate::output::fields::Field::DoShrinkSlabZero) =>
            {
                format!("{name}: - (calls that freed nothing not visible on this plan)")
            }
            (None, _) => format!("{name}: -"),
            (Some(x), "usage") => format!(
                "{name}: max {} {note}",
                crate::output::units::bytes(x as u64)
            ),
            (Some(x), _) => format!("{name}: max {}", fmt_rate(x)),
        };
        f.render_widget(Paragraph::new(label), areas[1 + 2 * i]);
        // Usage is drawn against the limit (a full bar = at the limit).
        let scale = if *name == "usage" {
            1.0 / 1024.0
        } else {
            100.0
        };
        let limit = samples
            .iter()
            .filter_map(|s| s.limit_bytes())
            .fold(0.0, f64::max);
        let data: Vec<SparklineBar> = samples
            .iter()
            .map(|s| {
                let b = SparklineBar::from(bar(get(s), scale));
                if s.oom_kills > 0 {
                    b.style(Some(kill))
                } else {
                    b
                }
            })
            .collect();
        let mut sp = Sparkline::default()
            .data(data)
            .absent_value_symbol("-")
            .style(Style::new().fg(Color::Cyan));
        if *name == "usage" && limit > 0.0 {
            sp = sp.max((limit / 1024.0).round() as u64);
        } else if *name == "zero share %" {
            sp = sp.max(100 * 100);
        }
        let [_, graph] =
            Layout::horizontal([Constraint::Length(2), Constraint::Min(1)]).areas(areas[2 + 2 * i]);
        f.render_widget(sp, graph);
    }
    // The kills, under the graphs, at their intervals' columns.
    let marks: String = samples
        .iter()
        .map(|s| if s.oom_kills > 0 { 'X' } else { ' ' })
        .collect();
    f.render_widget(
        Paragraph::new(Line::from(vec![Span::raw("  "), Span::styled(marks, kill)])),
        areas[areas.len() - 1],
    );
}

fn draw_help(f: &mut Frame) {
    let area = popup(f.area(), 80, 80);
    f.render_widget(Clear, area);
    let mut lines = vec![
        Line::styled("keys", Style::new().add_modifier(Modifier::BOLD)),
        Line::from("  q / ctrl-c   quit"),
        Line::from(
            "  up/down j/k  select a row;  enter: its history graphs, shrinkers and OOM kills",
        ),
        Line::from("  s / S        sort by the next / previous column (highlighted)"),
        Line::from(
            "  /            filter rows by name (container, pod, namespace), id prefix or cgroup path; esc clears",
        ),
        Line::from("  p / space    pause the display"),
        Line::from("  ? / esc      this help"),
        Line::from(""),
        Line::styled(
            "columns (per second over the last interval; - = not visible on this attach plan)",
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ];
    for c in Column::ALL {
        lines.push(Line::from(format!(
            "  {:<12} {}",
            table::title(c),
            table::meaning(c)
        )));
    }
    let block = Block::default().borders(Borders::ALL).title(" help ");
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}
