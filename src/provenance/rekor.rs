//! A Rekor v1 transparency log: upload entries, and verify what the log returns before anything is
//! recorded — the signed entry timestamp (SET), the inclusion proof (RFC 6962) against the root in the
//! log's signed checkpoint, and that the entry holds what was sent.
//!
//! The verification is pure (`verify_entry`); `Rekor` is the HTTP adapter.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sigstore_verify::types::Sha256Hash;
use thiserror::Error;

use crate::reason::Reason;
use crate::resources::provenance::RekorEntry;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RekorError {
    #[error("Rekor at {url} cannot be reached: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("Rekor at {url} refused the entry ({status}): {reason}")]
    Rejected { url: String, status: u16, reason: String },
    #[error("Rekor's response cannot be read: {0}")]
    Malformed(String),
    #[error("the log's public key cannot be used: {0}")]
    BadKey(String),
    #[error("what Rekor returned does not verify: {0}")]
    Unverified(String),
    #[error("Rekor at {url} answered with {size}, more than the {} MiB Weft reads", MAX_RESPONSE_BYTES >> 20)]
    TooLarge { url: String, size: String },
}

/// The largest Rekor response Weft reads. An entry's body (a hashedrekord or dsse entry: hashes,
/// signatures and a public key or certificate) is a few KiB, its inclusion proof under 3 KiB, and the
/// attestation the log keeps with a dsse or intoto entry at most 100 KiB by default (rekor-server's
/// `--max_attestation_size`), about 137 KiB in base64. 2 MiB is over ten times that, with room for a log
/// that keeps attestations up to a MiB. A larger response is refused (`RekorResponseTooLarge`, not
/// retried) and no more of it is read.
pub const MAX_RESPONSE_BYTES: u64 = 2 << 20;
/// How long one request to Rekor may take as a whole; past it the log is unavailable (retried later).
pub const REKOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl RekorError {
    pub fn reason(&self) -> Reason {
        match self {
            RekorError::Unavailable { .. } => Reason::RekorUnavailable,
            RekorError::Rejected { .. } => Reason::RekorRejected,
            RekorError::Malformed(_) => Reason::RekorResponseInvalid,
            RekorError::BadKey(_) => Reason::RekorKeyInvalid,
            RekorError::Unverified(_) => Reason::RekorEntryUnverified,
            RekorError::TooLarge { .. } => Reason::RekorResponseTooLarge,
        }
    }
}

crate::status::step_error!(RekorError);

/// The log's public key, and its log ID (hex SHA-256 of the DER key).
#[derive(Clone, Debug)]
pub struct LogKey {
    key: p256::ecdsa::VerifyingKey,
    pub log_id: String,
}

impl LogKey {
    pub fn from_pem(pem: &str) -> Result<LogKey, RekorError> {
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| RekorError::BadKey(format!("expected a PEM ECDSA P-256 public key: {e}")))?;
        let der = key.to_public_key_der().map_err(|e| RekorError::BadKey(e.to_string()))?;
        Ok(LogKey { log_id: hex::encode(Sha256::digest(der.as_bytes())), key })
    }

    /// The key's DER SPKI.
    pub fn der(&self) -> Vec<u8> {
        self.key.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    fn verify(&self, message: &[u8], der_sig: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(der_sig).is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }

    fn key_hint(&self) -> Vec<u8> {
        Sha256::digest(self.der())[..4].to_vec()
    }
}

/// A log entry as Rekor returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub uuid: String,
    /// The canonical entry, base64.
    pub body: String,
    pub integrated_time: i64,
    pub log_index: i64,
    pub log_id: String,
    pub set: String,
    pub proof: Option<Proof>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub log_index: u64,
    pub tree_size: u64,
    pub root_hash: String,
    pub hashes: Vec<String>,
    pub checkpoint: String,
}

