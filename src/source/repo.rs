//! One git repository, read with gix: its commits, tags and trees, with limits on what a hostile
//! repository can make Weft read. No signature rules here (`history` has them).

use std::path::Path;

use gix::bstr::ByteSlice;
use thiserror::Error;

use super::CommitId;

use crate::reason::Reason;

/// Trailers that mark a seal commit (compared case-insensitively).
pub const SEAL_TRAILERS: [&str; 2] = ["Weft-Seal", "Argocd-gpg-seal"];

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("cannot open the git repository at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("commit {0} is not in the repository (not reachable from any fetched branch or tag)")]
    MissingCommit(CommitId),
    #[error(
        "commit {0} is not in the repository because it is a shallow clone (made with --depth); strict mode needs the whole history: clone without --depth, or run `git fetch --unshallow`"
    )]
    Shallow(CommitId),
    #[error("{what} {id} cannot be read: {reason}")]
    Corrupt { what: &'static str, id: String, reason: String },
    #[error(
        "{path} is a SHA-256 repository; Weft verifies SHA-1 repositories only (as Argo CD does), so nothing from it is vouched for"
    )]
    UnsupportedObjectFormat { path: String },
    #[error("{0} is not a commit")]
    NotACommit(String),
    #[error("{0:?} names both a branch and a tag; pass the commit SHA")]
    Ambiguous(String),
    #[error("cannot resolve {0:?} to a commit: {1}")]
    Unresolved(String, String),
    #[error("{what} {id} is {size} bytes, more than the {} MiB Weft reads for a {what}", limit >> 20)]
    TooLarge { what: &'static str, id: String, size: u64, limit: u64 },
}

/// The largest commit or tag object Weft reads. Its signature is checked over all of it, so it is read
/// whole; a commit is its header (a few hundred bytes), its message and its signature (a few KiB with
/// the largest keys). A megabyte is a very long message; a larger commit or tag is a verdict of its
/// own (`ObjectTooLarge`), never read.
pub const MAX_SIGNED_OBJECT_BYTES: u64 = 1 << 20;
/// The largest tree object Weft reads: 16 MiB is a directory of some 200,000 entries.
pub const MAX_TREE_BYTES: u64 = 16 << 20;
/// The largest file (blob) Weft reads from a verified tree, to render or to check against source
/// materials. Manifests, values files and charts are far smaller; a larger file under the source path
/// fails the step (`ObjectTooLarge`) rather than being read into memory.
pub const MAX_BLOB_BYTES: u64 = 64 << 20;

fn size_limit(kind: gix::object::Kind) -> u64 {
    match kind {
        gix::object::Kind::Commit | gix::object::Kind::Tag => MAX_SIGNED_OBJECT_BYTES,
        gix::object::Kind::Tree => MAX_TREE_BYTES,
        gix::object::Kind::Blob => MAX_BLOB_BYTES,
    }
}

impl RepoError {
    pub fn reason(&self) -> Reason {
        match self {
            RepoError::Open { .. } => Reason::RepositoryUnreadable,
            RepoError::MissingCommit(_) => Reason::RevisionNotFound,
            RepoError::Shallow(_) => Reason::ShallowRepository,
            RepoError::Corrupt { .. } => Reason::CorruptObject,
            RepoError::UnsupportedObjectFormat { .. } => Reason::UnsupportedObjectFormat,
            RepoError::NotACommit(_) => Reason::RevisionNotACommit,
            RepoError::Ambiguous(_) => Reason::AmbiguousRevision,
            RepoError::Unresolved(..) => Reason::RevisionNotFound,
            RepoError::TooLarge { .. } => Reason::ObjectTooLarge,
        }
    }
}

/// What one commit says about itself.
#[derive(Clone, Debug)]
pub struct CommitRecord {
    pub id: CommitId,
    pub parents: Vec<CommitId>,
    pub signature: Option<String>,
    /// The bytes the signature covers (the commit without its signature header).
    pub payload: Vec<u8>,
    pub committer_time: i64,
    pub author: String,
    pub summary: String,
    pub seal: bool,
}

/// An annotated tag, peeled to the commit it names.
#[derive(Clone, Debug)]
pub struct TagRecord {
    pub name: String,
    /// The tag object's own ID (hex).
    pub id: String,
    pub target: CommitId,
    pub signature: Option<String>,
    pub payload: Vec<u8>,
    pub tagger_time: i64,
}

