//! Source integrity: the exact commit Argo CD syncs must be signed the way the profile says.
//!
//! - `policy`: which `sourceIntegrity.git.policies[]` entry governs a repository (pure).
//! - `openpgp`, `sshsig`: which signatures count (pure, given key material).
//! - `x509`: keyless (gitsign-model) signatures: CMS, a Fulcio certificate and a transparency log entry.
//! - `repo`: one git repository's commits, tags and trees, read with limits.
//! - `history`: the signature rules over a repository's commits and tags: head, strict walk with seals, signed tags,
//!   downgrades; signature checks run in parallel and verified results are cached.
//! - `materials`: Interlace-style signed `source-materials` hash lists.
//! - `url`: the canonical form of repository URLs (policy choice, credentials, cache).
//! - `access`: which repositories an Application's AppProject permits, and with which credentials.
//! - `fetch`: the repository cache (gix), with Argo CD's repository credentials.
//! - `verify`: one source from start to verdict.

pub mod fetch;
pub mod history;
pub mod kustomize;
pub mod materials;
pub mod openpgp;
pub mod policy;
pub mod repo;
pub mod sshsig;
pub mod verify;
pub mod x509;

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::reason::Reason;

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
    /// A keyless signature: the certificate's verified identity, and the log entry that dates it.
    #[serde(rename_all = "camelCase")]
    Keyless { subject: String, issuer: String, log_index: i64, integrated_time: i64 },
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
            Signer::Keyless { subject, issuer, log_index, integrated_time } => write!(
                f,
                "keyless certificate for {subject} (issuer {issuer}), logged at {} (log index {log_index})",
                rfc3339(*integrated_time)
            ),
        }
    }
}

/// The key that made a signature, as far as it is known: for reports, whether or not the key counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// `gpg`, `ssh` or `x509`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The full fingerprint (upper-case hex for GPG, `SHA256:…` for SSH); a 16-hex key ID when the
    /// signature names only that and the key is not in the keyring; for X.509, the certificate's identity.
    pub fingerprint: String,
    /// The primary key's fingerprint, for a GPG subkey.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_fingerprint: Option<String>,
    /// The GPG user ID; for X.509, the certificate's OIDC issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The SSH principals of the allowed_signers entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principals: Option<String>,
    /// Whether the keyring (or allowed_signers) holds the key at all.
    pub known: bool,
}

impl KeyInfo {
    pub fn of(signer: &Signer) -> KeyInfo {
        match signer {
            Signer::Pgp { fingerprint, primary, user_id } => KeyInfo {
                kind: "gpg",
                fingerprint: fingerprint.to_string(),
                primary_fingerprint: (fingerprint != primary).then(|| primary.to_string()),
                user_id: Some(user_id.clone()).filter(|u| !u.is_empty()),
                principals: None,
                known: true,
            },
            Signer::Ssh { fingerprint, principals } => KeyInfo {
                kind: "ssh",
                fingerprint: fingerprint.clone(),
                primary_fingerprint: None,
                user_id: None,
                principals: Some(principals.clone()),
                known: true,
            },
            Signer::Keyless { subject, issuer, .. } => KeyInfo {
                kind: "x509",
                fingerprint: subject.clone(),
                primary_fingerprint: None,
                user_id: Some(issuer.clone()),
                principals: None,
                known: true,
            },
        }
    }
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            "ssh" => "SSH key",
            "x509" => "a certificate for",
            _ => "GPG key",
        };
        if self.kind == "x509" {
            return match &self.user_id {
                Some(issuer) => write!(f, "{kind} {} (issuer {issuer})", self.fingerprint),
                None => write!(f, "{kind} {}", self.fingerprint),
            };
        }
        match &self.primary_fingerprint {
            Some(primary) => write!(f, "GPG subkey {} of {primary}", self.fingerprint)?,
            None => write!(f, "{kind} {}", self.fingerprint)?,
        }
        match (&self.user_id, &self.principals) {
            (Some(u), _) => write!(f, " ({u})"),
            (None, Some(p)) => write!(f, " ({p})"),
            (None, None) => Ok(()),
        }
    }
}

