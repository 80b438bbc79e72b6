//! One git source, from policy to verdict: which policy, which keys, the commit (head) or its history
//! (strict), the signed tag, downgrades, and the signed source-materials list. Each failure names the
//! commit, the signature, the key, and what to do.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::fetch::{FetchError, RepoCache};
use super::history::{self, TagVerdict, VerifiedCommits, WalkOutcome};
use super::kustomize::{self, RemoteBase};
use super::materials::{self, MaterialsSpec, MaterialsVerdict};
use super::openpgp::AllowedPgpKeys;
use super::repo::{Repo, TagLookup};
use super::sshsig::AllowedSigners;
use super::x509::{KeylessSigners, RekorSearch};
use super::{CommitId, SignatureCheck, Trust, policy};
use crate::images::policy::{Root, Signer as Identity};
use crate::reason::Reason;
use crate::referenced::{self, Kind, ReferencedObjects};
use crate::repository::access::RepoCredentials;
use crate::repository::access::{self, ProjectRules};
use crate::resources::profile::{GitPolicy, SignatureMode};

/// What to verify: one source of an Application at the exact revision Argo CD resolved.
#[derive(Clone, Debug)]
pub struct SourceRequest<'a> {
    pub repo_url: &'a str,
    pub revision: &'a CommitId,
    /// The source's path in the repository (where source materials live).
    pub path: Option<&'a str>,
    /// The Application's symbolic `targetRevision` (tag name, branch, constraint).
    pub target_revision: Option<&'a str>,
    /// The last revision verified for this Application and repository (downgrade protection).
    pub previous: Option<&'a CommitId>,
    /// The Application's AppProject: which repositories it may use, and whose credentials. `None` only
    /// from the command line without a project (project-scoped credentials are then never used).
    pub project: Option<&'a ProjectRules>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every requirement of the policy holds.
    Verified,
    /// A requirement does not hold; retrying will not change that.
    Failed,
    /// The profile or what it refers to is wrong (a missing Secret, an unreadable keyring…).
    Misconfigured,
    /// Could not be decided now (repository unreachable, object unavailable); retried with backoff.
    Retry,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceVerdict {
    pub repo_url: String,
    pub commit: CommitId,
    pub outcome: Outcome,
    pub reason: Reason,
    pub message: String,
    /// Index of the policy in `sourceIntegrity.git.policies`.
    pub policy: Option<usize>,
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<WalkOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagVerdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub materials: Option<MaterialsVerdict>,
    pub millis: u128,
}

/// A kustomize remote base, pinned to a commit and verified under its own policy.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedBase {
    pub base: RemoteBase,
    pub commit: CommitId,
    /// Whether the ref pins the content (a commit or a tag) or follows a branch (`allowUnpinnedBases`).
    pub pinned: bool,
    pub verdict: SourceVerdict,
}

/// Why the remote bases of a source cannot be accepted.
#[derive(Clone, Debug)]
pub struct BaseProblem {
    pub outcome: Outcome,
    pub reason: Reason,
    pub message: String,
}

/// Shared state across verifications: the repository cache and the verified-commit cache.
pub struct SourceVerifier {
    pub repos: RepoCache,
    pub verified: VerifiedCommits,
}

/// A failure on the way to a verdict.
struct Halt {
    outcome: Outcome,
    reason: Reason,
    message: String,
}

fn failed(reason: Reason, message: impl Into<String>) -> Halt {
    Halt { outcome: Outcome::Failed, reason, message: message.into() }
}

fn retry(reason: Reason, message: impl Into<String>) -> Halt {
    Halt { outcome: Outcome::Retry, reason, message: message.into() }
}

fn misconfigured(reason: Reason, message: impl Into<String>) -> Halt {
    Halt { outcome: Outcome::Misconfigured, reason, message: message.into() }
}

