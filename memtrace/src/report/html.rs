//! `report --html`: one self-contained HTML file an incident ticket can
//! carry. The charts are drawn by plotters' SVG backend and inlined; the
//! page has no script and fetches nothing (its Content-Security-Policy
//! forbids it, should a browser ever be asked to). Every string from the
//! file (container names, comms, paths) is escaped: terminal controls as
//! in the text report, then XML's specials, so it can neither break the
//! markup nor hide text.
use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use plotters::{coord::types::RangedCoordf64, prelude::*};

use super::{
    storm::Verdict,
    summary::Report,
    text,
    timeline::{Bucket, KillMark, Series, Timeline},
};
use crate::output::escape;

/// Each chart's drawing size (the page scales it to its width).
const W: u32 = 1160;
const H: u32 = 300;

/// Okabe-Ito colours (told apart with every common colour-vision
/// deficiency) without its yellow, which vanishes on white; the rest is
/// grey.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
];
pub const REST: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// Drawn as the page's text colour: the CSS maps it (light and dark).
const INK: RGBColor = RGBColor(0, 0, 0);

/// Marker columns above which their lines fade.
const DENSE_KILLS: usize = 40;
/// Kills listed in one marker's title; the text report lists them all.
const MAX_KILLS_PER_MARK: usize = 10;

pub const NOT_VISIBLE: &str = "not visible on this attach plan";

/// Escapes an untrusted string for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in escape::text(s).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn perr<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// A number on an axis: 1.5k, 2M...
fn si(v: f64) -> String {
    let a = v.abs();
    let (d, s) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    let t = if x.fract().abs() < 1e-9 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let t = if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    };
    format!("{t}{s}")
}

/// One series: its legend label and (x, y) points.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

enum Body {
    Lines(Vec<Line>),
    /// Stacked areas, bottom layer first.
    Stacked(Vec<Line>),
}

struct Chart<'a> {
    id: &'static str,
    title: String,
    y_desc: &'static str,
    y_max: f64,
    body: Body,
    /// Host chart extras: threshold, capture window, trigger.
    host: bool,
    notes: Vec<String>,
    t: &'a Timeline,
}

fn points(t: &Timeline, f: impl Fn(&Bucket) -> Option<f64>) -> Vec<(f64, f64)> {
    t.buckets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| f(b).map(|y| (t.x_of(i), y)))
        .collect()
}

/// One line per series of `top` (in the palette's order) and, with
/// `rest`, one more in the rest colour for everything else (index
/// `top.len()` in the buckets' vectors); `value` reads series `i` from a
/// bucket.
fn series_lines(
    t: &Timeline,
    top: &[Series],
    rest: Option<String>,
    value: impl Fn(&Bucket, usize) -> Option<f64>,
) -> Vec<Line> {
    let mut lines: Vec<Line> = top
        .iter()
        .enumerate()
        .map(|(i, s)| Line {
            label: s.label.clone(),
            color: color(i),
            dashed: false,
            points: points(t, |b| value(b, i)),
        })
        .collect();
    if let Some(label) = rest {
        let n = top.len();
        lines.push(Line {
            label,
            color: REST,
            dashed: false,
            points: points(t, |b| value(b, n)),
        });
    }
    lines
}

fn y_top(max: f64) -> f64 {
    if max <= 0.0 { 1.0 } else { max * 1.1 }
}

fn lines_max(lines: &[Line]) -> f64 {
    lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
}

