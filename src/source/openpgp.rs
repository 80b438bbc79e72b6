//! OpenPGP signatures on git objects, checked against an allowed set of keys.
//!
//! rPGP verifies the cryptography; which keys count is decided here, the way `gpg` would: a key
//! (primary or subkey) counts when its certificate's self-signatures verify, it is signing-capable, it is
//! neither expired nor revoked now, and the signature was made after the key was created. A subkey
//! counts when its primary key is allowed (or the subkey itself is named), and its binding signature
//! carries a valid back-signature.

use std::collections::HashMap;
use std::io::Cursor;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails;
use thiserror::Error;

use super::{KeyFingerprint, KeyInfo, SignatureCheck, Signer, rfc3339};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyringError {
    #[error("the keyring holds no OpenPGP public key")]
    Empty,
    #[error("cannot read an OpenPGP public key: {0}")]
    Parse(String),
    #[error("allowed key {0:?} is neither a 16-hex key ID nor a 40-hex fingerprint")]
    BadKeyName(String),
}

/// One signing-capable key (primary or subkey) and what makes it count or not.
#[derive(Clone, Debug)]
struct KeyEntry {
    fingerprint: KeyFingerprint,
    primary: KeyFingerprint,
    user_id: String,
    created: u32,
    /// Seconds since the epoch; `None` when the key does not expire.
    expires: Option<u32>,
    revoked: bool,
    can_sign: bool,
    /// Why the certificate's binding signatures do not hold, if they do not.
    broken: Option<String>,
    public: KeyMaterial,
}

#[derive(Clone, Debug)]
enum KeyMaterial {
    Primary(pgp::packet::PublicKey),
    Subkey(pgp::packet::PublicSubkey),
}

/// The keys a policy allows, ready to check signatures.
#[derive(Clone, Debug, Default)]
pub struct AllowedPgpKeys {
    /// By 16-hex key ID (upper case), since signatures may carry only the issuer key ID.
    by_key_id: HashMap<String, Vec<KeyEntry>>,
    /// The keyring's other keys (not allowed), by key ID: to name who signed in a failure.
    others: HashMap<String, KeyInfo>,
    /// Allowed names (key IDs or fingerprints) that match no key in the keyring.
    pub unknown: Vec<String>,
}

impl AllowedPgpKeys {
    /// Reads every armored public key in `keyring` (several blocks may follow each other) and keeps the
    /// keys named in `allowed` and their subkeys.
    pub fn new(keyrings: &[&str], allowed: &[String]) -> Result<Self, KeyringError> {
        let wanted: Vec<String> = allowed.iter().map(|k| normalize_key_name(k)).collect::<Result<_, _>>()?;
        let mut certs = Vec::new();
        for text in keyrings {
            let (iter, _) = SignedPublicKey::from_armor_many(Cursor::new(text.as_bytes()))
                .map_err(|e| KeyringError::Parse(short(&e.to_string())))?;
            for cert in iter {
                certs.push(cert.map_err(|e| KeyringError::Parse(short(&e.to_string())))?);
            }
        }
        if certs.is_empty() {
            return Err(KeyringError::Empty);
        }
        let mut out = AllowedPgpKeys::default();
        let mut matched = vec![false; wanted.len()];
        for cert in &certs {
            let entries = entries_of(cert);
            let primary_matches = |w: &str| matches_name(w, &entries[0].fingerprint);
            let cert_allowed = wanted.iter().enumerate().any(|(i, w)| {
                let m = primary_matches(w);
                matched[i] |= m;
                m
            });
            for entry in entries {
                let allowed_directly = wanted.iter().enumerate().any(|(i, w)| {
                    let m = matches_name(w, &entry.fingerprint);
                    matched[i] |= m;
                    m
                });
                if cert_allowed || allowed_directly {
                    out.by_key_id.entry(entry.fingerprint.key_id()).or_default().push(entry);
                } else {
                    out.others.insert(entry.fingerprint.key_id(), entry.info());
                }
            }
        }
        out.unknown = allowed.iter().zip(matched).filter(|(_, m)| !m).map(|(k, _)| k.clone()).collect();
        Ok(out)
    }

