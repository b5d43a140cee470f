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

    /// Starts serving on the current runtime.
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
        tokio::spawn(server::serve(self.0, metrics.clone(), health.clone()));
        Sink { metrics, health }
    }
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