fn draw(c: &Chart) -> Result<String> {
    let t = c.t;
    let (x0, x1) = t.x_range();
    let mut svg = String::new();
    let mut marks = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .margin_top(12)
            .margin_right(44)
            .margin_left(8)
            .x_label_area_size(44)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, 0f64..c.y_max)
            .map_err(perr)?;
        let clock = |x: &f64| t.clock(*x);
        let ylab = |y: &f64| si(*y);
        chart
            .configure_mesh()
            .x_desc("time (UTC)")
            .y_desc(c.y_desc)
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&clock)
            .y_label_formatter(&ylab)
            .axis_style(INK)
            .bold_line_style(INK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 15).into_font().color(&INK))
            .axis_desc_style(("sans-serif", 16).into_font().color(&INK))
            .draw()
            .map_err(perr)?;
        if c.host {
            host_extras(&mut chart, t, c.y_max)?;
        }
        match &c.body {
            Body::Lines(lines) => {
                for l in lines {
                    let style = l.color.stroke_width(2);
                    if l.dashed {
                        chart
                            .draw_series(DashedLineSeries::new(l.points.clone(), 8, 5, style))
                            .map_err(perr)?;
                    } else {
                        chart
                            .draw_series(LineSeries::new(l.points.clone(), style))
                            .map_err(perr)?;
                    }
                }
            }
            Body::Stacked(layers) => {
                // Cumulative tops, drawn from the highest down so each
                // layer paints over the ones above it from its own base.
                let mut acc: Vec<(f64, f64)> = Vec::new();
                let mut tops = Vec::new();
                for l in layers {
                    if acc.is_empty() {
                        acc = l.points.iter().map(|p| (p.0, 0.0)).collect();
                    }
                    for (a, p) in acc.iter_mut().zip(&l.points) {
                        a.1 += p.1;
                    }
                    tops.push((acc.clone(), l.color));
                }
                for (pts, col) in tops.into_iter().rev() {
                    chart
                        .draw_series(
                            AreaSeries::new(pts, 0.0, col.filled())
                                .border_style(col.stroke_width(1)),
                        )
                        .map_err(perr)?;
                }
            }
        }
        // Kill markers: plotters cannot give an element a <title>, so they
        // are written here at the chart's own coordinates. Kills that fall
        // on one pixel column share a marker (its title lists them): a
        // crash loop's hundreds of kills stay readable and the file small.
        let (_, top) = chart.backend_coord(&(x0, c.y_max));
        let (_, bottom) = chart.backend_coord(&(x0, 0.0));
        let mut at: Vec<(i32, &KillMark)> = t
            .kills
            .iter()
            .map(|k| (chart.backend_coord(&(k.x_s, 0.0)).0, k))
            .collect();
        at.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.x_s.total_cmp(&b.1.x_s)));
        let groups: Vec<&[(i32, &KillMark)]> = at.chunk_by(|a, b| a.0 == b.0).collect();
        // Past a few dozen, full-height lines would hide the series: the
        // markers on top stay, the lines fade.
        let class = if groups.len() > DENSE_KILLS {
            "kill dense"
        } else {
            "kill"
        };
        for group in groups {
            let x = group[0].0;
            let mut title = String::new();
            for (_, k) in group.iter().take(MAX_KILLS_PER_MARK) {
                if !title.is_empty() {
                    title.push('\n');
                }
                let _ = write!(
                    title,
                    "OOM kill at {}: {} (pid {}) in {}; {}",
                    t.clock(k.x_s),
                    esc(&k.comm),
                    k.pid,
                    esc(&k.container),
                    esc(&k.limit)
                );
            }
            if group.len() > MAX_KILLS_PER_MARK {
                let _ = write!(
                    title,
                    "\nand {} more OOM kills here (all of them in the tables below)",
                    group.len() - MAX_KILLS_PER_MARK
                );
            }
            let _ = writeln!(
                marks,
                "<g class=\"{class}\" data-kills=\"{}\" data-t=\"{:.3}\"><title>{title}</title>\
                 <line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\"/>\
                 <path d=\"M{x},{} l-6,-10 h12 z\"/></g>",
                group.len(),
                group[0].1.x_s,
                top + 10,
            );
        }
        root.present().map_err(perr)?;
    }
    // Inline SVG needs no namespace declaration; dropping it keeps the
    // page free of any URL.
    let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    let svg = svg.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{}\" ", esc(&c.title)),
        1,
    );
    let end = svg
        .rfind("</svg>")
        .ok_or_else(|| anyhow!("plotters wrote no </svg>"))?;
    Ok(format!("{}{marks}{}", &svg[..end], &svg[end..]))
}

type Ctx<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn host_extras(chart: &mut Ctx, t: &Timeline, y_max: f64) -> Result<()> {
    if let Some((a, b)) = t.window_s {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, y_max)],
                REST.mix(0.15).filled(),
            )))
            .map_err(perr)?;
    }
    if let Some(tr) = t.trigger_s {
        chart
            .draw_series(DashedLineSeries::new(
                [(tr, 0.0), (tr, y_max)],
                4,
                4,
                INK.mix(0.6).stroke_width(1),
            ))
            .map_err(perr)?;
    }
    if let Some(th) = t.threshold_pct {
        let (x0, x1) = t.x_range();
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, th), (x1, th)],
                10,
                6,
                INK.mix(0.6).stroke_width(1),
            ))
            .map_err(perr)?;
    }
    Ok(())
}

