//! The live source: reads the aggregate maps and the ring buffer of
//! the loaded programs.
use std::{
    collections::{HashMap, HashSet},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result, anyhow};
use aya::maps::{
    HashMap as BpfHashMap, IterableMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf,
};
use memtrace_common::{
    EVENT_OOM_KILL, EVENT_SLOW, MemcgStats, OomEvent, ShrinkerInfo, ShrinkerKey, ShrinkerMapKey,
    ShrinkerMapValue, ShrinkerStats, SlowEvent, SystemStats,
};
use tokio::io::unix::AsyncFd;

use super::{batch::BatchReader, loader::Loaded, map_memory::possible_cpus};
use crate::aggregate::counters;
use crate::kernel::symbols::Symbolizer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawEvent {
    /// Boxed: with its memcg chain an OOM event is ~1.4 KiB.
    Oom(Box<OomEvent>),
    Slow(SlowEvent),
}

/// A shrinker's names as text; None = unknown or not applicable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShrinkerNames {
    pub name: Option<String>,
    pub fs_type: Option<String>,
    pub device: Option<String>,
}

impl From<&ShrinkerInfo> for ShrinkerNames {
    fn from(i: &ShrinkerInfo) -> Self {
        Self {
            name: kernel_str(&i.name),
            fs_type: kernel_str(&i.fs_type),
            device: kernel_str(&i.device),
        }
    }
}

/// Bytes up to the NUL, lossily as UTF-8 (records escape what they must);
/// None when empty.
fn kernel_str(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
}

pub struct Live {
    pub loaded: Loaded,
    memcgs: PerCpuHashMap<MapData, u64, MemcgStats>,
    shrinkers: BpfHashMap<MapData, ShrinkerMapKey, ShrinkerMapValue>,
    /// The kernel's keys (css serial numbers) of each (memcg id, shrinker)
    /// pair at the last read, to remove its entries.
    shrinker_map_keys: HashMap<ShrinkerKey, Vec<ShrinkerMapKey>>,
    shrinker_info: BpfHashMap<MapData, u64, ShrinkerInfo>,
    /// SHRINKER_INFO entries already read (they never change while present).
    names: HashMap<u64, ShrinkerNames>,
    /// SHRINKER_INFO entries no shrinker key referred to at the last read.
    unreferenced: HashSet<u64>,
    system: PerCpuArray<MapData, SystemStats>,
    pub ring: AsyncFd<RingBuf<MapData>>,
    /// Reads the stats maps whole in a few `bpf()` calls where it can.
    batch: BatchReader,
    /// Names shrinker callbacks (`count_objects`) as they show up.
    pub symbols: Symbolizer,
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
fn decode<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= std::mem::size_of::<T>()).then(|| {
        // SAFETY: the length check keeps the read inside `bytes`;
        // read_unaligned needs no alignment (ring buffer samples are only
        // 8-byte aligned by convention); and `T: Pod` promises a plain
        // integer struct for which any bytes are a valid value.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    })
}

pub fn decode_event(bytes: &[u8]) -> Option<RawEvent> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match kind {
        EVENT_OOM_KILL => decode::<OomEvent>(bytes).map(|o| RawEvent::Oom(Box::new(o))),
        EVENT_SLOW => decode::<SlowEvent>(bytes).map(RawEvent::Slow),
        _ => None,
    }
}

impl Live {
    pub fn new(mut loaded: Loaded) -> Result<Self> {
        let memcgs = take(&mut loaded, "MEMCG_STATS")?;
        let shrinkers = take(&mut loaded, "SHRINKER_STATS")?;
        let shrinker_info = take(&mut loaded, "SHRINKER_INFO")?;
        let system = take(&mut loaded, "SYSTEM_STATS")?;
        let ring: RingBuf<MapData> = take(&mut loaded, "EVENTS")?;
        // SAFETY: the fd must stay open, and as_raw_fd keep returning it,
        // for the AsyncFd's whole life. It is the ring buffer map's fd,
        // owned by the MapData inside the RingBuf, which the AsyncFd owns
        // and nothing else can reach to close or replace.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("polling the ring buffer")?;
        Ok(Self {
            loaded,
            memcgs,
            shrinkers,
            shrinker_map_keys: HashMap::new(),
            shrinker_info,
            names: HashMap::new(),
            unreferenced: HashSet::new(),
            system,
            ring,
            batch: BatchReader::new(possible_cpus() as usize),
            symbols: Symbolizer::default(),
        })
    }

    /// Current totals per memcg, summed over CPUs.
    pub fn memcg_totals(&mut self) -> HashMap<u64, MemcgStats> {
        totals(&mut self.batch, &self.memcgs, counters::add_memcg)
    }

    /// Current totals per (memcg id, shrinker): one shared value per pair
    /// (the programs add atomically). The kernel keys them by css serial
    /// number and keeps the id in the value (`ShrinkerMapKey`); two entries
    /// of one id (never seen: serials and ids are both unique per boot)
    /// would be summed.
    pub fn shrinker_totals(&mut self) -> HashMap<ShrinkerKey, ShrinkerStats> {
        let fd = self.shrinkers.map().fd().as_fd();
        let by_serial = self
            .batch
            .entries::<ShrinkerMapKey, ShrinkerMapValue>(fd)
            .unwrap_or_else(|| self.shrinkers.iter().filter_map(Result::ok).collect());
        let mut out = HashMap::with_capacity(by_serial.len());
        self.shrinker_map_keys.clear();
        for (k, ShrinkerMapValue { stats: s, .. }) in by_serial {
            let key = ShrinkerKey {
                memcg_id: s.memcg_id,
                shrinker: k.shrinker,
            };
            self.shrinker_map_keys.entry(key).or_default().push(k);
            out.entry(key)
                .and_modify(|t| counters::add_shrinker(t, &s))
                .or_insert(s);
        }
        out
    }