impl SourceVerifier {
    pub fn new(cache_dir: impl Into<PathBuf>, max_repos: usize) -> SourceVerifier {
        SourceVerifier { repos: RepoCache::new(cache_dir, max_repos), verified: VerifiedCommits::default() }
    }

    pub fn verify(
        &self,
        policies: &[GitPolicy],
        referenced: &ReferencedObjects,
        req: &SourceRequest,
        now: i64,
    ) -> SourceVerdict {
        let credentials = access(referenced, req.repo_url, req.project);
        self.verify_with(policies, referenced, req, now, credentials)
    }

    fn verify_with(
        &self,
        policies: &[GitPolicy],
        referenced: &ReferencedObjects,
        req: &SourceRequest,
        now: i64,
        credentials: RepoCredentials,
    ) -> SourceVerdict {
        let start = Instant::now();
        let mut v = SourceVerdict {
            repo_url: req.repo_url.to_string(),
            commit: req.revision.clone(),
            outcome: Outcome::Failed,
            reason: Reason::NotRecordedYet,
            message: String::new(),
            policy: None,
            mode: None,
            history: None,
            tag: None,
            materials: None,
            millis: 0,
        };
        match self.run(policies, referenced, req, now, &credentials, &mut v) {
            Ok(summary) => {
                v.outcome = Outcome::Verified;
                v.reason = Reason::Verified;
                v.message = summary;
            }
            Err(stop) => {
                v.outcome = stop.outcome;
                v.reason = stop.reason;
                v.message = stop.message;
            }
        }
        v.millis = start.elapsed().as_millis();
        v
    }

    /// Finds the kustomize remote bases of a verified source, pins each to the commit its ref names, and
    /// verifies it under its own policy, as strictly as a source: no policy is a failure. A base is
    /// pinned when its ref is a full commit SHA or a tag; a branch or no ref is whatever the branch holds
    /// when Argo CD renders, so it fails unless the base's policy sets `allowUnpinnedBases`. A remote
    /// plain file cannot be pinned at all.
    pub fn remote_bases(
        &self,
        policies: &[GitPolicy],
        referenced: &ReferencedObjects,
        req: &SourceRequest,
        now: i64,
    ) -> Result<Vec<PinnedBase>, BaseProblem> {
        let problem = |outcome, reason: Reason, message: String| BaseProblem { outcome, reason, message };
        let repo = self
            .repos
            .open(req.repo_url, &[req.revision], Some(&access(referenced, req.repo_url, req.project)), false)
            .map_err(|e| problem(Outcome::Retry, e.reason(), e.to_string()))?;
        let (bases, files) = kustomize::remote_resources(&repo, req.revision, req.path.unwrap_or(""))
            .map_err(|e| problem(Outcome::Failed, e.reason(), e.to_string()))?;
        if let Some(f) = files.first() {
            return Err(problem(
                Outcome::Failed,
                Reason::RemoteResourceNotPinned,
                format!(
                    "{} refers to the remote file {}, which cannot be pinned to a verified revision; vendor it into the repository or use a git base with ?ref=<commit>",
                    f.referenced_from, f.url
                ),
            ));
        }
        let mut pinned = Vec::new();
        for base in bases {
            let within =
                |e: &dyn std::fmt::Display| format!("remote base {} (from {}): {e}", base.entry, base.referenced_from);
            let policy = match policy::select(policies, &base.repo_url) {
                Ok(Some((_, p))) => p,
                Ok(None) => {
                    return Err(problem(
                        Outcome::Failed,
                        Reason::NoSourcePolicy,
                        within(&format!(
                            "no sourceIntegrity policy matches {}, so nothing vouches for it; add a policy for it (gpg.mode: none accepts it unsigned, explicitly)",
                            base.repo_url
                        )),
                    ));
                }
                Err(e) => return Err(problem(Outcome::Misconfigured, e.reason(), within(&e))),
            };
            let credentials = base_access(referenced, &base.repo_url, req.project);
            let remote = self.repos.open(&base.repo_url, &[], Some(&credentials), true).map_err(|e| {
                problem(if e.reason().retryable() { Outcome::Retry } else { Outcome::Failed }, e.reason(), within(&e))
            })?;
            let reference = base.reference.as_deref();
            let is_pinned = match reference {
                None => false,
                Some(r) if crate::target::is_commit_sha(r) => true,
                Some(r) => !matches!(remote.tag(r), Ok(TagLookup::Missing)) && !remote.branch_exists(r),
            };
            if !is_pinned && !policy.allow_unpinned_bases.unwrap_or(false) {
                let what = match reference {
                    Some(r) => format!("ref={r}, a branch"),
                    None => "no ref, so the default branch".to_string(),
                };
                return Err(problem(
                    Outcome::Failed,
                    Reason::RemoteBaseNotPinned,
                    within(&format!(
                        "it names {what}: whatever that holds when Argo CD renders, which need not be what Weft verified. Pin it with ?ref=<commit SHA> or a tag, or set allowUnpinnedBases: true on the policy for {}",
                        base.repo_url
                    )),
                ));
            }
            let commit = remote
                .resolve(reference.unwrap_or("HEAD"))
                .map_err(|e| problem(Outcome::Failed, e.reason(), within(&e)))?;
            let sub = SourceRequest {
                repo_url: &base.repo_url,
                revision: &commit,
                path: base.path.as_deref(),
                target_revision: base.reference.as_deref(),
                previous: None,
                // Argo CD does not hold remote bases to the project's sourceRepos; what the project does
                // not permit is fetched without credentials (`credentials`, chosen above).
                project: None,
            };
            let verdict = self.verify_with(policies, referenced, &sub, now, credentials);
            if verdict.outcome != Outcome::Verified {
                let msg = format!(
                    "remote base {} (from {}) @ {}: {}",
                    base.entry,
                    base.referenced_from,
                    commit.short(),
                    verdict.message
                );
                return Err(problem(verdict.outcome, verdict.reason, msg));
            }
            pinned.push(PinnedBase { base, commit, pinned: is_pinned, verdict });
        }
        Ok(pinned)
    }

