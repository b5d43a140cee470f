//! The replay source: records from a file written by `stream --output` (or
//! `top --save`), read back one interval at a time. No kernel, no root.
use std::{
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::ndjson::{Item, Lines};
use crate::output::records::Record;

pub struct Replay {
    path: PathBuf,
    lines: Lines<BufReader<File>>,
    header: Option<Record>,
}

impl Replay {
    /// Opens `path` and reads its header line.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).with_context(|| format!("opening {} for replay", path.display()))?;
        let mut r = Self {
            path: path.to_path_buf(),
            lines: Lines::new(BufReader::new(file)),
            header: None,
        };
        match r.next_record()? {
            Some(h @ (Record::Header(_) | Record::Capture(_))) => r.header = Some(h),
            Some(_) => bail!(
                "{}:1: not a memtrace stream or capture: the first line must be a header \
                 (record one with `memtrace stream --output FILE` or `memtrace record`)",
                path.display()
            ),
            None => bail!("{}: empty file, nothing to replay", path.display()),
        }
        Ok(r)
    }

    pub fn header(&self) -> &Record {
        self.header.as_ref().expect("checked in open")
    }

    /// The next record; a line that is not a record is an error naming the
    /// file and line (a replay shows a file as it was recorded, or nothing).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let path = self.path.display();
        let item = self
            .lines
            .next_item()
            .with_context(|| format!("{path}:{}: reading", self.lines.line_no() + 1))?;
        match item {
            None => Ok(None),
            Some(Item::Record(r)) => Ok(Some(*r)),
            Some(Item::Bad(b)) => bail!("{path}:{}: not a memtrace record: {}", b.line, b.error),
        }
    }

    /// Records up to and including the next `system` record (which closes
    /// an interval), or to the end of the file. None at the end.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        let mut out = Vec::new();
        while let Some(rec) = self.next_record()? {
            let closes = matches!(rec, Record::System(_));
            out.push(rec);
            if closes {
                return Ok(Some(out));
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}
