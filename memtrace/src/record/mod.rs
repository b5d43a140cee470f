//! `memtrace record`: the agent for incidents. It keeps the last minutes of
//! records in memory, writes a capture when system sys time stays high,
//! and an OOM post-mortem for every kill.
mod files;
mod held;
mod history;
pub(crate) mod postmortem;
mod spike;

use crate::output::fields::Unseen;
use anyhow::Result;
use futures_util::FutureExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::RecordArgs,
    output::{
        escape,
        records::{Capture, FORMAT_VERSION, Header, OomKill, Record, Trigger},
    },
    pipeline::{LivePipeline, OomSnapshot, Output, PipelineOptions},
    signals::Stop,
    source::ndjson::{Item, Lines},
};
use files::{OutDir, stamp};
use held::{Held, Hold, Holding, MAX_HELD, MAX_HELD_BYTES};
use history::History;
use spike::SpikeDetector;

/// Post-mortems already in the OOM log (victim pid, time), so a restart
/// does not write the kernel log's old kills again.
fn already_logged(path: &std::path::Path) -> Vec<(u32, u64)> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // Damaged lines name no kill; they are report's to point out.
    let mut lines = Lines::new(std::io::BufReader::new(file));
    let mut out = Vec::new();
    while let Ok(Some(item)) = lines.next_item() {
        if let Item::Record(r) = item
            && let Record::OomPostmortem(p) = *r
        {
            out.push((p.kill.victim.pid, p.kill.ts_ns));
        }
    }
    out
}

struct Recorder {
    args: RecordArgs,
    out: OutDir,
    history: History,
    spike: SpikeDetector,
    header: Header,
    unavailable: Unseen,
    /// A capture decided but waiting for its `--post` window.
    pending: Option<(Trigger, u64)>,
    logged: Vec<(u32, u64)>,
    captures: u64,
    postmortems: u64,
    /// Post-mortems the disk refused, until space returns.
    held: Hold,
    /// When the held ones were last tried (at most once a second).
    held_tried: Option<std::time::Instant>,
    /// `--listen`: the metrics sink, fed the same records.
    metrics: Option<crate::metrics::Sink>,
}

fn say(msg: &str) {
    eprintln!("memtrace record: {}", escape::text(msg));
}

