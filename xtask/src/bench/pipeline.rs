//! memtrace's userspace pipeline without a kernel: a real stream recorded
//! at `--interval 100ms` during the storm and the churn, enlarged by
//! repeating its records (timestamps shifted), then replayed through
//! `stream --replay` and `top --replay --batch` on one core.

use std::{
    fs,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{sys, tracer::Env, workload::Kind, workload::Workloads};

/// Starts `cmd` with no stdin and its output thrown away: what is measured
/// is its resource use, and its files.
fn spawn_quiet(cmd: &mut Command, what: &str) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))
}

/// Records a stream while the storm and the churn run. The caller holds
/// the kernel lock.
pub fn generate(env: &Env, w: &mut Workloads) -> Result<PathBuf> {
    let out = env.scratch.join("generated.ndjson");
    let _ = fs::remove_file(&out);
    let child = spawn_quiet(
        Command::new(&env.memtrace)
            .args(["stream", "--interval", "100ms", "--output"])
            .arg(&out),
        "memtrace stream --interval 100ms",
    )?;
    let pid = child.id();
    let started = Instant::now();
    while !fs::read_to_string(&out).is_ok_and(|s| s.contains('\n')) {
        if started.elapsed() > Duration::from_secs(60) {
            sys::signal(pid, sys::SIGKILL);
            let _ = sys::wait_usage(child, Duration::from_secs(10));
            bail!("memtrace stream --interval 100ms wrote no header in 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let result = w.run(Kind::Storm).and_then(|_| w.run(Kind::Churn));
    std::thread::sleep(Duration::from_millis(300));
    sys::signal(pid, sys::SIGINT);
    sys::wait_usage(child, Duration::from_secs(30))?;
    result?;
    Ok(out)
}

/// Replays an enlarged copy of `generated`; with `ceiling` (the
/// `serde_ceiling` example's binary), also measures serde_json's own
/// parse+serialize rate for the same records on the same core.
pub fn replay(env: &Env, generated: &Path, quick: bool, ceiling: Option<&Path>) -> Result<Value> {
    let target_records: usize = if quick { 200_000 } else { 1_000_000 };
    let big = env.scratch.join("replay.ndjson");
    let (source_records, records, bytes) = enlarge(generated, &big, target_records)?;
    let runs = if quick { 2 } else { 3 };
    let mut out = Vec::new();
    for run in 0..runs {
        for (name, argv) in [
            ("stream --replay", vec!["stream", "--replay"]),
            ("top --replay --batch", vec!["top", "--batch", "--replay"]),
        ] {
            let t = Instant::now();
            let child = spawn_quiet(
                Command::new("taskset")
                    .args(["-c", "1"])
                    .arg(&env.memtrace)
                    .args(&argv)
                    .arg(&big),
                "a replay",
            )?;
            let u = sys::wait_usage(child, Duration::from_secs(600))?;
            let wall = t.elapsed().as_secs_f64();
            if u.exit_code() != Some(0) {
                bail!("memtrace {name} exited with wait status {}", u.status);
            }
            eprintln!(
                "bench: replay {name}: {records} records in {wall:.2}s ({:.0}/s)",
                records as f64 / wall
            );
            out.push(json!({
                "command": format!("memtrace {} FILE", argv.join(" ")),
                "run": run,
                "wall_s": wall,
                "cpu_s": (u.user_ns + u.sys_ns) as f64 / 1e9,
                "maxrss_kib": u.maxrss_kib,
                "records_per_s": records as f64 / wall,
            }));
        }
    }
    let mut ceiling_runs = Vec::new();
    for _ in 0..runs {
        let Some(bin) = ceiling else { break };
        let o = Command::new("taskset")
            .args(["-c", "1"])
            .arg(bin)
            .arg(&big)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running serde_ceiling")?;
        if !o.status.success() {
            bail!("serde_ceiling failed ({})", o.status);
        }
        let v: Value = serde_json::from_slice(&o.stdout).context("serde_ceiling's output")?;
        eprintln!(
            "bench: serde_json parse+serialize ceiling: {:.0} records/s straight into the \
             structs, {:.0} through the Record enum",
            v["direct"]["records_per_s"].as_f64().unwrap_or(f64::NAN),
            v["enum"]["records_per_s"].as_f64().unwrap_or(f64::NAN)
        );
        ceiling_runs.push(v);
    }
    let _ = fs::remove_file(&big);
    Ok(json!({
        "source_records": source_records,
        "records": records,
        "bytes": bytes,
        "runs": out,
        "serde_ceiling": ceiling_runs,
    }))
}

/// Writes the header of `src` then its other records repeated (each copy's
/// `ts`/`ts_ns` shifted past the previous copy) until `target` records.
/// Returns (records in src, records written, bytes written).
fn enlarge(src: &Path, dst: &Path, target: usize) -> Result<(usize, usize, u64)> {
    let f = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut lines = BufReader::new(f).lines();
    let header = lines.next().context("the generated stream is empty")??;
    let body: Vec<Value> = lines
        .map_while(|l| l.ok())
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    if body.is_empty() {
        bail!("the generated stream has no records after its header");
    }
    let ts: Vec<u64> = body.iter().filter_map(|v| v["ts_ns"].as_u64()).collect();
    let span = ts.iter().max().unwrap_or(&0) - ts.iter().min().unwrap_or(&0) + 100_000_000;
    let mut w = BufWriter::new(fs::File::create(dst)?);
    writeln!(w, "{header}")?;
    let mut written = 1;
    let mut copy = 0u64;
    while written < target {
        let shift = copy * span;
        for v in &body {
            let mut v = v.clone();
            if copy > 0 {
                if let Some(n) = v["ts_ns"].as_u64() {
                    v["ts_ns"] = json!(n + shift);
                }
                if let Some(t) = v["ts"].as_str().and_then(parse_rfc3339_us) {
                    v["ts"] = json!(format_rfc3339_us(t + (shift / 1000) as i64));
                }
            }
            serde_json::to_writer(&mut w, &v)?;
            w.write_all(b"\n")?;
            written += 1;
        }
        copy += 1;
    }
    w.flush()?;
    drop(w);
    Ok((body.len() + 1, written, fs::metadata(dst)?.len()))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-22T03:06:23.528332Z` -> microseconds since the epoch.
fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let frac: String = frac.chars().chain("000000".chars()).take(6).collect();
    let us: i64 = frac.parse().ok()?;
    Some(((days_from_civil(y, mo, da) * 86400 + h * 3600 + mi * 60 + se) * 1_000_000) + us)
}

fn format_rfc3339_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let sod = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let s = "2026-11-22T03:06:23.528332Z";
        let us = parse_rfc3339_us(s).unwrap();
        assert_eq!(format_rfc3339_us(us), s);
        assert_eq!(
            format_rfc3339_us(us + 86_400_000_000 * 10),
            "2026-12-02T03:06:23.528332Z"
        );
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
    }
}
