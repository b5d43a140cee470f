//! The live source: reads the per-CPU aggregate maps and the ring buffer of
//! the loaded programs.
use std::{collections::HashMap, os::fd::AsRawFd};

use anyhow::{Context, Result, anyhow};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf};
use memtrace_common::{
    EVENT_OOM_KILL, EVENT_SLOW, MemcgStats, OomEvent, ShrinkerKey, ShrinkerStats, SlowEvent,
    SystemStats,
};
use tokio::io::unix::AsyncFd;

use super::loader::Loaded;
use crate::aggregate::counters;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawEvent {
    Oom(OomEvent),
    Slow(SlowEvent),
}

pub struct Live {
    pub loaded: Loaded,
    memcgs: PerCpuHashMap<MapData, u64, MemcgStats>,
    shrinkers: PerCpuHashMap<MapData, ShrinkerKey, ShrinkerStats>,
    system: PerCpuArray<MapData, SystemStats>,
    pub ring: AsyncFd<RingBuf<MapData>>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    loaded: &mut Loaded,
    name: &str,
) -> Result<T> {
    let map = loaded
        .ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// Reads a record of type `T` if the buffer is exactly one.
fn decode<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode_event(bytes: &[u8]) -> Option<RawEvent> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match kind {
        EVENT_OOM_KILL => decode::<OomEvent>(bytes).map(RawEvent::Oom),
        EVENT_SLOW => decode::<SlowEvent>(bytes).map(RawEvent::Slow),
        _ => None,
    }
}

impl Live {
    pub fn new(mut loaded: Loaded) -> Result<Self> {
        let memcgs = take(&mut loaded, "MEMCG_STATS")?;
        let shrinkers = take(&mut loaded, "SHRINKER_STATS")?;
        let system = take(&mut loaded, "SYSTEM_STATS")?;
        let ring: RingBuf<MapData> = take(&mut loaded, "EVENTS")?;
        // SAFETY: the AsyncFd owns the ring buffer, hence its fd, for its whole life.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("polling the ring buffer")?;
        Ok(Self {
            loaded,
            memcgs,
            shrinkers,
            system,
            ring,
        })
    }

    /// Current totals per memcg, summed over CPUs.
    pub fn memcg_totals(&self) -> HashMap<u64, MemcgStats> {
        let mut out = HashMap::new();
        for item in self.memcgs.iter() {
            let Ok((id, per_cpu)) = item else { continue };
            out.insert(id, sum_cpus(&per_cpu, counters::add_memcg));
        }
        out
    }

    pub fn shrinker_totals(&self) -> HashMap<ShrinkerKey, ShrinkerStats> {
        let mut out = HashMap::new();
        for item in self.shrinkers.iter() {
            let Ok((key, per_cpu)) = item else { continue };
            out.insert(key, sum_cpus(&per_cpu, counters::add_shrinker));
        }
        out
    }

    pub fn system_totals(&self) -> SystemStats {
        self.system
            .get(&0, 0)
            .map(|v| sum_cpus(&v, counters::add_system))
            .unwrap_or_default()
    }

    pub fn remove_memcg(&mut self, id: u64) {
        let _ = self.memcgs.remove(&id);
    }

    pub fn remove_shrinker(&mut self, key: &ShrinkerKey) {
        let _ = self.shrinkers.remove(key);
    }

    /// Everything currently in the ring buffer.
    pub fn drain_ring(&mut self) -> Vec<RawEvent> {
        let mut out = Vec::new();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            if let Some(e) = decode_event(&item) {
                out.push(e);
            }
        }
        out
    }

    /// Sum of `recursion_misses` over the attached programs (5.12+); None
    /// when the kernel does not report it.
    pub fn recursion_misses(&self) -> Option<u64> {
        let mut total = None;
        for (_, prog) in self.loaded.ebpf.programs() {
            let Ok(fd) = prog.fd() else { continue };
            if let Some(m) = prog_recursion_misses(fd.as_fd().as_raw_fd()) {
                *total.get_or_insert(0) += m;
            }
        }
        total
    }
}

use std::os::fd::AsFd;

fn sum_cpus<T: aya::Pod + Default>(values: &PerCpuValues<T>, add: fn(&mut T, &T)) -> T {
    let mut acc = T::default();
    for v in values.iter() {
        add(&mut acc, v);
    }
    acc
}

/// BPF_OBJ_GET_INFO_BY_FD; aya 0.14 does not expose recursion_misses.
fn prog_recursion_misses(fd: i32) -> Option<u64> {
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr: [u8; 128] = [0; 128];
    let a = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &raw mut info as u64,
    };
    unsafe { std::ptr::write_unaligned(attr.as_mut_ptr().cast::<InfoAttr>(), a) };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    (r == 0).then_some(info.recursion_misses)
}
