//! SSH signatures on git objects (`-----BEGIN SSH SIGNATURE-----`), checked against git's
//! `allowed_signers` file: `principals [options] keytype base64 [comment]`, with the options
//! `namespaces="…"`, `valid-after=`, `valid-before=` and `cert-authority`.
//!
//! As git does, the signature's namespace must be `git`, and validity windows are compared with the
//! time git records for the object (committer or tagger time). ssh-key verifies the cryptography; it has
//! no reader for this file format, so the parser is written here.

use ssh_key::{HashAlg, PublicKey, SshSig};
use thiserror::Error;

use super::{KeyInfo, SignatureCheck, Signer, rfc3339};

pub const GIT_NAMESPACE: &str = "git";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AllowedSignersError {
    #[error("allowed_signers line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("allowed_signers has no usable entry")]
    Empty,
}

#[derive(Clone, Debug)]
struct Entry {
    principals: String,
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
    key: PublicKey,
    /// An Ed25519 key, decoded once: most git signing keys are Ed25519, and decoding the point for every
    /// signature is a good part of the cost of checking it.
    ed25519: Option<ed25519_dalek::VerifyingKey>,
    fingerprint: String,
}

impl Entry {
    /// Checks `sig` over `payload` in the git namespace: what `PublicKey::verify` does, with the decoded
    /// Ed25519 key when there is one.
    fn verifies(&self, payload: &[u8], sig: &SshSig) -> bool {
        match &self.ed25519 {
            Some(key) => {
                use ed25519_dalek::Verifier;
                let Ok(data) = SshSig::signed_data(GIT_NAMESPACE, sig.hash_alg(), payload) else { return false };
                ed25519_dalek::Signature::try_from(sig.signature()).is_ok_and(|s| key.verify(&data, &s).is_ok())
            }
            None => self.key.verify(GIT_NAMESPACE, payload, sig).is_ok(),
        }
    }
}

/// The parsed `allowed_signers` file.
#[derive(Clone, Debug, Default)]
pub struct AllowedSigners {
    entries: Vec<Entry>,
    /// Entries Weft cannot use (certificate authorities), reported rather than silently trusted.
    pub skipped: Vec<String>,
}

impl AllowedSigners {
    pub fn parse(text: &str) -> Result<Self, AllowedSignersError> {
        let mut out = AllowedSigners::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| AllowedSignersError::Line { line: i + 1, reason };
            let tokens = tokenize(line).map_err(err)?;
            let mut it = tokens.into_iter().peekable();
            let principals = it.next().ok_or_else(|| err("missing principals".into()))?;
            // Options come before the key type; the key type is the first token that names an algorithm.
            let mut options = Vec::new();
            while let Some(tok) = it.peek() {
                if looks_like_key_type(tok) {
                    break;
                }
                options.extend(split_options(tok));
                it.next();
            }
            let key_type = it.next().ok_or_else(|| err("missing key type and key".into()))?;
            let key_b64 = it.next().ok_or_else(|| err("missing key".into()))?;
            let key = PublicKey::from_openssh(&format!("{key_type} {key_b64}"))
                .map_err(|e| err(format!("invalid public key: {e}")))?;
            let ed25519 = key.key_data().ed25519().and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.0).ok());
            let mut entry = Entry {
                principals,
                namespaces: None,
                valid_after: None,
                valid_before: None,
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
                key,
                ed25519,
            };
            let mut cert_authority = false;
            for opt in options {
                let (name, value) = match opt.split_once('=') {
                    Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"').to_string())),
                    None => (opt.to_ascii_lowercase(), None),
                };
                match (name.as_str(), value) {
                    ("cert-authority", None) => cert_authority = true,
                    ("namespaces", Some(v)) => {
                        entry.namespaces = Some(v.split(',').map(|s| s.trim().to_string()).collect())
                    }
                    ("valid-after", Some(v)) => entry.valid_after = Some(parse_time(&v).map_err(err)?),
                    ("valid-before", Some(v)) => entry.valid_before = Some(parse_time(&v).map_err(err)?),
                    (other, _) => return Err(err(format!("unknown option {other:?}"))),
                }
            }
            if cert_authority {
                out.skipped.push(format!("line {}: cert-authority entries are not supported", i + 1));
                continue;
            }
            out.entries.push(entry);
        }
        if out.entries.is_empty() {
            return Err(AllowedSignersError::Empty);
        }
        Ok(out)
    }

    /// Checks an armored SSH signature over `payload`; `signed_at` is the time git records for the object.
    pub fn check(&self, payload: &[u8], armored: &str, signed_at: i64) -> SignatureCheck {
        let sig = match SshSig::from_pem(armored.trim()) {
            Ok(s) => s,
            Err(e) => return SignatureCheck::Malformed(format!("unreadable SSH signature: {e}")),
        };
        let candidates: Vec<&Entry> = self.entries.iter().filter(|e| e.key.key_data() == sig.public_key()).collect();
        let Some(first) = candidates.first() else {
            return SignatureCheck::UnknownKey { key: unknown_key(&sig) };
        };
        let key =
            KeyInfo::of(&Signer::Ssh { fingerprint: first.fingerprint.clone(), principals: first.principals.clone() });
        if sig.namespace() != GIT_NAMESPACE {
            return SignatureCheck::Malformed(format!(
                "the SSH signature by {key} is for namespace {:?}, not \"git\"",
                sig.namespace()
            ));
        }
        if !first.verifies(payload, &sig) {
            return SignatureCheck::Bad { key };
        }
        let mut reasons = Vec::new();
        for e in &candidates {
            let signer = Signer::Ssh { fingerprint: e.fingerprint.clone(), principals: e.principals.clone() };
            if let Some(ns) = &e.namespaces
                && !ns.iter().any(|n| n == GIT_NAMESPACE)
            {
                reasons.push((signer, format!("the allowed_signers entry is limited to namespaces {}", ns.join(","))));
                continue;
            }
            if let Some(after) = e.valid_after.filter(|a| signed_at < *a) {
                reasons.push((signer, format!("the key is valid only after {}", rfc3339(after))));
                continue;
            }
            if let Some(before) = e.valid_before.filter(|b| signed_at >= *b) {
                reasons.push((signer, format!("the key was valid only before {}", rfc3339(before))));
                continue;
            }
            return SignatureCheck::Good(signer);
        }
        let (signer, reason) = reasons.remove(0);
        SignatureCheck::KeyUnusable { signer, reason }
    }

    /// A stable identity of the allowed signers, for caching verdicts.
    pub fn identity(&self) -> String {
        let mut parts: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{}:{:?}:{:?}:{:?}", e.fingerprint, e.namespaces, e.valid_after, e.valid_before))
            .collect();
        parts.sort();
        parts.join(",")
    }
}

