//! `report --html` on the same synthetic files as the text report: each
//! chart's SVG parses as XML, has its series, marks the kills where they
//! happened, and names from the file cannot break out of the markup.
use std::io::Cursor;

use super::*;
use crate::report::{html, timeline};

/// What `report --html` writes for `text`.
fn html_of(text: &str) -> String {
    let (mut agg, lines) = summarize("test.ndjson", Cursor::new(text.as_bytes())).unwrap();
    agg.set_lines(lines);
    let mut r = agg.finish();
    add_histories(&mut r, Cursor::new(text.as_bytes()), lines).unwrap();
    let t = timeline::build(&r, Cursor::new(text.as_bytes()), lines).unwrap();
    html::render(&r, &t).unwrap()
}

/// The page's charts: section id and its `<svg>..</svg>` text.
fn charts(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("<section class=\"chart\" id=\"") {
        rest = &rest[i + 27..];
        let id = rest[..rest.find('"').unwrap()].to_string();
        let a = rest.find("<svg").unwrap();
        let b = rest.find("</svg>").unwrap() + 6;
        out.push((id, rest[a..b].to_string()));
        rest = &rest[b..];
    }
    out
}

/// The colours a chart's legend lists for its series.
fn legend_colors(page: &str, id: &str) -> Vec<(String, String)> {
    let sec = &page[page.find(&format!("id=\"{id}\"")).unwrap()..];
    let sec = &sec[..sec.find("</section>").unwrap()];
    let mut out = Vec::new();
    let mut rest = sec;
    while let Some(i) = rest.find("<li data-series=\"") {
        rest = &rest[i + 17..];
        let name = rest[..rest.find('"').unwrap()].to_string();
        let c = rest.find("data-color=\"").unwrap() + 12;
        out.push((name, rest[c..c + 7].to_string()));
    }
    out
}

/// Drawn elements (polyline, polygon) of one colour with some points.
fn drawn_in(doc: &roxmltree::Document, color: &str) -> usize {
    doc.descendants()
        .filter(|n| matches!(n.tag_name().name(), "polyline" | "polygon"))
        .filter(|n| {
            [n.attribute("stroke"), n.attribute("fill")]
                .into_iter()
                .flatten()
                .any(|c| c.eq_ignore_ascii_case(color))
        })
        .filter(|n| n.attribute("points").is_some_and(|p| p.contains(',')))
        .count()
}

fn no_fetch(page: &str) {
    let lower = page.to_ascii_lowercase();
    for bad in [
        "http:", "https:", "<script", "<link", "<img", "src=", "href=", "url(", "@import",
    ] {
        assert!(!lower.contains(bad), "{bad} in the page");
    }
}

#[test]
fn golden_capture_charts_parse_have_their_series_and_mark_the_kill() {
    let page = html_of(&golden_capture());
    no_fetch(&page);
    let charts = charts(&page);
    let ids: Vec<&str> = charts.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        ids,
        [
            "chart-host",
            "chart-reclaim",
            "chart-shrinker-calls",
            "chart-shrinker-zero",
            "chart-limit-hits",
            "chart-usage",
        ]
    );
    let mut kill_x = Vec::new();
    for (id, svg) in &charts {
        let doc = roxmltree::Document::parse(svg)
            .unwrap_or_else(|e| panic!("{id}: SVG does not parse: {e}\n{svg}"));
        // Every series in the legend is drawn, in its colour.
        let legend = legend_colors(&page, id);
        assert!(!legend.is_empty(), "{id}: no series");
        for (name, color) in &legend {
            if id == "chart-usage" {
                // No usage/limit snapshot in this file: said, not drawn.
                continue;
            }
            assert!(
                drawn_in(&doc, color) > 0,
                "{id}: series {name} ({color}) not drawn"
            );
        }
        // The kill (at 2 s, 03:00:02) is marked at the x of that tick.
        let marks: Vec<_> = doc
            .descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|w| w == "kill"))
            })
            .collect();
        assert_eq!(marks.len(), 1, "{id}: one kill, one marker");
        let title = marks[0]
            .children()
            .find(|n| n.tag_name().name() == "title")
            .and_then(|n| n.text())
            .unwrap();
        assert_eq!(
            title, "OOM kill at 03:00:02.0: tail (pid 4242) in app; limit of /kubepods/pod1",
            "{id}"
        );
        let line = marks[0]
            .children()
            .find(|n| n.tag_name().name() == "line")
            .unwrap();
        let x: f64 = line.attribute("x1").unwrap().parse().unwrap();
        let tick = doc
            .descendants()
            .find(|n| {
                n.tag_name().name() == "text" && n.text().map(str::trim) == Some("03:00:02.0")
            })
            .unwrap_or_else(|| panic!("{id}: no 03:00:02.0 tick"));
        let tick_x: f64 = tick.attribute("x").unwrap().parse().unwrap();
        assert!(
            (x - tick_x).abs() <= 1.0,
            "{id}: kill at x {x}, its time's tick at {tick_x}"
        );
        kill_x.push(x);
    }
    assert!(kill_x.windows(2).all(|w| w[0] == w[1]), "{kill_x:?}");

    // The capture: threshold line and window in the host chart; the
    // containers by the names people use; the verdict and the tables.
    assert!(page.contains("dashed line: the capture's trigger threshold"));
    assert!(page.contains("shaded: the capture window"));
    let reclaim: Vec<String> = legend_colors(&page, "chart-reclaim")
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(reclaim, ["app", &DOCKER[..12], "rest"]);
    assert!(page.contains("<strong>shrink_slab storm: PRESENT</strong>"));
    assert!(page.contains("TOP CONTAINERS BY RECLAIM TIME"));
    assert!(page.contains("SHRINK_SLAB STORM: PRESENT"));
}

