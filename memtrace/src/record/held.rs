//! OOM post-mortems the disk refused (ENOSPC, EIO, a read-only remount),
//! held in memory and written, oldest first, when space returns.
//!
//! The hold is bounded, so a disk that stays full cannot grow the agent:
//! at most [`MAX_HELD`] post-mortems and [`MAX_HELD_BYTES`] of them (their
//! OOM log line plus their text). A post-mortem beyond either bound is
//! lost, and so are those still held when the agent stops; every loss is
//! said on stderr and counted (`postmortems_lost` in `system` records, and
//! a note in the next post-mortem written). The oldest are kept rather
//! than the newest: the first kills of a burst are the ones that explain
//! it, and writing strictly in order needs nothing to be reordered.
use std::collections::VecDeque;

use crate::output::records::{OomPostmortem, Record};

/// At most this many post-mortems held.
pub const MAX_HELD: usize = 64;
/// At most this many bytes of them held (OOM log lines plus texts).
pub const MAX_HELD_BYTES: usize = 8 << 20;

/// One post-mortem and the parts of it not written yet.
pub struct Held {
    pub pm: Box<OomPostmortem>,
    /// Its OOM log line is still to be written.
    pub line: bool,
    /// Its text post-mortem is still to be written (false once written,
    /// or when the texts go to stderr).
    pub text: bool,
}

impl Held {
    pub fn record(&self) -> Record {
        Record::OomPostmortem(self.pm.clone())
    }

    fn bytes(&self) -> usize {
        let line = if self.line {
            crate::output::json::line(&self.record()).len()
        } else {
            0
        };
        let text = if self.text {
            super::postmortem::text(&self.pm).len()
        } else {
            0
        };
        line + text
    }
}

/// What [`Hold::hold`] did with a post-mortem.
#[derive(Debug, PartialEq, Eq)]
pub enum Holding {
    Held,
    /// The bound was hit: it is lost (and counted).
    Lost,
}

#[derive(Default)]
pub struct Hold {
    held: VecDeque<(Held, usize)>,
    bytes: usize,
    /// Post-mortems lost since start.
    pub lost: u64,
    /// `lost` as the last post-mortem written said it.
    lost_noted: u64,
}

impl Hold {
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds `h` behind those already held, or counts it lost if the
    /// bound is hit.
    pub fn hold(&mut self, h: Held) -> Holding {
        let size = h.bytes();
        if self.held.len() >= MAX_HELD || self.bytes + size > MAX_HELD_BYTES {
            self.lost += 1;
            return Holding::Lost;
        }
        self.bytes += size;
        self.held.push_back((h, size));
        Holding::Held
    }

    /// Takes them all out, oldest first, to write them.
    pub fn take(&mut self) -> Vec<Held> {
        self.bytes = 0;
        self.held.drain(..).map(|(h, _)| h).collect()
    }

    /// Puts back, in the order taken, those the disk refused again (what
    /// of each is left to write is never more than it held before, so no
    /// bound is checked).
    pub fn put_back(&mut self, h: Held) {
        let size = h.bytes();
        self.bytes += size;
        self.held.push_back((h, size));
    }

    /// Losses no post-mortem written has told yet: the next OOM log line
    /// written gets a note, so the log itself says kills are missing.
    pub fn unnoted_losses(&self) -> u64 {
        self.lost - self.lost_noted
    }

    /// A post-mortem telling `unnoted_losses` was written.
    pub fn noted(&mut self) {
        self.lost_noted = self.lost;
    }

    /// At exit: whatever is still held is lost.
    pub fn give_up(&mut self) -> u64 {
        let n = self.held.len() as u64;
        self.held.clear();
        self.bytes = 0;
        self.lost += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::records::{OomKill, Victim};

    impl Held {
        /// Makes it weigh about `bytes` more.
        fn with_notes(mut self, bytes: usize) -> Self {
            self.pm.notes.push("x".repeat(bytes));
            self
        }
    }

    fn held(pid: u32, text: usize) -> Held {
        Held {
            pm: Box::new(OomPostmortem {
                kill: OomKill {
                    victim: Victim {
                        pid,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Default::default()
            }),
            line: true,
            text: false,
        }
        .with_notes(text)
    }

    #[test]
    fn held_in_order_up_to_the_count_then_lost() {
        let mut h = Hold::default();
        for pid in 0..MAX_HELD as u32 {
            assert_eq!(h.hold(held(pid, 10)), Holding::Held);
        }
        assert_eq!(h.hold(held(999, 10)), Holding::Lost);
        assert_eq!((h.len(), h.lost), (MAX_HELD, 1));
        let all = h.take();
        assert_eq!(h.len(), 0);
        let pids: Vec<u32> = all.iter().map(|h| h.pm.kill.victim.pid).collect();
        assert_eq!(pids, (0..MAX_HELD as u32).collect::<Vec<_>>(), "in order");
        // The first two written, the rest refused again.
        for x in all.into_iter().skip(2) {
            h.put_back(x);
        }
        assert_eq!(h.take()[0].pm.kill.victim.pid, 2, "order kept");
        for pid in 2..MAX_HELD as u32 {
            h.put_back(held(pid, 10));
        }
        // Room again.
        assert_eq!(h.hold(held(1000, 10)), Holding::Held);
        assert_eq!(h.unnoted_losses(), 1);
        h.noted();
        assert_eq!(h.unnoted_losses(), 0);
        // Two written, one more held: what is left is lost at exit.
        assert_eq!(h.give_up(), MAX_HELD as u64 - 1);
        assert_eq!((h.len(), h.lost), (0, MAX_HELD as u64));
    }

    #[test]
    fn the_byte_bound_holds() {
        let mut h = Hold::default();
        assert_eq!(h.hold(held(1, MAX_HELD_BYTES / 2)), Holding::Held);
        assert_eq!(h.hold(held(2, MAX_HELD_BYTES / 2)), Holding::Lost);
        assert_eq!(h.hold(held(3, 1000)), Holding::Held);
        assert_eq!(h.lost, 1);
        h.take();
        assert_eq!(h.bytes, 0);
    }
}
