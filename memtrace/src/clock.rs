//! Timestamps: records carry both the kernel's monotonic ns (what
//! `bpf_ktime_get_ns` returns) and RFC 3339 wall-clock time.
use std::time::{Duration, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock ns at monotonic 0.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    // The callers pass only CLOCK_REALTIME and CLOCK_MONOTONIC, which every
    // Linux kernel has, so the call cannot fail and leave `ts` unset.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The clock as of now (same as [`Clock::new`]).
impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    pub fn now_ns(&self) -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn rfc3339(&self, mono_ns: u64) -> String {
        let wall = (i128::from(mono_ns) + self.offset_ns).max(0) as u128;
        let t = UNIX_EPOCH + Duration::from_nanos(wall as u64);
        humantime::format_rfc3339_micros(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn rfc3339_of_now_is_close_to_system_time() {
        let c = Clock::new();
        let s = c.rfc3339(c.now_ns());
        let parsed = humantime::parse_rfc3339(&s).unwrap();
        let diff = parsed
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(2), "{s}");
        assert!(s.ends_with('Z'));
    }
}
