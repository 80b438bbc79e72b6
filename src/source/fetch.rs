//! Getting the exact commit onto disk: a bounded cache of bare repositories, one per repository URL,
//! filled by gix (https with credentials, ssh through the `ssh` program, `file://`); local paths are
//! read in place. Branches and tags are mirrored so signed tags and same-named branches can be checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::CommitId;
use super::repo::{Repo, RepoError};
use crate::reason::Reason;
use crate::repository::access::RepoCredentials;
use crate::repository::url::{self, RepoLocation};

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("cannot fetch {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server refused the credentials (or their absence): asking again will not change it.
    #[error(
        "{url} refused access: {reason}; check the credentials in Argo CD's repository Secret for it (and that they may read the repository)"
    )]
    AccessDenied { url: String, reason: String },
    #[error("{url} was fetched but holds no commit {commit} (not reachable from any branch or tag)")]
    MissingCommit { url: String, commit: CommitId },
    #[error("the repository cache at {path} cannot be used: {reason}")]
    Cache { path: String, reason: String },
    #[error("unsupported repository URL {0:?} (use https://, ssh://, git@host:path, file:// or a local path)")]
    UnsupportedUrl(String),
    #[error(
        "{url}: the credentials of Argo CD's repository Secret {secret} would go over plain http to a host that is not this machine; Weft sends them only over https (or to a loopback address)"
    )]
    CleartextCredentials { url: String, secret: String },
    #[error("{url}: {source}")]
    Repository { url: String, source: RepoError },
}

impl FetchError {
    pub fn reason(&self) -> Reason {
        match self {
            FetchError::Unreachable { .. } => Reason::RepositoryUnreachable,
            FetchError::AccessDenied { .. } => Reason::RepositoryAccessDenied,
            FetchError::MissingCommit { .. } => Reason::RevisionNotFound,
            FetchError::Cache { .. } => Reason::RepositoryCacheError,
            FetchError::UnsupportedUrl(_) => Reason::UnsupportedRepositoryURL,
            FetchError::CleartextCredentials { .. } => Reason::CredentialsOverHttp,
            FetchError::Repository { source, .. } => source.reason(),
        }
    }
}

crate::status::step_error!(FetchError);

/// Where repositories are cached when no directory is given: `$XDG_CACHE_HOME/weft/repos`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("weft")
        .join("repos")
}

/// Where a repository's objects are read from.
pub enum Location {
    /// A local repository, read in place.
    Local(PathBuf),
    /// A remote one, mirrored into the cache.
    Remote(String),
}

pub fn locate(url: &str) -> Result<Location, FetchError> {
    let u = url.trim();
    if u.starts_with("https://")
        || u.starts_with("http://")
        || u.starts_with("ssh://")
        || u.starts_with("file://")
        || u.starts_with("git://")
    {
        return Ok(Location::Remote(u.to_string()));
    }
    // scp-like ssh: user@host:path
    if let Some((left, _)) = u.split_once(':')
        && left.contains('@')
        && !left.contains('/')
    {
        return Ok(Location::Remote(u.to_string()));
    }
    let path = Path::new(u);
    if path.exists() {
        return Ok(Location::Local(path.to_path_buf()));
    }
    Err(FetchError::UnsupportedUrl(url.to_string()))
}

/// How long one fetch of a repository (connecting, negotiating, receiving the pack) may take. Past it
/// the fetch is abandoned and reported as the repository being unreachable (retried with backoff):
/// a server that accepts the connection and never answers cannot hold a verification. The http
/// transport's own requests are bounded by it too, and ssh gives up connecting after
/// `SSH_CONNECT_TIMEOUT` and on a server that stops answering keep-alives.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long ssh may take to connect (TCP and the protocol banner).
const SSH_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A bounded on-disk cache of mirrored repositories.
pub struct RepoCache {
    dir: PathBuf,
    max_repos: usize,
    /// The bound on each fetch (`FETCH_TIMEOUT`).
    timeout: Duration,
    /// One lock per mirror: two verifications of the same repository never fetch into it at once.
    locks: std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>>,
}