impl Entry {
    /// Parses `{"<uuid>": {body, integratedTime, logID, logIndex, verification}}`.
    pub fn from_response(v: &Value) -> Result<Entry, RekorError> {
        let (uuid, e) = v
            .as_object()
            .and_then(|o| o.iter().next())
            .ok_or_else(|| RekorError::Malformed("no entry in the response".into()))?;
        let s = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| RekorError::Malformed(format!("entry has no {k}")))
        };
        let n = |k: &str| {
            e.get(k).and_then(Value::as_i64).ok_or_else(|| RekorError::Malformed(format!("entry has no {k}")))
        };
        let verification =
            e.get("verification").ok_or_else(|| RekorError::Malformed("entry has no verification".into()))?;
        let set = verification
            .get("signedEntryTimestamp")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RekorError::Malformed("entry has no signedEntryTimestamp".into()))?;
        let proof = verification.get("inclusionProof").filter(|p| !p.is_null()).map(|p| -> Result<Proof, RekorError> {
            let pn = |k: &str| {
                p.get(k)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| RekorError::Malformed(format!("inclusionProof has no {k}")))
            };
            Ok(Proof {
                log_index: pn("logIndex")?,
                tree_size: pn("treeSize")?,
                root_hash: p.get("rootHash").and_then(Value::as_str).unwrap_or_default().to_string(),
                hashes: p
                    .get("hashes")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default(),
                checkpoint: p.get("checkpoint").and_then(Value::as_str).unwrap_or_default().to_string(),
            })
        });
        Ok(Entry {
            uuid: uuid.clone(),
            body: s("body")?,
            integrated_time: n("integratedTime")?,
            log_index: n("logIndex")?,
            log_id: s("logID")?,
            set,
            proof: proof.transpose()?,
        })
    }

    /// The entry's canonical body, decoded.
    pub fn body_json(&self) -> Result<Value, RekorError> {
        let raw = b64(&self.body)?;
        serde_json::from_slice(&raw).map_err(|e| RekorError::Malformed(format!("entry body: {e}")))
    }

    /// cosign's `dev.sigstore.cosign/bundle` annotation.
    pub fn cosign_bundle(&self) -> String {
        json!({
            "SignedEntryTimestamp": self.set,
            "Payload": {"body": self.body, "integratedTime": self.integrated_time, "logIndex": self.log_index, "logID": self.log_id}
        })
        .to_string()
    }

    pub fn record(&self) -> RekorEntry {
        RekorEntry {
            uuid: self.uuid.clone(),
            log_index: self.log_index,
            integrated_time: self.integrated_time,
            log_id: self.log_id.clone(),
        }
    }
}

fn b64(s: &str) -> Result<Vec<u8>, RekorError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| RekorError::Malformed(format!("base64: {e}")))
}

/// Checks an entry against the log's key: the SET over the canonical `{body, integratedTime, logID,
/// logIndex}`, the log ID, the inclusion proof against the checkpoint's root, and the checkpoint's
/// signature. `require_proof` makes a missing inclusion proof a failure.
pub fn verify_entry(entry: &Entry, key: &LogKey, require_proof: bool) -> Result<(), RekorError> {
    if entry.log_id != key.log_id {
        return Err(RekorError::Unverified(format!(
            "the entry names log {} but the configured log key is {}",
            entry.log_id, key.log_id
        )));
    }
    // JSON with sorted keys and no whitespace is the canonical form for these values.
    let canonical = serde_json::to_vec(&json!({
        "body": entry.body, "integratedTime": entry.integrated_time, "logID": entry.log_id, "logIndex": entry.log_index
    }))
    .unwrap_or_default();
    if !key.verify(&canonical, &b64(&entry.set)?) {
        return Err(RekorError::Unverified(
            "the signed entry timestamp is not signed by the configured log key".into(),
        ));
    }
    let Some(proof) = &entry.proof else {
        return if require_proof {
            Err(RekorError::Unverified("the entry comes without an inclusion proof".into()))
        } else {
            Ok(())
        };
    };
    let leaf = leaf_hash(&b64(&entry.body)?);
    let hashes: Vec<[u8; 32]> = proof.hashes.iter().map(|h| hex32(h)).collect::<Result<_, _>>()?;
    let root = hex32(&proof.root_hash)?;
    if !verify_inclusion(proof.log_index, proof.tree_size, leaf, &hashes, root) {
        return Err(RekorError::Unverified("the inclusion proof does not lead to the tree root".into()));
    }
    let (size, cp_root) = verify_checkpoint(&proof.checkpoint, key)?;
    if size != proof.tree_size || cp_root != root {
        return Err(RekorError::Unverified(format!(
            "the signed checkpoint (size {size}) does not match the proof's tree (size {})",
            proof.tree_size
        )));
    }
    Ok(())
}