/// The key an armored SSH signature carries, for a report.
pub fn key_of(armored: &str) -> KeyInfo {
    match SshSig::from_pem(armored.trim()) {
        Ok(sig) => unknown_key(&sig),
        Err(_) => KeyInfo {
            kind: "ssh",
            fingerprint: "(unreadable)".into(),
            primary_fingerprint: None,
            user_id: None,
            principals: None,
            known: false,
        },
    }
}

fn unknown_key(sig: &SshSig) -> KeyInfo {
    KeyInfo {
        kind: "ssh",
        fingerprint: PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256).to_string(),
        primary_fingerprint: None,
        user_id: None,
        principals: None,
        known: false,
    }
}

fn looks_like_key_type(tok: &str) -> bool {
    tok.starts_with("ssh-") || tok.starts_with("ecdsa-sha2-") || tok.starts_with("sk-")
}

/// Splits on spaces outside double quotes.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Options are comma-separated, with commas inside quotes kept.
fn split_options(tok: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in tok.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `YYYYMMDD[HHMM[SS]][Z]`, local time unless `Z`, as ssh-keygen reads it; Weft reads both as UTC. A
/// date or time that does not exist (month 13, February 30th, 25:61) is an error, never a guess.
fn parse_time(v: &str) -> Result<i64, String> {
    use k8s_openapi::jiff::civil::{Date, Time};
    let digits = v.trim_end_matches(['Z', 'z']);
    let invalid = |why: &str| format!("invalid time {v:?}: {why} (expected YYYYMMDD[HHMM[SS]][Z])");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(invalid("not 8, 12 or 14 digits"));
    }
    // Every range is within `digits` (checked above) and holds only ASCII digits.
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i16>().ok()).unwrap_or(0);
    let narrow = |x: i16| i8::try_from(x).map_err(|_| invalid("a field is out of range"));
    let date = Date::new(n(0..4), narrow(n(4..6))?, narrow(n(6..8))?).map_err(|_| invalid("no such date"))?;
    let time = Time::new(narrow(n(8..10))?, narrow(n(10..12))?, narrow(n(12..14))?, 0)
        .map_err(|_| invalid("no such time of day"))?;
    date.to_datetime(time)
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| invalid(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn parses_options_quotes_and_comments() {
        let text = format!(
            "# team\nalice@example.com,bob@example.com namespaces=\"git,file\",valid-after=\"20240101\" {KEY} alice\n\"carol@example.com\" {KEY}\n"
        );
        let s = AllowedSigners::parse(&text).unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].namespaces.as_deref(), Some(&["git".to_string(), "file".to_string()][..]));
        assert_eq!(s.entries[0].valid_after, Some(1704067200));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(matches!(
            AllowedSigners::parse("alice ssh-ed25519 notbase64"),
            Err(AllowedSignersError::Line { line: 1, .. })
        ));
        assert!(matches!(
            AllowedSigners::parse(&format!("alice bogus=1 {KEY}")),
            Err(AllowedSignersError::Line { .. })
        ));
        assert!(matches!(
            AllowedSigners::parse(&format!("alice valid-after=\"2024\" {KEY}")),
            Err(AllowedSignersError::Line { .. })
        ));
        for bad in ["20241301", "20240230", "202401012561", "20240101256000"] {
            let err = AllowedSigners::parse(&format!("# c\nalice valid-after=\"{bad}\" {KEY}")).unwrap_err();
            assert!(matches!(&err, AllowedSignersError::Line { line: 2, .. }), "{bad}: {err}");
        }
        assert_eq!(AllowedSigners::parse("# nothing\n").unwrap_err(), AllowedSignersError::Empty);
        let ca = AllowedSigners::parse(&format!("*@example.com cert-authority {KEY}\nalice {KEY}")).unwrap();
        assert_eq!(ca.skipped.len(), 1);
    }
}