    /// (`bpf()` calls made by batched map reads, reads done key by key).
    pub fn batch_counts(&self) -> (u64, u64) {
        (self.batch.calls, self.batch.fallbacks)
    }

    /// Names of the shrinkers in `in_use` (the current shrinker totals),
    /// from SHRINKER_INFO; each entry is read from the kernel once. An entry
    /// no key has referred to at two reads in a row is removed (the first
    /// miss may be a shrinker whose key is being added): the map stays
    /// bounded, and a new shrinker at a freed one's address is read afresh.
    pub fn shrinker_names(
        &mut self,
        in_use: &HashMap<ShrinkerKey, ShrinkerStats>,
    ) -> HashMap<u64, ShrinkerNames> {
        let used: HashSet<u64> = in_use.keys().map(|k| k.shrinker).collect();
        // The whole map in a few batched calls (its values come along), or
        // its keys one by one, reading only the entries not named yet.
        let fd = self.shrinker_info.map().fd().as_fd();
        let batched = self.batch.entries::<u64, ShrinkerInfo>(fd);
        let present: Vec<(u64, Option<ShrinkerInfo>)> = match batched {
            Some(e) => e.into_iter().map(|(a, i)| (a, Some(i))).collect(),
            None => self
                .shrinker_info
                .keys()
                .filter_map(Result::ok)
                .map(|a| (a, None))
                .collect(),
        };
        let mut unreferenced = HashSet::new();
        for &(addr, info) in &present {
            if used.contains(&addr) {
                if !self.names.contains_key(&addr) {
                    let info = info.or_else(|| self.shrinker_info.get(&addr, 0).ok());
                    if let Some(info) = info {
                        self.names.insert(addr, ShrinkerNames::from(&info));
                    }
                }
            } else if self.unreferenced.contains(&addr) {
                let _ = self.shrinker_info.remove(&addr);
                self.names.remove(&addr);
            } else {
                unreferenced.insert(addr);
            }
        }
        self.unreferenced = unreferenced;
        let present: HashSet<u64> = present.into_iter().map(|(a, _)| a).collect();
        self.names.retain(|a, _| present.contains(a));
        used.into_iter()
            .filter_map(|a| Some((a, self.names.get(&a)?.clone())))
            .collect()
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
        for k in self.shrinker_map_keys.remove(key).unwrap_or_default() {
            let _ = self.shrinkers.remove(&k);
        }
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

/// Every entry of a per-CPU map, summed over CPUs: in a few batched
/// `bpf()` calls, or else key by key, skipping entries that cannot be read
/// (removed while iterating).
fn totals<K, V>(
    batch: &mut BatchReader,
    map: &PerCpuHashMap<MapData, K, V>,
    add: fn(&mut V, &V),
) -> HashMap<K, V>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + Default,
{
    if let Some(t) = batch.totals(map.map().fd().as_fd(), add) {
        return t;
    }
    map.iter()
        .filter_map(Result::ok)
        .map(|(k, per_cpu)| (k, sum_cpus(&per_cpu, add)))
        .collect()
}

fn sum_cpus<T: aya::Pod + Default>(values: &PerCpuValues<T>, add: fn(&mut T, &T)) -> T {
    let mut acc = T::default();
    for v in values.iter() {
        add(&mut acc, v);
    }
    acc
}

/// BPF_OBJ_GET_INFO_BY_FD; aya 0.14 does not expose recursion_misses.
fn prog_recursion_misses(fd: i32) -> Option<u64> {
    // SAFETY: bpf_prog_info is a bindgen struct of integers (pointers are
    // carried as u64), for which all-zero is a valid value.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    // The `info` member of union bpf_attr.
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
    // SAFETY: InfoAttr is 16 bytes and `attr` 128, so the write stays in
    // bounds; a byte array has no alignment, hence write_unaligned.
    unsafe { std::ptr::write_unaligned(attr.as_mut_ptr().cast::<InfoAttr>(), a) };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: bpf(2) reads `attr.len()` bytes of `attr`, all initialised
    // (the kernel requires the bytes past the fields it knows to be zero,
    // and they are). It writes at most `info_len` bytes, the size of
    // `info`, through the pointer in the attr; `info` is a live local,
    // borrowed by nothing else until the call returns.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stop_at_nul_and_empty_is_none() {
        let mut info = ShrinkerInfo::default();
        info.fs_type[..6].copy_from_slice(b"tmpfs\0");
        info.device[..4].copy_from_slice(b"v\xffa\0");
        info.device[5] = b'x';
        let n = ShrinkerNames::from(&info);
        assert_eq!(n.name, None);
        assert_eq!(n.fs_type.as_deref(), Some("tmpfs"));
        assert_eq!(n.device.as_deref(), Some("v\u{fffd}a"));
        // A full buffer without NUL is taken whole.
        assert_eq!(kernel_str(b"abc").as_deref(), Some("abc"));
    }
}
