//! Request paths: normalized once, compared on whole segments. Routing and authorization both
//! use these, so one policy decides what a path means.
//!
//! Every request path is normalized once, by [`normalize_path`], before routing and
//! authorization, and the normalized path is what the upstream receives (after `strip_prefix`
//! and the base path). The model is Envoy's `normalize_path` + `merge_slashes` with
//! `path_with_escaped_slashes_action: REJECT_REQUEST`:
//! - percent-encoded unreserved characters (`%2e`, `%41`…) are decoded, other escapes are kept
//!   (with upper-case hex);
//! - `%2F` and `%5C` (encoded `/` and `\`), a raw `\`, `;` (path parameters, which Tomcat and
//!   others strip), `%00` and malformed escapes are refused with 400;
//! - repeated slashes are merged and `.` / `..` segments resolved (never above the root);
//! - route and policy prefixes match whole segments, ignoring ASCII case, so `/ADMIN` meets the
//!   rules of `/admin` on case-insensitive upstreams and `/orders` does not cover
//!   `/orders-internal`.

/// When `prefix` covers `path` on whole segments (ASCII case ignored), the rest of the path
/// (empty, or starting with `/`).
pub fn segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Some(path);
    }
    let head = path.get(..prefix.len())?;
    let rest = &path[prefix.len()..];
    (head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || rest.starts_with('/')))
        .then_some(rest)
}

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath(pub &'static str);

/// A request path after [`normalize_path`]: `forward` is what the upstream receives (ASCII,
/// escapes kept), `decoded` is the same path with every escape decoded, which routing and
/// authorization compare (so `/v1%3Aadmin` meets the rules of `/v1:admin`, and `/caf%C3%A9`
/// those of `/café`). Both have the same segments: encoded `/` and `\` are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedPath {
    pub forward: String,
    pub decoded: String,
}

/// Normalizes a request path (see the module's path policy) into its forwarded and decoded
/// forms.
pub fn normalize(raw: &str) -> Result<NormalizedPath, BadPath> {
    let forward = normalize_path(raw)?;
    let decoded = percent_decode(&forward);
    Ok(NormalizedPath { forward, decoded })
}

/// Decodes every `%XX` (invalid ones are left as they are); bytes that are not UTF-8 become
/// U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |x: u8| (x as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|x| hex(*x)),
            b.get(i + 2).and_then(|x| hex(*x)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Normalizes a request path (see the module's path policy). The result starts with `/`, is
/// ASCII (other bytes are percent-encoded), has no empty, `.` or `..` segments, and keeps a
/// trailing slash.
pub fn normalize_path(raw: &str) -> Result<String, BadPath> {
    if !raw.starts_with('/') {
        return Err(BadPath("the path must start with '/'"));
    }
    // Decode unreserved escapes, refuse the dangerous ones, keep the rest.
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(BadPath("a backslash in the path")),
            b';' => return Err(BadPath("path parameters (';') are not accepted")),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) else {
                    return Err(BadPath("a malformed percent-escape in the path"));
                };
                let c = (h * 16 + l) as u8;
                match c {
                    b'/' | b'\\' => return Err(BadPath("an encoded '/' or '\\' in the path")),
                    0 => return Err(BadPath("an encoded NUL in the path")),
                    c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                        decoded.push(c as char)
                    }
                    c => decoded.push_str(&format!("%{c:02X}")),
                }
                i += 3;
            }
            b if b.is_ascii_control() => return Err(BadPath("a control character in the path")),
            b if !b.is_ascii() => {
                decoded.push_str(&format!("%{b:02X}"));
                i += 1;
            }
            b => {
                decoded.push(b as char);
                i += 1;
            }
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split('/') {
        trailing = false;
        match seg {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_once_by_one_policy() {
        for (raw, want) in [
            ("/", "/"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b/", "/a/b/"),
            ("/a/./b/.", "/a/b/"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/%41dmin", "/Admin"),
            ("/a%20b", "/a%20b"),
            ("/a%7eb", "/a~b"),
            ("/a%c3%a9", "/a%C3%A9"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "/a%2fb",
            "/a%2F..%2Fadmin",
            "/a%5cb",
            "/a\\b",
            "/admin;jsessionid=1",
            "/a%zz",
            "/a%2",
            "/a%00",
            "relative",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }
}