    /// Every key in the keyrings counts (for material signed by "whoever holds this key").
    pub fn all_in(keyrings: &[&str]) -> Result<Self, KeyringError> {
        let mut names = Vec::new();
        for text in keyrings {
            let (iter, _) = SignedPublicKey::from_armor_many(Cursor::new(text.as_bytes()))
                .map_err(|e| KeyringError::Parse(short(&e.to_string())))?;
            for cert in iter {
                let cert = cert.map_err(|e| KeyringError::Parse(short(&e.to_string())))?;
                names.push(hex::encode_upper(cert.primary_key.fingerprint().as_bytes()));
            }
        }
        Self::new(keyrings, &names)
    }

    pub fn is_empty(&self) -> bool {
        self.by_key_id.is_empty()
    }

    /// Checks an armored detached signature over `payload` at time `now` (seconds since the epoch).
    pub fn check(&self, payload: &[u8], armored: &str, now: i64) -> SignatureCheck {
        let sig = match parse_signature(armored) {
            Ok(sig) => sig,
            Err(malformed) => return malformed,
        };
        let issuers = issuer_key_ids(&sig);
        let Some(issuer) = issuers.first().cloned() else {
            return SignatureCheck::Malformed("the OpenPGP signature names no issuer key".into());
        };
        let candidates: Vec<&KeyEntry> = issuers.iter().filter_map(|id| self.by_key_id.get(id)).flatten().collect();
        if candidates.is_empty() {
            let key =
                issuers.iter().find_map(|id| self.others.get(id)).cloned().unwrap_or_else(|| unknown_key(&sig, issuer));
            return SignatureCheck::UnknownKey { key };
        }
        let created = sig.created().map(|t| t.as_secs()).unwrap_or(0);
        let mut last = None;
        for key in candidates {
            let verified = match &key.public {
                KeyMaterial::Primary(k) => sig.verify(k, payload),
                KeyMaterial::Subkey(k) => sig.verify(k, payload),
            };
            // The library's reason (a hash mismatch, a curve error) says nothing a person can act on.
            if verified.is_err() {
                last = Some(SignatureCheck::Bad { key: key.info() });
                continue;
            }
            let signer = Signer::Pgp {
                fingerprint: key.fingerprint.clone(),
                primary: key.primary.clone(),
                user_id: key.user_id.clone(),
            };
            // A signature may carry its own expiry (gpg --default-sig-expire); git calls it expired.
            let sig_expires = sig
                .signature_expiration_time()
                .map(|d| d.as_secs())
                .filter(|s| *s > 0)
                .map(|s| i64::from(created) + i64::from(s));
            return if let Some(why) = &key.broken {
                SignatureCheck::KeyUnusable { signer, reason: format!("its certificate does not hold: {why}") }
            } else if key.revoked {
                SignatureCheck::KeyUnusable { signer, reason: "the key is revoked".into() }
            } else if !key.can_sign {
                SignatureCheck::KeyUnusable { signer, reason: "the key is not marked for signing".into() }
            } else if let Some(exp) = key.expires.filter(|e| i64::from(*e) <= now) {
                SignatureCheck::KeyUnusable { signer, reason: format!("the key expired at {}", rfc3339(exp.into())) }
            } else if created < key.created {
                SignatureCheck::KeyUnusable {
                    signer,
                    reason: format!(
                        "the signature ({}) predates the key ({})",
                        rfc3339(created.into()),
                        rfc3339(key.created.into())
                    ),
                }
            } else if let Some(at) = sig_expires.filter(|at| *at <= now) {
                SignatureCheck::Expired { signer, at }
            } else {
                SignatureCheck::Good(signer)
            };
        }
        last.unwrap_or_else(|| SignatureCheck::UnknownKey { key: unknown_key(&sig, issuer) })
    }