    fn run(
        &self,
        policies: &[GitPolicy],
        referenced: &ReferencedObjects,
        req: &SourceRequest,
        now: i64,
        credentials: &RepoCredentials,
        v: &mut SourceVerdict,
    ) -> Result<String, Halt> {
        let short = req.revision.short();
        if let Some(project) = req.project
            && !project.permits_repo(req.repo_url)
        {
            return Err(failed(
                Reason::RepositoryNotPermitted,
                format!(
                    "AppProject {} does not permit {} (spec.sourceRepos), so Argo CD will not sync it and Weft does not fetch it",
                    project.name, req.repo_url
                ),
            ));
        }
        let (index, policy) = match policy::select(policies, req.repo_url) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(failed(
                    Reason::NoSourcePolicy,
                    format!(
                        "no sourceIntegrity policy matches {}, so nothing vouches for commit {short}; add a policy for it (gpg.mode: none accepts it unsigned, explicitly)",
                        req.repo_url
                    ),
                ));
            }
            Err(e) => return Err(misconfigured(e.reason(), e.to_string())),
        };
        let mode = policy.gpg.as_ref().map(|g| g.mode).unwrap_or_default();
        v.policy = Some(index);
        v.mode = Some(mode.as_str());
        let require_tag = policy.require_signed_tag.unwrap_or(false);
        let trust =
            if mode != SignatureMode::None || require_tag { Some(trust_for(policy, referenced)?) } else { None };

        let repo =
            self.repos.open(req.repo_url, &[req.revision], Some(credentials), require_tag).map_err(|e| Halt {
                outcome: match e {
                    _ if e.reason().retryable() => Outcome::Retry,
                    FetchError::UnsupportedUrl(_) | FetchError::CleartextCredentials { .. } => Outcome::Misconfigured,
                    _ => Outcome::Failed,
                },
                reason: e.reason(),
                message: if e.reason().retryable() {
                    format!("{e}; nothing from it is verified until it can be read")
                } else {
                    e.to_string()
                },
            })?;

        let mut summary = Vec::new();
        if let Some(trust) = &trust {
            summary.push(self.signatures(&repo, req, mode, trust, now, v)?);
            if require_tag {
                let tag = history::verify_signed_tag(&repo, req.revision, req.target_revision, trust, now)
                    .map_err(history_stop)?;
                v.tag = Some(tag.clone());
                if let Some((reason, msg)) = tag.failure {
                    return Err(failed(reason, format!("requireSignedTag: {msg}")));
                }
                summary.push(format!(
                    "tag {} signed by {}",
                    tag.tag.as_deref().unwrap_or("?"),
                    tag.signer.as_ref().map(|s| s.to_string()).unwrap_or_default()
                ));
            }
        } else {
            summary.push(format!("policy #{index} requires no signatures (gpg.mode: none)"));
        }

        if let Some(previous) = req.previous.filter(|p| *p != req.revision) {
            if policy.allow_downgrade.unwrap_or(false) {
                summary.push("downgrades allowed by the policy".into());
            } else {
                match repo.descends_from(req.revision, previous) {
                    Ok(true) => summary.push(format!("descends from the last verified revision {}", previous.short())),
                    Ok(false) => {
                        return Err(failed(
                            Reason::Downgrade,
                            format!(
                                "commit {short} does not descend from {}, the last revision verified for this Application; syncing it would roll back. Set allowDowngrade: true on the policy to allow it",
                                previous.short()
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(failed(
                            Reason::DowngradeUnverifiable,
                            format!(
                                "cannot tell whether commit {short} descends from the last verified revision {}: {e}",
                                previous.short()
                            ),
                        ));
                    }
                }
            }
        }

        if let Some(m) = &policy.source_materials {
            let key = referenced.texts(&m.key).map_err(deref_stop)?.join("\n");
            let spec = MaterialsSpec {
                hash_list: &m.hash_list,
                signature: &m.signature,
                key: &key,
                require_complete: m.require_complete.unwrap_or(false),
            };
            let dir = req.path.unwrap_or("");
            let verdict = materials::verify(&repo, req.revision, dir, &spec, now)
                .map_err(|e| failed(e.reason(), format!("source materials in {dir:?} of commit {short}: {e}")))?;
            summary.push(format!("source-materials: {} file(s) match, signed by {}", verdict.files, verdict.signed_by));
            v.materials = Some(verdict);
        }
        Ok(summary.join("; "))
    }

    fn signatures(
        &self,
        repo: &Repo,
        req: &SourceRequest,
        mode: SignatureMode,
        trust: &Trust,
        now: i64,
        v: &mut SourceVerdict,
    ) -> Result<String, Halt> {
        let short = req.revision.short();
        match mode {
            SignatureMode::None => Ok("no commit signatures required (gpg.mode: none)".into()),
            SignatureMode::Head => {
                let outcome = history::verify_head(repo, req.revision, trust, now).map_err(history_stop)?;
                v.history = Some(outcome.clone());
                if let Some(signer) = &outcome.head_signer {
                    return Ok(format!("commit {short} signed by {signer}"));
                }
                // Argo CD's `head` also accepts the signature of the annotated tag that names the commit.
                let mut tag_note = String::new();
                if let Some(name) = req.target_revision.filter(|t| !t.is_empty())
                    && let Ok(TagLookup::Annotated(tag)) = repo.tag(name)
                    && tag.target == *req.revision
                {
                    match tag
                        .signature
                        .as_ref()
                        .map(|sig| trust.check(&tag.id, &tag.payload, sig, tag.tagger_time, now))
                    {
                        Some(SignatureCheck::Good(signer)) => {
                            return Ok(format!("commit {short} is named by tag {name}, signed by {signer}"));
                        }
                        Some(other) => {
                            tag_note = format!(" The tag {name} that names it does not count either: it is {other}.")
                        }
                        None => tag_note = format!(" The tag {name} that names it is not signed either."),
                    }
                }
                let mut stop = commit_stop(&outcome, "head");
                stop.message.push_str(&tag_note);
                Err(stop)
            }
            SignatureMode::Strict => {
                let outcome =
                    history::verify_strict(repo, req.revision, trust, &self.verified, now).map_err(history_stop)?;
                v.history = Some(outcome.clone());
                if outcome.failure.is_some() {
                    return Err(commit_stop(&outcome, "strict"));
                }
                let seals = if outcome.seals.is_empty() {
                    "back to the root".to_string()
                } else {
                    format!(
                        "back to seal(s) {}",
                        outcome.seals.iter().map(|s| s.short()).collect::<Vec<_>>().join(", ")
                    )
                };
                Ok(format!(
                    "commit {short} signed by {}; strict: every commit {seals} is signed by an allowed key",
                    outcome.head_signer.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "an allowed key".into()),
                ))
            }
        }
    }
}