fn hex32(s: &str) -> Result<[u8; 32], RekorError> {
    let v = hex::decode(s).map_err(|e| RekorError::Malformed(format!("hash {s:?}: {e}")))?;
    v.try_into().map_err(|_| RekorError::Malformed(format!("hash {s:?} is not 32 bytes")))
}

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ entry), as sigstore-merkle computes it.
pub fn leaf_hash(body: &[u8]) -> [u8; 32] {
    *sigstore_merkle::hash_leaf(body).as_bytes()
}

/// RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right), as sigstore-merkle computes it.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    *sigstore_merkle::hash_children(&Sha256Hash::new(*left), &Sha256Hash::new(*right)).as_bytes()
}

/// RFC 9162 §2.1.3.2 inclusion proof verification: sigstore-merkle's, which also refuses a proof of the
/// wrong length for the index and size.
pub fn verify_inclusion(index: u64, size: u64, leaf: [u8; 32], proof: &[[u8; 32]], root: [u8; 32]) -> bool {
    let proof: Vec<Sha256Hash> = proof.iter().copied().map(Sha256Hash::new).collect();
    sigstore_merkle::verify_inclusion_proof(&Sha256Hash::new(leaf), index, size, &proof, &Sha256Hash::new(root)).is_ok()
}

/// A signed note (`origin\nsize\nroot\n…\n\n— name base64(hint ‖ sig)`): returns (size, root) when a
/// signature line verifies with the log key.
pub fn verify_checkpoint(note: &str, key: &LogKey) -> Result<(u64, [u8; 32]), RekorError> {
    let bad = |m: &str| RekorError::Unverified(format!("checkpoint: {m}"));
    let (text, sigs) = note.split_once("\n\n").ok_or_else(|| bad("no signature block"))?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let _origin = lines.next().ok_or_else(|| bad("no origin"))?;
    let size: u64 = lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| bad("no tree size"))?;
    let root = b64(lines.next().ok_or_else(|| bad("no root hash"))?)?;
    let root: [u8; 32] = root.try_into().map_err(|_| bad("root hash is not 32 bytes"))?;
    let hint = key.key_hint();
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else { continue };
        let Some((_, sig)) = rest.rsplit_once(' ') else { continue };
        let Ok(raw) = b64(sig) else { continue };
        if raw.len() > 4 && raw[..4] == hint[..] && key.verify(text.as_bytes(), &raw[4..]) {
            return Ok((size, root));
        }
    }
    Err(bad("no signature by the configured log key"))
}

/// The Rekor REST API.
pub struct Rekor {
    url: String,
    http: reqwest::Client,
}

impl Rekor {
    pub fn new(url: &str) -> Rekor {
        Rekor::with_timeout(url, REKOR_TIMEOUT)
    }

    /// As `new`, with another bound on each request.
    pub fn with_timeout(url: &str, timeout: std::time::Duration) -> Rekor {
        let connect = timeout.min(std::time::Duration::from_secs(10));
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(connect).build().unwrap_or_default();
        Rekor { url: url.trim_end_matches('/').to_string(), http }
    }

