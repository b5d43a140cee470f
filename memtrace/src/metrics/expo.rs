//! The Prometheus exposition formats, written by hand: the classic text
//! format 0.0.4 (what a plain `curl` gets and Debian's `promtool check
//! metrics` checks) and OpenMetrics 1.0 (only when the scraper's Accept
//! header asks for it). Neither crate fits both: `prometheus-client` writes
//! OpenMetrics only, and the `prometheus` crate writes 0.0.4 only around a
//! registry of long-lived collectors, while the agent rebuilds its series
//! from its own state at each scrape (gone memcgs expire, a cap applies,
//! fields the plan cannot see have no series at all). The two formats
//! differ only in how a counter family is named, the content type and the
//! closing `# EOF`.
use std::fmt::Write;

use crate::output::escape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text004,
    OpenMetrics,
}

impl Format {
    /// Content negotiation: OpenMetrics only when Accept names it (as
    /// Prometheus does by default), else 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text004,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A label value as it appears between the quotes. Cgroup and container
/// names are chosen by container users: first the escaping every memtrace
/// output applies (control characters, bidi overrides and backslashes
/// rendered as `\xNN`, `\u{NNNN}`, `\\`, so a `curl` of the page cannot
/// drive a terminal), then the format's own (`\` `"` and newline, the only
/// escapes both formats define), so no value can close its quotes or start
/// a line.
pub fn label_value(out: &mut String, raw: &str) {
    for c in escape::text(raw).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes families one after the other (never interleaved, as both formats
/// require).
pub struct Writer {
    format: Format,
    out: String,
    /// Samples written (series exposed).
    pub samples: usize,
}

/// One family's header written; samples follow through [`Family::sample`].
pub struct Family<'a> {
    w: &'a mut Writer,
    /// The sample name: `<name>_total` for a counter.
    sample_name: String,
}

impl Writer {
    pub fn new(format: Format) -> Self {
        Writer {
            format,
            out: String::with_capacity(64 * 1024),
            samples: 0,
        }
    }

    /// Starts a family. `name` is the base name; a counter's samples get
    /// `_total` (OpenMetrics names the family without it, 0.0.4 with it).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        let (family_name, sample_name) = match kind {
            Kind::Counter => {
                let total = format!("{name}_total");
                match self.format {
                    Format::Text004 => (total.clone(), total),
                    Format::OpenMetrics => (name.to_string(), total),
                }
            }
            Kind::Gauge => (name.to_string(), name.to_string()),
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Help texts are ours (no user data): no escaping needed.
        let _ = writeln!(self.out, "# HELP {family_name} {help}");
        let _ = writeln!(self.out, "# TYPE {family_name} {kind}");
        Family {
            w: self,
            sample_name,
        }
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: Value) {
        self.family(name, kind, help).sample(&[], value);
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A sample value: integers stay exact, floats are written in full.
pub enum Value {
    U(u64),
    F(f64),
}

impl Family<'_> {
    /// One sample. Labels with an empty value are left out (Prometheus
    /// treats an empty label as absent).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: Value) {
        let out = &mut self.w.out;
        out.push_str(&self.sample_name);
        let mut first = true;
        for (k, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            label_value(out, v);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        let _ = match value {
            Value::U(u) => write!(out, "{u}"),
            Value::F(f) if f.is_finite() => write!(out, "{f}"),
            // Never produced by the agent; kept valid in both formats.
            Value::F(_) => write!(out, "NaN"),
        };
        out.push('\n');
        self.w.samples += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_out() {
        let mut s = String::new();
        label_value(&mut s, "a\"b\\c\nd\x1b[2J\u{202e}");
        assert_eq!(s, r#"a\"b\\\\c\\x0ad\\x1b[2J\\u{202e}"#);
    }

    #[test]
    fn counters_are_named_per_format() {
        for (format, family) in [
            (Format::Text004, "# TYPE x_total counter"),
            (Format::OpenMetrics, "# TYPE x counter"),
        ] {
            let mut w = Writer::new(format);
            let mut f = w.family("x", Kind::Counter, "X.");
            f.sample(&[("a", "1"), ("b", "")], Value::U(3));
            f.sample(&[], Value::F(0.5));
            let text = w.finish();
            assert!(text.contains(family), "{text}");
            assert!(text.contains("x_total{a=\"1\"} 3\nx_total 0.5\n"), "{text}");
            assert_eq!(text.ends_with("# EOF\n"), format == Format::OpenMetrics);
        }
    }

    #[test]
    fn accept_header_negotiates() {
        assert_eq!(Format::from_accept(None), Format::Text004);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text004);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