impl RepoCache {
    pub fn new(dir: impl Into<PathBuf>, max_repos: usize) -> RepoCache {
        RepoCache::with_timeout(dir, max_repos, FETCH_TIMEOUT)
    }

    /// As `new`, with another bound on each fetch.
    pub fn with_timeout(dir: impl Into<PathBuf>, max_repos: usize, timeout: Duration) -> RepoCache {
        RepoCache { dir: dir.into(), max_repos: max_repos.max(1), timeout, locks: Default::default() }
    }

    /// Opens the repository holding `commits`: in place for a local path, else from the cache, fetching
    /// when a commit is missing or `refresh` asks for current refs (signed tags, branch shadowing).
    pub fn open(
        &self,
        url: &str,
        commits: &[&CommitId],
        credentials: Option<&RepoCredentials>,
        refresh: bool,
    ) -> Result<Repo, FetchError> {
        let cache_err = |path: &Path, e: &dyn std::fmt::Display| FetchError::Cache {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        match locate(url)? {
            Location::Local(path) => {
                let repo = Repo::open(&path).map_err(|e| match e {
                    RepoError::UnsupportedObjectFormat { .. } => {
                        FetchError::Repository { url: url.to_string(), source: e }
                    }
                    other => FetchError::Unreachable { url: url.to_string(), reason: other.to_string() },
                })?;
                check_present(&repo, url, commits)?;
                Ok(repo)
            }
            Location::Remote(remote) => {
                let path = self.dir.join(cache_name(&remote));
                std::fs::create_dir_all(&self.dir).map_err(|e| cache_err(&self.dir, &e))?;
                let lock =
                    self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(path.clone()).or_default().clone();
                let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
                let existing = path.join("HEAD").exists();
                if existing && !refresh {
                    let repo = Repo::open(&path).map_err(|e| cache_err(&path, &e))?;
                    if commits.iter().all(|c| repo.has_commit(c)) {
                        touch(&path);
                        return Ok(repo);
                    }
                }
                fetch_into(&path, &remote, credentials, self.timeout)?;
                touch(&path);
                self.evict(&path);
                let repo = Repo::open(&path).map_err(|e| cache_err(&path, &e))?;
                check_present(&repo, url, commits)?;
                Ok(repo)
            }
        }
    }

    /// Keeps at most `max_repos` mirrors, dropping the least recently used.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut repos: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path() != keep && e.path().join("HEAD").exists())
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), e.path()))
            .collect();
        if repos.len() < self.max_repos {
            return;
        }
        repos.sort();
        let excess = repos.len() + 1 - self.max_repos;
        for (_, path) in repos.into_iter().take(excess) {
            // A mirror in use by another verification stays; it is evicted next time.
            let lock = self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(path.clone()).or_default().clone();
            if let Ok(_held) = lock.try_lock() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

fn check_present(repo: &Repo, url: &str, commits: &[&CommitId]) -> Result<(), FetchError> {
    match commits.iter().find(|c| !repo.has_commit(c)) {
        Some(missing) => Err(FetchError::MissingCommit { url: url.to_string(), commit: (*missing).clone() }),
        None => Ok(()),
    }
}

fn touch(path: &Path) {
    let _ =
        std::fs::File::options().write(true).open(path.join("HEAD")).and_then(|f| f.set_modified(SystemTime::now()));
    let _ = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
}

/// A readable, collision-free directory name for a repository URL (every spelling of it shares one).
fn cache_name(url: &str) -> String {
    let normalized = url::canonical(url);
    let hash = hex::encode(&Sha256::digest(normalized.as_bytes())[..8]);
    let tail: String = normalized
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    format!("{tail}-{hash}.git")
}

/// Mirrors branches and tags of `url` into the bare repository at `path` (created if needed), within
/// `timeout`. gix's transports block on their sockets (git:// and a stalled ssh session have no timeout
/// of their own), so the fetch runs on a thread of its own: past the bound it is told to stop and left
/// behind, and the caller gets `Unreachable` at once. A fetch left behind ends when its connection does;
/// what it wrote is only ever new objects and refs, which the next fetch checks like any other.
fn fetch_into(
    path: &Path,
    url: &str,
    credentials: Option<&RepoCredentials>,
    timeout: Duration,
) -> Result<(), FetchError> {
    let unreachable = |reason: String| FetchError::Unreachable { url: url.to_string(), reason };
    let interrupt = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (p, u, c, stop) = (path.to_path_buf(), url.to_string(), credentials.cloned(), interrupt.clone());
    std::thread::Builder::new()
        .name("git-fetch".into())
        .spawn(move || {
            let _ = tx.send(fetch_now(&p, &u, c.as_ref(), &stop, timeout));
        })
        .map_err(|e| unreachable(format!("cannot start the fetch: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            interrupt.store(true, Ordering::Relaxed);
            Err(unreachable(format!("no answer within {} s; the fetch was abandoned", timeout.as_secs_f64())))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(unreachable("the fetch ended without a result (gix failed unexpectedly)".into()))
        }
    }
}

/// A fetch that failed: refused access (HTTP 401 or 403, ssh's "Permission denied") is a verdict, the
/// rest (no route, no answer, 5xx) is the server being unavailable. Told apart by the transport's own
/// words, as git's error messages do.
fn failed(url: &str, reason: String) -> FetchError {
    let lower = reason.to_lowercase();
    let denied = [
        "status 401",
        "status 403",
        "401 unauthorized",
        "403 forbidden",
        "permission denied",
        "authentication failed",
        "authentication required",
        // gix, when the server asks for credentials (401) and none are configured.
        "no credentials were returned",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if denied {
        FetchError::AccessDenied { url: url.to_string(), reason }
    } else {
        FetchError::Unreachable { url: url.to_string(), reason }
    }
}

fn fetch_now(
    path: &Path,
    url: &str,
    credentials: Option<&RepoCredentials>,
    interrupt: &AtomicBool,
    timeout: Duration,
) -> Result<(), FetchError> {
    let unreachable = |e: &dyn std::error::Error| failed(url, error_chain(e));
    let cache_err =
        |e: &dyn std::fmt::Display| FetchError::Cache { path: path.display().to_string(), reason: e.to_string() };
    if !path.join("HEAD").exists() {
        // Initialize beside the final place and rename, so another process never sees half a repository.
        let parent = path.parent().unwrap_or(path);
        let staging = tempfile::Builder::new().prefix(".init-").tempdir_in(parent).map_err(|e| cache_err(&e))?;
        gix::init_bare(staging.path()).map_err(|e| cache_err(&e))?;
        let _ = std::fs::remove_dir_all(path); // a leftover without HEAD is not a repository
        if let Err(e) = std::fs::rename(staging.path(), path)
            && !path.join("HEAD").exists()
        {
            return Err(cache_err(&e));
        }
    }
    let mut repo = gix::open(path).map_err(|e| cache_err(&e))?;

    // ssh: a private key from the Secret, and host key checking as Argo CD configures it.
    let _key_dir;
    if let Some(creds) = credentials
        && let Some(key) = &creds.ssh_private_key
    {
        let dir = tempfile::tempdir().map_err(|e| unreachable(&e))?;
        let key_path = dir.path().join("id");
        write_private(&key_path, key.as_bytes()).map_err(|e| unreachable(&e))?;
        let mut cmd = format!("{} -i {} -o IdentitiesOnly=yes", ssh_command(), key_path.display());
        if creds.insecure_ignore_host_key {
            cmd.push_str(" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null");
        } else if let Some(hosts) = &creds.known_hosts {
            let hosts_path = dir.path().join("known_hosts");
            std::fs::write(&hosts_path, hosts).map_err(|e| unreachable(&e))?;
            cmd.push_str(&format!(" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}", hosts_path.display()));
        }
        let mut config = repo.config_snapshot_mut();
        config.set_raw_value("core.sshCommand", cmd.as_str()).map_err(|e| unreachable(&e))?;
        config.commit().map_err(|e| unreachable(&e))?;
        _key_dir = dir;
    } else if url.starts_with("ssh://") || !url.contains("://") {
        // Without a key, the same bounds on the ssh program.
        let mut config = repo.config_snapshot_mut();
        config.set_raw_value("core.sshCommand", ssh_command().as_str()).map_err(|e| unreachable(&e))?;
        config.commit().map_err(|e| unreachable(&e))?;
    }

    let remote = repo
        .remote_at(url)
        .map_err(|e| unreachable(&e))?
        .with_refspecs(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], gix::remote::Direction::Fetch)
        .map_err(|e| unreachable(&e))?;
    let mut connection = remote.connect(gix::remote::Direction::Fetch).map_err(|e| unreachable(&e))?;
    if let Some(options) = http_options(&repo, url, credentials, timeout).map_err(|e| unreachable(e.as_ref()))? {
        connection = connection.with_transport_options(options);
    }
    let account = credentials.and_then(|c| match (&c.username, &c.password, &c.bearer_token) {
        (_, _, Some(token)) => Some(("x-access-token".to_string(), token.clone())),
        (Some(u), Some(p), None) => Some((u.clone(), p.clone())),
        (None, Some(p), None) => Some(("git".to_string(), p.clone())),
        _ => None,
    });
    let origin = RepoLocation::parse(url);
    if account.is_some()
        && let Some(o) = &origin
        && o.scheme == "http"
        && !is_loopback(&o.host)
    {
        let secret = credentials.and_then(|c| c.secret.clone()).unwrap_or_default();
        return Err(FetchError::CleartextCredentials { url: url.to_string(), secret });
    }
    // The credentials answer only for the origin they were chosen for: after a redirect to another host,
    // port or scheme, gix asks again for the new origin and gets nothing.
    let connection = connection.with_credentials(move |action| match (&account, action) {
        (Some((username, password)), gix::credentials::helper::Action::Get(ctx)) if asked_by(origin.as_ref(), &ctx) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: username.clone(),
                    password: password.clone(),
                    oauth_refresh_token: None,
                },
                next: ctx.into(),
            }))
        }
        _ => Ok(None),
    });
    let sha256 = |e: &dyn std::error::Error| {
        // The remote advertises 64-hex object names: a SHA-256 repository, which gix reads as SHA-1 only.
        let chain = error_chain(e);
        if chain.contains("64 hexadecimal") {
            FetchError::Repository {
                url: url.to_string(),
                source: RepoError::UnsupportedObjectFormat { path: url.to_string() },
            }
        } else {
            failed(url, chain)
        }
    };
    connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| sha256(&e))?
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| unreachable(&e))?;
    Ok(())
}

