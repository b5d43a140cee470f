//! The record fields an attach plan may be unable to see, as a type.
//!
//! A plan yields an [`Unseen`] set (kernel/plan.rs); the record builder,
//! `top`, `report` and `record` ask it instead of matching field names, so a
//! typo is a compile error, not a null silently turned into a number. The
//! names are the ones the stream header lists in `unavailable` (part of the
//! file format, docs/events.md); `fields_are_real_record_keys` below proves
//! each one is a key of the record it names.
use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! fields {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A record field that exists only when a hook can see it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $($(#[$doc])* $variant,)*
        }

        impl Field {
            pub const ALL: &[Field] = &[$(Field::$variant,)*];

            /// The name in the header's `unavailable` list: the key in a
            /// `memcg_interval` record, `oom_kill.<key>` in an `oom_kill`
            /// record, `system.<key>` in a `system` record.
            pub fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)*
                }
            }
        }
    };
}

fields! {
    ChargeCalls = "charge_calls",
    ChargeFailures = "charge_failures",
    ChargeNs = "charge_ns",
    ChargePages = "charge_pages",
    ChargeP50Ns = "charge_p50_ns",
    ChargeP99Ns = "charge_p99_ns",
    ReclaimDirectCount = "reclaim_direct_count",
    ReclaimDirectNs = "reclaim_direct_ns",
    ReclaimDirectPages = "reclaim_direct_pages",
    ReclaimMemcgCount = "reclaim_memcg_count",
    ReclaimMemcgNs = "reclaim_memcg_ns",
    ReclaimMemcgPages = "reclaim_memcg_pages",
    ReclaimP50Ns = "reclaim_p50_ns",
    ReclaimP99Ns = "reclaim_p99_ns",
    ShrinkSlabCalls = "shrink_slab_calls",
    ShrinkSlabNs = "shrink_slab_ns",
    ShrinkSlabFreed = "shrink_slab_freed",
    ShrinkSlabKswapdNs = "shrink_slab_kswapd_ns",
    DoShrinkSlabCalls = "do_shrink_slab_calls",
    DoShrinkSlabZero = "do_shrink_slab_zero",
    DoShrinkSlabFreed = "do_shrink_slab_freed",
    DoShrinkSlabNs = "do_shrink_slab_ns",
    /// The per-shrinker rows of a `memcg_interval` record.
    Shrinkers = "shrinkers",
    OomTotalpages = "oom_kill.totalpages",
    OomChosenPoints = "oom_kill.chosen_points",
    OomTriggerPid = "oom_kill.trigger.pid",
    KswapdWakes = "system.kswapd_wakes",
    KswapdNs = "system.kswapd_ns",
}

impl Field {
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }
}

/// The fields a plan leaves null. Read back from a file, names this
/// memtrace does not know (a newer writer's) are ignored: they name no
/// field this version could show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unseen(BTreeSet<Field>);

impl Unseen {
    pub fn new(fields: impl IntoIterator<Item = Field>) -> Self {
        Self(fields.into_iter().collect())
    }

    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        Self::new(
            names
                .into_iter()
                .filter_map(|n| Field::from_name(n.as_ref())),
        )
    }

    pub fn sees(&self, f: Field) -> bool {
        !self.0.contains(&f)
    }

    /// `value` where the plan sees `f`, else None (null, never 0).
    pub fn get<T>(&self, f: Field, value: T) -> Option<T> {
        self.sees(f).then_some(value)
    }

    /// Adds the fields `other` cannot see (several headers in one file).
    pub fn extend(&mut self, other: &Unseen) {
        self.0.extend(other.0.iter().copied());
    }

    pub fn iter(&self) -> impl Iterator<Item = Field> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.iter().map(|f| f.name().to_string()).collect()
    }
}

impl Serialize for Unseen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Field::name))
    }
}

impl<'de> Deserialize<'de> for Unseen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_names(Vec::<String>::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let names: BTreeSet<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Field::ALL.len());
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(*f));
        }
        let u = Unseen::from_names(["charge_calls", "from_a_newer_memtrace"]);
        assert_eq!(u, Unseen::new([Field::ChargeCalls]));
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"["charge_calls"]"#);
    }
}
