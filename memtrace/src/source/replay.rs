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

/// Records per message from the reader thread: one channel hand-over
/// (and thread wake-up) per record cost more than parsing one.
const BATCH: usize = 256;
/// Messages read ahead of the consumer (at most BATCH * READ_AHEAD
/// records).
const READ_AHEAD: usize = 4;

pub struct Replay {
    rx: mpsc::Receiver<Vec<Result<Record>>>,
    /// The rest of the last message received.
    pending: std::vec::IntoIter<Result<Record>>,
    header: Record,
}

impl Replay {
    /// Opens `path` and reads its header line.
    pub async fn open(path: &Path) -> Result<Self> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let owned = path.to_path_buf();
        std::thread::Builder::new()
            .name("replay".into())
            .spawn(move || read(&owned, &tx))
            .context("starting the replay reader")?;
        let (mut rx, mut pending) = (rx, Vec::new().into_iter());
        let header = match recv(&mut rx, &mut pending).await? {
            Some(h @ (Record::Header(_) | Record::Capture(_))) => h,
            Some(_) => bail!(
                "{}:1: not a memtrace stream or capture: the first line must be a header \
                 (record one with `memtrace stream --output FILE` or `memtrace record`)",
                path.display()
            ),
            None => bail!("{}: empty file, nothing to replay", path.display()),
        };
        Ok(Self {
            rx,
            pending,
            header,
        })
    }

    pub fn header(&self) -> &Record {
        &self.header
    }

    /// The next record; a line that is not a record is an error naming the
    /// file and line (a replay shows a file as it was recorded, or nothing).
    pub async fn next_record(&mut self) -> Result<Option<Record>> {
        recv(&mut self.rx, &mut self.pending).await
    }

    /// The records already read (at least one; None at the end): what a
    /// sink can write at once. A line that is not a record ends them, as
    /// an error from the next call.
    pub async fn next_records(&mut self) -> Result<Option<Vec<Record>>> {
        let Some(first) = self.next_record().await? else {
            return Ok(None);
        };
        let mut out = vec![first];
        while self.pending.as_slice().first().is_some_and(Result::is_ok) {
            if let Some(Ok(r)) = self.pending.next() {
                out.push(r);
            }
        }
        Ok(Some(out))
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

/// The next record: from what the last message left, else the next one.
async fn recv(
    rx: &mut mpsc::Receiver<Vec<Result<Record>>>,
    pending: &mut std::vec::IntoIter<Result<Record>>,
) -> Result<Option<Record>> {
    loop {
        if let Some(item) = pending.next() {
            return item.map(Some);
        }
        match rx.recv().await {
            Some(batch) => *pending = batch.into_iter(),
            None => return Ok(None),
        }
    }
}

/// The reader thread: every record of `path` into `tx`, in batches, then
/// the end (the channel closes). A batch goes as soon as it is full or
/// reading on would wait for the file (a FIFO's writer), so a slow source
/// is not held back. Stops at the first error, or when the consumer is gone.
fn read(path: &Path, tx: &mpsc::Sender<Vec<Result<Record>>>) {
    let file = match ndjson::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(vec![Err(e)]);
            return;
        }
    };
    let name = path.display();
    let mut lines = Lines::new(BufReader::new(file));
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if !batch.is_empty() && (batch.len() >= BATCH || lines.get_ref().buffer().is_empty()) {
            if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return;
            }
            batch.reserve(BATCH);
        }
        let item = match lines.next_item() {
            Ok(Some(Item::Record(r))) => Ok(*r),
            Ok(Some(Item::Bad(b))) => Err(anyhow!(
                "{name}:{}: not a memtrace record: {}",
                b.line,
                b.error
            )),
            Ok(None) => break,
            Err(e) => Err(anyhow!("{name}: {e}")),
        };
        let stop = item.is_err();
        batch.push(item);
        if stop {
            break;
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
}
