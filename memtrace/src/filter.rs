//! `--cgroup GLOB` and `--container ID-PREFIX`: which records to keep.
use anyhow::Result;
use globset::{GlobBuilder, GlobMatcher};

use crate::output::records::{Memcg, Record};

/// A compiled `--cgroup` pattern. Shell rules as in fnmatch(3) with
/// FNM_PATHNAME: `*`, `?` and `[...]` never match `/`; in addition `**`
/// as a whole path component (`/a/**`, `/**/b`, `/a/**/b`) matches any
/// number of components, and `{x,y}` matches either alternative.
#[derive(Clone, Debug)]
pub struct CgroupGlob(GlobMatcher);

impl CgroupGlob {
    /// Compiles `pattern`; a malformed one (unclosed `[` or `{`, `**`
    /// glued to other characters, ...) is an error naming the problem, which
    /// clap reports as a usage error.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pathname_classes(pattern)?;
        GlobBuilder::new(&pattern)
            .literal_separator(true)
            // `\*` is a literal `*`, as in the shell and fnmatch(3).
            .backslash_escape(true)
            .build()
            .map(|g| Self(g.compile_matcher()))
            .map_err(|e| format!("invalid glob: {}", e.kind()))
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

/// The ranges of a bracket expression's body (between `[` or `[!` and the
/// closing `]`), parsed as globset does: the first character is literal
/// (even `]` or `-`), `a-z` is a range, a trailing `-` is literal. Also
/// whether the body ends with such a trailing `-`.
fn class_ranges(body: &[char]) -> (Vec<(char, char)>, bool) {
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut in_range = false;
    for (k, &c) in body.iter().enumerate() {
        match ranges.last_mut() {
            Some(last) if in_range => {
                last.1 = c;
                in_range = false;
            }
            _ if c == '-' && k > 0 => in_range = true,
            _ => ranges.push((c, c)),
        }
    }
    if in_range {
        ranges.push(('-', '-'));
    }
    (ranges, in_range)
}

/// FNM_PATHNAME never lets a bracket expression match `/`, but globset's
/// `literal_separator` only covers `*` and `?`: add `/` to every negated
/// class (`[!a]` becomes `[!a/]`), and refuse a plain class that names `/`
/// (it could never match in a path). Unclosed classes are left for globset
/// to report.
fn pathname_classes(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                out.extend(&chars[i..(i + 2).min(chars.len())]);
                i += 2;
            }
            '[' => {
                let negated = matches!(chars.get(i + 1), Some('!' | '^'));
                let body_start = i + 1 + usize::from(negated);
                // The body's first character belongs to it even if it is `]`.
                let Some(end) = (body_start + 1..chars.len()).find(|&j| chars[j] == ']') else {
                    out.extend(&chars[i..]);
                    break;
                };
                let body = &chars[body_start..end];
                let (ranges, trailing_dash) = class_ranges(body);
                out.extend(&chars[i..body_start]);
                if negated {
                    // Put `/` where it is a single character: at the end,
                    // or before a trailing literal `-` (after it, `/` would
                    // close a range).
                    let at = body.len() - usize::from(trailing_dash);
                    out.extend(&body[..at]);
                    out.push('/');
                    out.extend(&body[at..]);
                } else if ranges.iter().any(|&(lo, hi)| lo <= '/' && '/' <= hi) {
                    return Err(format!(
                        "invalid glob: the class [{}] includes `/`, which no wildcard or class matches in a cgroup path",
                        body.iter().collect::<String>()
                    ));
                } else {
                    out.extend(body);
                }
                out.push(']');
                i = end + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[derive(Default)]
pub struct Filter {
    cgroup: Option<CgroupGlob>,
    container: Option<String>,
}

impl Filter {
    pub fn new(cgroup: Option<CgroupGlob>, container: Option<&str>) -> Self {
        Self {
            cgroup,
            container: container.map(str::to_string),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cgroup.is_none() && self.container.is_none()
    }

    /// A memcg matches when its path matches the glob and its container's
    /// id, short name, runtime name, pod or display name
    /// (`namespace/pod/container`) starts with the prefix.
    pub fn memcg(&self, m: &Memcg) -> bool {
        if let Some(glob) = &self.cgroup {
            if !m.path.as_deref().is_some_and(|p| glob.is_match(p)) {
                return false;
            }
        }
        if let Some(prefix) = &self.container {
            let Some(c) = &m.container else { return false };
            let p = prefix.as_str();
            let named = |s: &Option<String>| s.as_deref().is_some_and(|s| s.starts_with(p));
            if !(c.id.starts_with(p)
                || c.name.starts_with(p)
                || named(&c.runtime_name)
                || named(&c.pod)
                || c.display_name().starts_with(p))
            {
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
    use crate::output::build::named;

    fn memcg(path: &str) -> Memcg {
        named(1, Some(path.into()), false)
    }

    fn glob(pattern: &str) -> Filter {
        Filter::new(Some(CgroupGlob::parse(pattern).unwrap()), None)
    }

    fn matches(pattern: &str, path: &str) -> bool {
        glob(pattern).memcg(&memcg(path))
    }

    #[test]
    fn cgroup_glob_follows_shell_rules() {
        let f = glob("/kubepods.slice/*");
        assert!(f.memcg(&memcg("/kubepods.slice/x")));
        assert!(!f.memcg(&memcg("/kubepods.slice/x/y")), "* stops at /");
        assert!(!f.memcg(&memcg("/system.slice/x")));
        let f = glob("/web-[0-9]");
        assert!(f.memcg(&memcg("/web-1")));
        assert!(!f.memcg(&named(1, None, false)));
    }

    #[test]
    fn star_stays_within_one_component() {
        assert!(matches("/a/*", "/a/"), "* matches the empty string");
        assert!(matches("/a/*.scope", "/a/docker-1.scope"));
        assert!(!matches("/a/*.scope", "/a/b/docker-1.scope"));
        assert!(matches("/*/*", "/a/b"));
        assert!(!matches("*", "/a"), "* does not match the leading /");
        assert!(matches("/a*c", "/abbc"));
        assert!(!matches("/a*c", "/ab/c"));
        // Anchored at both ends: a glob is the whole path.
        assert!(!matches("/a", "/a/b"));
        assert!(!matches("/b", "/a/b"));
    }

    #[test]
    fn double_star_is_any_number_of_components() {
        assert!(matches("/kubepods.slice/**", "/kubepods.slice/x"));
        assert!(matches("/kubepods.slice/**", "/kubepods.slice/x/y/z"));
        assert!(!matches("/kubepods.slice/**", "/system.slice/x"));
        assert!(matches("/**/*.scope", "/a/b/c.scope"));
        assert!(matches("/**/*.scope", "/c.scope"));
        assert!(matches("/a/**/z", "/a/z"));
        assert!(matches("/a/**/z", "/a/b/c/z"));
        assert!(!matches("/a/**/z", "/a/b/c/zz"));
        assert!(matches("**", "/any/thing"));
        // Not a whole component: the same as `*`, as in fnmatch(3).
        assert!(matches("/a**b", "/axyb"));
        assert!(!matches("/a**b", "/a/b"));
    }

    #[test]
    fn question_mark_is_one_character_but_not_slash() {
        assert!(matches("/web-?", "/web-1"));
        assert!(!matches("/web-?", "/web-12"));
        assert!(!matches("/web-?", "/web-"));
        assert!(!matches("/a?b", "/a/b"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(matches("/web-[0-9][0-9]", "/web-42"));
        assert!(!matches("/web-[0-9]", "/web-x"));
        assert!(matches("/web-[abc]", "/web-b"));
        assert!(matches("/web-[!0-9]", "/web-x"));
        assert!(!matches("/web-[!0-9]", "/web-1"));
        assert!(matches("/web-[^0-9]", "/web-x"));
        assert!(
            !matches("/a[!x]b", "/a/b"),
            "a negated class does not match /"
        );
        assert!(matches("/a[*]", "/a*"), "* in a class is literal");
        assert!(!matches("/a[*]", "/ab"));
        // Edge cases of the `/` added to negated classes.
        assert!(matches("/[!]]", "/a") && !matches("/[!]]", "/]"));
        assert!(matches("/[!-]", "/a") && !matches("/[!-]", "/-"));
        assert!(!matches("/a[!x-]b", "/a-b") && !matches("/a[!x-]b", "/a/b"));
        assert!(matches("/a[!x-]b", "/aab"));
        assert!(!matches("/a[!+--]b", "/a,b") && matches("/a[!+--]b", "/a.b"));
        assert!(!matches(r"/a\[!x]b", "/a/b"), "an escaped [ is no class");
        assert!(matches(r"/a\[!x]b", "/a[!x]b"));
    }

    #[test]
    fn backslash_escapes_and_alternates() {
        assert!(matches(r"/a\*", "/a*"));
        assert!(!matches(r"/a\*", "/ab"));
        assert!(matches("/{web,db}-1", "/db-1"));
        assert!(!matches("/{web,db}-1", "/cache-1"));
    }

    #[test]
    fn invalid_globs_are_errors() {
        for bad in ["/web-[0-9", "/a/{x,y", "/[z-a]", "/a[/]b", "/a[.-0]b"] {
            let e = CgroupGlob::parse(bad).unwrap_err();
            assert!(e.starts_with("invalid glob: "), "{bad}: {e}");
        }
        assert_eq!(
            CgroupGlob::parse("/web-[0-9").unwrap_err(),
            "invalid glob: unclosed character class; missing ']'"
        );
    }

    #[test]
    fn container_prefix_matches_id_or_name() {
        let id = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
        let m = memcg(&format!("/system.slice/docker-{id}.scope"));
        assert!(Filter::new(None, Some("4f3c2b")).memcg(&m));
        assert!(!Filter::new(None, Some("abc")).memcg(&m));
        let svc = memcg("/system.slice/nginx.service");
        assert!(Filter::new(None, Some("nginx")).memcg(&svc));
        // Both conditions must hold.
        let f = Filter::new(CgroupGlob::parse("/system.slice/*").ok(), Some("nginx"));
        assert!(f.memcg(&svc));
        assert!(!f.memcg(&memcg("/user.slice/nginx.service")));
    }

    #[test]
    fn container_prefix_matches_runtime_names() {
        let id = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
        let mut m = memcg(&format!("/kubepods/burstable/pod1234/{id}"));
        let c = m.container.as_mut().unwrap();
        c.runtime_name = Some("worker".into());
        c.pod = Some("api-7f9c".into());
        c.namespace = Some("payments".into());
        for p in ["worker", "api-7f", "payments/api-7f9c/w", "4f3c"] {
            assert!(Filter::new(None, Some(p)).memcg(&m), "{p}");
        }
        assert!(!Filter::new(None, Some("web")).memcg(&m));
    }
}
