//! The lean reader checked two ways: against btf-rs (an independent
//! parser) on the running kernel's BTF, and on small hand-built blobs,
//! including truncated and corrupt ones, so it is tested without a kernel.
use super::*;
use crate::kernel::plan::HOOKS;
use crate::testutil::TempDir;

/// btf-rs versions of `KernelBtf`'s queries: the code memtrace ran before
/// the lean reader, kept as the oracle.
mod oracle {
    use btf_rs::{Btf, Type};

    pub fn strip(b: &Btf, mut t: Type) -> Type {
        loop {
            let next = match &t {
                Type::Typedef(x) | Type::TypeTag(x) => b.resolve_chained_type(x),
                Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => b.resolve_chained_type(x),
                _ => return t,
            };
            match next {
                Ok(n) => t = n,
                Err(_) => return t,
            }
        }
    }

    fn member_bits(b: &Btf, members: &[btf_rs::Member], field: &str) -> Option<u32> {
        for m in members {
            let name = b.resolve_name(m).unwrap_or_default();
            if name == field {
                return Some(m.bit_offset());
            }
            if name.is_empty() {
                let Ok(inner) = b.resolve_chained_type(m) else {
                    continue;
                };
                if let Type::Struct(s) | Type::Union(s) = strip(b, inner) {
                    if let Some(bits) = member_bits(b, &s.members, field) {
                        return Some(m.bit_offset() + bits);
                    }
                }
            }
        }
        None
    }

