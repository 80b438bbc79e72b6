//! Interlace-style source materials: a `sha256sum`-format list of the files under the source path,
//! signed (a cosign `sign-blob` signature, base64 DER ECDSA P-256 over the list; or an armored OpenPGP
//! detached signature), checked against the verified tree, never against a working copy.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::openpgp::AllowedPgpKeys;
use super::repo::{FileKind, Repo, RepoError, contained};
use super::{CommitId, SignatureCheck};

use crate::reason::Reason;

#[derive(Debug, Error)]
pub enum MaterialsError {
    #[error("{0} is missing from the source path in commit {1}")]
    Missing(String, CommitId),
    #[error("the source-materials signature does not verify: {0}")]
    BadSignature(String),
    #[error("the source-materials key cannot be used: {0}")]
    BadKey(String),
    #[error("source-materials line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("source-materials line {line}: path {path:?} leaves the source directory")]
    PathEscapes { line: usize, path: String },
    #[error("{path} is listed in source-materials but is not in the tree")]
    NotInTree { path: String },
    #[error("{path} is a {kind}, which source-materials cannot vouch for")]
    NotAFile { path: String, kind: &'static str },
    #[error("{path} does not match source-materials: sha256 is {actual}, the list says {expected}")]
    HashMismatch { path: String, expected: String, actual: String },
    #[error("{count} tracked file(s) are not listed in source-materials (requireComplete), first: {first}")]
    Unlisted { count: usize, first: String },
    #[error(transparent)]
    History(#[from] RepoError),
}

impl MaterialsError {
    pub fn reason(&self) -> Reason {
        match self {
            MaterialsError::Missing(..) => Reason::SourceMaterialsMissing,
            MaterialsError::BadSignature(_) => Reason::SourceMaterialsSignatureInvalid,
            MaterialsError::BadKey(_) => Reason::SourceMaterialsKeyInvalid,
            MaterialsError::BadLine { .. } => Reason::SourceMaterialsMalformed,
            MaterialsError::PathEscapes { .. } => Reason::SourceMaterialsPathEscapes,
            MaterialsError::NotInTree { .. } | MaterialsError::NotAFile { .. } => Reason::SourceMaterialsMismatch,
            MaterialsError::HashMismatch { .. } => Reason::SourceMaterialsMismatch,
            MaterialsError::Unlisted { .. } => Reason::SourceMaterialsIncomplete,
            MaterialsError::History(e) => e.reason(),
        }
    }
}

/// How the list is configured.
pub struct MaterialsSpec<'a> {
    pub hash_list: &'a str,
    pub signature: &'a str,
    /// A PEM public key (cosign) or an armored OpenPGP public key.
    pub key: &'a str,
    pub require_complete: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaterialsVerdict {
    pub files: usize,
    pub signed_by: String,
}

/// Checks the list in `dir` of `commit` against that commit's tree.
pub fn verify(
    repo: &Repo,
    commit: &CommitId,
    dir: &str,
    spec: &MaterialsSpec,
    now: i64,
) -> Result<MaterialsVerdict, MaterialsError> {
    let files = repo
        .files_under(commit, dir)?
        .ok_or_else(|| MaterialsError::Missing(format!("directory {dir:?}"), commit.clone()))?;
    let by_path: BTreeMap<&str, _> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let read = |name: &str| -> Result<Vec<u8>, MaterialsError> {
        let f = by_path.get(name).ok_or_else(|| MaterialsError::Missing(name.to_string(), commit.clone()))?;
        if f.kind == FileKind::Symlink {
            return Err(MaterialsError::NotAFile { path: name.to_string(), kind: "symlink" });
        }
        Ok(repo.blob(&f.id)?)
    };
    let list = read(spec.hash_list)?;
    let signature = read(spec.signature)?;
    let signed_by = check_signature(&list, &signature, spec.key, now)?;

    let text = String::from_utf8(list).map_err(|_| MaterialsError::BadLine { line: 0, reason: "not UTF-8".into() })?;
    let mut listed = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let (hash, path) = raw
            .split_once(' ')
            .map(|(h, p)| (h, p.trim_start_matches([' ', '*'])))
            .ok_or_else(|| MaterialsError::BadLine { line, reason: "expected \"<sha256>  <path>\"".into() })?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MaterialsError::BadLine { line, reason: format!("{hash:?} is not a sha256 digest") });
        }
        let path = contained(path).ok_or_else(|| MaterialsError::PathEscapes { line, path: path.to_string() })?;
        let entry = by_path.get(path.as_str()).ok_or_else(|| MaterialsError::NotInTree { path: path.clone() })?;
        match entry.kind {
            FileKind::Symlink => {
                return Err(MaterialsError::NotAFile { path, kind: "symlink" });
            }
            FileKind::Submodule => {
                return Err(MaterialsError::NotAFile { path, kind: "submodule" });
            }
            FileKind::Regular | FileKind::Executable => {}
        }
        let actual = hex::encode(Sha256::digest(repo.blob(&entry.id)?));
        if !actual.eq_ignore_ascii_case(hash) {
            return Err(MaterialsError::HashMismatch { path, expected: hash.to_ascii_lowercase(), actual });
        }
        listed.insert(path);
    }
    if spec.require_complete {
        let unlisted: Vec<&str> = files
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| *p != spec.hash_list && *p != spec.signature && !listed.contains(*p))
            .collect();
        if let Some(first) = unlisted.first() {
            return Err(MaterialsError::Unlisted { count: unlisted.len(), first: first.to_string() });
        }
    }
    Ok(MaterialsVerdict { files: listed.len(), signed_by })
}

fn check_signature(list: &[u8], signature: &[u8], key: &str, now: i64) -> Result<String, MaterialsError> {
    let sig_text = String::from_utf8_lossy(signature);
    if sig_text.contains("-----BEGIN PGP SIGNATURE-----") {
        let keys = AllowedPgpKeys::all_in(&[key]).map_err(|e| MaterialsError::BadKey(e.to_string()))?;
        return match keys.check(list, &sig_text, now) {
            SignatureCheck::Good(s) => Ok(s.to_string()),
            other => Err(MaterialsError::BadSignature(other.to_string())),
        };
    }
    let verifying = p256::ecdsa::VerifyingKey::from_public_key_pem(key.trim())
        .map_err(|e| MaterialsError::BadKey(format!("expected a PEM ECDSA P-256 public key (cosign.pub): {e}")))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig_text.trim())
        .map_err(|e| MaterialsError::BadSignature(format!("not base64: {e}")))?;
    let sig = p256::ecdsa::Signature::from_der(&raw)
        .map_err(|e| MaterialsError::BadSignature(format!("not a DER ECDSA signature: {e}")))?;
    verifying
        .verify(list, &sig)
        .map_err(|_| MaterialsError::BadSignature("it was not made by this key over this list".into()))?;
    Ok("the cosign key".into())
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn paths_must_stay_inside() {
        assert_eq!(contained("a/b.yaml").as_deref(), Some("a/b.yaml"));
        assert_eq!(contained("./a//b.yaml").as_deref(), Some("a/b.yaml"));
        for bad in ["../x", "a/../../x", "a/../b", "/etc/passwd", "", ".", "a\\..\\b"] {
            assert_eq!(contained(bad), None, "{bad}");
        }
    }
}