/// The outcome of checking one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Good(Signer),
    Unsigned,
    /// The cryptography does not hold: tampered content, or another key with the same key ID.
    Bad {
        key: KeyInfo,
    },
    /// Made by a key that is not allowed (or not in the keyring).
    UnknownKey {
        key: KeyInfo,
    },
    /// Made by an allowed key that does not count (expired, revoked, not yet valid…).
    KeyUnusable {
        signer: Signer,
        reason: String,
    },
    /// A good signature by an allowed key whose own expiry time has passed (git's "expired signature").
    Expired {
        signer: Signer,
        at: i64,
    },
    Malformed(String),
    /// A keyless signature that no entry of the transparency log records.
    NotLogged {
        key: Box<KeyInfo>,
        log: String,
    },
    /// A keyless signature whose certificate, log entry or cryptography does not verify.
    Unverified {
        key: Box<KeyInfo>,
        reason: String,
    },
    /// Cannot be decided now (the transparency log is unreachable); nothing counts until it can.
    Undecided(String),
}

impl SignatureCheck {
    pub fn is_good(&self) -> bool {
        matches!(self, SignatureCheck::Good(_))
    }

    /// A CamelCase reason for conditions.
    pub fn reason(&self) -> Reason {
        match self {
            SignatureCheck::Good(_) => Reason::Signed,
            SignatureCheck::Unsigned => Reason::Unsigned,
            SignatureCheck::Bad { .. } => Reason::BadSignature,
            SignatureCheck::UnknownKey { .. } => Reason::KeyNotAllowed,
            SignatureCheck::KeyUnusable { .. } => Reason::KeyNotValid,
            SignatureCheck::Expired { .. } => Reason::SignatureExpired,
            SignatureCheck::Malformed(_) => Reason::MalformedSignature,
            SignatureCheck::NotLogged { .. } => Reason::SignatureNotLogged,
            SignatureCheck::Unverified { .. } => Reason::KeylessSignatureNotVerified,
            SignatureCheck::Undecided(_) => Reason::TransparencyLogUnavailable,
        }
    }

    /// The key that made the signature, when the signature names one.
    pub fn key(&self) -> Option<KeyInfo> {
        match self {
            SignatureCheck::Good(s)
            | SignatureCheck::KeyUnusable { signer: s, .. }
            | SignatureCheck::Expired { signer: s, .. } => Some(KeyInfo::of(s)),
            SignatureCheck::Bad { key } | SignatureCheck::UnknownKey { key } => Some(key.clone()),
            SignatureCheck::NotLogged { key, .. } | SignatureCheck::Unverified { key, .. } => Some((**key).clone()),
            SignatureCheck::Unsigned | SignatureCheck::Malformed(_) | SignatureCheck::Undecided(_) => None,
        }
    }
}

impl fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureCheck::Good(s) => write!(f, "signed by {s}"),
            SignatureCheck::Unsigned => f.write_str("not signed"),
            SignatureCheck::Bad { key } => {
                write!(f, "signed by {key}, but the signature does not match the signed content")
            }
            SignatureCheck::UnknownKey { key } if key.kind == "x509" => {
                write!(f, "signed with {key}, which is not an identity the policy allows (keyless.identities)")
            }
            SignatureCheck::UnknownKey { key } if key.known => {
                write!(f, "signed by {key}, which is not an allowed key")
            }
            SignatureCheck::UnknownKey { key } => {
                write!(f, "signed by {key}, which is neither an allowed key nor in the keyring")
            }
            SignatureCheck::KeyUnusable { signer, reason } => {
                write!(f, "signed by {signer}, which does not count: {reason}")
            }
            SignatureCheck::Expired { signer, at } => {
                write!(f, "signed by {signer}, but the signature expired at {}", rfc3339(*at))
            }
            SignatureCheck::Malformed(m) => f.write_str(m),
            SignatureCheck::NotLogged { key, log } => write!(
                f,
                "signed keylessly with {key}, but the transparency log ({log}) holds no entry for this signature, so nothing dates it within the certificate's lifetime"
            ),
            SignatureCheck::Unverified { key, reason } => {
                write!(f, "signed keylessly with {key}, which does not verify: {reason}")
            }
            SignatureCheck::Undecided(why) => f.write_str(why),
        }
    }
}