/// What a ref name turned out to be.
#[derive(Clone, Debug)]
pub enum TagLookup {
    Missing,
    /// A lightweight tag: a ref straight to a commit, with nothing to sign.
    Lightweight(CommitId),
    Annotated(TagRecord),
}

pub struct Repo {
    repo: gix::Repository,
}

impl Repo {
    /// Opens a repository for verification: isolated from the environment and global configuration, and
    /// with object replacement (`refs/replace/*`) off, so only the objects themselves are read. Grafts
    /// are not supported by gix at all; every object read is checked against its name (`checked`).
    pub fn open(path: &Path) -> Result<Repo, RepoError> {
        let mut repo = gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| {
            if is_sha256(path) {
                RepoError::UnsupportedObjectFormat { path: path.display().to_string() }
            } else {
                RepoError::Open { path: path.display().to_string(), reason: e.to_string() }
            }
        })?;
        repo.objects.ignore_replacements = true;
        repo.object_cache_size_if_unset(16 * 1024 * 1024);
        Ok(Repo { repo })
    }

    /// A shallow clone lacks the history beyond its boundary.
    pub fn is_shallow(&self) -> bool {
        self.repo.is_shallow().unwrap_or(false)
    }

    /// Reads an object and checks that its content hashes to its name: a loose object written under
    /// another object's name (a substitution that needs no ref) is refused. Its size, from its header,
    /// is checked first against the bound for its kind (`size_limit`): a larger one is never read.
    fn checked(&self, oid: gix::ObjectId, what: &'static str) -> Result<Option<gix::Object<'_>>, RepoError> {
        let Some(header) = self.repo.try_find_header(oid).map_err(|e| corrupt(what, &oid, e))? else {
            return Ok(None);
        };
        let limit = size_limit(header.kind());
        if header.size() > limit {
            return Err(RepoError::TooLarge { what, id: oid.to_string(), size: header.size(), limit });
        }
        let Some(object) = self.repo.try_find_object(oid).map_err(|e| corrupt(what, &oid, e))? else {
            return Ok(None);
        };
        // The header was read apart from the object; the object read must agree with it.
        if object.data.len() as u64 > limit {
            return Err(RepoError::TooLarge { what, id: oid.to_string(), size: object.data.len() as u64, limit });
        }
        let actual =
            gix::objs::compute_hash(oid.kind(), object.kind, &object.data).map_err(|e| corrupt(what, &oid, e))?;
        if actual != oid {
            return Err(RepoError::Corrupt {
                what,
                id: oid.to_string(),
                reason: format!("its content hashes to {actual}, not to its name: the object store was tampered with"),
            });
        }
        Ok(Some(object))
    }

    pub fn has_commit(&self, id: &CommitId) -> bool {
        id.to_gix().is_some_and(|oid| self.repo.has_object(oid))
    }

    pub fn commit(&self, id: &CommitId) -> Result<CommitRecord, RepoError> {
        let oid = id.to_gix().ok_or_else(|| RepoError::MissingCommit(id.clone()))?;
        let object = self.checked(oid, "commit")?.ok_or_else(|| RepoError::MissingCommit(id.clone()))?;
        if object.kind != gix::object::Kind::Commit {
            return Err(RepoError::NotACommit(id.to_string()));
        }
        let data = &object.data;
        let commit = gix::objs::CommitRef::from_bytes(data, oid.kind()).map_err(|e| corrupt("commit", id, e))?;
        let (signature, payload) = split_signature(data);
        let message = commit.message();
        let seal = message.body().is_some_and(|b| {
            b.trailers().any(|t| SEAL_TRAILERS.iter().any(|s| t.token.eq_ignore_ascii_case(s.as_bytes())))
        });
        let committer_time = commit.committer().map(|c| c.seconds()).unwrap_or(0);
        let author = commit.author().map(|a| format!("{} <{}>", a.name, a.email)).unwrap_or_default();
        Ok(CommitRecord {
            id: id.clone(),
            parents: commit.parents().map(|p| CommitId::from_gix(&p)).collect(),
            signature,
            payload,
            committer_time,
            author,
            summary: message.summary().to_string(),
            seal,
        })
    }

    /// Looks up `refs/tags/<name>` and peels it to a commit.
    pub fn tag(&self, name: &str) -> Result<TagLookup, RepoError> {
        let full = format!("refs/tags/{name}");
        let Some(mut reference) = self.repo.try_find_reference(full.as_str()).map_err(|e| corrupt("tag", &full, e))?
        else {
            return Ok(TagLookup::Missing);
        };
        // The direct target first: peeling rewrites the reference in memory.
        let direct = reference.target().try_id().map(|i| i.to_owned());
        let oid = reference.peel_to_id().map_err(|e| corrupt("tag", &full, e))?.detach();
        let target_id = direct.unwrap_or(oid);
        let object = self.checked(target_id, "tag")?.ok_or_else(|| corrupt("tag", &full, "its object is missing"))?;
        match object.kind {
            gix::object::Kind::Commit => Ok(TagLookup::Lightweight(CommitId::from_gix(&target_id))),
            gix::object::Kind::Tag => {
                let data = object.data.clone();
                let tag = gix::objs::TagRef::from_bytes(&data, oid.kind()).map_err(|e| corrupt("tag", &full, e))?;
                let (signature, payload) = match gix::objs::TagRefIter::signature(&data) {
                    Some((sig, signed)) => (Some(sig.data.to_str_lossy().into_owned()), signed.to_bstring().to_vec()),
                    None => (None, data.to_vec()),
                };
                let tagger_time = tag.tagger().ok().flatten().map(|t| t.seconds()).unwrap_or(0);
                let peeled = self.repo.find_object(oid).map_err(|e| corrupt("tag", &full, e))?;
                if peeled.kind != gix::object::Kind::Commit {
                    return Err(RepoError::NotACommit(full));
                }
                Ok(TagLookup::Annotated(TagRecord {
                    name: name.to_string(),
                    id: target_id.to_hex().to_string(),
                    target: CommitId::from_gix(&oid),
                    signature,
                    payload,
                    tagger_time,
                }))
            }
            _ => Err(RepoError::NotACommit(full)),
        }
    }

    /// Resolves a revision as Argo CD would for a person typing one: a full SHA as is; a semantic-version
    /// constraint as the highest tag satisfying it; else a tag or a branch of that name (both is
    /// ambiguous), else any rev-spec (`HEAD`, a short SHA…), to a commit.
    pub fn resolve(&self, rev: &str) -> Result<CommitId, RepoError> {
        if let Some(id) = CommitId::parse(rev) {
            return if self.has_commit(&id) { Ok(id) } else { Err(RepoError::MissingCommit(id)) };
        }
        if let Some(req) = version_constraint(rev) {
            let tag = self.max_version_tag(&req).ok_or_else(|| {
                RepoError::Unresolved(rev.to_string(), "no tag satisfies this version constraint".into())
            })?;
            return self.resolve(&tag);
        }
        let tag = self.tag(rev)?;
        if !matches!(tag, TagLookup::Missing) && self.branch_exists(rev) {
            return Err(RepoError::Ambiguous(rev.to_string()));
        }
        match tag {
            TagLookup::Lightweight(id) => return Ok(id),
            TagLookup::Annotated(t) => return Ok(t.target),
            TagLookup::Missing => {}
        }
        let spec = if self.branch_exists(rev) { format!("refs/heads/{rev}") } else { rev.to_string() };
        let id = self
            .repo
            .rev_parse_single(spec.as_str())
            .map_err(|e| RepoError::Unresolved(rev.to_string(), e.to_string()))?;
        let commit = id
            .object()
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| RepoError::Unresolved(rev.to_string(), e.to_string()))?;
        Ok(CommitId::from_gix(&commit.id))
    }

    /// The tag whose name is the highest version satisfying `req` (tag names read as Argo CD reads them).
    pub fn max_version_tag(&self, req: &semver::VersionReq) -> Option<String> {
        let platform = self.repo.references().ok()?;
        platform
            .tags()
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|r| {
                let name = r.name().shorten().to_string();
                lenient_version(&name).filter(|v| req.matches(v)).map(|v| (v, name))
            })
            .max()
            .map(|(_, name)| name)
    }

    pub fn branch_exists(&self, name: &str) -> bool {
        matches!(self.repo.try_find_reference(format!("refs/heads/{name}").as_str()), Ok(Some(_)))
    }

    /// Is `ancestor` the same as, or an ancestor of, `descendant`?
    pub fn descends_from(&self, descendant: &CommitId, ancestor: &CommitId) -> Result<bool, RepoError> {
        if descendant == ancestor {
            return Ok(true);
        }
        let (Some(d), Some(a)) = (descendant.to_gix(), ancestor.to_gix()) else {
            return Ok(false);
        };
        if !self.repo.has_object(a) {
            return Err(RepoError::MissingCommit(ancestor.clone()));
        }
        let base = self.repo.merge_base(d, a).map_err(|e| corrupt("commit", descendant, e))?;
        Ok(base.is_some_and(|b| b.detach() == a))
    }

    /// Every entry under `dir` (relative to the repository root; empty for the root) in the commit's
    /// tree, with paths relative to `dir`. `None` when `dir` does not exist in that tree.
    pub fn files_under(&self, commit: &CommitId, dir: &str) -> Result<Option<Vec<TreeFile>>, RepoError> {
        let oid = commit.to_gix().ok_or_else(|| RepoError::MissingCommit(commit.clone()))?;
        let tree = self
            .repo
            .find_commit(oid)
            .map_err(|e| corrupt("commit", commit, e))?
            .tree()
            .map_err(|e| corrupt("tree of", commit, e))?;
        let dir = dir.trim_matches('/');
        let tree = if dir.is_empty() || dir == "." {
            tree
        } else {
            match tree.lookup_entry_by_path(dir).map_err(|e| corrupt("tree of", commit, e))? {
                Some(entry) if entry.mode().is_tree() => {
                    entry.object().map_err(|e| corrupt("tree", dir, e))?.into_tree()
                }
                _ => return Ok(None),
            }
        };
        self.checked(tree.id, "tree")?;
        let files = tree.traverse().breadthfirst.files().map_err(|e| corrupt("tree", dir, e))?;
        // The traversal reads subtrees without checking them; check each against its name.
        for sub in files.iter().filter(|f| f.mode.is_tree()) {
            self.checked(sub.oid, "tree")?;
        }
        Ok(Some(
            files
                .into_iter()
                .filter(|f| !f.mode.is_tree())
                .map(|f| TreeFile {
                    path: f.filepath.to_str_lossy().into_owned(),
                    kind: if f.mode.is_link() {
                        FileKind::Symlink
                    } else if f.mode.is_commit() {
                        FileKind::Submodule
                    } else if f.mode.is_executable() {
                        FileKind::Executable
                    } else {
                        FileKind::Regular
                    },
                    id: f.oid,
                })
                .collect(),
        ))
    }

    pub fn blob(&self, id: &gix::ObjectId) -> Result<Vec<u8>, RepoError> {
        let object = self.checked(*id, "blob")?.ok_or_else(|| corrupt("blob", id, "it is missing"))?;
        Ok(object.detach().data)
    }

    pub fn inner(&self) -> &gix::Repository {
        &self.repo
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Executable,
    Symlink,
    Submodule,
}