/// Is gix asking for credentials for `origin` (by the URL it is about to use, or its protocol and host)?
fn asked_by(origin: Option<&RepoLocation>, ctx: &gix::credentials::protocol::Context) -> bool {
    match &ctx.url {
        Some(url) => {
            let asked = RepoLocation::parse(&String::from_utf8_lossy(url));
            matches!((origin, asked), (Some(o), Some(a)) if a.same_origin(o))
        }
        None => same_origin(origin, ctx.protocol.as_deref(), ctx.host.as_deref()),
    }
}

/// Is the credential request (protocol and `host[:port]`, as gix asks) for `origin`?
fn same_origin(origin: Option<&RepoLocation>, protocol: Option<&str>, host: Option<&str>) -> bool {
    let (Some(origin), Some(protocol), Some(host)) = (origin, protocol, host) else { return false };
    RepoLocation::parse(&format!("{protocol}://{host}/")).is_some_and(|asked| asked.same_origin(origin))
}

/// Exactly a loopback address (never a name that merely starts like one).
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The ssh program, bounded: it gives up connecting after `SSH_CONNECT_TIMEOUT`, and on a server that
/// stops answering keep-alives (three missed, 15 s apart); never prompts.
fn ssh_command() -> String {
    format!(
        "ssh -o BatchMode=yes -o ConnectTimeout={} -o ServerAliveInterval=15 -o ServerAliveCountMax=3",
        SSH_CONNECT_TIMEOUT.as_secs()
    )
}

