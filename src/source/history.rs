//! Commits and tags of one git repository, read with gix, and the signature rules over them:
//! `head` (the synced commit, or the annotated tag that names it), `strict` (every ancestor back to seal
//! commits), signed tags, and downgrades.
//!
//! Reading objects is sequential and cheap; checking signatures is the expensive part, so it runs on
//! every core (rayon). Commits whose whole history already verified under the same trust are cached and
//! end the walk, so after one new commit only that commit is checked.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::Serialize;

use super::repo::{CommitRecord, Repo, RepoError, TagLookup, version_constraint};
use super::{CommitId, KeyInfo, SignatureCheck, Signer, Trust};

use crate::reason::Reason;

/// A commit whose signature does not count, described for a person.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitFailure {
    pub commit: CommitId,
    pub author: String,
    pub summary: String,
    pub reason: Reason,
    pub detail: String,
    /// The key that made the signature, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyInfo>,
}

/// The result of checking a commit (head) or its history (strict).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkOutcome {
    /// Signatures checked in this run.
    pub checked: usize,
    /// Commits whose history had already been verified under the same keys (the walk stopped there).
    pub cached: usize,
    /// Seal commits that ended the walk.
    pub seals: Vec<CommitId>,
    /// Who signed the target commit, when it is signed by an allowed key.
    pub head_signer: Option<Signer>,
    /// Every distinct signer seen.
    pub signers: BTreeSet<String>,
    /// The failing commit nearest the target, and how many failed in all.
    pub failure: Option<CommitFailure>,
    pub failures: usize,
}

/// Cache of commits whose whole history (back to seals) verified, per trust identity. Each entry keeps
/// its own signer and the seals its history ends at, so a walk that stops at a cached commit reports
/// exactly what a full walk would, and the time until which the verdict holds (the earliest key expiry).
#[derive(Default)]
pub struct VerifiedCommits {
    inner: Mutex<HashMap<String, HashMap<CommitId, CachedCommit>>>,
}

#[derive(Clone, Debug)]
struct CachedCommit {
    until: i64,
    signer: Arc<Signer>,
    seals: Arc<Vec<CommitId>>,
}

/// Upper bound on cached commits per trust; beyond it the cache starts over.
const CACHE_LIMIT: usize = 2_000_000;

impl VerifiedCommits {
    fn get(&self, trust: &str, id: &CommitId, now: i64) -> Option<CachedCommit> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.get(trust).and_then(|m| m.get(id)).filter(|c| c.until > now).cloned()
    }

    fn insert_all(&self, trust: &str, entries: impl IntoIterator<Item = (CommitId, CachedCommit)>) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.entry(trust.to_string()).or_default();
        if map.len() > CACHE_LIMIT {
            map.clear();
        }
        map.extend(entries);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.values().map(HashMap::len).sum()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check(trust: &Trust, rec: &CommitRecord, now: i64) -> SignatureCheck {
    match &rec.signature {
        None => SignatureCheck::Unsigned,
        Some(sig) => trust.check(rec.id.as_str(), &rec.payload, sig, rec.committer_time, now),
    }
}

fn failure(rec: &CommitRecord, result: &SignatureCheck) -> CommitFailure {
    CommitFailure {
        commit: rec.id.clone(),
        author: rec.author.clone(),
        summary: rec.summary.clone(),
        reason: result.reason(),
        detail: result.to_string(),
        key: result.key(),
    }
}

/// `head`: only the target commit's own signature.
pub fn verify_head(repo: &Repo, target: &CommitId, trust: &Trust, now: i64) -> Result<WalkOutcome, RepoError> {
    let rec = repo.commit(target)?;
    let result = check(trust, &rec, now);
    let mut out = WalkOutcome { checked: 1, ..Default::default() };
    match &result {
        SignatureCheck::Good(s) => {
            out.signers.insert(s.to_string());
            out.head_signer = Some(s.clone());
        }
        other => {
            out.failure = Some(failure(&rec, other));
            out.failures = 1;
        }
    }
    Ok(out)
}

