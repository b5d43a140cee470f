//! The replay source: records from a file written by `stream --output` (or
//! `top --save`, or a capture), read back one interval at a time. No
//! kernel, no root.
//!
//! The file is read on a thread of its own through the one NDJSON reader,
//! and records come over a bounded channel: the async side stays free to
//! answer signals however slow the file (a FIFO, a network mount), and
//! memory stays bounded however large it is.
use std::{io::BufReader, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::mpsc;

use super::ndjson::{self, Item, Lines};
use crate::output::records::Record;

/// Records read ahead of the consumer.
const READ_AHEAD: usize = 1024;

pub struct Replay {
    rx: mpsc::Receiver<Result<Record>>,
    header: Record,
}

impl Replay {
    /// Opens `path` and reads its header line.
    pub async fn open(path: &Path) -> Result<Self> {
        let (tx, mut rx) = mpsc::channel(READ_AHEAD);
        let owned = path.to_path_buf();
        std::thread::Builder::new()
            .name("replay".into())
            .spawn(move || read(&owned, &tx))
            .context("starting the replay reader")?;
        let header = match rx.recv().await.transpose()? {
            Some(h @ (Record::Header(_) | Record::Capture(_))) => h,
            Some(_) => bail!(
                "{}:1: not a memtrace stream or capture: the first line must be a header \
                 (record one with `memtrace stream --output FILE` or `memtrace record`)",
                path.display()
            ),
            None => bail!("{}: empty file, nothing to replay", path.display()),
        };
        Ok(Self { rx, header })
    }

    pub fn header(&self) -> &Record {
        &self.header
    }

    /// The next record; a line that is not a record is an error naming the
    /// file and line (a replay shows a file as it was recorded, or nothing).
    pub async fn next_record(&mut self) -> Result<Option<Record>> {
        self.rx.recv().await.transpose()
    }

    /// Records up to and including the next `system` record (which closes
    /// an interval), or to the end of the file. None at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        let mut out = Vec::new();
        while let Some(rec) = self.next_record().await? {
            let closes = matches!(rec, Record::System(_));
            out.push(rec);
            if closes {
                return Ok(Some(out));
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// The reader thread: every record of `path` into `tx`, then the end (the
/// channel closes). Stops at the first error, or when the consumer is gone.
fn read(path: &Path, tx: &mpsc::Sender<Result<Record>>) {
    let file = match ndjson::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let name = path.display();
    let mut lines = Lines::new(BufReader::new(file));
    loop {
        let item = match lines.next_item() {
            Ok(Some(Item::Record(r))) => Ok(*r),
            Ok(Some(Item::Bad(b))) => Err(anyhow!(
                "{name}:{}: not a memtrace record: {}",
                b.line,
                b.error
            )),
            Ok(None) => return,
            Err(e) => Err(anyhow!("{name}: {e}")),
        };
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}
