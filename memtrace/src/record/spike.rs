//! The sys-time spike detector: system-wide sys% above a threshold for long
//! enough triggers one capture; the next needs sys% to fall back below the
//! threshold and a cool-down to pass, so one incident gives one capture.
use crate::output::records::{System, Trigger};

pub struct SpikeDetector {
    threshold_pct: f64,
    sustain_ns: u64,
    cooldown_ns: u64,
    /// Start of the current run above the threshold, with its peaks.
    above: Option<Trigger>,
    armed: bool,
    /// When the last capture fired; the cool-down counts from there.
    last_fire_ns: Option<u64>,
}

impl SpikeDetector {
    pub fn new(threshold_pct: f64, sustain_ns: u64, cooldown_ns: u64) -> Self {
        Self {
            threshold_pct,
            sustain_ns,
            cooldown_ns,
            above: None,
            armed: true,
            last_fire_ns: None,
        }
    }

    /// Feeds one interval's host figures; returns a trigger when a capture
    /// should be taken now.
    pub fn on_system(&mut self, s: &System) -> Option<Trigger> {
        if s.sys_pct < self.threshold_pct {
            self.above = None;
            let cooled = self
                .last_fire_ns
                .is_none_or(|t| s.ts_ns.saturating_sub(t) >= self.cooldown_ns);
            if !self.armed && cooled {
                self.armed = true;
            }
            return None;
        }
        let start_ns = s.ts_ns.saturating_sub(s.interval_ns);
        let t = self.above.get_or_insert_with(|| Trigger {
            kind: "sys_time".into(),
            ts_ns: start_ns,
            threshold_pct: self.threshold_pct,
            ..Trigger::default()
        });
        if s.sys_pct > t.peak_sys_pct {
            t.peak_sys_pct = s.sys_pct;
        }
        if s.max_cpu_sys_pct > t.peak_cpu_sys_pct {
            t.peak_cpu_sys_pct = s.max_cpu_sys_pct;
            t.peak_cpu = s.max_cpu;
        }
        t.sustained_ns = s.ts_ns.saturating_sub(t.ts_ns);
        if self.armed && t.sustained_ns >= self.sustain_ns {
            self.armed = false;
            self.last_fire_ns = Some(s.ts_ns);
            return Some(t.clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn sys(t: u64, pct: f64) -> System {
        System {
            ts_ns: t * S,
            interval_ns: S,
            sys_pct: pct,
            max_cpu_sys_pct: pct * 2.0,
            max_cpu: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn fires_once_after_the_sustain_time() {
        let mut d = SpikeDetector::new(50.0, 2 * S, 60 * S);
        assert!(d.on_system(&sys(1, 10.0)).is_none());
        assert!(d.on_system(&sys(2, 70.0)).is_none(), "1 s above");
        let t = d.on_system(&sys(3, 80.0)).expect("2 s above");
        assert_eq!(
            t.ts_ns, S,
            "the spike started at the beginning of the first interval above"
        );
        assert_eq!(t.sustained_ns, 2 * S);
        assert_eq!(
            (t.peak_sys_pct, t.peak_cpu_sys_pct, t.peak_cpu),
            (80.0, 160.0, Some(1))
        );
        for i in 4..20 {
            assert!(
                d.on_system(&sys(i, 90.0)).is_none(),
                "one incident, one capture"
            );
        }
    }

    #[test]
    fn brief_spikes_do_not_fire() {
        let mut d = SpikeDetector::new(50.0, 3 * S, 0);
        for i in 0..20 {
            let pct = if i % 3 == 0 { 10.0 } else { 90.0 };
            assert!(d.on_system(&sys(i, pct)).is_none());
        }
    }

    #[test]
    fn rearms_after_dropping_below_and_cooling_down() {
        let mut d = SpikeDetector::new(50.0, S, 10 * S);
        assert!(d.on_system(&sys(1, 90.0)).is_some());
        assert!(d.on_system(&sys(2, 10.0)).is_none());
        assert!(d.on_system(&sys(3, 90.0)).is_none(), "still cooling down");
        assert!(d.on_system(&sys(4, 10.0)).is_none());
        assert!(
            d.on_system(&sys(12, 10.0)).is_none(),
            "cooled down: armed again"
        );
        assert!(d.on_system(&sys(13, 90.0)).is_some(), "a new incident");
    }
}
