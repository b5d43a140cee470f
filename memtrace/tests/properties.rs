//! Property tests of every parser of untrusted input, on stable and fast
//! enough for every `cargo test`: the CI part of the fuzzing. Inputs are
//! real ones (`tests/data/seeds/<target>/`: a kernel log OOM report from
//! a 6.18 host, a `stream --output` capture, a host's mountinfo and cgroup
//! paths, the container layouts) mutated at random, plus arbitrary data.
//! The properties are `props/mod.rs`, which the coverage-guided fuzz
//! targets (`fuzz/`, `cargo xtask fuzz`) check too; the seed directories
//! are their starting corpora.

mod props;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::Path;

use memtrace::source::ndjson::{Item, Lines, MAX_LINE};
use proptest::prelude::*;

/// The seed files of one target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Bytes the parsers treat specially, for mutations to insert.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b";",
    b",",
    b"=",
    b"/",
    b"-",
    b"\\x1b",
    b"\\",
    b"\"",
    b"{",
    b"}",
    b"[",
    b":",
    b"oom-kill:",
    b"Killed process ",
    b" invoked oom-killer: ",
    b"Memory cgroup out of memory: ",
    b"oom_memcg=",
    b"task_memcg=",
    b"pid=",
    b"(",
    b")",
    b"kB",
    b"18446744073709551615",
    b"-1",
    b"1e308",
    b"\x1b",
    b"\xe2\x80\xae",
    b"\xc2\x9b",
    b"\xff",
    b"\0",
    b".scope",
    b".slice",
    b"docker-",
    b"-pod",
    b"kubepods",
    b" - ",
    b"\\040",
    b"{\"type\":\"oom_kill\",",
    b"null",
];

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<usize>(), 1..64usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), 1..256usize).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *e {
            Edit::Flip(i, b) if !data.is_empty() => {
                let i = i % data.len();
                data[i] = b;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, t) => {
                let i = at(i, data.len());
                data.splice(i..i, TOKENS[t].iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(i, data.len());
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            Edit::Truncate(i) => data.truncate(at(i, data.len())),
            Edit::Splice(a, b, n) => {
                // Copies a piece of the input elsewhere: repeated fields,
                // records glued together.
                let a = at(a, data.len());
                let piece: Vec<u8> = data[a..(a + n).min(data.len())].to_vec();
                let b = at(b, data.len());
                data.splice(b..b, piece);
            }
        }
    }
    data
}

/// A seed of `target` with up to 8 random edits, or arbitrary bytes.
fn input(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    prop_oneof![
        4 => (0..seeds.len(), prop::collection::vec(edit(), 0..8))
            .prop_map(move |(i, edits)| apply(seeds[i].clone(), &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// `target`'s property on one input, as bytes (the fuzzers' form).
fn check(target: &str, d: &[u8]) {
    match target {
        "kmsg_record" => props::kmsg_record(d),
        "oom_line" => props::oom_line(&lossy(d)),
        "oom_assembler" => {
            let text = lossy(d);
            props::oom_assembler(&text.split('\n').collect::<Vec<_>>());
        }
        "ndjson" => props::ndjson(d),
        "cgroup_attribute" => props::cgroup_attribute(&lossy(d)),
        "mountinfo" => props::mountinfo(&lossy(d)),
        "escape" => props::escape(&lossy(d), d),
        _ => unreachable!("unknown fuzz target {target}"),
    }
}

/// Every seed as it is, through its target's property. A crash a fuzzer
/// finds becomes a regression test by saving its (minimised) input as a
/// seed file (RELIABILITY.md, Fuzzing).
#[test]
fn every_seed_holds_its_property() {
    for target in TARGETS {
        for seed in seeds(target) {
            check(target, &seed);
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The fuzz targets (as in xtask/src/fuzz.rs), each with its seeds in
/// tests/data/seeds/<target>/ and its property in `check`: `TARGETS`, and
/// one property test per target, named after it, on its seeds with random
/// edits and on arbitrary bytes.
macro_rules! fuzz_targets {
    ($($target:ident),*) => {
        const TARGETS: &[&str] = &[$(stringify!($target)),*];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $target(data in input(stringify!($target))) {
                    check(stringify!($target), &data);
                }
            )*

            #[test]
            fn escape_any_string(s in any::<String>()) {
                props::escape(&s, s.as_bytes());
            }
        }
    };
}

fuzz_targets!(
    kmsg_record,
    oom_line,
    oom_assembler,
    ndjson,
    cgroup_attribute,
    mountinfo,
    escape
);

/// Counts the bytes the current thread has allocated and not freed, and
/// their peak, so a test can bound a reader's memory while other tests run
/// on other threads.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: the allocator runs during thread teardown too.
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are thread-local Cells with const initialisers and no
// destructor, so updating them neither allocates nor re-enters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated by `f` on this thread, above what was live before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, (PEAK.with(Cell::get) - base).max(0) as usize)
}

/// `pattern` repeated forever, counting the bytes handed out.
struct Endless {
    pattern: Vec<u8>,
    at: usize,
    given: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for b in buf.iter_mut() {
            *b = self.pattern[self.at];
            self.at = (self.at + 1) % self.pattern.len();
        }
        self.given += buf.len() as u64;
        Ok(buf.len())
    }
}

proptest! {
    // Each case reads 16 MiB: two cases, to keep `cargo test` fast.
    #![proptest_config(ProptestConfig { cases: 2, failure_persistence: None, ..ProptestConfig::default() })]

    /// A file with no end and no newline after a few good lines (`/dev/zero`,
    /// a binary, a runaway writer): the read stops at the cap, having read
    /// little more than it and held at most a few times it.
    #[test]
    fn ndjson_memory_is_bounded_on_endless_input(
        seed in 0..seeds("ndjson").len(),
        pattern in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..64),
    ) {
        let good = seeds("ndjson")[seed].clone();
        let mut endless = Endless { pattern, at: 0, given: 0 };
        let (result, peak) = peak_of(|| {
            let reader = BufReader::new(io::Cursor::new(good).chain(&mut endless));
            let mut lines = Lines::new(reader);
            loop {
                match lines.next_item() {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        });
        let err = result.expect_err("an endless line ends the read");
        prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        prop_assert!(endless.given <= (MAX_LINE + (64 << 10)) as u64, "read {} bytes", endless.given);
        prop_assert!(peak <= 3 * MAX_LINE, "peak {} MiB", peak >> 20);
    }
}

/// A line just under the cap of the most expensive JSON (a flat array of
/// small numbers) costs a bounded multiple of the cap to reject: 272 MiB
/// for 16 MiB measured (serde's buffering of an internally tagged enum,
/// then the `Value` parse that names the error), RELIABILITY.md.
#[test]
fn ndjson_memory_is_bounded_on_a_huge_json_line() {
    let mut line = Vec::with_capacity(MAX_LINE);
    line.push(b'[');
    while line.len() + 3 < MAX_LINE {
        line.extend_from_slice(b"0,");
    }
    line.extend_from_slice(b"0]\n");
    let (items, peak) = peak_of(|| {
        let mut lines = Lines::new(BufReader::new(io::Cursor::new(&line)));
        let mut n = 0;
        while let Some(item) = lines.next_item().unwrap() {
            assert!(matches!(item, Item::Bad(_)));
            n += 1;
        }
        n
    });
    assert_eq!(items, 1);
    eprintln!(
        "peak {} MiB for a {} MiB line",
        peak >> 20,
        line.len() >> 20
    );
    assert!(peak <= 24 * MAX_LINE, "peak {} MiB", peak >> 20);
}
