//! The metrics sink: `memtrace record --listen ADDR` serves what the
//! records add up to as Prometheus metrics (docs/metrics.md). It takes the
//! pipeline's records like every other sink and never reads cgroupfs or
//! the kernel itself.
pub mod expo;
pub mod server;
pub mod state;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::output::records::{Header, Record};
pub use state::{Metrics, RecorderCounts};

/// The sink as `record` holds it: the state shared with the server task.
pub struct Sink {
    metrics: Arc<Mutex<Metrics>>,
    health: Arc<server::Health>,
}

/// A bound listener, before the pipeline starts (a port in use fails
/// before anything loads).
pub struct Bound(tokio::net::TcpListener);

pub async fn bind(addr: SocketAddr) -> Result<Bound> {
    Ok(Bound(server::bind(addr).await?))
}

impl Bound {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local_addr().ok()
    }

    /// Starts serving, on a thread of its own.
    pub fn serve(
        self,
        header: Header,
        max_series: usize,
        map_max: (u32, u32),
        interval: Duration,
    ) -> Sink {
        let metrics = Arc::new(Mutex::new(Metrics::new(header, max_series, map_max)));
        let health = Arc::new(server::Health {
            started: Instant::now(),
            // An interval is closed every `interval`; a few missed ones
            // (a busy host, a slow cgroupfs) are not yet a dead agent.
            stale_after: (interval * 5).max(Duration::from_secs(10)),
            last_interval: Mutex::new(Instant::now()),
        });
        // A thread of its own, with its own runtime: a scrape is then never
        // queued behind the pipeline's work (an interval with thousands of
        // active memcgs takes a few hundred ms of CPU), and rendering a
        // large page never delays the pipeline beyond the lock. Started
        // after the pipeline, so the process was single-threaded while it
        // set up its private mount namespace.
        let (m, h) = (metrics.clone(), health.clone());
        match self.0.into_std() {
            Ok(listener) => {
                let spawned = std::thread::Builder::new()
                    .name("metrics".into())
                    .spawn(move || serve_on_own_runtime(listener, m, h));
                if let Err(e) = spawned {
                    log::error!("--listen: cannot start the metrics thread: {e}");
                }
            }
            Err(e) => log::error!("--listen: {e}"),
        }
        Sink { metrics, health }
    }
}

fn serve_on_own_runtime(
    listener: std::net::TcpListener,
    metrics: Arc<Mutex<Metrics>>,
    health: Arc<server::Health>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("--listen: no runtime for the metrics thread: {e}");
            return;
        }
    };
    rt.block_on(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => server::serve(l, metrics, health).await,
            Err(e) => log::error!("--listen: {e}"),
        }
    });
}

impl Sink {
    pub fn observe(&self, records: &[&Record], counts: RecorderCounts) {
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            m.observe(r);
            if matches!(r, Record::System(_)) {
                *self
                    .health
                    .last_interval
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
        }
        m.recorder = counts;
    }
}
