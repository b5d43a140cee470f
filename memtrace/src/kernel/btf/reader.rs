//! A lean, read-only reader of raw BTF (the format described in the
//! kernel's Documentation/bpf/btf.rst).
//!
//! Why not the btf-rs crate (used here before): btf-rs turns every type
//! into owned Rust values and copies every string into a `HashMap`. For a
//! distribution kernel's 5.5 MB vmlinux BTF (126,000 types) that cost
//! +56 MiB at its peak and 110-150 ms (release build), which set memtrace's
//! whole-process peak RSS (62 MB), for the couple of dozen struct offsets
//! and prototypes memtrace asks for. This reader keeps the file's bytes as
//! they are, indexes them with one `u32` per type plus a name hash table
//! of `u32`s (1.5 MB for that kernel) and decodes records only when asked:
//! +7 MiB and about 15 ms in all. btf-rs stays a dev-dependency: the tests
//! compare the two readers' answers.
//!
//! Every record, string and type id is checked when the file is loaded, so
//! the accessors below cannot read out of bounds; they still return
//! `Option` rather than index, so a bug here is a wrong answer, not a panic.
use std::path::Path;

use anyhow::{Context, Result, bail};

/// `BTF_MAGIC`, in the file's (the running kernel's) byte order.
const MAGIC: u16 = 0xeb9f;
/// `struct btf_header` up to and including `str_len`.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;

/// `BTF_KIND_*`, numbered as in include/uapi/linux/btf.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Type id 0; not a record in the file.
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(k: u32) -> Option<Kind> {
        Some(match k {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the `struct btf_type`.
    fn trailing(self, vlen: usize) -> Option<usize> {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => Some(4),
            Kind::Array => Some(12),
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => vlen.checked_mul(12),
            Kind::Enum | Kind::FuncProto => vlen.checked_mul(8),
            _ => Some(0),
        }
    }

    /// Whether the record's size/type field is a type id.
    fn refers(self) -> bool {
        matches!(
            self,
            Kind::Ptr
                | Kind::Typedef
                | Kind::Volatile
                | Kind::Const
                | Kind::Restrict
                | Kind::Func
                | Kind::FuncProto
                | Kind::Var
                | Kind::DeclTag
                | Kind::TypeTag
        )
    }

    /// The kind's name, as btf-rs spelled it (tracepoint descriptions use it).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Void => "void",
            Kind::Int => "int",
            Kind::Ptr => "ptr",
            Kind::Array => "array",
            Kind::Struct => "struct",
            Kind::Union => "union",
            Kind::Enum => "enum",
            Kind::Fwd => "fwd",
            Kind::Typedef => "typedef",
            Kind::Volatile => "volatile",
            Kind::Const => "const",
            Kind::Restrict => "restrict",
            Kind::Func => "func",
            Kind::FuncProto => "func-proto",
            Kind::Var => "var",
            Kind::Datasec => "datasec",
            Kind::Float => "float",
            Kind::DeclTag => "decl-tag",
            Kind::TypeTag => "type-tag",
            Kind::Enum64 => "enum64",
        }
    }
}

/// One type record, decoded from its fixed 12 bytes.
#[derive(Clone, Copy, Debug)]
pub struct Type {
    pub kind: Kind,
    kind_flag: bool,
    vlen: usize,
    name_off: u32,
    /// `size` for Int/Struct/Union/Enum/Enum64/Float/Datasec, else a type id.
    size_type: u32,
    /// Where the kind-specific data starts in `Btf::data`.
    extra: usize,
}

impl Type {
    const VOID: Type = Type {
        kind: Kind::Void,
        kind_flag: false,
        vlen: 0,
        name_off: 0,
        size_type: 0,
        extra: 0,
    };

    /// Size in bytes (Int, Struct, Union, Enum, Float...).
    pub fn size(&self) -> u32 {
        self.size_type
    }

    /// Member, enumerator or parameter count.
    pub fn vlen(&self) -> usize {
        self.vlen
    }
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Only in structs with kind_flag set; 0 means not a bitfield.
    pub bitfield_size: Option<u32>,
}

/// A function prototype's parameter.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name_off: u32,
    pub type_id: u32,
}

pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Byte offset in `data` of type id `i + 1`'s record.
    records: Vec<u32>,
    /// Open-addressing hash table of named type ids (0: empty slot), keyed
    /// by the name's bytes; its length is a power of two.
    by_name: Vec<u32>,
}