    /// A stable identity of the allowed keys and their state, for caching verdicts.
    pub fn identity(&self) -> String {
        let mut parts: Vec<String> = self
            .by_key_id
            .values()
            .flatten()
            .map(|k| format!("{}:{}:{:?}:{}:{}", k.fingerprint, k.revoked, k.expires, k.can_sign, k.broken.is_some()))
            .collect();
        parts.sort();
        parts.join(",")
    }

    /// The earliest expiry among the allowed keys, if any expires.
    pub fn earliest_expiry(&self) -> Option<u32> {
        self.by_key_id.values().flatten().filter_map(|k| k.expires).min()
    }
}

fn parse_signature(armored: &str) -> Result<Signature, SignatureCheck> {
    DetachedSignature::from_string(armored)
        .map(|(sig, _)| sig.signature)
        .map_err(|e| SignatureCheck::Malformed(format!("unreadable OpenPGP signature: {}", short(&e.to_string()))))
}

/// The key an armored signature names, for a report (no keyring to look it up in).
pub fn key_of(armored: &str) -> KeyInfo {
    match parse_signature(armored) {
        Ok(sig) => {
            let id = issuer_key_ids(&sig).into_iter().next().unwrap_or_default();
            unknown_key(&sig, id)
        }
        Err(_) => KeyInfo {
            kind: "gpg",
            fingerprint: "(unreadable)".into(),
            primary_fingerprint: None,
            user_id: None,
            principals: None,
            known: false,
        },
    }
}

/// A key that is not in the keyring: its full fingerprint when the signature carries one.
fn unknown_key(sig: &Signature, key_id: String) -> KeyInfo {
    let fingerprint = sig.issuer_fingerprint().first().map(|f| hex::encode_upper(f.as_bytes())).unwrap_or(key_id);
    KeyInfo { kind: "gpg", fingerprint, primary_fingerprint: None, user_id: None, principals: None, known: false }
}

/// The first line of a library's error, without the byte dumps some of them carry.
fn short(e: &str) -> String {
    let line = e.lines().next().unwrap_or_default();
    let cut = line.find(['[', '`']).unwrap_or(line.len()).min(120);
    line[..cut].trim_end_matches([' ', ':', '(']).to_string()
}

impl KeyEntry {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            kind: "gpg",
            fingerprint: self.fingerprint.to_string(),
            primary_fingerprint: (self.fingerprint != self.primary).then(|| self.primary.to_string()),
            user_id: Some(self.user_id.clone()).filter(|u| !u.is_empty()),
            principals: None,
            known: true,
        }
    }
}

fn issuer_key_ids(sig: &Signature) -> Vec<String> {
    let mut ids: Vec<String> =
        sig.issuer_fingerprint().iter().map(|f| fingerprint_hex(f.as_bytes()).key_id()).collect();
    ids.extend(sig.issuer_key_id().iter().map(|k| hex::encode_upper(k.as_ref())));
    ids.dedup();
    ids
}

fn fingerprint_hex(bytes: &[u8]) -> KeyFingerprint {
    KeyFingerprint(hex::encode_upper(bytes))
}

/// `0x`-less upper-case hex; 16 (key ID) or 40/64 (fingerprint) digits.
fn normalize_key_name(name: &str) -> Result<String, KeyringError> {
    let hexpart = name.trim().trim_start_matches("0x").trim_start_matches("0X").replace(' ', "");
    let ok = matches!(hexpart.len(), 16 | 40 | 64) && hexpart.bytes().all(|b| b.is_ascii_hexdigit());
    if ok { Ok(hexpart.to_ascii_uppercase()) } else { Err(KeyringError::BadKeyName(name.to_string())) }
}

fn matches_name(name: &str, fpr: &KeyFingerprint) -> bool {
    if name.len() == 16 { fpr.key_id() == name } else { fpr.0 == name }
}

