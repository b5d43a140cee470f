//! `memtrace stream`: records as NDJSON, from the kernel or a replay file.
use std::io;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::StreamArgs,
    filter::Filter,
    output::{records::Record, writer::NdjsonWriter},
    pipeline::LivePipeline,
    source::replay::Replay,
};

struct Sink {
    out: NdjsonWriter,
    filter: Filter,
}

impl Sink {
    /// Writes what passes the filter; false once the reader went away
    /// (`| head`), which ends the stream quietly.
    fn write(&mut self, records: &[Record]) -> Result<bool> {
        let mut oom = false;
        for r in records.iter().filter(|r| self.filter.record(r)) {
            match self.out.write(r) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
                Err(e) => return Err(e).context("writing output"),
            }
            oom |= matches!(r, Record::OomKill(_));
        }
        if oom {
            // A kill is what an operator keeps a stream for: make it durable.
            self.out.sync()?;
        }
        Ok(true)
    }
}

pub async fn run(args: StreamArgs) -> Result<()> {
    // First, so a SIGTERM during start-up still ends in a clean exit.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let filter = args.filter.filter()?;
    // Open the output first: a bad path should fail before any probing.
    let out = match &args.output {
        Some(p) => NdjsonWriter::create(p)?,
        None => NdjsonWriter::stdout(),
    };
    let mut sink = Sink { out, filter };

    if let Some(path) = &args.replay {
        let mut replay = Replay::open(path)?;
        let header = replay.header().clone();
        if !sink.write(&[header])? {
            return Ok(());
        }
        // One record at a time: memory stays flat whatever the file's size.
        while let Some(rec) = replay.next_record()? {
            if !sink.write(std::slice::from_ref(&rec))? {
                break;
            }
        }
        let _ = sink.out.sync();
        return Ok(());
    }

    let opts = args.probe.load_options()?;
    let mut pipe = LivePipeline::start(&opts, args.interval)?;
    if !sink.write(&[pipe.header()])? || !sink.write(&pipe.backlog())? {
        return Ok(());
    }
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            records = pipe.next() => {
                if !sink.write(&records?)? {
                    return Ok(());
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
        }
    }
    sink.write(&pipe.finish())?;
    let _ = sink.out.sync();
    Ok(())
}
