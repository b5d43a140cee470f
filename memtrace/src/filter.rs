//! `--cgroup GLOB` and `--container ID-PREFIX`: which records to keep.
use std::ffi::CString;

use anyhow::{Result, bail};

use crate::output::records::{Memcg, Record};

#[derive(Default)]
pub struct Filter {
    cgroup: Option<CString>,
    container: Option<String>,
}

impl Filter {
    pub fn new(cgroup: Option<&str>, container: Option<&str>) -> Result<Self> {
        let cgroup = match cgroup {
            Some(g) => match CString::new(g) {
                Ok(c) => Some(c),
                Err(_) => bail!("--cgroup: the pattern contains a NUL byte"),
            },
            None => None,
        };
        Ok(Self {
            cgroup,
            container: container.map(str::to_string),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.cgroup.is_none() && self.container.is_none()
    }

    /// A memcg matches when its path matches the glob (shell rules, `*`
    /// does not cross `/`) and its container id or name starts with the
    /// prefix.
    pub fn memcg(&self, m: &Memcg) -> bool {
        if let Some(glob) = &self.cgroup {
            let Some(path) = m.path.as_deref().and_then(|p| CString::new(p).ok()) else {
                return false;
            };
            if unsafe { libc::fnmatch(glob.as_ptr(), path.as_ptr(), libc::FNM_PATHNAME) } != 0 {
                return false;
            }
        }
        if let Some(prefix) = &self.container {
            let Some(c) = &m.container else { return false };
            if !(c.id.starts_with(prefix.as_str()) || c.name.starts_with(prefix.as_str())) {
                return false;
            }
        }
        true
    }

    /// Header and system records always pass; an OOM kill passes if either
    /// of its memcgs does.
    pub fn record(&self, r: &Record) -> bool {
        if self.is_empty() {
            return true;
        }
        match r {
            Record::Header(_) | Record::System(_) | Record::Capture(_) => true,
            Record::OomPostmortem(p) => self.record(&Record::from(p.kill.clone())),
            Record::MemcgInterval(i) => self.memcg(&i.memcg),
            Record::SlowCharge(s) | Record::SlowReclaim(s) => self.memcg(&s.memcg),
            Record::OomKill(k) => {
                k.victim_memcg.as_ref().is_some_and(|m| self.memcg(m))
                    || k.oom_memcg.as_ref().is_some_and(|m| self.memcg(m))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::container::attribute;

    fn memcg(path: &str) -> Memcg {
        Memcg {
            id: 1,
            path: Some(path.into()),
            deleted: false,
            container: Some(attribute(path)),
        }
    }

    #[test]
    fn cgroup_glob_follows_shell_rules() {
        let f = Filter::new(Some("/kubepods.slice/*"), None).unwrap();
        assert!(f.memcg(&memcg("/kubepods.slice/x")));
        assert!(!f.memcg(&memcg("/kubepods.slice/x/y")), "* stops at /");
        assert!(!f.memcg(&memcg("/system.slice/x")));
        let f = Filter::new(Some("/web-[0-9]"), None).unwrap();
        assert!(f.memcg(&memcg("/web-1")));
        assert!(!f.memcg(&Memcg {
            id: 1,
            path: None,
            deleted: false,
            container: None
        }));
    }

    #[test]
    fn container_prefix_matches_id_or_name() {
        let id = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
        let m = memcg(&format!("/system.slice/docker-{id}.scope"));
        assert!(Filter::new(None, Some("4f3c2b")).unwrap().memcg(&m));
        assert!(!Filter::new(None, Some("abc")).unwrap().memcg(&m));
        let svc = memcg("/system.slice/nginx.service");
        assert!(Filter::new(None, Some("nginx")).unwrap().memcg(&svc));
    }
}
