//! Repository URLs in one canonical form, so that every spelling that reaches the same repository chooses
//! the same policy, the same credentials and the same cache entry.
//!
//! The rules (the README lists them for users), applied to URLs and to policy patterns alike:
//! - trimmed and lower-cased, as Argo CD compares URLs;
//! - scp-like `[user@]host:path` is `ssh://host/path`; `git+ssh://` and `ssh+git://` are `ssh://`;
//! - the user name and password are dropped, and so is the scheme's default port (443, 80, 22, 9418);
//! - the path is percent-decoded, empty and `.` segments are dropped, `..` removes the segment before
//!   it, and a trailing `.git` (or `/.git`) and trailing `/` are removed;
//! - a local path, or a `file://` URL (host empty or `localhost`), is `file://` and the absolute, cleaned
//!   path; a relative local path is taken from the current directory.
//!
//! A pattern keeps its glob characters; one that is neither a URL nor an absolute path (`*`,
//! `*/shop/*`) is only lower-cased.

use std::path::Path;

/// A repository URL's scheme, host, port and path, canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoLocation {
    /// `https`, `http`, `ssh`, `git` or `file` (lower case; other schemes as written).
    pub scheme: String,
    /// Empty for `file`.
    pub host: String,
    /// Only when it is not the scheme's default.
    pub port: Option<u16>,
    /// Path segments, cleaned.
    pub segments: Vec<String>,
}

impl RepoLocation {
    /// Parses a URL or a local path. `None` when it has a scheme but no host where one is needed, or a
    /// port that is not a number.
    pub fn parse(url: &str) -> Option<RepoLocation> {
        let u = url.trim().to_lowercase();
        if let Some(rest) = u.strip_prefix("file://") {
            let path = rest.strip_prefix("localhost").filter(|p| p.starts_with('/')).unwrap_or(rest);
            return Some(local(path));
        }
        if let Some((scheme, rest)) = u.split_once("://") {
            let scheme = match scheme {
                "git+ssh" | "ssh+git" => "ssh",
                s => s,
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
            let (host, port) = split_port(hostport)?;
            if host.is_empty() {
                return None;
            }
            let port = port.filter(|p| Some(*p) != default_port(scheme));
            return Some(RepoLocation { scheme: scheme.to_string(), host, port, segments: clean(path) });
        }
        if let Some((left, path)) = scp_like(&u) {
            let host = left.rsplit_once('@').map(|(_, h)| h).unwrap_or(left);
            return Some(RepoLocation {
                scheme: "ssh".into(),
                host: host.to_string(),
                port: None,
                segments: clean(path),
            });
        }
        Some(local(&u))
    }

    /// The canonical string: `scheme://host[:port]/path` (`file:///path` for local repositories).
    pub fn canonical(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{}{port}/{}", self.scheme, self.host, self.segments.join("/"))
    }

    /// Same scheme, host and port.
    pub fn same_origin(&self, other: &RepoLocation) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }

    /// Same origin, and `prefix`'s path segments are the first segments of this one's.
    pub fn is_under(&self, prefix: &RepoLocation) -> bool {
        self.same_origin(prefix) && self.segments.starts_with(&prefix.segments)
    }
}

/// The canonical form of a repository URL or local path (see the module's rules); an unparseable URL
/// is only lower-cased and trimmed, so it matches nothing but itself.
pub fn canonical(url: &str) -> String {
    RepoLocation::parse(url).map(|l| l.canonical()).unwrap_or_else(|| url.trim().to_lowercase())
}

/// The canonical form of a URL pattern (a glob): URLs and absolute paths as `canonical`, anything else
/// (`*`, `*/shop/*`) only lower-cased, without a trailing `/` or `.git`.
pub fn canonical_pattern(pattern: &str) -> String {
    let p = pattern.trim().to_lowercase();
    if p.contains("://") || p.starts_with('/') || scp_like(&p).is_some() {
        return canonical(&p);
    }
    let mut p = p.trim_end_matches('/').to_string();
    while let Some(s) = p.strip_suffix(".git") {
        p = s.trim_end_matches('/').to_string();
    }
    p
}

/// `[user@]host:path`, as git reads it: a colon before any slash, and no `://`.
fn scp_like(u: &str) -> Option<(&str, &str)> {
    if u.contains("://") {
        return None;
    }
    let colon = u.find(':')?;
    let slash = u.find('/').unwrap_or(usize::MAX);
    (colon < slash && colon > 0).then(|| (&u[..colon], &u[colon + 1..]))
}

fn local(path: &str) -> RepoLocation {
    let absolute = if Path::new(path).is_absolute() {
        path.to_string()
    } else {
        let cwd = std::env::current_dir().map(|d| d.display().to_string().to_lowercase()).unwrap_or_default();
        format!("{cwd}/{path}")
    };
    RepoLocation { scheme: "file".into(), host: String::new(), port: None, segments: clean(&absolute) }
}