fn commit_stop(outcome: &WalkOutcome, mode: &str) -> Halt {
    let Some(f) = &outcome.failure else {
        return failed(Reason::Unverified, "no signature verified");
    };
    let more =
        if outcome.failures > 1 { format!(" ({} commits fail in all)", outcome.failures) } else { String::new() };
    let decide = if f.reason.retryable() { retry } else { failed };
    decide(
        f.reason,
        format!(
            "{mode}: commit {} by {} ({:?}) is {}{more}. {}",
            f.commit.short(),
            f.author,
            f.summary,
            f.detail,
            hint(f.reason)
        ),
    )
}

/// What a person can do about a failed signature.
fn hint(reason: Reason) -> &'static str {
    match reason {
        Reason::Unsigned => {
            "Sign it (git commit -S), or, in strict mode, add a seal commit (trailer \"Weft-Seal: <why>\") signed by an allowed key on top of the reviewed history."
        }
        Reason::KeyNotAllowed => {
            "Add the signer's key to the policy (gpg.keys and the keyring, ssh.allowedSigners, or keyless.identities), or re-sign with an allowed key."
        }
        Reason::SignatureNotLogged => {
            "Log the signature (gitsign does; for gpgsm, upload a hashedrekord entry over the SHA-256 of the signed attributes with rekor-cli), in a log the trusted root names, or re-sign with gitsign."
        }
        Reason::KeylessSignatureNotVerified => {
            "The certificate does not chain to the trusted root, was not valid when the log recorded the signature, or the signature does not match its entry: re-sign, and check keyless.trustedRoot."
        }
        Reason::TransparencyLogUnavailable => "Weft retries; nothing from this revision counts until the log answers.",
        Reason::BadSignature => {
            "The content does not match its signature: it was changed after signing, or signed by another key. Do not deploy it; investigate."
        }
        Reason::KeyNotValid => {
            "The key is expired, revoked or not valid for this signature: re-sign with a valid key or renew the key."
        }
        Reason::SignatureExpired => {
            "The signature carries its own expiry, which has passed (as git reports it): re-sign the commit or tag, or, in strict mode, add a seal commit signed by an allowed key."
        }
        _ => "Re-sign the commit with an allowed key.",
    }
}

