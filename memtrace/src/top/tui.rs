//! The interactive view: drawing and key handling. Drawing only reads the
//! model and the UI state, so it is tested with ratatui's test backend.
use ratatui::{
    Frame,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap},
};

use super::{
    model::{Column, Model, Row},
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
    let header = TableRow::new(Column::ALL.iter().map(|c| {
        let t = table::title(*c);
        let style = if *c == ui.sort {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        Cell::from(t).style(style)
    }))
    .style(Style::new().add_modifier(Modifier::BOLD));
    let body_rows = rows
        .iter()
        .map(|r| TableRow::new(Column::ALL.iter().map(|c| Cell::from(table::cell(r, *c)))));
    let widths = Column::ALL
        .iter()
        .map(|c| Constraint::Length(table::width(*c) as u16));
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
    lines.push(Line::styled(
        "shrinkers (last interval)",
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
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn draw_help(f: &mut Frame) {
    let area = popup(f.area(), 80, 80);
    f.render_widget(Clear, area);
    let mut lines = vec![
        Line::styled("keys", Style::new().add_modifier(Modifier::BOLD)),
        Line::from("  q / ctrl-c   quit"),
        Line::from("  up/down j/k  select a row;  enter: its shrinkers and OOM kills"),
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