/// `strict`: every commit reachable from the target must be signed by an allowed key, except that a
/// seal commit (a `Weft-Seal:` or `Argocd-gpg-seal:` trailer) whose own signature is good ends the walk
/// along that path. A seal signed by anyone else is an ordinary commit.
pub fn verify_strict(
    repo: &Repo,
    target: &CommitId,
    trust: &Trust,
    cache: &VerifiedCommits,
    now: i64,
) -> Result<WalkOutcome, RepoError> {
    let mut out = WalkOutcome::default();
    let mut queue = VecDeque::from([target.clone()]);
    let mut seen = HashSet::new();
    let mut hits: HashMap<CommitId, CachedCommit> = HashMap::new();
    // Walk order (breadth-first from the target) is kept, so the first failure is the nearest one.
    // Seals are checked during the walk (they decide whether it goes on); the other commits go to every
    // core as soon as they are read, so reading and checking overlap.
    let mut order: Vec<(Arc<CommitRecord>, Option<SignatureCheck>)> = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Arc<CommitRecord>)>();
    let checked = std::thread::scope(|scope| {
        let checker = scope.spawn(move || {
            let mut done: Vec<(usize, SignatureCheck)> =
                rx.into_iter().par_bridge().map(|(i, rec)| (i, check(trust, &rec, now))).collect();
            done.sort_unstable_by_key(|(i, _)| *i);
            done
        });
        let walked = (|| -> Result<(), RepoError> {
            while let Some(id) = queue.pop_front() {
                if !seen.insert(id.clone()) {
                    continue;
                }
                if let Some(hit) = cache.get(trust.id(), &id, now) {
                    out.cached += 1;
                    hits.insert(id, hit);
                    continue;
                }
                let rec = Arc::new(repo.commit(&id).map_err(|e| match e {
                    RepoError::MissingCommit(id) if repo.is_shallow() => RepoError::Shallow(id),
                    other => other,
                })?);
                if rec.seal {
                    let result = check(trust, &rec, now);
                    if !result.is_good() {
                        // A seal by anyone else is just a commit: the walk goes on.
                        queue.extend(rec.parents.iter().cloned());
                    }
                    order.push((rec, Some(result)));
                    continue;
                }
                queue.extend(rec.parents.iter().cloned());
                // The checker only goes away when this walk does: a failed send cannot happen.
                let _ = tx.send((order.len(), rec.clone()));
                order.push((rec, None));
            }
            Ok(())
        })();
        drop(tx);
        let checked = checker.join().unwrap_or_default();
        walked.map(|()| checked)
    })?;
    let mut checked = checked.into_iter().peekable();
    let results: Vec<SignatureCheck> = order
        .iter()
        .enumerate()
        .map(|(i, (_, done))| match done {
            Some(result) => result.clone(),
            None => match checked.next_if(|(j, _)| *j == i) {
                Some((_, result)) => result,
                None => SignatureCheck::Malformed("the signature check did not run".into()),
            },
        })
        .collect();
    out.checked = order.len();
    // Few distinct signers sign many commits: name each once.
    let mut distinct: Vec<&Signer> = Vec::new();
    for ((rec, _), result) in order.iter().zip(&results) {
        match result {
            SignatureCheck::Good(s) => {
                if !distinct.contains(&s) {
                    distinct.push(s);
                }
            }
            other => {
                out.failures += 1;
                if out.failure.is_none() {
                    out.failure = Some(failure(rec, other));
                }
            }
        }
    }
    out.signers.extend(distinct.iter().map(|s| s.to_string()));
    if out.failure.is_some() {
        return Ok(out);
    }

    // Everything verified: work out, per commit, its signer and the seals its history ends at.
    let mut signers: HashMap<CommitId, Arc<Signer>> = HashMap::new();
    let mut interned: Vec<Arc<Signer>> = Vec::new();
    for ((rec, _), result) in order.iter().zip(&results) {
        if let SignatureCheck::Good(s) = result {
            let shared = match interned.iter().find(|i| ***i == *s) {
                Some(i) => i.clone(),
                None => {
                    interned.push(Arc::new(s.clone()));
                    interned[interned.len() - 1].clone()
                }
            };
            signers.insert(rec.id.clone(), shared);
        }
    }
    for hit in hits.values() {
        out.signers.insert(hit.signer.to_string());
    }
    let nodes: HashMap<&CommitId, (&CommitRecord, bool)> = order
        .iter()
        .map(|(rec, done)| (&rec.id, (rec.as_ref(), rec.seal && done.as_ref().is_some_and(|d| d.is_good()))))
        .collect();
    let seals = seal_sets(target, &nodes, &hits);
    out.seals = seals.get(target).map(|s| s.as_ref().clone()).unwrap_or_default();
    out.head_signer = signers.get(target).or_else(|| hits.get(target).map(|h| &h.signer)).map(|s| s.as_ref().clone());

    let until = trust.valid_until().unwrap_or(i64::MAX);
    let entries: Vec<(CommitId, CachedCommit)> = nodes
        .keys()
        .filter_map(|id| {
            let signer = signers.get(*id)?.clone();
            let seals = seals.get(*id)?.clone();
            Some(((*id).clone(), CachedCommit { until, signer, seals }))
        })
        .collect();
    cache.insert_all(trust.id(), entries);
    Ok(out)
}

