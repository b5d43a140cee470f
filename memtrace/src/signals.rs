//! What ends `stream` and `top` from outside: the signals SIGINT, SIGTERM
//! and SIGHUP, and the reader of stdout going away.
//!
//! The signals:
//! SIGHUP's default action would kill the process with output still
//! buffered (exit 129); a hangup (the terminal or the ssh session gone,
//! or `kill -HUP` from a supervisor) ends them as SIGTERM does: what is
//! pending is written and the exit status is 0. `record` instead reopens
//! its files on SIGHUP (the logrotate convention), see record/mod.rs.
use std::{io, time::Duration};

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Stop {
    int: Signal,
    term: Signal,
    /// None for `record`, which handles SIGHUP itself.
    hup: Option<Signal>,
}

impl Stop {
    /// Installs the handlers: call it first, so a signal during start-up
    /// still ends in a clean exit.
    pub fn new() -> io::Result<Self> {
        let mut stop = Self::without_hangup()?;
        stop.hup = Some(signal(SignalKind::hangup())?);
        Ok(stop)
    }

    /// SIGINT and SIGTERM only: the caller gives SIGHUP its own meaning.
    pub fn without_hangup() -> io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: None,
        })
    }

    /// Resolves when one of the signals arrives (cancel-safe).
    pub async fn recv(&mut self) {
        let hup = async {
            match self.hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = hup => {}
        }
    }
}

/// How often an idle `top --json`/`--batch` or `stream` checks whether
/// stdout's reader went away.
pub const STDOUT_CHECK: Duration = Duration::from_secs(1);

/// Whether stdout is a pipe or socket whose reader is gone (`| head` that
/// exited). A write would fail with EPIPE, but an idle command may not
/// write for hours, and a zero-length write cannot tell: Linux's
/// pipe_write returns 0 for it before looking for readers. poll(2) with no
/// requested events can: a pipe without readers reports POLLERR, a socket
/// whose peer closed POLLHUP; a regular file or a terminal reports neither.
pub fn stdout_reader_gone() -> bool {
    let mut fds = [libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid array of one pollfd that outlives the call;
    // a zero timeout makes poll return at once. fd 1 may be closed, which
    // poll reports as POLLNVAL (not a reader going away).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0
}
