//! `memtrace top`: containers ranked by what memory pressure costs them.
mod model;
mod table;
mod tui;

use std::{io::Write, time::Duration};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use ratatui::crossterm::event::{Event, EventStream, KeyEventKind};
use serde::Serialize;

pub use model::{By, Column};
use model::{Model, Row};

use crate::{
    cli::TopArgs,
    filter::Filter,
    output::{json, records::Record, writer::NdjsonWriter},
    pipeline::{LivePipeline, Output, PipelineOptions},
    signals::Stop,
    source::replay::Replay,
};

/// Where records come from.
enum Source {
    Live(Box<LivePipeline>),
    Replay(Box<Replay>),
}

impl Source {
    /// The next records: from the kernel as they come, or the next interval
    /// of the file (None at its end).
    async fn next(&mut self) -> Result<Option<Vec<Record>>> {
        match self {
            Source::Live(p) => Ok(Some(records(p.next().await?))),
            Source::Replay(r) => r.next_batch().await,
        }
    }
}

/// `top` shows records; the OOM snapshots are `record`'s.
fn records(outputs: Vec<Output>) -> Vec<Record> {
    outputs.into_iter().map(|o| o.record).collect()
}

/// One row as `--json` writes it.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: &'a str,
    #[serde(flatten)]
    row: &'a Row,
}

struct Feed {
    model: Model,
    filter: Filter,
    save: Option<NdjsonWriter>,
}

impl Feed {
    /// Applies records; true when an interval closed (a new frame).
    fn apply(&mut self, records: &[Record]) -> Result<bool> {
        let mut closed = false;
        for r in records.iter().filter(|r| self.filter.record(r)) {
            if let Some(w) = self.save.as_mut() {
                w.write(r).context("writing --save file")?;
            }
            self.model.apply(r);
            closed |= matches!(r, Record::System(_));
        }
        Ok(closed)
    }
}

pub async fn run(args: TopArgs) -> Result<()> {
    let mut stop = Stop::new()?;
    let filter = args.filter.filter()?;
    let save = args.save.as_deref().map(NdjsonWriter::create).transpose()?;
    let mut feed = Feed {
        model: Model::new(args.by),
        filter,
        save,
    };
    let mut source = match &args.replay {
        Some(path) => {
            let r = tokio::select! {
                r = Replay::open(path) => r?,
                _ = stop.recv() => return Ok(()),
            };
            feed.apply(std::slice::from_ref(r.header()))?;
            Source::Replay(Box::new(r))
        }
        None => {
            let opts = args.probe.load_options()?;
            let popts = PipelineOptions {
                interval: Some(args.interval),
                oom_snapshots: false,
                roots: args.names.roots(),
                state_max_age: Duration::ZERO,
            };
            let mut p = LivePipeline::start(&opts, popts)?;
            feed.apply(&[Record::Header(p.header().clone())])?;
            feed.apply(&records(p.backlog()))?;
            Source::Live(Box::new(p))
        }
    };
    if args.batch || args.json {
        batch(&mut source, &mut feed, &args, &mut stop).await
    } else {
        interactive(&mut source, &mut feed, &args, &mut stop).await
    }?;
    if let Some(w) = feed.save.as_mut() {
        w.sync()?;
    }
    Ok(())
}

fn print_frame(feed: &Feed, args: &TopArgs) -> Result<bool> {
    let rows = feed.model.rows(args.sort, "");
    let mut out = Vec::new();
    if args.json {
        for row in rows {
            out.extend(json::line(&JsonRow {
                kind: "top_row",
                ts: &feed.model.summary.ts,
                row,
            }));
        }
    } else {
        out.extend(table::frame(&feed.model, &rows).into_bytes());
        out.push(b'\n');
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn batch(
    source: &mut Source,
    feed: &mut Feed,
    args: &TopArgs,
    stop: &mut Stop,
) -> Result<()> {
    let mut frames = 0;
    // Frames may be an hour apart: a reader that went away in between is
    // noticed without waiting for the next write.
    let mut check = tokio::time::interval(crate::signals::STDOUT_CHECK);
    loop {
        let records = tokio::select! {
            r = source.next() => r?,
            _ = stop.recv() => break,
            _ = check.tick() => {
                if crate::signals::stdout_reader_gone() {
                    return Ok(());
                }
                continue;
            }
        };
        let Some(records) = records else {
            return Ok(());
        };
        if feed.apply(&records)? {
            if !print_frame(feed, args)? {
                return Ok(());
            }
            frames += 1;
            if args.iterations.is_some_and(|n| frames >= n) {
                return Ok(());
            }
        }
    }
    // Stopped by a signal: what happened since the last frame is shown and
    // saved like any other interval, so a replay shows the same frames.
    if let Source::Live(p) = source {
        if feed.apply(&records(p.finish()))? {
            print_frame(feed, args)?;
        }
    }
    Ok(())
}

/// Restores the terminal however the view ends (ratatui's panic hook
/// covers panics).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn interactive(
    source: &mut Source,
    feed: &mut Feed,
    args: &TopArgs,
    stop: &mut Stop,
) -> Result<()> {
    let mut terminal =
        ratatui::try_init().context("setting up the terminal (use --batch without a TTY)")?;
    let _guard = TerminalGuard;
    let mut ui = tui::Ui::new(args.sort);
    let mut keys = EventStream::new();
    let replay = matches!(source, Source::Replay(_));
    // A replay advances one interval per tick; live records arrive by themselves.
    let mut tick = tokio::time::interval(if replay {
        args.interval
    } else {
        Duration::from_secs(3600)
    });
    let mut replay_done = false;
    terminal.draw(|f| tui::draw(f, &feed.model, &ui))?;
    loop {
        let redraw = tokio::select! {
            records = source.next(), if !replay => {
                let records = records?.unwrap_or_default();
                feed.apply(&records)? && !ui.paused
            }
            _ = tick.tick(), if replay && !replay_done && !ui.paused => {
                match source.next().await? {
                    Some(records) => feed.apply(&records)?,
                    None => {
                        replay_done = true;
                        false
                    }
                }
            }
            ev = keys.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                    let shown = feed.model.rows(ui.sort, &ui.filter).len();
                    match tui::on_key(&mut ui, k, shown) {
                        tui::Action::Quit => break,
                        tui::Action::Redraw => true,
                        tui::Action::Nothing => false,
                    }
                }
                Some(Ok(Event::Resize(_, _))) => true,
                Some(Ok(_)) => false,
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => break,
            },
            _ = stop.recv() => break,
        };
        if redraw {
            terminal.draw(|f| tui::draw(f, &feed.model, &ui))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
