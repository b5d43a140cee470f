//! Reading a whole per-CPU hash map in a few system calls.
//!
//! Per-key iteration (`BPF_MAP_GET_NEXT_KEY` then a lookup) costs two
//! `bpf()` calls per entry: in a storm interval with 2000 active memcgs
//! and their shrinkers, some 20,000 calls. `BPF_MAP_LOOKUP_BATCH` (hash
//! maps since 5.6) returns many entries per call. aya 0.14 has no batch
//! API, so this is a raw `bpf(2)` call. A kernel without it (or a map
//! type it cannot batch) refuses the first call with EINVAL or ENOTSUPP;
//! the reader then says so once and the caller iterates key by key from
//! then on.
use std::{
    collections::HashMap,
    hash::Hash,
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

/// `enum bpf_cmd`: BPF_MAP_LOOKUP_BATCH.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel-internal ENOTSUPP a map without batch operations returns.
const ENOTSUPP: i32 = 524;
/// Bytes of values fetched per call, at most (unless one bucket of the
/// hash table needs more). 2000 memcgs' stats on 2 CPUs: two calls.
const CHUNK_BYTES: usize = 256 << 10;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Support {
    /// Not tried yet: the first read decides.
    Unknown,
    Yes,
    No,
}

/// Reads per-CPU hash maps whole with `BPF_MAP_LOOKUP_BATCH`, remembering
/// whether the kernel has it. Reuses its buffers across reads.
pub struct BatchReader {
    support: Support,
    cpus: usize,
    keys: Vec<u8>,
    /// u64 words: per-CPU values are 8-byte aligned in the kernel's
    /// layout, and so is this buffer.
    values: Vec<u64>,
    /// Reads done key by key because batching was unavailable or failed.
    pub fallbacks: u64,
    /// `bpf()` calls made by batched reads, for the debug log.
    pub calls: u64,
    /// Bytes of values asked for per call ([`CHUNK_BYTES`]).
    chunk_bytes: usize,
}

impl BatchReader {
    /// A reader for maps whose per-CPU values span `cpus` possible CPUs.
    pub fn new(cpus: usize) -> Self {
        Self {
            support: Support::Unknown,
            cpus: cpus.max(1),
            keys: Vec::new(),
            values: Vec::new(),
            fallbacks: 0,
            calls: 0,
            chunk_bytes: CHUNK_BYTES,
        }
    }

    /// Every entry of the per-CPU hash map `fd` (keys `K`, values `V`),
    /// its per-CPU values summed with `add`; None when the caller must
    /// read key by key instead (no batch support, or a batch failed: then
    /// nothing partial is returned, so no entry is counted twice).
    pub fn totals<K, V>(&mut self, fd: BorrowedFd<'_>, add: fn(&mut V, &V)) -> Option<HashMap<K, V>>
    where
        K: aya::Pod + Eq + Hash,
        V: aya::Pod + Default,
    {
        if self.support == Support::No {
            self.fallbacks += 1;
            return None;
        }
        let cpus = self.cpus;
        let mut out = HashMap::new();
        let read = self.read::<K, V>(fd, Some(cpus), |key, per_cpu| {
            let mut total = V::default();
            per_cpu.for_each(|v| add(&mut total, &v));
            out.insert(key, total);
        });
        self.settle(read).then_some(out)
    }

    /// Every entry of the (not per-CPU) hash map `fd`; None as for
    /// [`BatchReader::totals`].
    pub fn entries<K, V>(&mut self, fd: BorrowedFd<'_>) -> Option<Vec<(K, V)>>
    where
        K: aya::Pod,
        V: aya::Pod,
    {
        if self.support == Support::No {
            self.fallbacks += 1;
            return None;
        }
        let mut out = Vec::new();
        let read = self.read::<K, V>(fd, None, |key, value| {
            if let Some(v) = value.next() {
                out.push((key, v));
            }
        });
        self.settle(read).then_some(out)
    }

    /// Learns from a read's outcome whether the kernel batches; false
    /// when the caller must read key by key.
    fn settle(&mut self, read: io::Result<()>) -> bool {
        match read {
            Ok(()) => {
                self.support = Support::Yes;
                true
            }
            Err(e) => {
                let errno = e.raw_os_error();
                let unsupported = matches!(errno, Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP));
                if self.support == Support::Unknown && unsupported {
                    log::info!(
                        "BPF_MAP_LOOKUP_BATCH unavailable ({e}): reading the stats maps key by \
                         key (two bpf() calls per entry)"
                    );
                    self.support = Support::No;
                } else {
                    log::warn!("a batched map read failed ({e}); reading this one key by key");
                }
                self.fallbacks += 1;
                false
            }
        }
    }

    /// Passes every entry to `each` as its key and its values: one per
    /// possible CPU for a per-CPU map (`cpus`), else one.
    fn read<K, V>(
        &mut self,
        fd: BorrowedFd<'_>,
        cpus: Option<usize>,
        mut each: impl FnMut(K, &mut dyn Iterator<Item = V>),
    ) -> io::Result<()>
    where
        K: aya::Pod,
        V: aya::Pod,
    {
        let ksize = size_of::<K>();
        // The kernel copies per-CPU values at a stride of round_up(size,
        // 8), plain values at their size.
        let (stride, ncpu) = match cpus {
            Some(n) => (size_of::<V>().next_multiple_of(8), n),
            None => (size_of::<V>(), 1),
        };
        let per_entry = (stride * ncpu).max(1);
        let mut count = (self.chunk_bytes / per_entry).max(1);
        let mut in_batch = 0u32;
        let mut out_batch = 0u32;
        let mut first = true;
        loop {
            self.keys.resize(count * ksize, 0);
            self.values.resize((count * per_entry).div_ceil(8), 0);
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &raw const in_batch as u64 },
                out_batch: &raw mut out_batch as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: count as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Default::default()
            };
            self.calls += 1;
            // SAFETY: `attr` is a live, fully initialised bpf_attr prefix
            // of the size passed. The kernel writes at most `count` keys of
            // `ksize` bytes into `keys` and `count` entries of `per_entry`
            // bytes into `values` (both sized for that just above), and one
            // u32 bucket index into `out_batch`; it reads one u32 from
            // `in_batch`. Every pointer is to memory owned by this frame or
            // `self`, not otherwise borrowed until the call returns.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &raw mut attr,
                    size_of::<BatchAttr>() as u32,
                )
            };
            let err = (r < 0).then(io::Error::last_os_error);
            let errno = err.as_ref().and_then(io::Error::raw_os_error);
            if errno == Some(libc::ENOSPC) && attr.count == 0 {
                // One bucket holds more entries than `count`: ask for more.
                count *= 2;
                continue;
            }
            // ENOENT: the last (possibly empty) chunk, with `count` set.
            if let Some(e) = err.filter(|_| errno != Some(libc::ENOENT)) {
                return Err(e);
            }
            let got = (attr.count as usize).min(count);
            let values = values_bytes(&self.values);
            for i in 0..got {
                // SAFETY: entry i's key lies within `keys` (i < count,
                // which the buffer was sized for); read_unaligned needs no
                // alignment, and `K: Pod` accepts any bytes.
                let key: K = unsafe {
                    std::ptr::read_unaligned(self.keys.as_ptr().add(i * ksize).cast::<K>())
                };
                let mut per_cpu = (0..ncpu).map(|cpu| {
                    let at = i * per_entry + cpu * stride;
                    // SAFETY: as for the key: `at + size_of::<V>()` is
                    // within the `count * per_entry` bytes of `values`.
                    unsafe { std::ptr::read_unaligned(values.as_ptr().add(at).cast::<V>()) }
                });
                each(key, &mut per_cpu);
            }
            if errno == Some(libc::ENOENT) {
                return Ok(());
            }
            in_batch = out_batch;
            first = false;
        }
    }
}