fn history_stop(e: crate::source::repo::RepoError) -> Halt {
    failed(e.reason(), e.to_string())
}

fn deref_stop(e: referenced::ReferenceError) -> Halt {
    Halt {
        outcome: if e.reason().retryable() { Outcome::Retry } else { Outcome::Misconfigured },
        reason: e.reason(),
        message: e.to_string(),
    }
}

/// How to reach a repository: the credentials of the Argo CD repository Secret that serves it for the
/// Application's project (see `access`), its known SSH hosts, and the TLS certificates Argo CD trusts
/// for its host.
pub fn access(referenced: &ReferencedObjects, url: &str, project: Option<&ProjectRules>) -> RepoCredentials {
    let mut c = access::credentials_for(url, project.map(|p| p.name.as_str()), &referenced.repo_secrets)
        .map(|s| s.credentials.clone())
        .unwrap_or_default();
    c.known_hosts = referenced.optional_text(Kind::ConfigMap, referenced::ARGOCD_KNOWN_HOSTS_CM, "ssh_known_hosts");
    if let Some(host) = crate::repository::url::RepoLocation::parse(url).map(|l| l.host).filter(|h| !h.is_empty()) {
        c.tls_certs = referenced.optional_text(Kind::ConfigMap, referenced::ARGOCD_TLS_CERTS_CM, &host);
    }
    c
}

