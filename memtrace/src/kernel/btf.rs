//! Everything memtrace needs from the running kernel's BTF: struct field
//! offsets for the programs, function prototypes to check before hooking a
//! function, and tracepoint prototypes (which change between kernels).
//! The BTF is read by `reader`, not by a general BTF crate; its header says
//! why.
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use memtrace_common::{
    KernelOffsets, MARK_VICTIM_ARG_PID, MARK_VICTIM_ARG_TASK, SHRINKER_NAMES_FS_TYPE,
    SHRINKER_NAMES_NAME, SHRINKER_NAMES_SB_EMBEDDED, SHRINKER_NAMES_SB_ID,
    SHRINKER_NAMES_SB_PRIVATE,
};

mod reader;
#[cfg(test)]
mod reader_tests;

use reader::{Btf, Kind, Member, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// How many typedefs/qualifiers, or levels of nested anonymous members,
/// are followed before giving up: a valid kernel has no cycles, a corrupt
/// file might (libbpf stops at 32 too).
const MAX_DEPTH: usize = 32;
/// How many anonymous members one field lookup descends into in all: a
/// corrupt struct with several anonymous members of its own type would
/// otherwise take 2^MAX_DEPTH steps. task_struct needs a few dozen.
const MAX_ANONYMOUS: u32 = 4096;

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load_default() -> Result<Self> {
        Self::load(Path::new(VMLINUX_BTF))
    }

    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "kernel has no BTF: {} is missing; memtrace needs a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y (every mainstream distribution kernel since 5.x has it)",
                path.display()
            );
        }
        Ok(Self {
            btf: Btf::load(path)?,
        })
    }

    /// The struct or union called `name` that has members (not a forward
    /// declaration).
    fn composite(&self, name: &str) -> Result<Type> {
        let ids = self.btf.ids_by_name(name);
        if ids.is_empty() {
            bail!("type `{name}` not in kernel BTF");
        }
        ids.into_iter()
            .filter_map(|id| self.btf.ty(id))
            .find(|t| matches!(t.kind, Kind::Struct | Kind::Union) && t.vlen() > 0)
            .ok_or_else(|| anyhow!("struct `{name}` not in kernel BTF"))
    }

    /// Skips typedefs and qualifiers.
    fn strip(&self, mut t: Type) -> Type {
        for _ in 0..MAX_DEPTH {
            if !matches!(
                t.kind,
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag
            ) {
                break;
            }
            match self.btf.target(&t) {
                Some(n) => t = n,
                None => break,
            }
        }
        t
    }

    /// The type `id`, typedefs and qualifiers skipped.
    fn stripped(&self, id: u32) -> Option<Type> {
        self.btf.ty(id).map(|t| self.strip(t))
    }

    /// Bit offset and member of `field` (searching anonymous members).
    fn member(&self, strukt: &Type, field: &str) -> Option<(u32, Member)> {
        let mut budget = MAX_ANONYMOUS;
        self.member_in(strukt, field, 0, &mut budget)
    }

    fn member_in(
        &self,
        strukt: &Type,
        field: &str,
        depth: usize,
        budget: &mut u32,
    ) -> Option<(u32, Member)> {
        for m in self.btf.members(strukt) {
            let name = self.btf.name(m.name_off);
            if name == field {
                return Some((m.bit_offset, m));
            }
            if name.is_empty() && depth < MAX_DEPTH && *budget > 0 {
                *budget -= 1;
                // Anonymous struct/union: the kernel nests fields in these.
                let Some(inner) = self.stripped(m.type_id) else {
                    continue;
                };
                if matches!(inner.kind, Kind::Struct | Kind::Union) {
                    if let Some((bits, found)) = self.member_in(&inner, field, depth + 1, budget) {
                        return Some((m.bit_offset.saturating_add(bits), found));
                    }
                }
            }
        }
        None
    }

    /// Byte offset and type (typedefs and qualifiers skipped) of
    /// `strukt.field`, if this kernel has it at a byte boundary.
    fn field(&self, strukt: &str, field: &str) -> Option<(u32, Type)> {
        let s = self.composite(strukt).ok()?;
        let (bits, m) = self.member(&s, field)?;
        if bits % 8 != 0 || m.bitfield_size.is_some_and(|b| b != 0) {
            return None;
        }
        Some((bits / 8, self.stripped(m.type_id)?))
    }

    /// What `t` points to, typedefs and qualifiers skipped; None if `t` is
    /// not a pointer.
    fn pointee(&self, t: &Type) -> Option<Type> {
        match t.kind {
            Kind::Ptr => Some(self.strip(self.btf.target(t)?)),
            _ => None,
        }
    }

    fn is_char(&self, t: &Type) -> bool {
        t.kind == Kind::Int && t.size() == 1
    }

    fn is_struct(&self, t: &Type, name: &str) -> bool {
        t.kind == Kind::Struct && self.btf.type_name(t) == name
    }

    /// `strukt.field` if it is a `char *` (any qualifiers).
    fn string_ptr(&self, strukt: &str, field: &str) -> Option<u32> {
        let (off, t) = self.field(strukt, field)?;
        self.is_char(&self.pointee(&t)?).then_some(off)
    }

    /// The optional offsets that name shrinkers, and the
    /// `SHRINKER_NAMES_*` bits saying which were found; each missing or
    /// unexpected field only disables its own piece.
    fn shrinker_name_offsets(&self, o: &mut KernelOffsets) {
        let mut flags = 0;
        if let Some(off) = self.string_ptr("shrinker", "name") {
            o.shrinker_name = off;
            flags |= SHRINKER_NAMES_NAME;
        }
        // Where a superblock's shrinker lives: embedded in it (before 6.7),
        // or allocated apart with private_data pointing back (6.7+).
        match self.field("super_block", "s_shrink") {
            Some((off, t)) if self.is_struct(&t, "shrinker") => {
                o.sb_s_shrink = off;
                flags |= SHRINKER_NAMES_SB_EMBEDDED;
            }
            Some((off, t))
                if self
                    .pointee(&t)
                    .is_some_and(|p| self.is_struct(&p, "shrinker")) =>
            {
                if let Some((pd, pt)) = self.field("shrinker", "private_data") {
                    if pt.kind == Kind::Ptr {
                        o.sb_s_shrink = off;
                        o.shrinker_private_data = pd;
                        flags |= SHRINKER_NAMES_SB_PRIVATE;
                    }
                }
            }
            _ => {}
        }
        if flags & (SHRINKER_NAMES_SB_EMBEDDED | SHRINKER_NAMES_SB_PRIVATE) != 0 {
            let s_type = self.field("super_block", "s_type").filter(|(_, t)| {
                self.pointee(t)
                    .is_some_and(|p| self.is_struct(&p, "file_system_type"))
            });
            if let (Some((st, _)), Some(name)) =
                (s_type, self.string_ptr("file_system_type", "name"))
            {
                o.sb_s_type = st;
                o.fstype_name = name;
                flags |= SHRINKER_NAMES_FS_TYPE;
            }
            // `char s_id[32]`: read as a string bounded by the array.
            if let Some((id, a)) = self.field("super_block", "s_id") {
                if let Some((elem, len)) = self.btf.array(&a) {
                    if len > 0 && self.stripped(elem).is_some_and(|e| self.is_char(&e)) {
                        o.sb_s_id = id;
                        flags |= SHRINKER_NAMES_SB_ID;
                    }
                }
            }
        }
        o.shrinker_names = flags;
    }

    /// Byte offset of `strukt.field` (searching anonymous members).
    pub fn offset_of(&self, strukt: &str, field: &str) -> Result<u32> {
        let s = self.composite(strukt)?;
        let (bits, _) = self
            .member(&s, field)
            .ok_or_else(|| anyhow!("field `{strukt}.{field}` not in kernel BTF"))?;
        if bits % 8 != 0 {
            bail!("field `{strukt}.{field}` is a bitfield");
        }
        Ok(bits / 8)
    }

    pub fn enum_value(&self, enm: &str, variant: &str) -> Result<u64> {
        let ids = self.btf.ids_by_name(enm);
        if ids.is_empty() {
            bail!("enum `{enm}` not in kernel BTF");
        }
        for t in ids.into_iter().filter_map(|id| self.btf.ty(id)) {
            for (name, val) in self.btf.enumerators(&t) {
                if self.btf.name(name) == variant {
                    return Ok(val);
                }
            }
        }
        bail!("enum value `{enm}::{variant}` not in kernel BTF")
    }

    /// All offsets the programs read. A missing field fails the whole load:
    /// reading at a guessed offset would produce garbage. The exception is
    /// the shrinker names: those are optional, and a missing one is only
    /// not read (`shrinker_names` bits).
    pub fn kernel_offsets(&self) -> Result<KernelOffsets> {
        let memory_cgrp_id = self.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
        let kn_id = self.offset_of("kernfs_node", "id")?;
        // Before 5.5 `kernfs_node.id` was a union of ino/generation; the id
        // the programs read must be the 64-bit inode-compatible one.
        let kn = self.composite("kernfs_node")?;
        if let Some(m) = self
            .btf
            .members(&kn)
            .find(|m| self.btf.name(m.name_off) == "id")
        {
            let t = self.stripped(m.type_id);
            if !t.is_some_and(|t| t.kind == Kind::Int && t.size() == 8) {
                bail!(
                    "kernfs_node.id is not a 64-bit integer on this kernel (pre-5.5 layout is not supported)"
                );
            }
        }
        let mut o = KernelOffsets {
            task_cgroups: self.offset_of("task_struct", "cgroups")?,
            task_pid: self.offset_of("task_struct", "pid")?,
            task_tgid: self.offset_of("task_struct", "tgid")?,
            task_comm: self.offset_of("task_struct", "comm")?,
            task_flags: self.offset_of("task_struct", "flags")?,
            task_real_cred: self.offset_of("task_struct", "real_cred")?,
            task_signal: self.offset_of("task_struct", "signal")?,
            cred_uid: self.offset_of("cred", "uid")?,
            signal_oom_score_adj: self.offset_of("signal_struct", "oom_score_adj")?,
            css_set_subsys: self.offset_of("css_set", "subsys")?,
            memory_cgrp_id: u32::try_from(memory_cgrp_id)?,
            css_cgroup: self.offset_of("cgroup_subsys_state", "cgroup")?,
            cgroup_kn: self.offset_of("cgroup", "kn")?,
            kn_id,
            memcg_css: self.offset_of("mem_cgroup", "css")?,
            css_serial_nr: self.offset_of("cgroup_subsys_state", "serial_nr")?,
            shrinkctl_memcg: self.offset_of("shrink_control", "memcg")?,
            shrinker_count_objects: self.offset_of("shrinker", "count_objects")?,
            oc_memcg: self.offset_of("oom_control", "memcg")?,
            oc_chosen: self.offset_of("oom_control", "chosen")?,
            oc_totalpages: self.offset_of("oom_control", "totalpages")?,
            oc_chosen_points: self.offset_of("oom_control", "chosen_points")?,
            // The memcg chain of an OOM kill: parents by css (the same tree
            // as the kernfs nodes, and the way to each memcg's counters).
            css_parent: self.offset_of("cgroup_subsys_state", "parent")?,
            kn_name: self.offset_of("kernfs_node", "name")?,
            memcg_memory: self.offset_of("mem_cgroup", "memory")?,
            page_counter_usage: self.offset_of("page_counter", "usage")?,
            page_counter_max: self.offset_of("page_counter", "max")?,
            page_counter_failcnt: self.offset_of("page_counter", "failcnt")?,
            valid: 1,
            ..KernelOffsets::default()
        };
        self.shrinker_name_offsets(&mut o);
        Ok(o)
    }

    /// The first type called `name` of kind `kind`.
    fn named(&self, name: &str, kind: Kind) -> Option<Type> {
        self.btf.types_by_name(name).find(|t| t.kind == kind)
    }

    /// Parameter names of a kernel function, if BTF has it.
    pub fn function_params(&self, func: &str) -> Option<Vec<String>> {
        let f = self.named(func, Kind::Func)?;
        let proto = self.btf.target(&f).filter(|p| p.kind == Kind::FuncProto)?;
        Some(
            self.btf
                .params(&proto)
                .map(|p| self.btf.name(p.name_off).to_string())
                .collect(),
        )
    }

    /// Argument types of a raw tracepoint (`btf_trace_<name>` typedef),
    /// without the leading `void *` context: e.g. ["ptr task_struct", "int"].
    pub fn tracepoint_args(&self, tp: &str) -> Option<Vec<String>> {
        let td = self.named(&format!("btf_trace_{tp}"), Kind::Typedef)?;
        let ptr = self.strip(self.btf.target(&td)?);
        if ptr.kind != Kind::Ptr {
            return None;
        }
        let proto = self
            .btf
            .target(&ptr)
            .filter(|p| p.kind == Kind::FuncProto)?;
        let mut out = Vec::new();
        for param in self.btf.params(&proto).skip(1) {
            out.push(self.describe(self.btf.ty(param.type_id)?));
        }
        Some(out)
    }

    fn describe(&self, t: Type) -> String {
        let t = self.strip(t);
        match t.kind {
            Kind::Ptr => match self.btf.target(&t).map(|p| self.strip(p)) {
                Some(s) if s.kind == Kind::Struct => format!("ptr {}", self.btf.type_name(&s)),
                _ => "ptr".to_string(),
            },
            Kind::Int => format!("int{}", u64::from(t.size()) * 8),
            other => other.name().to_string(),
        }
    }

    /// How `mark_victim` passes its victim on this kernel.
    pub fn mark_victim_arg(&self) -> Option<u32> {
        let args = self.tracepoint_args("mark_victim")?;
        match args.first()?.as_str() {
            "ptr task_struct" => Some(MARK_VICTIM_ARG_TASK),
            "int32" => Some(MARK_VICTIM_ARG_PID),
            _ => None,
        }
    }

    pub fn has_tracepoint(&self, tp: &str) -> bool {
        !self.btf.ids_by_name(&format!("btf_trace_{tp}")).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> KernelBtf {
        KernelBtf::load_default().expect(
            "these tests read the running kernel's BTF; it must have /sys/kernel/btf/vmlinux",
        )
    }

    #[test]
    fn offsets_resolve_on_running_kernel() {
        let o = host().kernel_offsets().unwrap();
        assert_eq!(o.valid, 1);
        // css is the first member of mem_cgroup on every kernel memtrace supports.
        assert_eq!(o.memcg_css, 0);
        assert!(o.task_comm > o.task_pid, "comm follows pid in task_struct");
        assert!(o.oc_chosen > o.oc_memcg);
        // `usage` leads struct page_counter; `max` and `failcnt` follow.
        assert_eq!(o.page_counter_usage, 0);
        assert!(o.page_counter_max > o.page_counter_failcnt);
        assert!(o.memcg_memory > o.memcg_css);
    }

    #[test]
    fn shrinker_name_offsets_on_running_kernel() {
        let b = host();
        let o = b.kernel_offsets().unwrap();
        let f = o.shrinker_names;
        // Every kernel memtrace supports has a superblock shrinker in one of
        // the two layouts, and superblocks with a type and an id.
        let embedded = f & SHRINKER_NAMES_SB_EMBEDDED != 0;
        let private = f & SHRINKER_NAMES_SB_PRIVATE != 0;
        assert!(embedded != private, "flags {f:#x}");
        assert_ne!(f & SHRINKER_NAMES_FS_TYPE, 0);
        assert_ne!(f & SHRINKER_NAMES_SB_ID, 0);
        assert_eq!(o.sb_s_id, b.offset_of("super_block", "s_id").unwrap());
        assert_eq!(
            o.sb_s_shrink,
            b.offset_of("super_block", "s_shrink").unwrap()
        );
        if private {
            assert_eq!(
                o.shrinker_private_data,
                b.offset_of("shrinker", "private_data").unwrap()
            );
        }
        // `shrinker.name` only exists with CONFIG_SHRINKER_DEBUG.
        assert_eq!(
            f & SHRINKER_NAMES_NAME != 0,
            b.offset_of("shrinker", "name").is_ok()
        );
        // Wrong types are refused, not read.
        assert_eq!(
            b.string_ptr("super_block", "s_id"),
            None,
            "an array, not a pointer"
        );
        assert_eq!(b.string_ptr("super_block", "no_such_field"), None);
        assert!(b.string_ptr("file_system_type", "name").is_some());
    }

    #[test]
    fn nested_anonymous_members_are_found() {
        // `task_struct.pid` sits after randomized/anonymous groups on some
        // configs; `page.lru` lives in an anonymous union of struct page.
        let b = host();
        assert!(b.offset_of("page", "lru").is_ok());
    }

    #[test]
    fn missing_fields_are_errors_not_zero() {
        let b = host();
        let e = b
            .offset_of("task_struct", "no_such_field")
            .unwrap_err()
            .to_string();
        assert!(e.contains("task_struct.no_such_field"), "{e}");
        assert!(b.offset_of("no_such_struct_xyz", "x").is_err());
        assert!(b.enum_value("cgroup_subsys_id", "nope").is_err());
    }

    #[test]
    fn function_prototypes_have_parameter_names() {
        let b = host();
        let p = b
            .function_params("shrink_slab")
            .expect("shrink_slab in BTF");
        assert_eq!(p, ["gfp_mask", "nid", "memcg", "priority"]);
        assert_eq!(b.function_params("no_such_function_xyz"), None);
    }

    #[test]
    fn tracepoint_prototypes() {
        let b = host();
        let args = b.tracepoint_args("mm_shrink_slab_start").unwrap();
        assert_eq!(args[0], "ptr shrinker");
        assert_eq!(args[1], "ptr shrink_control");
        assert!(b.mark_victim_arg().is_some());
        assert!(!b.has_tracepoint("no_such_tracepoint_xyz"));
    }
}
