//! Source integrity: the exact commit Argo CD syncs must be signed the way the profile says.
//!
//! - `policy`: which `sourceIntegrity.git.policies[]` entry governs a repository (pure).
//! - `openpgp`, `sshsig`: which signatures count (pure, given key material).
//! - `history`: the commits and tags in a git repository: head, strict walk with seals, signed tags,
//!   downgrades; signature checks run in parallel and verified results are cached.
//! - `materials`: Interlace-style signed `source-materials` hash lists.
//! - `fetch`: the repository cache (gix), with Argo CD's repository credentials.
//! - `verify`: one source from start to verdict.

pub mod fetch;
pub mod history;
pub mod kustomize;
pub mod materials;
pub mod openpgp;
pub mod policy;
pub mod sshsig;
pub mod verify;

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A full git object name (40 or 64 lower-case hex digits). Only ever built from a validated string,
/// so a branch name can never stand in for a verified commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CommitId(String);

impl CommitId {
    pub fn parse(s: &str) -> Option<CommitId> {
        crate::target::is_commit_sha(s).then(|| CommitId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    pub(crate) fn from_gix(id: &gix::ObjectId) -> CommitId {
        CommitId(id.to_hex().to_string())
    }

    pub(crate) fn to_gix(&self) -> Option<gix::ObjectId> {
        gix::ObjectId::from_hex(self.0.as_bytes()).ok()
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OpenPGP key fingerprint, upper-case hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyFingerprint(pub(crate) String);

impl KeyFingerprint {
    /// The 16-hex key ID (the fingerprint's last 64 bits, for v4 keys).
    pub fn key_id(&self) -> String {
        self.0[self.0.len().saturating_sub(16)..].to_string()
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who made a signature that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Signer {
    #[serde(rename_all = "camelCase")]
    Pgp { fingerprint: KeyFingerprint, primary: KeyFingerprint, user_id: String },
    #[serde(rename_all = "camelCase")]
    Ssh { fingerprint: String, principals: String },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Pgp { fingerprint, primary, user_id } if fingerprint == primary => {
                write!(f, "GPG key {fingerprint} ({user_id})")
            }
            Signer::Pgp { fingerprint, primary, user_id } => {
                write!(f, "GPG subkey {fingerprint} of {primary} ({user_id})")
            }
            Signer::Ssh { fingerprint, principals } => write!(f, "SSH key {fingerprint} ({principals})"),
        }
    }
}

/// The outcome of checking one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Good(Signer),
    Unsigned,
    /// The cryptography does not hold: tampered content, or the wrong key.
    Bad {
        key: String,
        reason: String,
    },
    /// Made by a key that is not allowed (or not in the keyring).
    UnknownKey {
        key: String,
    },
    /// Made by an allowed key that does not count (expired, revoked, not yet valid…).
    KeyUnusable {
        signer: Signer,
        reason: String,
    },
    Malformed(String),
}

impl SignatureCheck {
    pub fn is_good(&self) -> bool {
        matches!(self, SignatureCheck::Good(_))
    }

    /// A CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureCheck::Good(_) => "Signed",
            SignatureCheck::Unsigned => "Unsigned",
            SignatureCheck::Bad { .. } => "BadSignature",
            SignatureCheck::UnknownKey { .. } => "KeyNotAllowed",
            SignatureCheck::KeyUnusable { .. } => "KeyNotValid",
            SignatureCheck::Malformed(_) => "MalformedSignature",
        }
    }
}

impl fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureCheck::Good(s) => write!(f, "good signature by {s}"),
            SignatureCheck::Unsigned => f.write_str("not signed"),
            SignatureCheck::Bad { key, reason } => {
                write!(f, "signature by {key} does not verify ({reason})")
            }
            SignatureCheck::UnknownKey { key } => {
                write!(f, "signed by {key}, which is not an allowed key")
            }
            SignatureCheck::KeyUnusable { signer, reason } => {
                write!(f, "signed by {signer}, which does not count: {reason}")
            }
            SignatureCheck::Malformed(m) => f.write_str(m),
        }
    }
}

/// The signers a policy allows: OpenPGP keys, SSH allowed signers, or both.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub pgp: Option<openpgp::AllowedPgpKeys>,
    pub ssh: Option<sshsig::AllowedSigners>,
    id: String,
}

impl Trust {
    pub fn new(pgp: Option<openpgp::AllowedPgpKeys>, ssh: Option<sshsig::AllowedSigners>) -> Trust {
        let mut h = Sha256::new();
        h.update(pgp.as_ref().map(|p| p.identity()).unwrap_or_default());
        h.update(b"|");
        h.update(ssh.as_ref().map(|s| s.identity()).unwrap_or_default());
        Trust { pgp, ssh, id: hex::encode(h.finalize()) }
    }

    /// Identifies the allowed keys and their state, so cached verdicts never outlive a change.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks an armored signature; `signed_at` is the time git records for the object, `now` the
    /// verification time.
    pub fn check(&self, payload: &[u8], signature: &str, signed_at: i64, now: i64) -> SignatureCheck {
        if signature.contains("-----BEGIN SSH SIGNATURE-----") {
            match &self.ssh {
                Some(ssh) => ssh.check(payload, signature, signed_at),
                None => SignatureCheck::UnknownKey { key: "an SSH key (this policy allows no SSH signers)".into() },
            }
        } else if signature.contains("-----BEGIN PGP SIGNATURE-----") {
            match &self.pgp {
                Some(pgp) => pgp.check(payload, signature, u32::try_from(now).unwrap_or(u32::MAX)),
                None => SignatureCheck::UnknownKey { key: "an OpenPGP key (this policy allows no GPG keys)".into() },
            }
        } else {
            SignatureCheck::Malformed(
                "unsupported signature format (only OpenPGP and SSH signatures are verified)".into(),
            )
        }
    }

    /// The earliest moment a cached "good" verdict may stop holding because a key expires.
    pub fn valid_until(&self) -> Option<i64> {
        self.pgp.as_ref().and_then(|p| p.earliest_expiry()).map(i64::from)
    }
}