/// For each walked commit, the good seals its history ends at (a seal's own set is itself). Computed
/// depth-first with an explicit stack, so deep histories do not overflow.
fn seal_sets(
    target: &CommitId,
    nodes: &HashMap<&CommitId, (&CommitRecord, bool)>,
    hits: &HashMap<CommitId, CachedCommit>,
) -> HashMap<CommitId, Arc<Vec<CommitId>>> {
    let mut memo: HashMap<CommitId, Arc<Vec<CommitId>>> = HashMap::new();
    let empty = Arc::new(Vec::new());
    let mut stack = vec![(target.clone(), false)];
    while let Some((id, expanded)) = stack.pop() {
        if memo.contains_key(&id) {
            continue;
        }
        if let Some(hit) = hits.get(&id) {
            memo.insert(id, hit.seals.clone());
            continue;
        }
        let Some((rec, good_seal)) = nodes.get(&id) else {
            memo.insert(id, empty.clone());
            continue;
        };
        if *good_seal {
            memo.insert(id.clone(), Arc::new(vec![id]));
            continue;
        }
        if !expanded {
            stack.push((id, true));
            stack.extend(rec.parents.iter().filter(|p| !memo.contains_key(*p)).map(|p| (p.clone(), false)));
            continue;
        }
        let mut set: Vec<CommitId> =
            rec.parents.iter().filter_map(|p| memo.get(p)).flat_map(|s| s.iter().cloned()).collect();
        set.sort();
        set.dedup();
        // Most commits share their parent's set: share the allocation too.
        let shared = rec
            .parents
            .iter()
            .filter_map(|p| memo.get(p))
            .find(|s| s.as_slice() == set.as_slice())
            .cloned()
            .unwrap_or_else(|| Arc::new(set));
        memo.insert(id, shared);
    }
    memo
}

/// The signed-tag requirement: the synced commit must be what an annotated tag signed by an allowed key
/// points at. `target_revision` is the Application's symbolic revision.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagVerdict {
    pub tag: Option<String>,
    pub signer: Option<Signer>,
    pub failure: Option<(Reason, String)>,
}

pub fn verify_signed_tag(
    repo: &Repo,
    commit: &CommitId,
    target_revision: Option<&str>,
    trust: &Trust,
    now: i64,
) -> Result<TagVerdict, RepoError> {
    let fail = |reason: Reason, msg: String| Ok(TagVerdict { tag: None, signer: None, failure: Some((reason, msg)) });
    const NEEDS: &str =
        "requireSignedTag needs the Application's targetRevision to name an annotated tag signed by an allowed key";
    let Some(name) = target_revision.filter(|t| !t.is_empty() && !crate::target::is_commit_sha(t)) else {
        return fail(Reason::NoTagRequested, format!("the revision is a commit SHA or nothing; {NEEDS}"));
    };
    // A semantic-version constraint is the highest tag that satisfies it, as Argo CD resolves it.
    let tag_name = match version_constraint(name) {
        Some(req) => match repo.max_version_tag(&req) {
            Some(t) => t,
            None => {
                return fail(Reason::TagNotFound, format!("no tag satisfies the version constraint {name:?}; {NEEDS}"));
            }
        },
        None => name.to_string(),
    };
    let via = if tag_name == name { String::new() } else { format!(" (the highest tag satisfying {name:?})") };
    match (repo.tag(&tag_name)?, repo.branch_exists(&tag_name)) {
        (TagLookup::Missing, true) => fail(Reason::NotATag, format!("{tag_name:?} is a branch, not a tag; {NEEDS}")),
        (TagLookup::Missing, false) => fail(
            Reason::NotATag,
            format!("{tag_name:?} names no tag (it is HEAD, a commit or another kind of revision); {NEEDS}"),
        ),
        (_, true) => fail(
            Reason::AmbiguousTag,
            format!(
                "{tag_name:?} names both a tag and a branch; Argo CD may resolve either, so the signed-tag requirement fails closed. Rename the branch"
            ),
        ),
        (TagLookup::Lightweight(_), false) => fail(
            Reason::LightweightTag,
            format!(
                "{tag_name:?}{via} is a lightweight tag, which cannot be signed; use an annotated, signed tag (git tag -s)"
            ),
        ),
        (TagLookup::Annotated(tag), false) if tag.target != *commit => fail(
            Reason::TagMismatch,
            format!("tag {tag_name}{via} points at {}, not at the synced commit {commit}", tag.target),
        ),
        (TagLookup::Annotated(tag), false) => {
            let result = match &tag.signature {
                None => SignatureCheck::Unsigned,
                Some(sig) => trust.check(&tag.id, &tag.payload, sig, tag.tagger_time, now),
            };
            match result {
                SignatureCheck::Good(s) => Ok(TagVerdict { tag: Some(tag_name), signer: Some(s), failure: None }),
                other => fail(other.reason(), format!("tag {tag_name}{via} is {other}")),
            }
        }
    }
}