fn legend(out: &mut String, c: &Chart) {
    let lines = match &c.body {
        Body::Lines(l) | Body::Stacked(l) => l,
    };
    out.push_str("<ul class=\"legend\">");
    for l in lines {
        let _ = write!(
            out,
            "<li data-series=\"{}\" data-color=\"{}\"><svg width=\"28\" height=\"12\" aria-hidden=\"true\">\
             <line x1=\"0\" y1=\"6\" x2=\"28\" y2=\"6\" stroke=\"{}\" stroke-width=\"4\"{}/></svg>{}</li>",
            esc(&l.label),
            hex(l.color),
            hex(l.color),
            if l.dashed {
                " stroke-dasharray=\"6 3\""
            } else {
                ""
            },
            esc(&l.label)
        );
    }
    if c.host {
        if c.t.threshold_pct.is_some() {
            out.push_str("<li class=\"extra\">dashed line: the capture's trigger threshold</li>");
        }
        if c.t.window_s.is_some() {
            out.push_str(
                "<li class=\"extra\">shaded: the capture window (vertical line: trigger)</li>",
            );
        }
    }
    if !c.t.kills.is_empty() {
        out.push_str("<li class=\"extra\"><span class=\"killkey\">&#9660;</span> OOM kill (details on hover and in the tables below)</li>");
    }
    out.push_str("</ul>");
}

fn section(out: &mut String, c: &Chart) -> Result<()> {
    let svg = draw(c)?;
    let _ = write!(
        out,
        "<section class=\"chart\" id=\"{}\"><h2>{}</h2><figure>{svg}</figure>",
        c.id,
        esc(&c.title)
    );
    legend(out, c);
    for n in &c.notes {
        let _ = write!(out, "<p class=\"note\">{}</p>", esc(n));
    }
    out.push_str("</section>\n");
    Ok(())
}

fn note_section(out: &mut String, id: &str, title: &str, note: &str) {
    let _ = writeln!(
        out,
        "<section class=\"chart empty\" id=\"{id}\"><h2>{}</h2><p class=\"note\">{}</p></section>",
        esc(title),
        esc(note)
    );
}