/// For http(s): each request bounded by `timeout`; for https, trust the certificates Argo CD's
/// `argocd-tls-certs-cm` holds for the host, or skip verification when the repository Secret says
/// `insecure`.
fn http_options(
    repo: &gix::Repository,
    url: &str,
    credentials: Option<&RepoCredentials>,
    timeout: Duration,
) -> Result<Option<Box<dyn std::any::Any>>, Box<dyn std::error::Error + Send + Sync>> {
    use gix::protocol::transport::client::blocking_io::http;
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Ok(None);
    }
    let tls = credentials.filter(|c| url.starts_with("https://") && (c.insecure || c.tls_certs.is_some()));
    let certs = match tls.and_then(|c| c.tls_certs.as_ref()) {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem.as_bytes())?,
        None => Vec::new(),
    };
    let insecure = tls.is_some_and(|c| c.insecure);
    let mut options = repo
        .transport_options(url, None)?
        .and_then(|b| b.downcast::<http::Options>().ok())
        .map(|b| *b)
        .unwrap_or_default();
    let configure = move |mut builder: reqwest::blocking::ClientBuilder| {
        for cert in &certs {
            builder = builder.add_root_certificate(cert.clone());
        }
        // The blocking client's default is 30 s for a whole request, too short for a large pack.
        Ok(builder.danger_accept_invalid_certs(insecure).timeout(timeout))
    };
    let backend = http::reqwest::Options { configure_client: Some(Box::new(configure)), configure_request: None };
    options.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
    Ok(Some(Box::new(options)))
}