/// Seconds since the epoch as an RFC 3339 time (the number itself when it is out of range).
pub(crate) fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_else(|_| secs.to_string())
}

/// The signers a policy allows: OpenPGP keys, SSH allowed signers, keyless identities, or any mix.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub pgp: Option<openpgp::AllowedPgpKeys>,
    pub ssh: Option<sshsig::AllowedSigners>,
    pub keyless: Option<std::sync::Arc<x509::KeylessSigners>>,
    id: String,
}

impl Trust {
    pub fn new(
        pgp: Option<openpgp::AllowedPgpKeys>,
        ssh: Option<sshsig::AllowedSigners>,
        keyless: Option<x509::KeylessSigners>,
    ) -> Trust {
        let mut h = Sha256::new();
        h.update(pgp.as_ref().map(|p| p.identity()).unwrap_or_default());
        h.update(b"|");
        h.update(ssh.as_ref().map(|s| s.identity()).unwrap_or_default());
        h.update(b"|");
        h.update(keyless.as_ref().map(|k| k.identity()).unwrap_or_default());
        Trust { pgp, ssh, keyless: keyless.map(std::sync::Arc::new), id: hex::encode(h.finalize()) }
    }

    /// Identifies the allowed keys and their state, so cached verdicts never outlive a change.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks an armored signature; `object` is the signed object's ID (hex), `signed_at` the time git
    /// records for it, `now` the verification time.
    pub fn check(&self, object: &str, payload: &[u8], signature: &str, signed_at: i64, now: i64) -> SignatureCheck {
        if signature.contains("-----BEGIN SSH SIGNATURE-----") {
            match &self.ssh {
                Some(ssh) => ssh.check(payload, signature, signed_at),
                None => SignatureCheck::UnknownKey { key: sshsig::key_of(signature) },
            }
        } else if signature.contains("-----BEGIN PGP SIGNATURE-----") {
            match &self.pgp {
                Some(pgp) => pgp.check(payload, signature, now),
                None => SignatureCheck::UnknownKey { key: openpgp::key_of(signature) },
            }
        } else if signature.contains("-----BEGIN SIGNED MESSAGE-----") {
            match &self.keyless {
                Some(keyless) => keyless.check(object, payload, signature),
                None => SignatureCheck::Malformed(
                    "an X.509 (CMS) signature, as gitsign and gpgsm make them; the policy allows no keyless signers (keyless.identities), so it does not count".into(),
                ),
            }
        } else {
            SignatureCheck::Malformed(
                "unsupported signature format (only OpenPGP, SSH and keyless X.509 signatures are verified)".into(),
            )
        }
    }

    /// The earliest moment a cached "good" verdict may stop holding because a key expires.
    pub fn valid_until(&self) -> Option<i64> {
        self.pgp.as_ref().and_then(|p| p.earliest_expiry()).map(i64::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_x509_signature_does_not_count_without_keyless_signers() {
        let trust = Trust::new(None, None, None);
        let cms = "-----BEGIN SIGNED MESSAGE-----\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\n-----END SIGNED MESSAGE-----\n";
        let check = trust.check("", b"payload", cms, 0, 0);
        assert!(!check.is_good());
        assert!(
            check.to_string().contains("X.509 (CMS)") && check.to_string().contains("keyless.identities"),
            "{check}"
        );
        let other = trust.check("", b"payload", "garbage", 0, 0);
        assert!(!other.is_good() && other.to_string().contains("unsupported signature format"));
    }
}