fn charts(out: &mut String, t: &Timeline) -> Result<()> {
    let ws = t.width_s();
    // Host CPU.
    let has_sys = t.buckets.iter().any(|b| b.sys_pct().is_some());
    if has_sys {
        let mut notes = Vec::new();
        if t.threshold_pct.is_none() {
            notes.push("not a capture: no trigger threshold or capture window to mark".into());
        }
        let lines = vec![
            Line {
                label: "host sys %".into(),
                color: color(0),
                dashed: false,
                points: points(t, Bucket::sys_pct),
            },
            Line {
                label: "busiest CPU sys %".into(),
                color: color(1),
                dashed: true,
                points: points(t, |b| b.max_cpu),
            },
            Line {
                label: "kswapd CPU %".into(),
                color: color(2),
                dashed: false,
                points: points(t, Bucket::kswapd_pct),
            },
        ];
        section(
            out,
            &Chart {
                id: "chart-host",
                title: "Host CPU: sys time, busiest CPU, kswapd".into(),
                y_desc: "% of CPU",
                y_max: 100.0,
                body: Body::Lines(lines),
                host: true,
                notes,
                t,
            },
        )?;
    } else {
        note_section(
            out,
            "chart-host",
            "Host CPU",
            "no system records in this file: no host CPU timeline",
        );
    }

    // Reclaim, stacked per container.
    let n = t.containers.len();
    let rest = if n == 0 { "all memcgs" } else { "rest" };
    let layers = series_lines(t, &t.containers, Some(rest.into()), |b, i| {
        Some(b.reclaim_ns[i] as f64 / 1e6 / ws)
    });
    let total = t
        .buckets
        .iter()
        .map(|b| b.reclaim_ns.iter().sum::<u64>() as f64 / 1e6 / ws)
        .fold(0.0, f64::max);
    section(
        out,
        &Chart {
            id: "chart-reclaim",
            title: format!("Reclaim time, top {n} containers and the rest (stacked)"),
            y_desc: "reclaim ms/s",
            y_max: y_top(total),
            body: Body::Stacked(layers),
            host: false,
            notes: if total == 0.0 {
                vec!["no reclaim time in this file".into()]
            } else {
                vec![]
            },
            t,
        },
    )?;

    // Shrinker calls and their zero share.
    if t.shrinker_calls_visible {
        let k = t.shrinkers.len();
        let rest = if k == 0 {
            "all shrinkers"
        } else {
            "other shrinkers"
        };
        let lines = series_lines(t, &t.shrinkers, Some(rest.into()), |b, i| {
            Some(b.calls[i] as f64 / ws)
        });
        let max = lines_max(&lines);
        section(
            out,
            &Chart {
                id: "chart-shrinker-calls",
                title: format!("do_shrink_slab calls, top {k} shrinkers"),
                y_desc: "calls/s",
                y_max: y_top(max),
                body: Body::Lines(lines),
                host: false,
                notes: vec![],
                t,
            },
        )?;
        if t.zero_visible {
            let mut lines: Vec<Line> = (0..=k)
                .map(|i| Line {
                    label: t
                        .shrinkers
                        .get(i)
                        .map_or("other shrinkers".into(), |s| s.label.clone()),
                    color: if i < k { color(i) } else { REST },
                    dashed: false,
                    points: points(t, |b| {
                        (b.zero_base[i] > 0)
                            .then(|| b.zero[i] as f64 * 100.0 / b.zero_base[i] as f64)
                    }),
                })
                .collect();
            lines.retain(|l| !l.points.is_empty());
            section(
                out,
                &Chart {
                    id: "chart-shrinker-zero",
                    title: "Share of do_shrink_slab calls that freed nothing".into(),
                    y_desc: "% of calls",
                    y_max: 105.0,
                    body: Body::Lines(lines),
                    host: false,
                    notes: vec![],
                    t,
                },
            )?;
        } else {
            note_section(
                out,
                "chart-shrinker-zero",
                "Share of do_shrink_slab calls that freed nothing",
                &format!("calls that freed nothing: {NOT_VISIBLE}"),
            );
        }
    } else {
        note_section(
            out,
            "chart-shrinker-calls",
            "do_shrink_slab calls",
            &format!("do_shrink_slab calls: {NOT_VISIBLE}"),
        );
    }

    // The OOM-killed containers.
    if t.killed.is_empty() {
        note_section(
            out,
            "chart-limit-hits",
            "OOM-killed containers",
            "no OOM kill in this file's first run",
        );
        return Ok(());
    }
    let per = |f: &dyn Fn(&Bucket, usize) -> Option<f64>| series_lines(t, &t.killed, None, f);
    let hits = per(&|b, i| b.limit_hits[i].map(|h| h as f64 / ws));
    let max = lines_max(&hits);
    let hit_notes = if hits.iter().all(|l| l.points.is_empty()) {
        vec![format!("limit hits: {NOT_VISIBLE}")]
    } else {
        vec![]
    };
    section(
        out,
        &Chart {
            id: "chart-limit-hits",
            title: "Limit hits of the OOM-killed containers' limiting memcgs".into(),
            y_desc: "limit hits/s",
            y_max: y_top(max),
            body: Body::Lines(hits),
            host: false,
            notes: hit_notes,
            t,
        },
    )?;
    let usage = per(&|b, i| b.usage_pct[i]);
    let max = lines_max(&usage).max(100.0);
    let notes = if usage.iter().all(|l| l.points.is_empty()) {
        vec!["no usage/limit snapshot in this file's records".into()]
    } else {
        vec![]
    };
    section(
        out,
        &Chart {
            id: "chart-usage",
            title: "Memory usage as a share of the limit, OOM-killed containers".into(),
            y_desc: "usage, % of limit",
            y_max: y_top(max),
            body: Body::Lines(usage),
            host: false,
            notes,
            t,
        },
    )?;
    Ok(())
}

