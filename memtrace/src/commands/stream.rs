//! `memtrace stream`: records as NDJSON, from the kernel or a replay file.
use std::io;

use anyhow::{Context, Result};

use crate::{
    cli::StreamArgs,
    filter::Filter,
    output::{records::Record, writer::NdjsonWriter},
    pipeline::{LivePipeline, Output, PipelineOptions},
    signals::Stop,
    source::replay::Replay,
};

struct Sink {
    out: NdjsonWriter,
    filter: Filter,
}

impl Sink {
    /// Writes what passes the filter; false once the reader went away
    /// (`| head`), which ends the stream quietly.
    fn write<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) -> Result<bool> {
        let passed: Vec<&Record> = records
            .into_iter()
            .filter(|r| self.filter.record(r))
            .collect();
        // One write for all of them: an interval's records, a batch of a
        // replay.
        match self.out.write_all(&passed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e).context("writing output"),
        }
        let oom = passed.iter().any(|r| matches!(r, Record::OomKill(_)));
        if oom {
            // A kill is what an operator keeps a stream for: make it durable.
            self.out.sync()?;
        }
        Ok(true)
    }
}

fn records(outputs: &[Output]) -> impl Iterator<Item = &Record> {
    outputs.iter().map(|o| &o.record)
}

pub async fn run(args: StreamArgs) -> Result<()> {
    // First, so a SIGTERM (or SIGHUP) during start-up still ends in a
    // clean exit.
    let mut stop = Stop::new()?;
    let filter = args.filter.filter()?;
    // Open the output first: a bad path should fail before any probing.
    let out = match &args.output {
        Some(p) => NdjsonWriter::create(p)?,
        None => NdjsonWriter::stdout(),
    };
    let mut sink = Sink { out, filter };

    if let Some(path) = &args.replay {
        let mut replay = tokio::select! {
            r = Replay::open(path) => r?,
            _ = stop.recv() => return Ok(()),
        };
        let header = replay.header().clone();
        if !sink.write([&header])? {
            return Ok(());
        }
        // A batch of records at a time (those already read, at most a few
        // hundred): memory stays flat whatever the file's size, and a
        // signal ends the replay between any two batches.
        loop {
            let recs = tokio::select! {
                r = replay.next_records() => r?,
                _ = stop.recv() => break,
            };
            let Some(recs) = recs else { break };
            if !sink.write(&recs)? {
                break;
            }
        }
        let _ = sink.out.sync();
        return Ok(());
    }

    let opts = args.probe.load_options()?;
    let popts = PipelineOptions {
        interval: args.interval,
        oom_snapshots: false,
        roots: args.names.roots(),
        state_max_age: args.state_max_age,
    };
    let mut pipe = LivePipeline::start(&opts, popts)?;
    let header = Record::Header(pipe.header().clone());
    if !sink.write([&header])? || !sink.write(records(&pipe.backlog()))? {
        return Ok(());
    }
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // Without --interval, records may be hours apart: a stdout reader that
    // went away (`| head`) is noticed without waiting for the next write.
    let to_stdout = args.output.is_none();
    let mut check = tokio::time::interval(crate::signals::STDOUT_CHECK);
    loop {
        tokio::select! {
            outputs = pipe.next() => {
                if !sink.write(records(&outputs?))? {
                    return Ok(());
                }
            }
            _ = check.tick(), if to_stdout => {
                if crate::signals::stdout_reader_gone() {
                    return Ok(());
                }
            }
            _ = stop.recv() => break,
            _ = &mut deadline => break,
        }
    }
    sink.write(records(&pipe.finish()))?;
    let _ = sink.out.sync();
    Ok(())
}
