//! Path normalization as Envoy does it before routing: `normalize_path` (RFC 3986 dot
//! segments plus the URL canonicalization Envoy borrows from Chromium: unreserved characters
//! decoded, unsafe ones escaped, `\` as `/`), `merge_slashes` and
//! `path_with_escaped_slashes_action`. All of it touches only the path, never the query.

use std::borrow::Cow;
use std::fmt::Write;

/// What to do with `%2F` / `%5C` in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    #[default]
    Keep,
    Reject,
    UnescapeAndRedirect,
    UnescapeAndForward,
}

/// The outcome of normalizing a `:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    /// Forward with this path (unchanged when `None`).
    Continue(Option<String>),
    /// Redirect the client to this path (307).
    Redirect(String),
    /// Reject the request (400).
    Reject,
}

/// The normalization settings of an HCM.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathOptions {
    pub normalize: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

// === impl PathOptions ===

impl PathOptions {
    /// Envoy's `maybeNormalizePath`.
    pub fn apply(&self, path: &str) -> Normalized {
        if path.contains('#') {
            return Normalized::Reject;
        }
        let mut current = Cow::Borrowed(path);
        let mut redirect = false;
        if self.escaped_slashes != EscapedSlashes::Keep
            && let Some(unescaped) = unescape_slashes(&current)
        {
            match self.escaped_slashes {
                EscapedSlashes::Reject => return Normalized::Reject,
                EscapedSlashes::UnescapeAndRedirect => redirect = true,
                _ => {}
            }
            current = Cow::Owned(unescaped);
        }
        if self.normalize {
            match canonicalize(&current) {
                Some(p) => {
                    if p != *current {
                        current = Cow::Owned(p);
                    }
                }
                None => return Normalized::Reject,
            }
        }
        if self.merge_slashes
            && let Cow::Owned(p) = merge_slashes(&current)
        {
            current = Cow::Owned(p);
        }
        match current {
            Cow::Borrowed(_) => Normalized::Continue(None),
            Cow::Owned(p) if redirect => Normalized::Redirect(p),
            Cow::Owned(p) => Normalized::Continue(Some(p)),
        }
    }
}

fn split_query(path: &str) -> (&str, &str) {
    match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    }
}

/// Decodes `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\` in the path; `None` if there are none.
pub fn unescape_slashes(path: &str) -> Option<String> {
    let (p, query) = split_query(path);
    if !p.contains('%') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    let mut changed = false;
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            match (b[i + 1], b[i + 2].to_ascii_lowercase()) {
                (b'2', b'f') => {
                    out.push('/');
                    changed = true;
                    i += 3;
                    continue;
                }
                (b'5', b'c') => {
                    out.push('\\');
                    changed = true;
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        let next = p[i + 1..].find('%').map_or(p.len(), |n| i + 1 + n);
        out.push_str(&p[i..next]);
        i = next;
    }
    out.push_str(query);
    changed.then_some(out)
}

/// Envoy's `mergeSlashes`: runs of `/` in the path become one.
pub fn merge_slashes(path: &str) -> Cow<'_, str> {
    let (p, query) = split_query(path);
    if !p.contains("//") {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    if p.starts_with('/') {
        out.push('/');
    }
    let mut first = true;
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        if !first {
            out.push('/');
        }
        out.push_str(seg);
        first = false;
    }
    if p.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out.push_str(query);
    Cow::Owned(out)
}