/// How to reach a kustomize remote base: Argo CD's credentials go only to what the Application's project
/// permits; other bases are fetched without them (public ones still work).
pub fn base_access(referenced: &ReferencedObjects, url: &str, project: Option<&ProjectRules>) -> RepoCredentials {
    match project {
        Some(p) if !p.permits_repo(url) => RepoCredentials::default(),
        project => access(referenced, url, project),
    }
}

/// The keys a policy allows, read from the referenced Secrets and ConfigMaps.
fn trust_for(policy: &GitPolicy, referenced: &ReferencedObjects) -> Result<Trust, Halt> {
    let keys = policy.gpg.as_ref().and_then(|g| g.keys.clone()).unwrap_or_default();
    let pgp = if keys.is_empty() {
        None
    } else {
        let keyring = policy.gpg.as_ref().and_then(|g| g.keyring.clone()).unwrap_or_else(referenced::default_keyring);
        let texts = referenced.texts(&keyring).map_err(deref_stop)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (kind, key_ref) = referenced::split(&keyring);
        let allowed = AllowedPgpKeys::new(&refs, &keys).map_err(|e| {
            misconfigured(Reason::InvalidKeyring, format!("the GPG keyring ({} {}): {e}", kind.as_str(), key_ref.name))
        })?;
        if allowed.is_empty() {
            return Err(misconfigured(
                Reason::AllowedKeysNotInKeyring,
                format!(
                    "none of the allowed GPG keys ({}) is in the keyring; add their public keys to it",
                    keys.join(", ")
                ),
            ));
        }
        Some(allowed)
    };
    let ssh = match &policy.ssh {
        Some(s) => {
            let text = referenced.texts(&s.allowed_signers).map_err(deref_stop)?.join("\n");
            Some(
                AllowedSigners::parse(&text)
                    .map_err(|e| misconfigured(Reason::InvalidAllowedSigners, e.to_string()))?,
            )
        }
        None => None,
    };
    let keyless = match &policy.keyless {
        Some(k) => {
            let root = Root::load(k.trusted_root.as_ref(), referenced).map_err(|e| Halt {
                outcome: if e.reason().retryable() { Outcome::Retry } else { Outcome::Misconfigured },
                reason: e.reason(),
                message: format!("keyless.trustedRoot: {e}"),
            })?;
            let identities = k
                .identities
                .iter()
                .map(|i| {
                    Identity::keyless(i).map_err(|e| match e {
                        Some((pattern, reason)) => misconfigured(
                            Reason::InvalidSourcePolicy,
                            format!("keyless.identities: regular expression {pattern:?} is invalid: {reason}"),
                        ),
                        None => misconfigured(
                            Reason::InvalidSourcePolicy,
                            "keyless.identities: each identity needs an issuer (or issuerRegExp) and a subject (or subjectRegExp)",
                        ),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let search = Box::new(RekorSearch::new(root.logs.clone()));
            Some(KeylessSigners::new(root, identities, search))
        }
        None => None,
    };
    Ok(Trust::new(pgp, ssh, keyless))
}