impl Recorder {
    fn handle(&mut self, outputs: &[Output]) {
        if !self.held.is_empty()
            && self
                .held_tried
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.write_held();
        }
        for o in outputs {
            let r = &o.record;
            if let Record::System(s) = r {
                // The loss counters reach the records `record` keeps (and
                // so its captures).
                let mut s = s.clone();
                s.postmortems_pending = Some(self.held.len() as u64);
                s.postmortems_lost = Some(self.held.lost);
                self.history.push(&Record::System(s));
            } else {
                self.history.push(r);
            }
            match r {
                Record::OomKill(k) => self.postmortem(k, o.oom.as_deref()),
                Record::System(s) => {
                    if let Some(t) = self.spike.on_system(s) {
                        say(&format!(
                            "sys time {:.1}% (threshold {:.0}%) for {:.1} s since {}: capturing {} s before to {} s after",
                            t.peak_sys_pct,
                            t.threshold_pct,
                            t.sustained_ns as f64 / 1e9,
                            self.header_time(t.ts_ns),
                            self.args.pre.as_secs(),
                            self.args.post.as_secs()
                        ));
                        self.pending = Some((t, s.ts_ns));
                    }
                    if let Some((_, decided)) = &self.pending {
                        if s.ts_ns >= decided + self.args.post.as_nanos() as u64 {
                            self.write_capture();
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(m) = &self.metrics {
            let records: Vec<&Record> = outputs.iter().map(|o| &o.record).collect();
            m.observe(
                &records,
                crate::metrics::RecorderCounts {
                    postmortems: self.postmortems,
                    postmortems_pending: self.held.len() as u64,
                    postmortems_lost: self.held.lost,
                    captures: self.captures,
                },
            );
        }
    }

    fn header_time(&self, ts_ns: u64) -> String {
        // Records carry both clocks; map through the header's pair.
        let offset = ts_ns as i128 - self.header.ts_ns as i128;
        humantime::parse_rfc3339(&self.header.ts)
            .ok()
            .and_then(|t| {
                if offset >= 0 {
                    t.checked_add(std::time::Duration::from_nanos(offset as u64))
                } else {
                    t.checked_sub(std::time::Duration::from_nanos((-offset) as u64))
                }
            })
            .map(|t| humantime::format_rfc3339_micros(t).to_string())
            .unwrap_or_default()
    }

    fn write_capture(&mut self) {
        let Some((trigger, decided)) = self.pending.take() else {
            return;
        };
        let from_ns = trigger
            .ts_ns
            .saturating_sub(self.args.pre.as_nanos() as u64)
            .max(self.history.oldest_ns().unwrap_or(0));
        let to_ns = decided + self.args.post.as_nanos() as u64;
        let max_bytes = (self.args.max_capture_mib << 20) as usize;
        let mut body = Vec::new();
        let mut size = 0usize;
        let mut truncated = 0u64;
        // Through `to_ns`, then on to the `system` record that closes the
        // last interval included, so no interval loses its host figures.
        let mut closed = true;
        for r in self.history.window(from_ns, u64::MAX) {
            if history::ts_ns(r) > to_ns && closed {
                break;
            }
            closed = matches!(r, Record::System(_));
            let len = crate::output::json::line(r).len();
            if size + len > max_bytes {
                truncated += 1;
                continue;
            }
            size += len;
            body.push(r.clone());
        }
        let mut trigger = trigger;
        trigger.ts = self.header_time(trigger.ts_ns);
        let cap = Capture {
            ts: self.header_time(decided),
            ts_ns: decided,
            format_version: FORMAT_VERSION,
            trigger,
            from_ns,
            to_ns,
            header: self.header.clone(),
            truncated_records: truncated,
        };
        let st = stamp(&cap.ts);
        let mut lines = vec![Record::Capture(Box::new(cap))];
        lines.extend(body);
        match self.out.write_capture(&st, &lines) {
            Ok(path) => {
                self.captures += 1;
                say(&format!(
                    "capture written: {} ({} records{})",
                    path.display(),
                    lines.len() - 1,
                    if truncated > 0 {
                        format!(", {truncated} left out by --max-capture-mib")
                    } else {
                        String::new()
                    }
                ));
            }
            Err(e) => say(&format!("capture NOT written: {e:#} (still watching)")),
        }
    }

    fn postmortem(&mut self, k: &OomKill, snapshot: Option<&OomSnapshot>) {
        let pid = k.victim.pid;
        if self
            .logged
            .iter()
            .any(|(p, t)| *p == pid && t.abs_diff(k.ts_ns) < 2_000_000_000)
        {
            return;
        }
        self.logged.push((pid, k.ts_ns));
        if self.logged.len() > 10_000 {
            self.logged.drain(..5_000);
        }
        let pm = postmortem::build(k, snapshot, &self.history, &self.unavailable);
        if self.args.oom_text_stderr {
            eprint!("{}", postmortem::text(&pm));
        }
        let mut h = Held {
            pm: Box::new(pm),
            line: true,
            text: !self.args.oom_text_stderr,
        };
        // Those held first, so each file keeps the order of the kills: a
        // file still refusing them is not tried for this one either.
        let mut refused = self.write_held();
        // Kills from before start are history: one sync after them all
        // instead of two per kill (there can be hundreds in the log).
        self.write_postmortem(&mut h, !k.before_start, &mut refused);
        if h.line || h.text {
            self.hold(h, refused);
        }
    }

    /// Writes what of `h` is not written yet (its OOM log line, its text),
    /// each unless its file already refused a write in this round; a
    /// refusal is kept in `refused`, and `h` says what is left.
    fn write_postmortem(&mut self, h: &mut Held, durable: bool, refused: &mut Refused) {
        let pid = h.pm.kill.victim.pid;
        if h.line && refused.line.is_none() {
            let lost = self.held.unnoted_losses();
            if lost > 0 {
                h.pm.notes.push(format!(
                    "{lost} OOM post-mortem(s) before this one were lost: the disk refused them while {MAX_HELD} (or {} MiB) were already held in memory, or the agent stopped first",
                    MAX_HELD_BYTES >> 20
                ));
            }
            let res = self
                .out
                .append_oom_line(&crate::output::json::line(&h.record()), durable);
            match res {
                Ok(()) => {
                    self.held.noted();
                    h.line = false;
                }
                Err(e) => {
                    if lost > 0 {
                        h.pm.notes.pop();
                    }
                    refused.line = Some((pid, format!("{e:#}")));
                }
            }
        }
        if h.text && refused.text.is_none() {
            let st = stamp(&h.pm.ts);
            let text = postmortem::text(&h.pm);
            match self.out.write_postmortem_text(&st, pid, &text, durable) {
                Ok(path) => {
                    h.text = false;
                    say(&format!(
                        "OOM kill of pid {pid} ({}): post-mortem in {}",
                        h.pm.kill.victim.comm,
                        path.display()
                    ));
                }
                Err(e) => refused.text = Some((pid, format!("{e:#}"))),
            }
        }
        if !h.line && !h.text {
            self.postmortems += 1;
        }
    }

    /// Keeps what of a post-mortem could not be written (`refused` says
    /// why), or counts it lost when the hold is full. Its text goes to
    /// stderr meanwhile, so the operator has it at once.
    fn hold(&mut self, mut h: Held, refused: Refused) {
        let pid = h.pm.kill.victim.pid;
        let because = |r: Option<(u32, String)>| match r {
            Some((p, e)) if p == pid => e,
            Some((p, e)) => format!("waits behind held post-mortems (pid {p}'s: {e})"),
            None => "waits behind held post-mortems".to_string(),
        };
        let mut why = Vec::new();
        if h.line {
            why.push(format!("OOM log NOT written: {}", because(refused.line)));
        }
        if h.text {
            why.push(format!(
                "OOM text post-mortem NOT written: {}",
                because(refused.text)
            ));
        }
        let why = why.join("; ");
        h.pm.notes.push(
            "written late: the disk refused it at the kill; held in memory until it could be written"
                .into(),
        );
        let text = h.text.then(|| postmortem::text(&h.pm));
        match self.held.hold(h) {
            Holding::Held => say(&format!(
                "pid {pid}: {why}; held in memory ({} held, at most {MAX_HELD} or {} MiB) and retried until written (postmortems_pending)",
                self.held.len(),
                MAX_HELD_BYTES >> 20
            )),
            Holding::Lost => say(&format!(
                "pid {pid}: {why}; post-mortem LOST: {} already held in memory (at most {MAX_HELD} or {} MiB); {} lost since start (postmortems_lost)",
                self.held.len(),
                MAX_HELD_BYTES >> 20,
                self.held.lost
            )),
        }
        if let Some(text) = text {
            say("here is its text meanwhile:");
            eprint!("{text}");
        }
    }

    /// Writes the held post-mortems, oldest first; a file that refuses
    /// one is not tried again in this round, so order is kept.
    fn write_held(&mut self) -> Refused {
        let mut refused = Refused::default();
        if self.held.is_empty() {
            return refused;
        }
        self.held_tried = Some(std::time::Instant::now());
        let before = self.postmortems;
        for mut h in self.held.take() {
            self.write_postmortem(&mut h, true, &mut refused);
            if h.line || h.text {
                self.held.put_back(h);
            }
        }
        let written = self.postmortems - before;
        if written > 0 {
            say(&format!(
                "wrote {written} held OOM post-mortem(s) now that the disk takes them; {} still held",
                self.held.len()
            ));
        }
        refused
    }
}

/// Why a file refused a write in this round, per file, and whose.
#[derive(Default)]
struct Refused {
    line: Option<(u32, String)>,
    text: Option<(u32, String)>,
}

impl Recorder {
    /// SIGHUP: the output directory is opened again by path, as at start
    /// (created 0750 if it was removed, checked writable). Every file is
    /// opened by path when written, never through a symlink: after
    /// logrotate renamed the OOM log, the next post-mortem goes to a new
    /// `oom.ndjson` (0600) and the rotated file is left alone.
    fn reopen(&mut self) {
        match OutDir::open(
            &self.args.dir,
            self.args.oom_log.as_deref(),
            self.args.oom_log_max_mib << 20,
            self.args.max_captures as usize,
        ) {
            Ok(out) => {
                self.out = out;
                say(&format!(
                    "SIGHUP: reopened {}; the OOM log {} is opened by path at its next write",
                    self.args.dir.display(),
                    self.out.oom_log().display()
                ));
            }
            Err(e) => say(&format!(
                "SIGHUP: could not reopen the output directory: {e:#} (still watching, writing by path)"
            )),
        }
    }
}

pub async fn run(args: RecordArgs) -> Result<()> {
    let mut stop = Stop::without_hangup()?;
    // SIGHUP reopens the files (logrotate's convention) instead of killing
    // the agent with exit 129.
    let mut sighup = signal(SignalKind::hangup())?;
    let out = OutDir::open(
        &args.dir,
        args.oom_log.as_deref(),
        args.oom_log_max_mib << 20,
        args.max_captures as usize,
    )?;
    // Bound before the programs load: a port in use fails at once.
    let listener = match args.listen {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let opts = args.probe.load_options()?;
    let popts = PipelineOptions {
        interval: Some(args.interval),
        oom_snapshots: true,
        roots: args.names.roots(),
        state_max_age: args.state_max_age,
    };
    let mut pipe = LivePipeline::start(&opts, popts)?;
    let header = pipe.header().clone();
    let logged = already_logged(out.oom_log());
    let metrics = listener.map(|l| {
        if let Some(a) = l.local_addr() {
            say(&format!("serving Prometheus metrics on http://{a}/metrics"));
        }
        l.serve(
            header.clone(),
            usize::try_from(args.metrics_max_series).unwrap_or(usize::MAX),
            (args.probe.memcg_entries, args.probe.shrinker_entries),
            args.interval,
        )
    });
    let mut rec = Recorder {
        history: History::new(
            args.history.as_nanos() as u64,
            (args.history_max_mib << 20) as usize,
        ),
        spike: SpikeDetector::new(
            args.sys_threshold,
            args.sustain.as_nanos() as u64,
            args.cooldown.as_nanos() as u64,
        ),
        unavailable: header.unavailable.clone(),
        header,
        out,
        pending: None,
        logged,
        captures: 0,
        postmortems: 0,
        held: Hold::default(),
        held_tried: None,
        metrics,
        args,
    };
    say(&format!(
        "watching: captures when sys > {:.0}% for {} s, OOM post-mortems to {} and {}",
        rec.args.sys_threshold,
        rec.args.sustain.as_secs_f64(),
        rec.out.oom_log().display(),
        if rec.args.oom_text_stderr {
            "stderr".to_string()
        } else {
            rec.args.dir.display().to_string()
        }
    ));
    // Kills still in the kernel log, one at a time so a signal is not kept
    // waiting behind hundreds of them.
    let backlog = pipe.backlog();
    let mut stopped = false;
    for r in &backlog {
        if stop.recv().now_or_never().is_some() {
            stopped = true;
            break;
        }
        rec.handle(std::slice::from_ref(r));
    }
    rec.out.sync();
    while !stopped {
        tokio::select! {
            outputs = pipe.next() => rec.handle(&outputs?),
            _ = stop.recv() => stopped = true,
            _ = sighup.recv() => rec.reopen(),
        }
    }
    // Pending kills and a capture still in its --post window are written
    // with what there is.
    let rest = pipe.finish();
    rec.handle(&rest);
    rec.write_capture();
    rec.write_held();
    let given_up = rec.held.give_up();
    if given_up > 0 {
        say(&format!(
            "{given_up} OOM post-mortem(s) held for space LOST at exit: the disk still refused them"
        ));
    }
    say(&format!(
        "stopped: {} captures and {} OOM post-mortems written, {} lost",
        rec.captures, rec.postmortems, rec.held.lost
    ));
    Ok(())
}