    /// The response's body as text, at most `MAX_RESPONSE_BYTES` of it.
    async fn text(&self, resp: reqwest::Response) -> Result<String, RekorError> {
        match crate::oci::read_capped(resp, MAX_RESPONSE_BYTES).await {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(crate::oci::BodyError::TooLarge(size)) => {
                Err(RekorError::TooLarge { url: self.url.clone(), size: size.to_string() })
            }
            Err(crate::oci::BodyError::Transport(e)) => Err(self.unavailable(e)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> RekorError {
        RekorError::Unavailable { url: self.url.clone(), reason: e.to_string() }
    }

    /// A read that must answer 200 with JSON: 5xx, 429 and transport errors are the log being
    /// unavailable (retried), anything else a refusal (a verdict).
    async fn read(&self, req: reqwest::RequestBuilder) -> Result<Value, RekorError> {
        crate::metrics::rekor_request();
        let resp = req.send().await.map_err(|e| self.unavailable(e))?;
        let status = resp.status().as_u16();
        let text = self.text(resp).await?;
        match status {
            200 => parse(&text),
            s if s >= 500 || s == 429 => Err(self.unavailable(format!("HTTP {s}"))),
            s => Err(RekorError::Rejected { url: self.url.clone(), status: s, reason: text }),
        }
    }

    /// Uploads an entry; when the log already has it (409), fetches the existing one, so a retry never
    /// makes a second entry.
    pub async fn upload(&self, proposed: &Value) -> Result<Entry, RekorError> {
        crate::metrics::rekor_request();
        let resp = self
            .http
            .post(format!("{}/api/v1/log/entries", self.url))
            .json(proposed)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = resp.status().as_u16();
        if status == 409 {
            let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
            let uuid = location
                .as_deref()
                .and_then(|l| l.rsplit('/').next())
                .ok_or_else(|| RekorError::Malformed("409 without Location".into()))?;
            return self.get(uuid).await;
        }
        let text = self.text(resp).await?;
        match status {
            201 => Entry::from_response(&parse(&text)?),
            s if s >= 500 || s == 429 => {
                Err(RekorError::Unavailable { url: self.url.clone(), reason: format!("HTTP {s}: {}", text.trim()) })
            }
            s => Err(RekorError::Rejected { url: self.url.clone(), status: s, reason: text.trim().to_string() }),
        }
    }

    pub async fn get(&self, uuid: &str) -> Result<Entry, RekorError> {
        let v = self.read(self.http.get(format!("{}/api/v1/log/entries/{uuid}", self.url))).await?;
        Entry::from_response(&v)
    }

    /// Entry UUIDs whose artifact hash is `sha256_hex` (the search index).
    pub async fn search_hash(&self, sha256_hex: &str) -> Result<Vec<String>, RekorError> {
        let search = json!({"hash": format!("sha256:{sha256_hex}")});
        let v = self.read(self.http.post(format!("{}/api/v1/index/retrieve", self.url)).json(&search)).await?;
        Ok(v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default())
    }
}

fn parse(text: &str) -> Result<Value, RekorError> {
    serde_json::from_str(text).map_err(|e| RekorError::Malformed(e.to_string()))
}

/// A `hashedrekord` v0.0.1 entry for a signature over an artifact with the given SHA-256.
pub fn hashedrekord(sha256_hex: &str, signature_b64: &str, public_pem: &str) -> Value {
    json!({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": sha256_hex}},
            "signature": {"content": signature_b64, "publicKey": {"content": base64::engine::general_purpose::STANDARD.encode(public_pem)}}
        }
    })
}

/// Does the entry's body hold this signature over this hash (the log returned what was sent)?
pub fn body_matches_hashedrekord(entry: &Entry, sha256_hex: &str, signature_b64: &str) -> Result<bool, RekorError> {
    let body = entry.body_json()?;
    Ok(body["kind"] == "hashedrekord"
        && body["spec"]["data"]["hash"]["value"].as_str() == Some(sha256_hex)
        && body["spec"]["signature"]["content"].as_str() == Some(signature_b64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    /// RFC 6962 tree hash, and the audit path for one leaf, computed the straightforward way.
    fn root(l: &[[u8; 32]]) -> [u8; 32] {
        if l.len() == 1 {
            return l[0];
        }
        let k = l.len().next_power_of_two() / 2;
        let k = if k == l.len() { k / 2 } else { k };
        node_hash(&root(&l[..k]), &root(&l[k..]))
    }

    fn path(m: usize, l: &[[u8; 32]]) -> Vec<[u8; 32]> {
        if l.len() == 1 {
            return Vec::new();
        }
        let k = l.len().next_power_of_two() / 2;
        let k = if k == l.len() { k / 2 } else { k };
        if m < k {
            let mut p = path(m, &l[..k]);
            p.push(root(&l[k..]));
            p
        } else {
            let mut p = path(m - k, &l[k..]);
            p.push(root(&l[..k]));
            p
        }
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_and_size() {
        for size in 1..20 {
            let l = leaves(size);
            let r = root(&l);
            for i in 0..size {
                let p = path(i, &l);
                assert!(verify_inclusion(i as u64, size as u64, l[i], &p, r), "leaf {i} of {size}");
                let mut wrong = r;
                wrong[0] ^= 1;
                assert!(!verify_inclusion(i as u64, size as u64, l[i], &p, wrong));
                if size > 1 {
                    assert!(
                        !verify_inclusion(((i + 1) % size) as u64, size as u64, l[i], &p, r),
                        "another index fails"
                    );
                }
            }
        }
    }
}
