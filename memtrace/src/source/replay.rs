//! The replay source: records from a file written by `stream --output` (or
//! `top --save`), read back one interval at a time. No kernel, no root.
use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::output::records::Record;

pub struct Replay {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line_no: usize,
    header: Option<Record>,
}

impl Replay {
    /// Opens `path` and reads its header line.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).with_context(|| format!("opening {} for replay", path.display()))?;
        let mut r = Self {
            path: path.to_path_buf(),
            lines: BufReader::new(file).lines(),
            line_no: 0,
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
    /// file and line.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            self.line_no += 1;
            let line =
                line.with_context(|| format!("{}:{}: reading", self.path.display(), self.line_no))?;
            if line.trim().is_empty() {
                continue;
            }
            let rec = serde_json::from_str(&line).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: not a memtrace record: {e}",
                    self.path.display(),
                    self.line_no
                )
            })?;
            return Ok(Some(rec));
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