/// Unreserved characters: their escapes are decoded.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that must be escaped in a canonical path.
fn needs_escape(b: u8) -> bool {
    b <= 0x20
        || b >= 0x7f
        || matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | b'|' | b'^'
        )
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The canonical form of a path (query kept as is), or `None` when it cannot be made
/// valid (e.g. an escaped NUL). Matches Envoy (Chromium's `CanonicalizePath`, after
/// `..;`/`.;` segments lose their parameters).
pub fn canonicalize(path: &str) -> Option<String> {
    let (p, query) = split_query(path);
    // 1. Characters: escapes of unreserved characters decoded, unsafe characters escaped,
    //    backslashes as slashes.
    let mut chars = String::with_capacity(p.len() + 1);
    if !p.starts_with(['/', '\\']) {
        chars.push('/');
    }
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => chars.push('/'),
            b'%' => match (
                b.get(i + 1).and_then(|x| hex(*x)),
                b.get(i + 2).and_then(|x| hex(*x)),
            ) {
                (Some(h), Some(l)) => {
                    let v = h << 4 | l;
                    if v < 0x20 || v == 0x7f {
                        return None;
                    }
                    if unreserved(v) {
                        chars.push(v as char);
                    } else {
                        chars.push_str(&p[i..i + 3]);
                    }
                    i += 3;
                    continue;
                }
                _ => chars.push('%'),
            },
            c if needs_escape(c) => {
                let _ = write!(chars, "%{c:02X}");
            }
            c => chars.push(c as char),
        }
        i += 1;
    }
    // 2. Dot segments (`..;x` and `.;x` count as `..` and `.`).
    let segments: Vec<&str> = chars[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (n, seg) in segments.iter().enumerate() {
        let seg = if seg.starts_with("..;") {
            ".."
        } else if seg.starts_with(".;") {
            "."
        } else {
            seg
        };
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if n == last {
            out.push("");
        }
    }
    let mut canonical = String::with_capacity(path.len() + 1);
    canonical.push('/');
    canonical.push_str(&out.join("/"));
    canonical.push_str(query);
    Some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs observed from Envoy 1.40 with `normalize_path: true` (the differential test
    /// re-checks a sample against the running Envoy).
    #[test]
    fn canonicalize_matches_envoy() {
        for (input, want) in [
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../a", "/a"),
            ("/a%2Eb", "/a.b"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/%41%42%7e", "/AB~"),
            ("/a%2fb", "/a%2fb"),
            ("/a%5Cb", "/a%5Cb"),
            ("/a\\b", "/a/b"),
            ("/a//b", "/a//b"),
            ("/a%20b", "/a%20b"),
            ("/a%zzb", "/a%zzb"),
            ("/a%", "/a%"),
            ("/a;b", "/a;b"),
            ("/a/..;/b", "/b"),
            ("/%7B%7d", "/%7B%7d"),
            ("/a{b}", "/a%7Bb%7D"),
            ("/a|b^c", "/a%7Cb%5Ec"),
            ("/a\"b", "/a%22b"),
            ("/a`b", "/a%60b"),
            ("/a<b", "/a%3Cb"),
            ("/%e2%82%ac", "/%e2%82%ac"),
            ("/a/b?x=/../y", "/a/b?x=/../y"),
            ("/a%3Fb", "/a%3Fb"),
            ("/a/b/../../../c", "/c"),
            ("//a", "//a"),
            ("///a", "///a"),
            ("//a//b", "//a//b"),
            ("/a/./", "/a/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/a/%2e", "/a/"),
            ("/a/.%2e/b", "/b"),
            ("/[]@:;=$!*+,'()&", "/[]@:;=$!*+,'()&"),
            ("/a%2Fb/../c", "/c"),
            ("/%7E%5F%2D", "/~_-"),
            ("/%3a", "/%3a"),
            ("/a/..%2f", "/a/..%2f"),
            ("/.a/..b/...", "/.a/..b/..."),
            ("/a/.;x/b", "/a/b"),
            ("/.//a", "//a"),
            ("/a/.//b", "/a//b"),
        ] {
            assert_eq!(canonicalize(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(canonicalize("/%00"), None);
    }

    #[test]
    fn merge_slashes_keeps_edges_and_query() {
        assert_eq!(merge_slashes("//a///b//?x=//"), "/a/b/?x=//");
        assert_eq!(merge_slashes("/a/b"), "/a/b");
        assert!(matches!(merge_slashes("/a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_slash_actions() {
        let opts = |a| PathOptions {
            normalize: true,
            merge_slashes: false,
            escaped_slashes: a,
        };
        assert_eq!(
            opts(EscapedSlashes::Keep).apply("/a%2Fb"),
            Normalized::Continue(None)
        );
        assert_eq!(
            opts(EscapedSlashes::Reject).apply("/a%2Fb"),
            Normalized::Reject
        );
        assert_eq!(
            opts(EscapedSlashes::UnescapeAndForward).apply("/a%2f..%2Fb?q=%2F"),
            Normalized::Continue(Some("/b?q=%2F".into()))
        );
        assert_eq!(
            opts(EscapedSlashes::UnescapeAndRedirect).apply("/a%5cb"),
            Normalized::Redirect("/a/b".into())
        );
        assert_eq!(
            opts(EscapedSlashes::Reject).apply("/a/b"),
            Normalized::Continue(None)
        );
    }

    #[test]
    fn fragments_are_rejected_and_merge_runs_last() {
        let opts = PathOptions {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        };
        assert_eq!(opts.apply("/a#b"), Normalized::Reject);
        assert_eq!(
            opts.apply("/a/.//b"),
            Normalized::Continue(Some("/a/b".into()))
        );
    }
}