#[test]
fn zero_share_invisible_on_a_tracepoint_plan_is_said_not_drawn_as_zero() {
    let mut recs = vec![header(&TRACEPOINT_UNAVAILABLE)];
    for sec in 1..=3 {
        recs.extend(shrinking(sec, 60, 500, None));
        recs.push(system(sec, 85.0));
    }
    let page = html_of(&ndjson(&recs));
    let ids: Vec<String> = charts(&page).into_iter().map(|c| c.0).collect();
    assert!(!ids.contains(&"chart-shrinker-zero".to_string()), "{ids:?}");
    assert!(page.contains("calls that freed nothing: not visible on this attach plan"));
    assert!(page.contains("no OOM kill in this file"));
    assert!(page.contains("not a capture: no trigger threshold"));
}

#[test]
fn hostile_times_render_as_offsets_without_panicking() {
    // An interval of 2^58 ms (its width in ns would wrap to 0) and times
    // before 1970 (RFC 3339 cannot print them).
    let mut h = header_of(header(&[]));
    h.interval_ms = Some(1 << 58);
    let mut recs = vec![Record::Header(h)];
    for sec in 1..=3 {
        recs.extend(shrinking(sec, 4, 50, Some(10)));
        let mut s = system(sec, 85.0);
        if let Record::System(s) = &mut s {
            s.ts = "1969-12-31T23:59:59Z".into();
            s.interval_ns = u64::MAX;
        }
        recs.push(s);
    }
    let page = html_of(&ndjson(&recs));
    assert!(!charts(&page).is_empty());
}

#[test]
fn an_oom_log_has_no_timeline_but_its_kills() {
    let page = html_of(&ndjson(&golden_oom_log()));
    no_fetch(&page);
    assert!(charts(&page).is_empty());
    assert!(page.contains("no interval records in this file"));
    assert!(page.contains("OOM KILL"), "the text report's kills");
}

#[test]
fn hostile_names_cannot_break_out_of_the_markup() {
    let evil = "/evil\"'><script>alert(1)</script>&amp;\u{1b}[2J\u{7}\u{202e}x";
    let m = memcg(evil, 9);
    let mut k = kill(1, 2, m.clone(), Some(m.clone()));
    k.victim.comm = "<b>t&\u{1b}]0;x\u{7}".into();
    let mut recs = vec![header(&[])];
    for sec in 1..=3 {
        recs.push(interval(
            m.clone(),
            Iv {
                sec,
                reclaim_ns: 5_000_000,
                calls: 3,
                zero: Some(1),
                limit_hits: 1,
            },
        ));
        recs.push(system(sec, 50.0));
    }
    recs.push(Record::from(k));
    if let Record::Header(h) = &mut recs[0] {
        h.hostname = "<h1>host</h1>".into();
    }
    let page = html_of(&ndjson(&recs));
    no_fetch(&page);
    for raw in ["<script", "<b>", "<h1>host", "\u{1b}", "\u{7}", "\u{202e}"] {
        assert!(!page.contains(raw), "{raw:?} unescaped in the page");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp;\\x1b[2J\\x07\\u{202e}x"));
    let charts = charts(&page);
    assert!(!charts.is_empty());
    for (id, svg) in &charts {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{id}: {e}"));
        let title = doc
            .descendants()
            .find(|n| n.tag_name().name() == "title")
            .and_then(|n| n.text())
            .unwrap();
        // Read back by an XML parser, the name is the escaped text.
        assert!(
            title.contains("<b>t&\\x1b]0;x\\x07 (pid 1)")
                && title.contains("limit of /evil\"'><script>alert(1)</script>&amp;\\x1b[2J"),
            "{id}: {title}"
        );
    }
}