const CSS: &str = "\
:root{color-scheme:light dark;--fg:#1b1b1b;--bg:#ffffff;--muted:#555555;--box:#f3f4f6;--kill:#b00020}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8e8;--bg:#15171b;--muted:#a8a8a8;--box:#23262c;--kill:#ff6b7a}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif}
main{max-width:1200px;margin:0 auto;padding:16px 20px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .3em}
.meta,.note{color:var(--muted)}
.verdict{background:var(--box);border-left:4px solid var(--kill);padding:8px 12px}
.verdict.ok{border-left-color:var(--muted)}
figure{margin:0}
figure svg{display:block;width:100%;height:auto}
figure svg [stroke='#000000']{stroke:var(--fg)}
figure svg [fill='#000000'],figure svg text{fill:var(--fg)}
g.kill line{stroke:var(--kill);stroke-width:1.5;stroke-opacity:.45}
g.kill path{fill:var(--kill)}
g.dense line{stroke-opacity:.12}
.killkey{color:var(--kill)}
ul.legend{list-style:none;padding:0;margin:.3em 0;display:flex;flex-wrap:wrap;gap:4px 18px}
ul.legend li{display:flex;align-items:center;gap:6px;overflow-wrap:anywhere}
pre{background:var(--box);padding:10px;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12.5px}
@media print{@page{size:A4;margin:12mm}main{max-width:none;padding:0}section.chart{break-inside:avoid}body{font-size:11pt}}
";

/// The whole page.
pub fn render(r: &Report, t: &Timeline) -> Result<String> {
    let mut o = String::with_capacity(256 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"generator\" content=\"memtrace {}\">\
         <title>memtrace report: {}</title><style>{CSS}</style></head><body><main>\n",
        env!("CARGO_PKG_VERSION"),
        esc(&r.file)
    );
    let _ = write!(
        o,
        "<h1>memtrace report</h1><p class=\"meta\">{}",
        esc(&r.file)
    );
    if let Some(h) = &r.header {
        let _ = write!(
            o,
            " &middot; host {} &middot; kernel {} &middot; attach {}",
            esc(&h.hostname),
            esc(&h.kernel_release),
            esc(&h.attach_mode)
        );
    }
    if let (Some(a), Some(b)) = (&r.span.first_ts, &r.span.last_ts) {
        let _ = write!(o, " &middot; {} to {}", esc(a), esc(b));
    }
    o.push_str("</p>\n");
    let (class, verdict) = match r.storm.verdict {
        Verdict::Present => ("verdict", "shrink_slab storm: PRESENT"),
        Verdict::Absent => ("verdict ok", "shrink_slab storm: not present"),
        Verdict::NotConfirmable => (
            "verdict",
            "shrink_slab storm: cannot be confirmed on this attach plan",
        ),
        Verdict::NoData => ("verdict ok", "shrink_slab storm: no data"),
    };
    let kills = r.oom_kills.iter().filter(|k| !k.before_start).count();
    let _ = writeln!(
        o,
        "<p class=\"{class}\"><strong>{verdict}</strong>; {kills} OOM kill{} in the file. {}</p>",
        if kills == 1 { "" } else { "s" },
        esc(&r.storm.explanation.join(" "))
    );
    if t.buckets.is_empty() {
        o.push_str(
            "<p class=\"note\">no interval records in this file (an OOM log?): no timeline to \
             draw; the kills are told below</p>\n",
        );
    } else {
        charts(&mut o, t)?;
        let _ = writeln!(
            o,
            "<p class=\"note\">each point covers {}; times are UTC</p>",
            esc(
                &humantime::format_duration(std::time::Duration::from_nanos(t.width_ns))
                    .to_string()
            )
        );
    }
    if t.kills_left_out > 0 {
        let _ = writeln!(
            o,
            "<p class=\"note\">{} OOM kill{} of later runs (or of a file without intervals) \
             not marked on the charts: see the tables below</p>",
            t.kills_left_out,
            if t.kills_left_out == 1 { "" } else { "s" }
        );
    }
    if t.later_runs > 0 {
        let _ = writeln!(
            o,
            "<p class=\"note\">the file holds {} more run{} of memtrace after the first: the charts \
             show the first only, the tables below count them all</p>",
            t.later_runs,
            if t.later_runs == 1 { "" } else { "s" }
        );
    }
    // The text report is already free of terminal controls; it only needs
    // HTML's escaping.
    let text = text::render(r);
    let mut pre = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => pre.push_str("&lt;"),
            '>' => pre.push_str("&gt;"),
            '&' => pre.push_str("&amp;"),
            c => pre.push(c),
        }
    }
    let _ = writeln!(
        o,
        "<section id=\"tables\"><h2>Verdict and tables (the text report)</h2><pre>{pre}</pre></section>"
    );
    o.push_str("</main></body></html>\n");
    Ok(o)
}