fn hash(name: &[u8]) -> u64 {
    // FNV-1a: short keys, no adversary (the kernel wrote the file).
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn u32_at(data: &[u8], pos: usize) -> Option<u32> {
    let b = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

impl Btf {
    /// Reads and validates the BTF in `path`.
    pub fn load(path: &Path) -> Result<Btf> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(data).with_context(|| format!("corrupt BTF in {}", path.display()))
    }

    /// Validates `data` (one walk over the types) and indexes it.
    pub fn parse(data: Vec<u8>) -> Result<Btf> {
        if data.len() < HEADER_LEN {
            bail!("{} bytes is shorter than a BTF header", data.len());
        }
        if u32::try_from(data.len()).is_err() {
            bail!("larger than 4 GiB");
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic == MAGIC.swap_bytes() {
            bail!("BTF in the other byte order than this machine's");
        }
        if magic != MAGIC {
            bail!("bad magic {magic:#06x}");
        }
        if data[2] != 1 {
            bail!("unsupported BTF version {}", data[2]);
        }
        let field = |i: usize| u32_at(&data, 4 + 4 * i).map_or(0, |v| v as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0), field(1), field(2), field(3), field(4));
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            bail!("header length {hdr_len} out of range");
        }
        let section = |what: &str, off: usize, len: usize| {
            let start = hdr_len.checked_add(off);
            match start.and_then(|s| Some(s..s.checked_add(len)?)) {
                Some(r) if r.end <= data.len() => Ok(r),
                _ => bail!(
                    "{what} section ({len} bytes at {hdr_len} + {off}) runs past the end of the file ({} bytes)",
                    data.len()
                ),
            }
        };
        let types = section("type", type_off, type_len)?;
        let strings = section("string", str_off, str_len)?;
        // Offset 0 is the empty name, and every name ends before the
        // section does; names must be UTF-8 to be compared with ours.
        let strs = &data[strings.clone()];
        if strs.first() != Some(&0) || strs.last() != Some(&0) {
            bail!("string section does not start and end with NUL");
        }
        std::str::from_utf8(strs).context("string section is not UTF-8")?;

        let mut records = Vec::new();
        let mut pos = types.start;
        while pos < types.end {
            let id = records.len() + 1;
            if types.end - pos < TYPE_LEN {
                bail!("type {id} at byte {pos} is truncated");
            }
            let info = u32_at(&data, pos + 4).unwrap_or(0);
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .with_context(|| format!("type {id} has unknown kind {raw_kind}"))?;
            let vlen = (info & 0xffff) as usize;
            let len = kind
                .trailing(vlen)
                .and_then(|t| t.checked_add(TYPE_LEN))
                .filter(|l| *l <= types.end - pos)
                .with_context(|| {
                    format!("type {id} ({}) at byte {pos} is truncated", kind.name())
                })?;
            records.push(pos as u32);
            pos += len;
        }
        let mut btf = Btf {
            data,
            strings,
            records,
            by_name: Vec::new(),
        };
        btf.check_references()?;
        btf.index_names();
        Ok(btf)
    }

    fn count(&self) -> u32 {
        self.records.len() as u32
    }

    /// Every name offset is inside the string section and every type id
    /// refers to a type, so the accessors need no error paths.
    fn check_references(&self) -> Result<()> {
        let str_len = self.strings.len();
        let n = self.count();
        for id in 1..=n {
            let t = self.ty(id).context("type record vanished")?;
            let bad_name = |off: u32| -> Result<()> {
                if off as usize >= str_len {
                    bail!(
                        "type {id} names string offset {off}, past the string section ({str_len} bytes)"
                    );
                }
                Ok(())
            };
            let bad_type = |r: u32| -> Result<()> {
                if r > n {
                    bail!("type {id} refers to type {r}; there are {n}");
                }
                Ok(())
            };
            bad_name(t.name_off)?;
            if t.kind.refers() {
                bad_type(t.size_type)?;
            }
            // Kind-specific data: (entry size, offset of a type id and of
            // a name offset within each entry).
            let (entry, type_at, name_at) = match t.kind {
                Kind::Array => (12, Some(0), None),
                Kind::Struct | Kind::Union => (12, Some(4), Some(0)),
                Kind::FuncProto => (8, Some(4), Some(0)),
                Kind::Datasec => (12, Some(0), None),
                Kind::Enum => (8, None, Some(0)),
                Kind::Enum64 => (12, None, Some(0)),
                _ => continue,
            };
            let entries = if t.kind == Kind::Array { 1 } else { t.vlen };
            for i in 0..entries {
                let at = t.extra + i * entry;
                if let Some(o) = type_at {
                    bad_type(self.u32(at + o).unwrap_or(u32::MAX))?;
                }
                if let Some(o) = name_at {
                    bad_name(self.u32(at + o).unwrap_or(u32::MAX))?;
                }
            }
            if t.kind == Kind::Array {
                // The index type.
                bad_type(self.u32(t.extra + 4).unwrap_or(u32::MAX))?;
            }
        }
        Ok(())
    }

    fn index_names(&mut self) {
        let named = (1..=self.count())
            .filter(|id| self.ty(*id).is_some_and(|t| t.name_off != 0))
            .count();
        let size = (named * 2).max(16).next_power_of_two();
        let mut table = vec![0u32; size];
        let mask = size - 1;
        for id in 1..=self.count() {
            let Some(t) = self.ty(id).filter(|t| t.name_off != 0) else {
                continue;
            };
            let mut slot = hash(self.name_bytes(t.name_off)) as usize & mask;
            while table[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            table[slot] = id;
        }
        self.by_name = table;
    }

    fn u32(&self, pos: usize) -> Option<u32> {
        u32_at(&self.data, pos)
    }

    fn name_bytes(&self, off: u32) -> &[u8] {
        let strs = self.data.get(self.strings.clone()).unwrap_or_default();
        let s = strs.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// The name at string offset `off` ("" for anonymous).
    pub fn name(&self, off: u32) -> &str {
        std::str::from_utf8(self.name_bytes(off)).unwrap_or_default()
    }

    pub fn type_name(&self, t: &Type) -> &str {
        self.name(t.name_off)
    }

    /// Type `id`; 0 is void.
    pub fn ty(&self, id: u32) -> Option<Type> {
        if id == 0 {
            return Some(Type::VOID);
        }
        let pos = *self.records.get(id as usize - 1)? as usize;
        let info = self.u32(pos + 4)?;
        Some(Type {
            kind: Kind::from_raw((info >> 24) & 0x1f)?,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            name_off: self.u32(pos)?,
            size_type: self.u32(pos + 8)?,
            extra: pos + TYPE_LEN,
        })
    }

    /// Ids of the types called `name`, in id order.
    pub fn ids_by_name(&self, name: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        if self.by_name.is_empty() || name.is_empty() {
            return ids;
        }
        let mask = self.by_name.len() - 1;
        let mut slot = hash(name.as_bytes()) as usize & mask;
        while let Some(&id) = self.by_name.get(slot).filter(|id| **id != 0) {
            if self
                .ty(id)
                .is_some_and(|t| self.name_bytes(t.name_off) == name.as_bytes())
            {
                ids.push(id);
            }
            slot = (slot + 1) & mask;
        }
        ids.sort_unstable();
        ids
    }

    pub fn types_by_name(&self, name: &str) -> impl Iterator<Item = Type> + '_ {
        self.ids_by_name(name)
            .into_iter()
            .filter_map(|id| self.ty(id))
    }

    /// The type a pointer, typedef, qualifier, func or var refers to.
    pub fn target(&self, t: &Type) -> Option<Type> {
        if t.kind.refers() {
            self.ty(t.size_type)
        } else {
            None
        }
    }

    /// Members of a struct or union (none for other kinds).
    pub fn members(&self, t: &Type) -> impl Iterator<Item = Member> + '_ {
        let (t, n) = match t.kind {
            Kind::Struct | Kind::Union => (*t, t.vlen),
            _ => (*t, 0),
        };
        (0..n).filter_map(move |i| {
            let at = t.extra + i * 12;
            let offset = self.u32(at + 8)?;
            Some(Member {
                name_off: self.u32(at)?,
                type_id: self.u32(at + 4)?,
                bit_offset: if t.kind_flag {
                    offset & 0xff_ffff
                } else {
                    offset
                },
                bitfield_size: t.kind_flag.then_some(offset >> 24),
            })
        })
    }

    /// Parameters of a function prototype (none for other kinds).
    pub fn params(&self, t: &Type) -> impl Iterator<Item = Param> + '_ {
        let n = if t.kind == Kind::FuncProto { t.vlen } else { 0 };
        let extra = t.extra;
        (0..n).filter_map(move |i| {
            let at = extra + i * 8;
            Some(Param {
                name_off: self.u32(at)?,
                type_id: self.u32(at + 4)?,
            })
        })
    }

    /// Enumerators (name offset, value) of an enum or enum64. A 32-bit
    /// enum's value is its raw `u32`, not sign-extended.
    pub fn enumerators(&self, t: &Type) -> impl Iterator<Item = (u32, u64)> + '_ {
        let (n, entry) = match t.kind {
            Kind::Enum => (t.vlen, 8),
            Kind::Enum64 => (t.vlen, 12),
            _ => (0, 8),
        };
        let (extra, wide) = (t.extra, t.kind == Kind::Enum64);
        (0..n).filter_map(move |i| {
            let at = extra + i * entry;
            let lo = u64::from(self.u32(at + 4)?);
            let hi = if wide {
                u64::from(self.u32(at + 8)?)
            } else {
                0
            };
            Some((self.u32(at)?, hi << 32 | lo))
        })
    }

    /// Element type id and element count of an array.
    pub fn array(&self, t: &Type) -> Option<(u32, u32)> {
        if t.kind != Kind::Array {
            return None;
        }
        Some((self.u32(t.extra)?, self.u32(t.extra + 8)?))
    }
}