/// One entry of a commit's tree.
#[derive(Clone, Debug)]
pub struct TreeFile {
    pub path: String,
    pub kind: FileKind,
    pub id: gix::ObjectId,
}

/// Is the repository at `path` (a work tree or a git directory) in the SHA-256 object format?
fn is_sha256(path: &Path) -> bool {
    [path.join(".git/config"), path.join("config")].iter().any(|c| {
        std::fs::read_to_string(c).is_ok_and(|text| {
            text.lines().any(|l| {
                let l = l.trim().to_ascii_lowercase().replace(' ', "");
                l == "objectformat=sha256"
            })
        })
    })
}

/// The signature and the bytes it covers, as git splits a commit: every `gpgsig` and `gpgsig-sha256`
/// header (and its continuation lines) is left out of the payload, and the signature is the `gpgsig`
/// header's, the one for SHA-1 repositories.
fn split_signature(data: &[u8]) -> (Option<String>, Vec<u8>) {
    let mut payload = Vec::with_capacity(data.len());
    let mut signature: Option<Vec<u8>> = None;
    let mut in_headers = true;
    let mut current: Option<&'static str> = None;
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest.iter().position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(rest.len());
        let (line, tail) = rest.split_at(end);
        rest = tail;
        if in_headers {
            if line == b"\n" {
                in_headers = false;
                current = None;
            } else if let Some(cont) = line.strip_prefix(b" ").filter(|_| current.is_some()) {
                if current == Some("gpgsig")
                    && let Some(sig) = signature.as_mut()
                {
                    sig.extend_from_slice(cont);
                }
                continue;
            } else if let Some(value) = line.strip_prefix(b"gpgsig ") {
                current = Some("gpgsig");
                signature.get_or_insert_with(Vec::new).extend_from_slice(value);
                continue;
            } else if line.starts_with(b"gpgsig-sha256 ") {
                current = Some("gpgsig-sha256");
                continue;
            } else {
                current = None;
            }
        }
        payload.extend_from_slice(line);
    }
    (signature.map(|s| String::from_utf8_lossy(&s).into_owned()), payload)
}