    pub fn members(b: &Btf, name: &str) -> Option<Vec<btf_rs::Member>> {
        b.resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s.members),
                _ => None,
            })
    }

    /// Byte offset, None if missing or not at a byte boundary.
    pub fn offset_of(b: &Btf, strukt: &str, field: &str) -> Option<u32> {
        member_bits(b, &members(b, strukt)?, field)
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
    }

    pub fn enum_value(b: &Btf, enm: &str, variant: &str) -> Option<u64> {
        for t in b.resolve_types_by_name(enm).ok()? {
            match t {
                Type::Enum(e) => {
                    for m in &e.members {
                        if b.resolve_name(m).ok().as_deref() == Some(variant) {
                            return Some(u64::from(m.val()));
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if b.resolve_name(m).ok().as_deref() == Some(variant) {
                            return Some(m.val());
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }

    pub fn function_params(b: &Btf, func: &str) -> Option<Vec<String>> {
        let f = b
            .resolve_types_by_name(func)
            .ok()?
            .into_iter()
            .find_map(|t| if let Type::Func(f) = t { Some(f) } else { None })?;
        let Ok(Type::FuncProto(proto)) = b.resolve_chained_type(&f) else {
            return None;
        };
        Some(
            proto
                .parameters
                .iter()
                .map(|p| b.resolve_name(p).unwrap_or_default())
                .collect(),
        )
    }

    pub fn tracepoint_args(b: &Btf, tp: &str) -> Option<Vec<String>> {
        let td = b
            .resolve_types_by_name(&format!("btf_trace_{tp}"))
            .ok()?
            .into_iter()
            .find_map(|t| {
                if let Type::Typedef(t) = t {
                    Some(t)
                } else {
                    None
                }
            })?;
        let Type::Ptr(p) = strip(b, b.resolve_chained_type(&td).ok()?) else {
            return None;
        };
        let Type::FuncProto(proto) = b.resolve_chained_type(&p).ok()? else {
            return None;
        };
        let mut out = Vec::new();
        for param in proto.parameters.iter().skip(1) {
            let t = strip(b, b.resolve_chained_type(param).ok()?);
            out.push(match t {
                Type::Ptr(p) => match b.resolve_chained_type(&p).map(|t| strip(b, t)) {
                    Ok(Type::Struct(s)) => {
                        format!("ptr {}", b.resolve_name(&s).unwrap_or_default())
                    }
                    _ => "ptr".to_string(),
                },
                Type::Int(i) => format!("int{}", i.size() * 8),
                other => other.name().to_string(),
            });
        }
        Some(out)
    }
}

fn both() -> (KernelBtf, btf_rs::Btf) {
    let ours = KernelBtf::load_default().expect("the running kernel's BTF");
    let bytes = std::fs::read(VMLINUX_BTF).unwrap();
    (
        ours,
        btf_rs::Btf::from_bytes(&bytes).expect("btf-rs parses vmlinux"),
    )
}

#[test]
fn kernel_offsets_match_btf_rs() {
    let (ours, b) = both();
    let o = ours.kernel_offsets().unwrap();
    let r = |s: &str, f: &str| oracle::offset_of(&b, s, f).unwrap_or_else(|| panic!("{s}.{f}"));
    let pairs = [
        (o.task_cgroups, r("task_struct", "cgroups")),
        (o.task_pid, r("task_struct", "pid")),
        (o.task_tgid, r("task_struct", "tgid")),
        (o.task_comm, r("task_struct", "comm")),
        (o.task_flags, r("task_struct", "flags")),
        (o.task_real_cred, r("task_struct", "real_cred")),
        (o.task_signal, r("task_struct", "signal")),
        (o.cred_uid, r("cred", "uid")),
        (o.signal_oom_score_adj, r("signal_struct", "oom_score_adj")),
        (o.css_set_subsys, r("css_set", "subsys")),
        (o.css_cgroup, r("cgroup_subsys_state", "cgroup")),
        (o.cgroup_kn, r("cgroup", "kn")),
        (o.kn_id, r("kernfs_node", "id")),
        (o.memcg_css, r("mem_cgroup", "css")),
        (o.css_serial_nr, r("cgroup_subsys_state", "serial_nr")),
        (o.shrinkctl_memcg, r("shrink_control", "memcg")),
        (o.shrinker_count_objects, r("shrinker", "count_objects")),
        (o.oc_memcg, r("oom_control", "memcg")),
        (o.oc_chosen, r("oom_control", "chosen")),
        (o.oc_totalpages, r("oom_control", "totalpages")),
        (o.oc_chosen_points, r("oom_control", "chosen_points")),
    ];
    for (i, (got, want)) in pairs.iter().enumerate() {
        assert_eq!(got, want, "offset #{i}");
    }
    assert_eq!(
        u64::from(o.memory_cgrp_id),
        oracle::enum_value(&b, "cgroup_subsys_id", "memory_cgrp_id").unwrap()
    );
    let f = o.shrinker_names;
    let opt = |s, fl| oracle::offset_of(&b, s, fl);
    if f & SHRINKER_NAMES_NAME != 0 {
        assert_eq!(Some(o.shrinker_name), opt("shrinker", "name"));
    }
    if f & (SHRINKER_NAMES_SB_EMBEDDED | SHRINKER_NAMES_SB_PRIVATE) != 0 {
        assert_eq!(Some(o.sb_s_shrink), opt("super_block", "s_shrink"));
    }
    if f & SHRINKER_NAMES_SB_PRIVATE != 0 {
        assert_eq!(
            Some(o.shrinker_private_data),
            opt("shrinker", "private_data")
        );
    }
    if f & SHRINKER_NAMES_FS_TYPE != 0 {
        assert_eq!(Some(o.sb_s_type), opt("super_block", "s_type"));
        assert_eq!(Some(o.fstype_name), opt("file_system_type", "name"));
    }
    if f & SHRINKER_NAMES_SB_ID != 0 {
        assert_eq!(Some(o.sb_s_id), opt("super_block", "s_id"));
    }
}

#[test]
fn prototypes_memtrace_checks_match_btf_rs() {
    let (ours, b) = both();
    let mut funcs = vec![
        "try_charge_memcg",
        "try_charge",
        "shrink_slab",
        "do_shrink_slab",
    ];
    funcs.push("oom_kill_process");
    let mut tps = vec!["mark_victim"];
    for spec in HOOKS {
        funcs.extend(spec.functions);
        tps.extend(spec.tp_btf.iter().map(|(_, tp)| *tp));
    }
    let mut found = 0;
    for f in funcs {
        let want = oracle::function_params(&b, f);
        found += usize::from(want.is_some());
        assert_eq!(ours.function_params(f), want, "{f}");
    }
    assert!(found > 0, "no hooked function in BTF at all");
    for tp in tps {
        let want = oracle::tracepoint_args(&b, tp);
        assert_eq!(ours.tracepoint_args(tp), want, "{tp}");
        let named = b.resolve_ids_by_name(&format!("btf_trace_{tp}")).is_ok();
        assert_eq!(ours.has_tracepoint(tp), named, "{tp}");
    }
}

/// Every type, in id order, as btf-rs decodes it.
fn btf_rs_types(b: &btf_rs::Btf) -> Vec<btf_rs::Type> {
    (1..)
        .map_while(|id| b.resolve_type_by_id(id).ok())
        .collect()
}

#[test]
fn broad_sweep_matches_btf_rs() {
    use btf_rs::Type as T;
    let (ours, b) = both();
    let all = btf_rs_types(&b);
    let name_of = |t: &T| match t {
        T::Struct(s) | T::Union(s) => b.resolve_name(s).ok(),
        T::Enum(e) => b.resolve_name(e).ok(),
        T::Enum64(e) => b.resolve_name(e).ok(),
        T::Func(f) => b.resolve_name(f).ok(),
        T::Typedef(t) => b.resolve_name(t).ok(),
        _ => None,
    };
    let (mut structs, mut fields, mut funcs, mut enums, mut tps) = (0, 0, 0, 0, 0);
    for t in &all {
        let Some(name) = name_of(t).filter(|n| !n.is_empty()) else {
            continue;
        };
        match t {
            T::Struct(s) | T::Union(s) if !s.members.is_empty() && structs < 3000 => {
                structs += 1;
                // Direct members, and one level into anonymous ones.
                let mut names = Vec::new();
                for m in &s.members {
                    let n = b.resolve_name(m).unwrap_or_default();
                    if !n.is_empty() {
                        names.push(n);
                    } else if let Ok(T::Struct(i) | T::Union(i)) =
                        b.resolve_chained_type(m).map(|t| oracle::strip(&b, t))
                    {
                        names.extend(i.members.iter().filter_map(|m| b.resolve_name(m).ok()));
                    }
                }
                for f in names.iter().filter(|n| !n.is_empty()) {
                    fields += 1;
                    assert_eq!(
                        ours.offset_of(&name, f).ok(),
                        oracle::offset_of(&b, &name, f),
                        "{name}.{f}"
                    );
                }
            }
            T::Func(_) if funcs < 5000 => {
                funcs += 1;
                assert_eq!(
                    ours.function_params(&name),
                    oracle::function_params(&b, &name),
                    "{name}"
                );
            }
            T::Enum(e) if enums < 1000 => {
                enums += 1;
                for m in &e.members {
                    let v = b.resolve_name(m).unwrap();
                    assert_eq!(
                        ours.enum_value(&name, &v).ok(),
                        oracle::enum_value(&b, &name, &v)
                    );
                }
            }
            T::Enum64(e) => {
                for m in &e.members {
                    let v = b.resolve_name(m).unwrap();
                    assert_eq!(
                        ours.enum_value(&name, &v).ok(),
                        oracle::enum_value(&b, &name, &v)
                    );
                }
            }
            T::Typedef(_) if name.starts_with("btf_trace_") => {
                tps += 1;
                let tp = &name["btf_trace_".len()..];
                assert_eq!(
                    ours.tracepoint_args(tp),
                    oracle::tracepoint_args(&b, tp),
                    "{tp}"
                );
            }
            _ => {}
        }
    }
    assert!(structs > 100 && fields > 1000 && funcs > 100 && enums > 10 && tps > 10);
}

/// Builds a BTF blob type by type, in the running machine's byte order.
struct Blob {
    types: Vec<u8>,
    strs: Vec<u8>,
    next_id: u32,
}

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

impl Blob {
    fn new() -> Blob {
        Blob {
            types: Vec::new(),
            strs: vec![0],
            next_id: 1,
        }
    }

    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strs.len() as u32;
        self.strs.extend_from_slice(name.as_bytes());
        self.strs.push(0);
        off
    }

    fn raw(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_ne_bytes());
        }
    }

    /// A `struct btf_type`; the caller adds the kind's trailing data.
    fn ty(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, size_type: u32) -> u32 {
        let n = self.s(name);
        self.raw(&[n, kind << 24 | u32::from(kflag) << 31 | vlen, size_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        let tl = self.types.len() as u32;
        for w in [24, 0, tl, tl, self.strs.len() as u32] {
            out.extend_from_slice(&u32::to_ne_bytes(w));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strs);
        out
    }
}

/// A blob with every kind memtrace reads (and the others, to walk past):
/// a struct with bitfields, an anonymous union, qualifiers, a typedef
/// cycle, enums, a function and a raw tracepoint's typedef.
fn demo() -> Vec<u8> {
    let mut b = Blob::new();
    let int = b.ty("int", INT, false, 0, 4);
    b.raw(&[1 << 24 | 32]); // signed, 32 bits
    let chr = b.ty("char", INT, false, 0, 1);
    b.raw(&[8]);
    let u64_ = b.ty("long long unsigned int", INT, false, 0, 8);
    b.raw(&[64]);
    let cchr = b.ty("", CONST, false, 0, chr);
    let cchr_ptr = b.ty("", PTR, false, 0, cchr);
    let td_u64 = b.ty("u64", TYPEDEF, false, 0, u64_);
    let vol_u64 = b.ty("", VOLATILE, false, 0, td_u64);
    let arr = b.ty("", ARRAY, false, 0, 0);
    b.raw(&[chr, int, 32]);
    // A forward declaration first: `composite` must skip it.
    b.ty("demo", FWD, false, 0, 0);
    let anon = b.ty("", UNION, false, 2, 8);
    let (a, bb) = (b.s("a"), b.s("b"));
    b.raw(&[a, int, 0, bb, vol_u64, 0]);
    // struct demo: kind_flag set, so member offsets carry bitfield sizes.
    let demo_id = b.next_id;
    let demo_ptr_id = demo_id + 1;
    let names = ["name", "", "flags", "lo", "id", "self"].map(|n| b.s(n));
    b.ty("demo", STRUCT, true, 6, 64);
    b.raw(&[names[0], cchr_ptr, 0]);
    b.raw(&[names[1], anon, 64]);
    b.raw(&[names[2], int, 3 << 24 | 128]);
    b.raw(&[names[3], int, 5 << 24 | 131]);
    b.raw(&[names[4], arr, 192]);
    b.raw(&[names[5], demo_ptr_id, 448]);
    assert_eq!(b.ty("", PTR, false, 0, demo_id), demo_ptr_id);
    let colour = b.ty("colour", ENUM, false, 2, 4);
    let (red, blue) = (b.s("RED"), b.s("BLUE"));
    b.raw(&[red, 0, blue, u32::MAX]);
    let _ = colour;
    b.ty("big", ENUM64, false, 1, 8);
    let huge = b.s("HUGE");
    b.raw(&[huge, 2, 1]);
    let proto = b.ty("", FUNC_PROTO, false, 2, int);
    let (x, p) = (b.s("x"), b.s("p"));
    b.raw(&[x, int, p, demo_ptr_id]);
    b.ty("do_demo", FUNC, false, 1, proto);
    let void_ptr = b.ty("", PTR, false, 0, 0);
    let float = b.ty("double", FLOAT, false, 0, 8);
    let tag = b.ty("user", TYPE_TAG, false, 0, demo_id);
    let tagged_ptr = b.ty("", PTR, false, 0, tag);
    let tp_proto = b.ty("", FUNC_PROTO, false, 5, 0);
    let data = b.s("__data");
    b.raw(&[data, void_ptr, 0, tagged_ptr, 0, int, 0, float, 0, cchr_ptr]);
    let tp_ptr = b.ty("", PTR, false, 0, tp_proto);
    b.ty("btf_trace_demo_tp", TYPEDEF, false, 0, tp_ptr);
    // A typedef cycle (no valid kernel has one) used as a member type.
    let loop_a = b.next_id;
    b.ty("loop_a", TYPEDEF, false, 0, loop_a + 1);
    b.ty("loop_b", TYPEDEF, false, 0, loop_a);
    b.ty("cyclic", STRUCT, false, 2, 8);
    let xx = b.s("x");
    b.raw(&[xx, loop_a, 0, 0, loop_a, 32]);
    // Kinds memtrace never asks about, for the walker's record sizes.
    let var = b.ty("v", VAR, false, 0, int);
    b.raw(&[1]);
    b.ty(".data", DATASEC, false, 1, 4);
    b.raw(&[var, 0, 4]);
    b.ty("tag", DECL_TAG, false, 0, demo_id);
    b.raw(&[u32::MAX]);
    b.bytes()
}

fn parse(bytes: Vec<u8>) -> Result<KernelBtf> {
    Ok(KernelBtf {
        btf: Btf::parse(bytes)?,
    })
}

#[test]
fn hand_built_blob() {
    let bytes = demo();
    // An independent parser agrees it is well-formed BTF.
    btf_rs::Btf::from_bytes(&bytes).expect("btf-rs parses the demo blob");
    let k = parse(bytes).unwrap();
    assert_eq!(k.offset_of("demo", "name").unwrap(), 0);
    assert_eq!(k.offset_of("demo", "a").unwrap(), 8, "anonymous union");
    assert_eq!(k.offset_of("demo", "b").unwrap(), 8);
    assert_eq!(k.offset_of("demo", "id").unwrap(), 24);
    assert_eq!(k.offset_of("demo", "self").unwrap(), 56);
    // A byte-aligned bitfield has an offset, but is no field to read.
    assert_eq!(k.offset_of("demo", "flags").unwrap(), 16);
    assert!(k.field("demo", "flags").is_none());
    let e = k.offset_of("demo", "lo").unwrap_err().to_string();
    assert!(e.contains("bitfield"), "{e}");
    assert!(k.offset_of("demo", "nope").is_err());
    assert!(k.offset_of("nope", "x").is_err());
    assert!(k.offset_of("colour", "x").is_err(), "not a struct");
    // Qualifiers and typedefs are stripped.
    assert_eq!(k.string_ptr("demo", "name"), Some(0));
    assert_eq!(k.string_ptr("demo", "id"), None);
    let (_, b) = k.field("demo", "b").unwrap();
    assert_eq!((b.kind, b.size()), (Kind::Int, 8));
    assert_eq!(k.enum_value("colour", "BLUE").unwrap(), 0xffff_ffff);
    assert_eq!(k.enum_value("colour", "RED").unwrap(), 0);
    assert_eq!(k.enum_value("big", "HUGE").unwrap(), 0x1_0000_0002);
    assert!(k.enum_value("big", "SMALL").is_err());
    assert_eq!(k.function_params("do_demo").unwrap(), ["x", "p"]);
    assert_eq!(k.function_params("demo"), None);
    assert_eq!(
        k.tracepoint_args("demo_tp").unwrap(),
        ["ptr demo", "int32", "float", "ptr"]
    );
    assert!(k.has_tracepoint("demo_tp"));
    assert!(!k.has_tracepoint("do_demo"));
    assert_eq!(k.mark_victim_arg(), None);
    // The cycle ends in "not found", not a hang.
    assert_eq!(k.offset_of("cyclic", "x").unwrap(), 0);
    assert!(k.offset_of("cyclic", "y").is_err());
    assert!(k.kernel_offsets().is_err());
}

/// Runs every query; corrupt input may give any answer but must not
/// panic or hang.
fn query_all(k: &KernelBtf) {
    for f in ["name", "a", "b", "flags", "lo", "id", "self", "x", "y"] {
        for s in ["demo", "cyclic", "colour"] {
            let _ = k.offset_of(s, f);
            let _ = k.string_ptr(s, f);
        }
    }
    let _ = k.enum_value("colour", "BLUE");
    let _ = k.enum_value("big", "HUGE");
    let _ = k.function_params("do_demo");
    let _ = k.tracepoint_args("demo_tp");
    let _ = k.has_tracepoint("demo_tp");
    let _ = k.mark_victim_arg();
    let _ = k.kernel_offsets();
}

#[test]
fn truncated_blobs_are_errors() {
    let bytes = demo();
    for len in 0..bytes.len() {
        assert!(parse(bytes[..len].to_vec()).is_err(), "{len} bytes");
    }
}

#[test]
fn corrupt_blobs_never_panic() {
    let bytes = demo();
    for i in 0..bytes.len() {
        for v in [0, 0xff, 0x80, 0x1f, bytes[i] ^ 1] {
            let mut c = bytes.clone();
            c[i] = v;
            if let Ok(k) = parse(c) {
                query_all(&k);
            }
        }
    }
}

fn err(bytes: Vec<u8>) -> String {
    format!("{:#}", parse(bytes).err().expect("refused"))
}

#[test]
fn corrupt_blobs_say_what_is_wrong() {
    type Edit = fn(&mut Vec<u8>);
    let header: [(Edit, &str); 3] = [
        (|c| c[0] ^= 0xff, "magic"),
        (|c| c.swap(0, 1), "byte order"),
        (|c| c[2] = 2, "version 2"),
    ];
    for (edit, says) in header {
        let mut c = demo();
        edit(&mut c);
        assert!(err(c).contains(says), "{says}");
    }

    // Blobs built wrong.
    type Build = fn(&mut Blob);
    let blobs: [(Build, &str); 5] = [
        (|b| _ = b.ty("x", 20, false, 0, 0), "unknown kind 20"),
        (|b| _ = b.ty("p", PTR, false, 0, 7), "refers to type 7"),
        // A struct whose one member refers to type 9.
        (
            |b| _ = (b.ty("s", STRUCT, false, 1, 4), b.raw(&[0, 9, 0])),
            "refers to type 9",
        ),
        (|b| b.raw(&[1000, INT << 24, 4, 32]), "string offset 1000"),
        (|b| _ = b.ty("s", STRUCT, false, 0xffff, 4), "truncated"),
    ];
    for (build, says) in blobs {
        let mut b = Blob::new();
        build(&mut b);
        assert!(err(b.bytes()).contains(says), "{says}");
    }
    // A string table whose last string is not NUL-terminated.
    let mut b = Blob::new();
    b.ty("i", INT, false, 0, 4);
    let mut c = b.bytes();
    *c.last_mut().unwrap() = b'x';
    assert!(err(c).contains("NUL"));
}

#[test]
fn errors_name_the_file() {
    let dir = TempDir::new("btf-test");
    let bytes = demo();
    let path = dir.write("vmlinux", &bytes);
    assert!(KernelBtf::load(&path).is_ok());
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let e = format!("{:#}", KernelBtf::load(&path).err().unwrap());
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("past the end"), "{e}");
    let e = format!("{:#}", KernelBtf::load(&dir.join("nope")).err().unwrap());
    assert!(e.contains("kernel has no BTF"), "{e}");
}
