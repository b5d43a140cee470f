//! `memtrace report`: explains a capture, a stream file or an OOM log, no
//! root needed. The file's kind is read from its content (its first
//! record); damaged lines are reported with their numbers and skipped, and
//! the rest is summarized: the span, a capture's trigger, who paid for
//! reclaim, the top memcgs and containers, the shrinkers, the shrink_slab
//! storm signature, and every OOM kill's story.
mod html;
mod oom;
mod storm;
mod summary;
mod text;
mod timeline;

#[cfg(test)]
mod tests;

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, Result, bail};

use self::{
    oom::HistoryAcc,
    summary::{Aggregator, Kind, Report, starts_segment},
};
use crate::{
    output::{json, records::Record},
    source::ndjson::{self, Item, Lines},
};

/// A file whose first this-many non-blank lines are all bad is not a
/// memtrace file: give up instead of reading all of it.
const GIVE_UP_AFTER: u64 = 64;
/// Bad lines listed on stderr with the text report.
const MAX_BAD_LINES_TEXT: usize = 100;

pub fn run(path: &Path, json: bool, html: Option<&Path>) -> Result<()> {
    if let Some(out) = html {
        return write_html(path, out);
    }
    let report = build(path)?;
    let out = if json {
        json::line(&report)
    } else {
        let bad = text::bad_lines(&report, MAX_BAD_LINES_TEXT);
        if !bad.is_empty() {
            let _ = std::io::stderr().write_all(bad.as_bytes());
        }
        text::render(&report).into_bytes()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the report")
        }
        _ => Ok(()),
    }
}

/// Reads and summarizes the file at `path`; an error when nothing in it
/// could be summarized.
pub fn build(path: &Path) -> Result<Report> {
    Ok(build_counted(path)?.0)
}

/// The report, the lines it read and whether the file can be read again.
fn build_counted(path: &Path) -> Result<(Report, u64, bool)> {
    let file = ndjson::open(path)?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    let (mut agg, lines) = summarize(&name, BufReader::new(file))?;
    agg.set_lines(lines);
    let mut report = agg.finish();
    // A second pass sums each kill's history from the file, when it can be
    // read again (not a pipe).
    if meta.is_file() && report.oom_kills.iter().any(needs_history) {
        let file = File::open(path).with_context(|| format!("cannot reopen {}", path.display()))?;
        add_histories(&mut report, BufReader::new(file), lines)?;
    }
    Ok((report, lines, meta.is_file()))
}

/// The report with its charts as one HTML file: the summary first (it
/// names the series worth charting), then one more pass for their series.
pub fn html(path: &Path) -> Result<String> {
    let (report, lines, rereadable) = build_counted(path)?;
    if !rereadable {
        bail!(
            "{}: --html reads the file twice (summary, then the charts' series); save the \
             stream to a file first",
            path.display()
        );
    }
    let file = File::open(path).with_context(|| format!("cannot reopen {}", path.display()))?;
    let t = timeline::build(&report, BufReader::new(file), lines)?;
    html::render(&report, &t)
}

fn write_html(path: &Path, out: &Path) -> Result<()> {
    let page = html(path)?;
    // 0640 like memtrace's other outputs (it names cgroups and tasks); a
    // symlink planted at `out` is refused, not followed.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(out)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow::anyhow!(
                    "refusing to write {}: it is a symlink; remove it or choose another path",
                    out.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("creating {}", out.display()))
            }
        })?;
    f.write_all(page.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))
}