/// An error with its causes, so "handshake failed" says why (401, refused connection, …).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    if !data.ends_with(b"\n") {
        f.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_loopback_addresses_are_loopback() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["localhost.evil.test", "127.0.0.1.evil.test", "10.0.0.1", "example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn credentials_answer_only_for_their_origin() {
        let origin = RepoLocation::parse("https://git.example.com/shop/cart.git");
        assert!(same_origin(origin.as_ref(), Some("https"), Some("git.example.com")));
        assert!(same_origin(origin.as_ref(), Some("https"), Some("git.example.com:443")));
        assert!(!same_origin(origin.as_ref(), Some("https"), Some("evil.test")));
        assert!(!same_origin(origin.as_ref(), Some("http"), Some("git.example.com")));
        assert!(!same_origin(origin.as_ref(), Some("https"), Some("git.example.com:8443")));
        assert!(!same_origin(origin.as_ref(), None, Some("git.example.com")));
    }

    #[test]
    fn cache_names_are_readable_and_distinct() {
        let a = cache_name("https://git.example.com/shop/cart.git");
        assert!(a.starts_with("cart-") && a.ends_with(".git"), "{a}");
        assert_eq!(a, cache_name("https://git.example.com/shop/cart"));
        assert_eq!(a, cache_name("https://deploy@git.example.com:443//shop/cart/"));
        assert_ne!(a, cache_name("https://git.example.com/blog/cart"));
    }

    #[test]
    fn urls_are_classified() {
        assert!(matches!(locate("https://x/y"), Ok(Location::Remote(_))));
        assert!(matches!(locate("git@github.example:org/repo.git"), Ok(Location::Remote(_))));
        assert!(matches!(locate("/definitely/not/here"), Err(FetchError::UnsupportedUrl(_))));
        assert!(matches!(locate(env!("CARGO_MANIFEST_DIR")), Ok(Location::Local(_))));
    }
}