fn split_port(hostport: &str) -> Option<(String, Option<u16>)> {
    // An IPv6 literal keeps its brackets; its colons are not a port.
    let (host, port) = match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => (&hostport[..i], Some(&hostport[i + 1..])),
        _ => (hostport, None),
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.trim_end_matches('.').to_string(), port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        "ssh" => Some(22),
        "git" => Some(9418),
        _ => None,
    }
}

/// Percent-decoded segments without empty or `.` ones, `..` applied, and no trailing `.git`.
fn clean(path: &str) -> Vec<String> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy().to_lowercase();
    let mut out: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    // `repo.git`, `repo/.git`, `repo.git/.git`…
    loop {
        match out.last().map(String::as_str) {
            Some(".git") => {
                out.pop();
            }
            Some(last) if last.ends_with(".git") && last.len() > 4 => {
                let trimmed = last[..last.len() - 4].to_string();
                out.pop();
                out.push(trimmed);
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_remote_repository_is_one_url() {
        for (spelling, expected) in [
            ("https://git.example.com/shop/cart", "https://git.example.com/shop/cart"),
            ("HTTPS://Git.Example.com/shop/cart.git/", "https://git.example.com/shop/cart"),
            ("https://git.example.com:443/shop/cart", "https://git.example.com/shop/cart"),
            ("https://deploy:s3cret@git.example.com/shop/cart", "https://git.example.com/shop/cart"),
            ("https://git.example.com//shop/./cart", "https://git.example.com/shop/cart"),
            ("https://git.example.com/shop/x/../cart", "https://git.example.com/shop/cart"),
            ("https://git.example.com/shop/%63art", "https://git.example.com/shop/cart"),
            ("https://git.example.com./shop/cart", "https://git.example.com/shop/cart"),
            ("ssh://git@git.example.com/shop/cart", "ssh://git.example.com/shop/cart"),
            ("git@git.example.com:shop/cart", "ssh://git.example.com/shop/cart"),
            ("git@git.example.com:shop/cart.git", "ssh://git.example.com/shop/cart"),
            ("ssh://git@git.example.com:22/shop/cart", "ssh://git.example.com/shop/cart"),
            ("git+ssh://other@git.example.com/shop/cart/", "ssh://git.example.com/shop/cart"),
            ("git.example.com:shop/cart", "ssh://git.example.com/shop/cart"),
            ("ssh://git@git.example.com:2222/shop/cart", "ssh://git.example.com:2222/shop/cart"),
            ("https://[::1]:8443/x", "https://[::1]:8443/x"),
            ("git://git.example.com:9418/x", "git://git.example.com/x"),
        ] {
            assert_eq!(canonical(spelling), expected, "{spelling}");
        }
        assert_ne!(canonical("https://git.example.com/shop/cart"), canonical("http://git.example.com/shop/cart"));
        assert_ne!(canonical("https://git.example.com:8443/x"), canonical("https://git.example.com/x"));
    }

    #[test]
    fn every_spelling_of_a_local_repository_is_one_url() {
        for spelling in [
            "/srv/x",
            "/srv/x/",
            "/srv/x/.git",
            "/srv/x/.git/",
            "/srv//x",
            "/srv/./x",
            "/srv/y/../x",
            "/SRV/x",
            "file:///srv/x",
            "file:///srv/x/.git",
            "file://localhost/srv/x",
            "file:///srv//x/",
        ] {
            assert_eq!(canonical(spelling), "file:///srv/x", "{spelling}");
        }
    }

    #[test]
    fn patterns_keep_their_globs() {
        assert_eq!(canonical_pattern("*"), "*");
        assert_eq!(canonical_pattern("*/shop/*"), "*/shop/*");
        assert_eq!(canonical_pattern("https://git.example.com/shop/*"), "https://git.example.com/shop/*");
        assert_eq!(canonical_pattern("git@git.example.com:shop/*"), "ssh://git.example.com/shop/*");
        assert_eq!(canonical_pattern("/srv/x/.git"), "file:///srv/x");
        assert_eq!(canonical_pattern("file:///*"), "file:///*");
        assert_eq!(
            canonical_pattern("https://git.example.com/shop/sandbox.git/"),
            "https://git.example.com/shop/sandbox"
        );
    }

    #[test]
    fn credentials_match_by_origin_and_whole_segments() {
        let l = |u: &str| RepoLocation::parse(u).unwrap();
        let creds = l("https://git.example.com/shop");
        assert!(l("https://git.example.com/shop/cart.git").is_under(&creds));
        assert!(l("https://git.example.com/shop").is_under(&creds));
        assert!(!l("https://git.example.com/shopping/cart").is_under(&creds));
        assert!(!l("https://git.example.com.evil.test/shop/cart").is_under(&creds));
        assert!(!l("https://git.example.com@evil.test/shop/cart").is_under(&creds));
        assert!(!l("https://git.example.com:8443/shop/cart").is_under(&creds));
        assert!(!l("http://git.example.com/shop/cart").is_under(&creds));
        assert!(l("https://git.example.com/x").is_under(&l("https://git.example.com")));
    }
}