/// Pass 1: every line into the aggregator. Returns it and the number of
/// lines read.
fn summarize<R: BufRead>(name: &str, reader: R) -> Result<(Aggregator, u64)> {
    let mut lines = Lines::new(reader);
    let mut agg = Aggregator::new(name);
    let mut first_bad = None;
    let mut n = 0u64;
    loop {
        let item = lines
            .next_item()
            .with_context(|| format!("reading {name}"))?;
        let Some(item) = item else { break };
        n += 1;
        match item {
            Item::Record(record) => agg.apply(&record),
            Item::Bad(b) => {
                if first_bad.is_none() {
                    first_bad = Some(b.clone());
                }
                agg.bad(b);
                if agg.records() == 0 && n >= GIVE_UP_AFTER {
                    break;
                }
            }
        }
    }
    if agg.records() == 0 {
        let expected = "expected the NDJSON of `memtrace stream --output`, `memtrace top --save` \
                        or `memtrace record` (a capture or its OOM log)";
        match first_bad {
            None => bail!("{name}: empty file, nothing to report ({expected})"),
            Some(b) => bail!(
                "{name}: not a memtrace capture, stream file or OOM log: {} (line {}: {}); \
                 {expected}",
                if n >= GIVE_UP_AFTER {
                    format!("none of its first {n} lines is a memtrace record")
                } else {
                    format!(
                        "none of its {n} line{} is a memtrace record",
                        if n == 1 { "" } else { "s" }
                    )
                },
                b.line,
                b.error
            ),
        }
    }
    Ok((agg, lines.line_no()))
}

fn needs_history(k: &oom::OomStory) -> bool {
    !k.before_start && k.history.is_none()
}

/// Pass 2: sums the memcg_interval records before each kill (of the
/// limited memcg's subtree, up to oom::HISTORY_WINDOW_NS) into its story.
fn add_histories<R: BufRead>(report: &mut Report, reader: R, max_lines: u64) -> Result<()> {
    // (segment, kill ts_ns, story index), sorted for range lookups.
    let mut kills: Vec<(u64, u64, usize)> = report
        .oom_kills
        .iter()
        .enumerate()
        .filter(|(_, k)| needs_history(k))
        .map(|(i, k)| (k.segment, k.ts_ns, i))
        .collect();
    kills.sort_unstable();
    let mut acc: Vec<HistoryAcc> = (0..report.oom_kills.len())
        .map(|_| HistoryAcc::default())
        .collect();
    reread(report.kind, reader, max_lines, |segment, record| {
        let Record::MemcgInterval(i) = record else {
            return;
        };
        // Kills this interval can precede: from its start to WINDOW after.
        let lo = (segment, i.ts_ns.saturating_sub(i.interval_ns), 0);
        let hi = (
            segment,
            i.ts_ns.saturating_add(oom::HISTORY_WINDOW_NS),
            usize::MAX,
        );
        let from = kills.partition_point(|k| *k < lo);
        let to = kills.partition_point(|k| *k <= hi);
        for &(_, _, idx) in &kills[from..to] {
            if report.oom_kills[idx].covers(segment, i) {
                acc[idx].add(i);
            }
        }
    })?;
    for (story, h) in report.oom_kills.iter_mut().zip(acc) {
        if needs_history(story)
            && let Some(h) = h.finish(story.ts_ns)
        {
            story.history = Some(h);
            story.history_from = Some("file");
        }
    }
    Ok(())
}

/// Reads the file again up to `max_lines` (the first pass's extent),
/// handing `f` each record with the index of the run it belongs to (a new
/// header or capture starts a run; records before any of them are run 0).
/// Bad lines were named by the first pass and are skipped here.
pub(crate) fn reread<R: BufRead>(
    kind: Kind,
    reader: R,
    max_lines: u64,
    mut f: impl FnMut(u64, &Record),
) -> Result<u64> {
    let mut lines = Lines::new(reader);
    let mut segment = 0u64;
    let mut seen_any = false;
    while lines.line_no() < max_lines {
        let Some(item) = lines.next_item().context("rereading the file")? else {
            break;
        };
        let Item::Record(record) = item else {
            continue;
        };
        if starts_segment(kind, &record) && seen_any {
            segment += 1;
        }
        seen_any = true;
        f(segment, &record);
    }
    Ok(segment)
}
