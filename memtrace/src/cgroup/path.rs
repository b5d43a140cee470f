//! The one cgroup-path normaliser: memcg paths are relative to the memory
//! hierarchy's root and written `/a/b` (the root is `/`), whatever form the
//! kernel log, a flag, a file or a caller used.

use std::borrow::Cow;

/// `/a/b` for `/a/b`, `a//b/`, `a/b` and the like; `/` for the root and
/// the empty path. Borrows when `path` is already in that form. Keeps `.`
/// and `..` components as they are: for display and attribution; use
/// [`normalize`] for a path that will be looked up on disk.
pub fn canonical(path: &str) -> Cow<'_, str> {
    let clean =
        path == "/" || (path.starts_with('/') && !path.ends_with('/') && !path.contains("//"));
    if clean {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 1);
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// [`canonical`], or None when a component is `.` or `..`: joined to the
/// hierarchy's root, such a path could name a directory that is not the
/// memcg it spells (or none below the root at all).
pub fn normalize(rel: &str) -> Option<Cow<'_, str>> {
    if rel.split('/').any(|c| c == "." || c == "..") {
        return None;
    }
    Some(canonical(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("/a/b").unwrap(), "/a/b");
        assert!(matches!(normalize("/a/b").unwrap(), Cow::Borrowed(_)));
        assert_eq!(normalize("a//b/").unwrap(), "/a/b");
        assert_eq!(normalize("a/b").unwrap(), "/a/b");
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("").unwrap(), "/");
        assert_eq!(normalize("//").unwrap(), "/");
        assert_eq!(normalize("/a/../b"), None);
        assert_eq!(normalize("./a"), None);
        assert_eq!(normalize("/a/.."), None);
        // Names are bytes to the kernel: anything but `/` stays.
        assert_eq!(normalize("/a b/\x1b[1m").unwrap(), "/a b/\x1b[1m");
        assert_eq!(normalize("/a/.b/..c").unwrap(), "/a/.b/..c");
    }

    #[test]
    fn canonical_keeps_dot_components() {
        assert_eq!(canonical("a//../b/"), "/a/../b");
        assert_eq!(canonical("/./"), "/.");
        assert!(matches!(canonical("/a/b"), Cow::Borrowed(_)));
        assert_eq!(canonical(""), "/");
        assert_eq!(canonical("///"), "/");
    }
}