fn corrupt(what: &'static str, id: &(impl std::fmt::Display + ?Sized), e: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt { what, id: id.to_string(), reason: e.to_string() }
}

/// A relative path that stays inside its directory, normalized (`./a//b` → `a/b`); `None` otherwise.
pub fn contained(path: &str) -> Option<String> {
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A targetRevision that Argo CD reads as a semantic-version constraint: not itself a version (a
/// version is a literal tag or branch name), but a valid constraint (`~1.0`, `^2`, `>=1.2, <2`, `1.x`).
pub fn version_constraint(revision: &str) -> Option<semver::VersionReq> {
    if lenient_version(revision).is_some() {
        return None;
    }
    semver::VersionReq::parse(revision.trim()).ok()
}

/// A version as Argo CD's semver library reads tag names: an optional `v`, one to three numbers,
/// optional pre-release and build parts.
fn lenient_version(s: &str) -> Option<semver::Version> {
    let s = s.trim().trim_start_matches(['v', 'V']);
    let (s, build) = s.split_once('+').map(|(a, b)| (a, Some(b))).unwrap_or((s, None));
    let (core, pre) = s.split_once('-').map(|(a, b)| (a, Some(b))).unwrap_or((s, None));
    let numbers: Vec<u64> = core.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if numbers.is_empty() || numbers.len() > 3 {
        return None;
    }
    let mut v = semver::Version::new(numbers[0], *numbers.get(1).unwrap_or(&0), *numbers.get(2).unwrap_or(&0));
    if let Some(p) = pre {
        v.pre = semver::Prerelease::new(p).ok()?;
    }
    if let Some(b) = build {
        v.build = semver::BuildMetadata::new(b).ok()?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_headers_are_split_as_git_does() {
        let commit = b"tree 1\nparent 2\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\ngpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n xyz\n -----END PGP SIGNATURE-----\nauthor A <a@b> 1 +0000\n\nmessage\n gpgsig not a header\n";
        let (sig, payload) = split_signature(commit);
        assert_eq!(sig.as_deref(), Some("-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"));
        assert_eq!(payload, b"tree 1\nparent 2\nauthor A <a@b> 1 +0000\n\nmessage\n gpgsig not a header\n");
        let (none, unsigned) = split_signature(b"tree 1\n\nm\n");
        assert_eq!((none, unsigned.as_slice()), (None, b"tree 1\n\nm\n".as_slice()));
    }

    #[test]
    fn constraints_are_told_from_versions_and_names() {
        for constraint in ["~1.0", "^2", ">=1.2, <2", "1.x", "*"] {
            assert!(version_constraint(constraint).is_some(), "{constraint}");
        }
        for literal in ["v1.0.0", "1.2", "1234567", "HEAD", "main", "release-1"] {
            assert!(version_constraint(literal).is_none(), "{literal}");
        }
        assert_eq!(lenient_version("v1.2").map(|v| v.to_string()).as_deref(), Some("1.2.0"));
        assert_eq!(lenient_version("1.0.0-rc.1").map(|v| v.to_string()).as_deref(), Some("1.0.0-rc.1"));
        assert!(lenient_version("v1.2.3.4").is_none());
    }
}