/// Every key of a certificate, with its validity evaluated from the self-signatures.
fn entries_of(cert: &SignedPublicKey) -> Vec<KeyEntry> {
    let primary = &cert.primary_key;
    let primary_fpr = fingerprint_hex(primary.fingerprint().as_bytes());
    let mut broken = None;

    // The newest valid self-signature on a user ID (or a direct-key signature) carries the primary
    // key's flags and expiry.
    let mut best: Option<(&Signature, String)> = None;
    for user in &cert.details.users {
        for sig in &user.signatures {
            if !is_certification(sig) || sig.verify_certification(primary, pgp::types::Tag::UserId, &user.id).is_err() {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| sig.created() > b.created()) {
                best = Some((sig, String::from_utf8_lossy(user.id.id()).into_owned()));
            }
        }
    }
    for sig in &cert.details.direct_signatures {
        if sig.verify_key(primary).is_ok() && best.is_none() {
            best = Some((sig, String::new()));
        }
    }
    let user_id = best.as_ref().map(|(_, u)| u.clone()).unwrap_or_default();
    if best.is_none() {
        broken = Some("no valid self-signature on any user ID".to_string());
    }
    let revoked = cert
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok());
    let created = primary.created_at().as_secs();
    let expires = best.as_ref().and_then(|(s, _)| s.key_expiration_time()).map(|d| created.saturating_add(d.as_secs()));
    let flags = best.as_ref().map(|(s, _)| s.key_flags());
    // A self-signature without key flags leaves the primary key usable for signing (RFC 9580 5.2.3.29).
    let can_sign =
        flags.as_ref().is_none_or(|f| f.sign() || (!f.certify() && !f.encrypt_comms() && !f.encrypt_storage()));

    let mut entries = vec![KeyEntry {
        fingerprint: primary_fpr.clone(),
        primary: primary_fpr.clone(),
        user_id: user_id.clone(),
        created,
        expires,
        revoked,
        can_sign,
        broken: broken.clone(),
        public: KeyMaterial::Primary(primary.clone()),
    }];

    for sub in &cert.public_subkeys {
        let fpr = fingerprint_hex(sub.key.fingerprint().as_bytes());
        let bindings: Vec<&Signature> = sub
            .signatures
            .iter()
            .filter(|s| {
                s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok()
            })
            .collect();
        let newest = bindings.iter().max_by_key(|s| s.created()).copied();
        let sub_revoked = sub.signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation) && s.verify_subkey_binding(primary, &sub.key).is_ok()
        });
        let sub_created = sub.key.created_at().as_secs();
        let sub_expires = newest.and_then(|s| s.key_expiration_time()).map(|d| sub_created.saturating_add(d.as_secs()));
        let sub_can_sign = newest.is_some_and(|s| s.key_flags().sign());
        let mut sub_broken = broken.clone();
        if newest.is_none() {
            sub_broken.get_or_insert_with(|| "the subkey has no valid binding signature".into());
        } else if sub_can_sign
            && newest
                .and_then(|s| s.embedded_signature())
                .is_none_or(|b| b.verify_primary_key_binding(&sub.key, primary).is_err())
        {
            sub_broken.get_or_insert_with(|| "the signing subkey has no valid back-signature".into());
        }
        entries.push(KeyEntry {
            fingerprint: fpr,
            primary: primary_fpr.clone(),
            user_id: user_id.clone(),
            created: sub_created,
            // The primary key's expiry bounds its subkeys.
            expires: match (sub_expires, expires) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            revoked: revoked || sub_revoked,
            can_sign: sub_can_sign,
            broken: sub_broken,
            public: KeyMaterial::Subkey(sub.key.clone()),
        });
    }
    entries
}

fn is_certification(sig: &Signature) -> bool {
    matches!(
        sig.typ(),
        Some(
            SignatureType::CertGeneric
                | SignatureType::CertPersona
                | SignatureType::CertCasual
                | SignatureType::CertPositive
        )
    )
}