/// The bytes of a u64 buffer.
fn values_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirements, and the slice
    // covers exactly the words' bytes, borrowed for as long as they are.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), size_of_val(words)) }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData, PerCpuHashMap, PerCpuValues};

    use super::*;
    use crate::source::map_memory::possible_cpus;

    /// Fills a per-CPU hash map with `n` keys (value per CPU from `value`)
    /// and checks a batched read returns what key-by-key iteration does.
    fn same_as_by_key<V>(n: u64, value: fn(u64, u64) -> V, add: fn(&mut V, &V))
    where
        V: aya::Pod + Default + PartialEq + std::fmt::Debug,
    {
        let cpus = possible_cpus();
        let mut map = PerCpuHashMap::<MapData, u64, V>::create(4096, 0).expect("creating a map");
        for k in 0..n {
            let per_cpu: Vec<V> = (0..cpus).map(|c| value(k, c)).collect();
            map.insert(k, PerCpuValues::try_from(per_cpu).unwrap(), 0)
                .unwrap();
        }
        let mut r = BatchReader::new(cpus as usize);
        let batched = r
            .totals::<u64, V>(map.map().fd().as_fd(), add)
            .expect("kernels since 5.6 batch per-CPU hash maps");
        // One entry per call: many calls, each continuing where the last
        // stopped, and buckets of several entries make it ask for more.
        let mut small = BatchReader::new(cpus as usize);
        small.chunk_bytes = 1;
        let chunked = small.totals::<u64, V>(map.map().fd().as_fd(), add).unwrap();
        assert_eq!(chunked, batched);
        assert!(n < 2 || small.calls > 1);
        let by_key: HashMap<u64, V> = map
            .iter()
            .map(Result::unwrap)
            .map(|(k, per_cpu)| {
                let mut t = V::default();
                per_cpu.iter().for_each(|v| add(&mut t, v));
                (k, t)
            })
            .collect();
        assert_eq!(batched.len() as u64, n);
        assert_eq!(batched, by_key);
        assert!(r.calls <= 1 + n / 64, "{} calls for {n} entries", r.calls);
        assert_eq!(r.fallbacks, 0);
    }

    #[test]
    #[ignore = "needs root: creates BPF maps (cargo xtask test runs it)"]
    fn batched_reads_equal_key_by_key_reads() {
        let add3 = |a: &mut [u64; 3], b: &[u64; 3]| {
            for i in 0..3 {
                a[i] += b[i];
            }
        };
        same_as_by_key(3000, |k, c| [k, c, 1], add3);
        same_as_by_key(0, |k, c| [k, c, 1], add3);
        same_as_by_key(1, |k, c| [k, c, 1], add3);
        // 12-byte values: the kernel's per-CPU stride is rounded up to 8.
        let add_u32 = |a: &mut [u32; 3], b: &[u32; 3]| {
            for i in 0..3 {
                a[i] += b[i];
            }
        };
        same_as_by_key(2500, |k, c| [k as u32, c as u32 + 7, 3], add_u32);
    }

    #[test]
    #[ignore = "needs root: creates BPF maps (cargo xtask test runs it)"]
    fn batched_plain_map_reads_equal_key_by_key_reads() {
        // 20-byte values: a plain map's values are packed at their size.
        let mut map = BpfHashMap::<MapData, u64, [u32; 5]>::create(4096, 0).unwrap();
        for k in 0..2100u64 {
            map.insert(k, [k as u32, 1, 2, 3, 4], 0).unwrap();
        }
        for chunk in [CHUNK_BYTES, 1] {
            let mut r = BatchReader::new(possible_cpus() as usize);
            r.chunk_bytes = chunk;
            let mut got = r
                .entries::<u64, [u32; 5]>(map.map().fd().as_fd())
                .expect("kernels since 5.6 batch hash maps");
            got.sort_unstable();
            let mut by_key: Vec<(u64, [u32; 5])> = map.iter().map(Result::unwrap).collect();
            by_key.sort_unstable();
            assert_eq!(got, by_key);
            assert_eq!(got.len(), 2100);
        }
    }
}
