//! A Rekor v2 (rekor-tiles) transparency log: add `hashedrekord` v0.0.2 entries, and verify what the log
//! returns before anything is recorded — that the entry's body is exactly the one sent, its inclusion
//! proof (RFC 6962) against the checkpoint, and the checkpoint (a C2SP signed note) signed by the log key
//! under the expected origin. Rekor v2 signs no entry timestamp: the checkpoint is the log's only promise.
//!
//! The verification is pure (`verify_entry2`); `Rekor2` is the HTTP adapter. A log that already holds an
//! entry answers only its index; `Rekor2` then rebuilds the entry and its proof from the log's tiles.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::provenance::rekor::{MAX_RESPONSE_BYTES, REKOR_TIMEOUT, leaf_hash, node_hash, verify_inclusion};
use crate::reason::Reason;

pub const KIND: &str = "hashedrekord";
pub const VERSION: &str = "0.0.2";
/// The only key Weft signs with (P-256, SHA-256); verifiers rebuild the entry with the key's default
/// details, so the request must name exactly these.
pub const KEY_DETAILS: &str = "PKIX_ECDSA_P256_SHA_256";
/// C2SP tlog-tiles: a tile holds 2^8 hashes.
const TILE_HEIGHT: u32 = 8;
/// How long to wait for a checkpoint covering a duplicate's index to be published (rekor-tiles publishes
/// one every few seconds at most).
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Rekor2Error {
    #[error("Rekor v2 at {url} cannot be reached: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("Rekor v2 at {url} refused the entry ({status}): {reason}")]
    Rejected { url: String, status: u16, reason: String },
    #[error(
        "Rekor v2 at {url} already holds this entry at index {index}, and no log key is configured to rebuild it from the log's tiles"
    )]
    Duplicate { url: String, index: u64 },
    #[error("Rekor v2's response cannot be read: {0}")]
    Malformed(String),
    #[error("the log's public key cannot be used: {0}")]
    BadKey(String),
    #[error("what Rekor v2 returned does not verify: {0}")]
    Unverified(String),
    #[error("Rekor v2 at {url} answered with {size}, more than the {} MiB Weft reads", MAX_RESPONSE_BYTES >> 20)]
    TooLarge { url: String, size: String },
}

impl Rekor2Error {
    pub fn reason(&self) -> Reason {
        match self {
            Rekor2Error::Unavailable { .. } => Reason::RekorUnavailable,
            Rekor2Error::Rejected { .. } => Reason::RekorRejected,
            Rekor2Error::Duplicate { .. } => Reason::RekorDuplicate,
            Rekor2Error::Malformed(_) => Reason::RekorResponseInvalid,
            Rekor2Error::BadKey(_) => Reason::RekorKeyInvalid,
            Rekor2Error::Unverified(_) => Reason::RekorEntryUnverified,
            Rekor2Error::TooLarge { .. } => Reason::RekorResponseTooLarge,
        }
    }
}

crate::status::step_error!(Rekor2Error);

fn b64(s: &str) -> Result<Vec<u8>, Rekor2Error> {
    B64.decode(s.trim()).map_err(|e| Rekor2Error::Malformed(format!("base64: {e}")))
}

fn hash32(s: &str) -> Result<[u8; 32], Rekor2Error> {
    b64(s)?.try_into().map_err(|_| Rekor2Error::Malformed(format!("hash {s:?} is not 32 bytes")))
}

/// What verifies the signature: a PKIX public key or an X.509 certificate, DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verifier {
    PublicKey(Vec<u8>),
    Certificate(Vec<u8>),
}

impl Verifier {
    /// The `Verifier` message as protobuf JSON, keys in RFC 8785 order.
    fn json(&self) -> Value {
        match self {
            Verifier::PublicKey(der) => json!({"keyDetails": KEY_DETAILS, "publicKey": {"rawBytes": B64.encode(der)}}),
            Verifier::Certificate(der) => {
                json!({"keyDetails": KEY_DETAILS, "x509Certificate": {"rawBytes": B64.encode(der)}})
            }
        }
    }
}

/// A signature over a SHA-256 digest, as one `hashedrekord` v0.0.2 entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedRekord2 {
    pub digest: [u8; 32],
    /// DER ECDSA.
    pub signature: Vec<u8>,
    pub verifier: Verifier,
}

impl HashedRekord2 {
    /// The `CreateEntryRequest` (the server refuses unknown fields).
    pub fn request(&self) -> Value {
        json!({"hashedRekordRequestV002": {
            "digest": B64.encode(self.digest),
            "signature": {"content": B64.encode(&self.signature), "verifier": self.verifier.json()}
        }})
    }

    /// The entry the log stores for this request, byte for byte: the `Entry` message as protobuf JSON in
    /// RFC 8785 form (sorted keys, no whitespace; every value here is an ASCII string, so serde_json's
    /// output is already canonical). Verifiers rebuild it from the bundle and never read the log's copy.
    pub fn canonical_body(&self) -> Vec<u8> {
        let entry = json!({
            "apiVersion": VERSION,
            "kind": KIND,
            "spec": {"hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": B64.encode(self.digest)},
                "signature": {"content": B64.encode(&self.signature), "verifier": self.verifier.json()}
            }}
        });
        let mut out = Vec::new();
        write_sorted(&entry, &mut out);
        out
    }

    pub fn leaf_hash(&self) -> [u8; 32] {
        leaf_hash(&self.canonical_body())
    }
}

/// JSON with object keys sorted, whatever order the map keeps them in.
fn write_sorted(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            out.push(b'{');
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_sorted(v, out);
            }
            out.push(b'}');
        }
        other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
    }
}

/// A log entry as Rekor v2 returns it (`dev.sigstore.rekor.v1.TransparencyLogEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry2 {
    pub log_index: u64,
    /// `logId.keyId`: the full key ID of the checkpoint key.
    pub log_id: Vec<u8>,
    pub kind: String,
    pub version: String,
    pub proof: Proof2,
    /// `canonicalizedBody`, decoded.
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof2 {
    pub log_index: u64,
    pub root_hash: [u8; 32],
    pub tree_size: u64,
    pub hashes: Vec<[u8; 32]>,
    /// The signed note, as text.
    pub checkpoint: String,
}

/// A protobuf JSON int64: a string (as protojson writes it) or a number (as it also accepts).
fn int64(v: &Value, what: &str) -> Result<u64, Rekor2Error> {
    let n = match v {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        Value::Null => Some(0),
        _ => None,
    };
    n.ok_or_else(|| Rekor2Error::Malformed(format!("{what} is not a non-negative integer: {v}")))
}

impl Entry2 {
    pub fn from_response(v: &Value) -> Result<Entry2, Rekor2Error> {
        let s = |v: &Value, what: &str| {
            v.as_str().map(str::to_string).ok_or_else(|| Rekor2Error::Malformed(format!("the entry has no {what}")))
        };
        let p = &v["inclusionProof"];
        if !p.is_object() {
            return Err(Rekor2Error::Malformed("the entry has no inclusion proof".into()));
        }
        let hashes = p["hashes"]
            .as_array()
            .map(|a| a.iter().map(|h| s(h, "proof hash").and_then(|h| hash32(&h))).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok(Entry2 {
            log_index: int64(&v["logIndex"], "logIndex")?,
            log_id: b64(&s(&v["logId"]["keyId"], "logId.keyId")?)?,
            kind: s(&v["kindVersion"]["kind"], "kindVersion.kind")?,
            version: s(&v["kindVersion"]["version"], "kindVersion.version")?,
            proof: Proof2 {
                log_index: int64(&p["logIndex"], "inclusionProof.logIndex")?,
                root_hash: hash32(&s(&p["rootHash"], "inclusionProof.rootHash")?)?,
                tree_size: int64(&p["treeSize"], "inclusionProof.treeSize")?,
                hashes,
                checkpoint: s(&p["checkpoint"]["envelope"], "inclusionProof.checkpoint.envelope")?,
            },
            body: b64(&s(&v["canonicalizedBody"], "canonicalizedBody")?)?,
        })
    }

    /// The entry as a bundle's `TransparencyLogEntry`, as sigstore-go writes it (protobuf JSON: int64 as
    /// strings, bytes as base64; the zero integrated time and the absent promise left out).
    pub fn tlog_entry(&self) -> Value {
        json!({
            "logIndex": self.log_index.to_string(),
            "logId": {"keyId": B64.encode(&self.log_id)},
            "kindVersion": {"kind": self.kind, "version": self.version},
            "inclusionProof": {
                "logIndex": self.proof.log_index.to_string(),
                "rootHash": B64.encode(self.proof.root_hash),
                "treeSize": self.proof.tree_size.to_string(),
                "hashes": self.proof.hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": self.proof.checkpoint}
            },
            "canonicalizedBody": B64.encode(&self.body)
        })
    }
}

/// The key that signs the log's checkpoints: ECDSA P-256 or Ed25519 (rekor-tiles takes either).
#[derive(Clone, Debug)]
pub enum CheckpointKey {
    Ecdsa { key: p256::ecdsa::VerifyingKey, der: Vec<u8> },
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// An Ed25519 SubjectPublicKeyInfo is this fixed prefix and the 32-byte key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl CheckpointKey {
    pub fn from_pem(pem: &str) -> Result<CheckpointKey, Rekor2Error> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| Rekor2Error::BadKey(format!("expected a PEM public key: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(Rekor2Error::BadKey(format!("expected a PEM public key, found {label}")));
        }
        CheckpointKey::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<CheckpointKey, Rekor2Error> {
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            let raw: [u8; 32] =
                raw.try_into().map_err(|_| Rekor2Error::BadKey("Ed25519 key is not 32 bytes".into()))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|e| Rekor2Error::BadKey(e.to_string()))?;
            return Ok(CheckpointKey::Ed25519(key));
        }
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(der)
            .map_err(|e| Rekor2Error::BadKey(format!("expected an ECDSA P-256 or Ed25519 public key: {e}")))?;
        let der = key.to_public_key_der().map_err(|e| Rekor2Error::BadKey(e.to_string()))?.as_bytes().to_vec();
        Ok(CheckpointKey::Ecdsa { key, der })
    }

    /// The key ID rekor-tiles gives the key (its `note.KeyHash`): the log ID in entries and trusted roots;
    /// its first 4 bytes are the hint on the checkpoint's signature line. For ECDSA it is the SHA-256 of
    /// the DER key alone (no origin, unlike C2SP), for Ed25519 the C2SP signed-note hash.
    pub fn key_id(&self, origin: &str) -> [u8; 32] {
        match self {
            CheckpointKey::Ecdsa { der, .. } => Sha256::digest(der).into(),
            CheckpointKey::Ed25519(key) => {
                let mut h = Sha256::new();
                h.update(origin.as_bytes());
                h.update([b'\n', 0x01]);
                h.update(key.as_bytes());
                h.finalize().into()
            }
        }
    }

    /// ECDSA signs SHA-256 of the note's text, Ed25519 the text itself.
    fn verify(&self, text: &[u8], sig: &[u8]) -> bool {
        match self {
            CheckpointKey::Ecdsa { key, .. } => {
                p256::ecdsa::Signature::from_der(sig).is_ok_and(|s| key.verify(text, &s).is_ok())
            }
            CheckpointKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| ed25519_dalek::Verifier::verify(key, text, &s).is_ok()),
        }
    }
}

/// A checkpoint whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub size: u64,
    pub root: [u8; 32],
}

/// A signed note (`origin\nsize\nroot\n[extensions…]\n\n— name base64(hint ‖ sig)\n…`): its origin must
/// be `origin`, and one signature line must be by `key` under that name (other lines, e.g. witnesses',
/// are ignored).
pub fn verify_checkpoint2(note: &str, key: &CheckpointKey, origin: &str) -> Result<Checkpoint, Rekor2Error> {
    let bad = |m: String| Rekor2Error::Unverified(format!("checkpoint: {m}"));
    let (body, sigs) = note.split_once("\n\n").ok_or_else(|| bad("no signature block".into()))?;
    let text = format!("{body}\n");
    let mut lines = body.split('\n');
    let first = lines.next().unwrap_or_default();
    if first != origin {
        return Err(bad(format!("the origin is {first:?}, not {origin:?}")));
    }
    let size: u64 = lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| bad("no tree size".into()))?;
    let root = B64
        .decode(lines.next().ok_or_else(|| bad("no root hash".into()))?)
        .ok()
        .and_then(|r| <[u8; 32]>::try_from(r).ok())
        .ok_or_else(|| bad("the root hash is not 32 bytes of base64".into()))?;
    let hint = &key.key_id(origin)[..4];
    for line in sigs.lines() {
        let Some((name, sig)) = line.strip_prefix("\u{2014} ").and_then(|r| r.split_once(' ')) else { continue };
        let Ok(raw) = B64.decode(sig) else { continue };
        if name == origin && raw.len() > 4 && &raw[..4] == hint && key.verify(text.as_bytes(), &raw[4..]) {
            return Ok(Checkpoint { size, root });
        }
    }
    Err(bad(format!("no signature by the configured log key under {origin:?}")))
}

/// Checks an entry against what was sent and the log's key and origin: the kind, the log ID, the body
/// (exactly the `hashedrekord` v0.0.2 for this digest, signature and verifier), the checkpoint's
/// signature, and the inclusion proof of the body's leaf against the checkpoint's root and size.
/// Returns the verified checkpoint.
pub fn verify_entry2(
    entry: &Entry2,
    key: &CheckpointKey,
    origin: &str,
    expected: &HashedRekord2,
) -> Result<Checkpoint, Rekor2Error> {
    let bad = |m: String| Rekor2Error::Unverified(m);
    if entry.kind != KIND || entry.version != VERSION {
        return Err(bad(format!("the entry is a {} {}, not a {KIND} {VERSION}", entry.kind, entry.version)));
    }
    let log_id = key.key_id(origin);
    if entry.log_id != log_id {
        return Err(bad(format!(
            "the entry names log {} but the configured log key is {}",
            hex::encode(&entry.log_id),
            hex::encode(log_id)
        )));
    }
    if entry.body != expected.canonical_body() {
        return Err(bad("the entry's body is not the hashedrekord that was sent".into()));
    }
    let proof = &entry.proof;
    if proof.log_index != entry.log_index {
        return Err(bad(format!("the proof is for index {}, the entry is at {}", proof.log_index, entry.log_index)));
    }
    let cp = verify_checkpoint2(&proof.checkpoint, key, origin)?;
    if cp.size != proof.tree_size || cp.root != proof.root_hash {
        return Err(bad(format!(
            "the signed checkpoint (size {}) does not match the proof's tree (size {})",
            cp.size, proof.tree_size
        )));
    }
    if !verify_inclusion(entry.log_index, cp.size, leaf_hash(&entry.body), &proof.hashes, cp.root) {
        return Err(bad("the inclusion proof does not lead to the checkpoint's root".into()));
    }
    Ok(cp)
}

// Inclusion proofs from tiles (C2SP tlog-tiles). A tile at level L holds the hashes of the perfect
// subtrees of height L·8, 256 to a tile; the last tile of a level is partial (`.p/W`) until it fills.

/// One tile as of a tree size: its level, index and width (256 when full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileRef {
    pub level: u64,
    pub index: u64,
    pub width: u64,
}

impl TileRef {
    /// `tile/L/x001/234[.p/W]`.
    pub fn path(&self) -> String {
        let full = self.width == 1 << TILE_HEIGHT;
        format!("tile/{}/{}", self.level, tile_index_path(self.index, (!full).then_some(self.width)))
    }

    /// The same tile once full (a partial tile may be gone when the level has grown past it).
    pub fn full_path(&self) -> String {
        format!("tile/{}/{}", self.level, tile_index_path(self.index, None))
    }
}

fn tile_index_path(mut n: u64, partial: Option<u64>) -> String {
    let mut path = format!("{:03}", n % 1000);
    n /= 1000;
    while n > 0 {
        path = format!("x{:03}/{path}", n % 1000);
        n /= 1000;
    }
    match partial {
        Some(w) => format!("{path}.p/{w}"),
        None => path,
    }
}

/// RFC 6962 PATH(m, D[lo:hi]) as leaf ranges, bottom up: each element is MTH of one range.
fn proof_ranges(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        proof_ranges(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        proof_ranges(m - k, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// The largest power of two below `n` (≥ 2): where RFC 6962 splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// A range that starts on a boundary at least as large as itself, as perfect subtrees (height, index),
/// largest first: its MTH is their right fold.
fn perfect_subtrees(mut lo: u64, hi: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    while lo < hi {
        let mut h = 0u32;
        while h < 63 && lo.is_multiple_of(1u64 << (h + 1)) && lo + (1u64 << (h + 1)) <= hi {
            h += 1;
        }
        out.push((h, lo >> h));
        lo += 1u64 << h;
    }
    out
}

/// Where the perfect subtree (height, index) is found in a tree of `size`: the tile, and the first and
/// count of its hashes there, to be hashed together.
fn locate(h: u32, k: u64, size: u64, tile_height: u32) -> (TileRef, usize, usize) {
    let level = h / tile_height;
    let sub = h % tile_height;
    let first = k << sub;
    let per_tile = 1u64 << tile_height;
    let index = first >> tile_height;
    let at_level = size >> (level * tile_height);
    let width = (at_level - index * per_tile).min(per_tile);
    (TileRef { level: level as u64, index, width }, (first % per_tile) as usize, 1usize << sub)
}

/// The tiles a proof for leaf `index` in a tree of `size` needs (the leaf's own tile included).
pub fn tiles_for_proof(index: u64, size: u64) -> Vec<TileRef> {
    tiles_for_proof_with(index, size, TILE_HEIGHT)
}

fn tiles_for_proof_with(index: u64, size: u64, tile_height: u32) -> Vec<TileRef> {
    let mut ranges = Vec::new();
    proof_ranges(index, 0, size, &mut ranges);
    let mut tiles = BTreeSet::from([locate(0, index, size, tile_height).0]);
    for (lo, hi) in ranges {
        for (h, k) in perfect_subtrees(lo, hi) {
            tiles.insert(locate(h, k, size, tile_height).0);
        }
    }
    tiles.into_iter().collect()
}

/// The leaf hash at `index` and its inclusion proof in a tree of `size`, from the tiles
/// `tiles_for_proof` named; None when a tile is missing or short.
pub fn proof_from_tiles(
    index: u64,
    size: u64,
    tiles: &BTreeMap<TileRef, Vec<[u8; 32]>>,
) -> Option<([u8; 32], Vec<[u8; 32]>)> {
    proof_from_tiles_with(index, size, tiles, TILE_HEIGHT)
}

fn proof_from_tiles_with(
    index: u64,
    size: u64,
    tiles: &BTreeMap<TileRef, Vec<[u8; 32]>>,
    tile_height: u32,
) -> Option<([u8; 32], Vec<[u8; 32]>)> {
    if index >= size {
        return None;
    }
    let subtree = |h: u32, k: u64| -> Option<[u8; 32]> {
        let (tile, first, count) = locate(h, k, size, tile_height);
        let mut level: Vec<[u8; 32]> = tiles.get(&tile)?.get(first..first + count)?.to_vec();
        while level.len() > 1 {
            level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        level.first().copied()
    };
    let leaf = subtree(0, index)?;
    let mut ranges = Vec::new();
    proof_ranges(index, 0, size, &mut ranges);
    let mut proof = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        let parts = perfect_subtrees(lo, hi).into_iter().map(|(h, k)| subtree(h, k)).collect::<Option<Vec<_>>>()?;
        let mut acc = *parts.last()?;
        for p in parts.iter().rev().skip(1) {
            acc = node_hash(p, &acc);
        }
        proof.push(acc);
    }
    Some((leaf, proof))
}

/// The log whose tiles and checkpoints `Rekor2` reads to rebuild an entry the log already holds.
#[derive(Clone, Debug)]
struct ReadLog {
    url: String,
    key: CheckpointKey,
    origin: String,
}

/// The Rekor v2 write API (`POST /api/v2/log/entries`), and optionally its read side (C2SP tlog-tiles).
pub struct Rekor2 {
    url: String,
    read: Option<ReadLog>,
    http: reqwest::Client,
}

impl Rekor2 {
    pub fn new(url: &str) -> Rekor2 {
        let connect = REKOR_TIMEOUT.min(std::time::Duration::from_secs(10));
        let http =
            reqwest::Client::builder().timeout(REKOR_TIMEOUT).connect_timeout(connect).build().unwrap_or_default();
        Rekor2 { url: url.trim_end_matches('/').to_string(), read: None, http }
    }

    /// Where the log's checkpoint and tiles are read (in a deployment often not the write API's host),
    /// and the key and origin that sign its checkpoints: with these, adding an entry the log already
    /// holds returns that entry, with a proof against the current checkpoint.
    pub fn with_reads(mut self, read_url: &str, key: CheckpointKey, origin: &str) -> Rekor2 {
        self.read = Some(ReadLog { url: read_url.trim_end_matches('/').to_string(), key, origin: origin.to_string() });
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Rekor2Error {
        Rekor2Error::Unavailable { url: self.url.clone(), reason: e.to_string() }
    }

    async fn bytes(&self, resp: reqwest::Response) -> Result<Vec<u8>, Rekor2Error> {
        match crate::oci::read_capped(resp, MAX_RESPONSE_BYTES).await {
            Ok(bytes) => Ok(bytes),
            Err(crate::oci::BodyError::TooLarge(size)) => {
                Err(Rekor2Error::TooLarge { url: self.url.clone(), size: size.to_string() })
            }
            Err(crate::oci::BodyError::Transport(e)) => Err(self.unavailable(e)),
        }
    }

    /// Adds a signature over `digest_sha256` to the log. The returned entry is as the log sent it: check it
    /// with `verify_entry2` before relying on it. Adding the same entry again returns the one the log
    /// holds (rebuilt from the tiles, when `with_reads` is set; `Duplicate` with its index otherwise). The
    /// log only knows duplicates it remembers (rekor-tiles keeps the last 256 in memory unless its
    /// antispam is persistent); past that it makes a second entry, as valid as the first.
    pub async fn add_hashedrekord(
        &self,
        digest_sha256: &[u8; 32],
        signature_der: &[u8],
        verifier: Verifier,
    ) -> Result<Entry2, Rekor2Error> {
        let rekord = HashedRekord2 { digest: *digest_sha256, signature: signature_der.to_vec(), verifier };
        crate::metrics::rekor_request();
        let resp = self
            .http
            .post(format!("{}/api/v2/log/entries", self.url))
            .json(&rekord.request())
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = resp.status().as_u16();
        // rekor-tiles answers a duplicate with 409 and the existing entry's index in a header, nothing more.
        let duplicate_index = resp.headers().get("x-log-index").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = self.bytes(resp).await?;
        let text = String::from_utf8_lossy(&body);
        match status {
            201 => Entry2::from_response(&parse(&text)?),
            409 => {
                let index = duplicate_index
                    .and_then(|i| i.trim().parse::<u64>().ok())
                    .ok_or_else(|| Rekor2Error::Malformed(format!("409 without a log index: {}", text.trim())))?;
                match &self.read {
                    Some(read) => self.existing(read, index, &rekord).await,
                    None => Err(Rekor2Error::Duplicate { url: self.url.clone(), index }),
                }
            }
            s if s >= 500 || s == 429 => Err(self.unavailable(format!("HTTP {s}: {}", message(&text)))),
            s => Err(Rekor2Error::Rejected { url: self.url.clone(), status: s, reason: message(&text) }),
        }
    }

    /// The entry the log holds at `index`, which must be `rekord`: a proof from the tiles against the
    /// newest checkpoint (waiting briefly for one that covers the index), verified before it is returned.
    async fn existing(&self, read: &ReadLog, index: u64, rekord: &HashedRekord2) -> Result<Entry2, Rekor2Error> {
        let deadline = std::time::Instant::now() + CHECKPOINT_WAIT;
        let (note, cp) = loop {
            let note = String::from_utf8_lossy(
                &self
                    .read_file(read, "checkpoint")
                    .await?
                    .ok_or_else(|| self.unavailable(format!("{}/checkpoint is not there", read.url)))?,
            )
            .into_owned();
            let cp = verify_checkpoint2(&note, &read.key, &read.origin)?;
            if cp.size > index {
                break (note, cp);
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.unavailable(format!("no checkpoint covers index {index} yet (size {})", cp.size)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let mut tiles = BTreeMap::new();
        for tile in tiles_for_proof(index, cp.size) {
            let mut raw = self.read_file(read, &tile.path()).await?;
            if raw.is_none() && tile.width < 1 << TILE_HEIGHT {
                raw = self.read_file(read, &tile.full_path()).await?;
            }
            let raw = raw.ok_or_else(|| self.unavailable(format!("{}/{} is not there", read.url, tile.path())))?;
            if (raw.len() as u64) < tile.width * 32 {
                return Err(Rekor2Error::Malformed(format!("{} holds {} bytes", tile.path(), raw.len())));
            }
            let hashes = raw.chunks_exact(32).take(tile.width as usize).map(|c| c.try_into().unwrap_or([0; 32]));
            tiles.insert(tile, hashes.collect::<Vec<[u8; 32]>>());
        }
        let (leaf, hashes) = proof_from_tiles(index, cp.size, &tiles)
            .ok_or_else(|| Rekor2Error::Malformed(format!("the tiles hold no proof for index {index}")))?;
        if leaf != rekord.leaf_hash() {
            return Err(Rekor2Error::Unverified(format!(
                "the log names index {index} as this entry's, but another entry is there"
            )));
        }
        let entry = Entry2 {
            log_index: index,
            log_id: read.key.key_id(&read.origin).to_vec(),
            kind: KIND.into(),
            version: VERSION.into(),
            proof: Proof2 { log_index: index, root_hash: cp.root, tree_size: cp.size, hashes, checkpoint: note },
            body: rekord.canonical_body(),
        };
        verify_entry2(&entry, &read.key, &read.origin, rekord)?;
        Ok(entry)
    }

    /// A file of the log's read side; None when it is not there (404).
    async fn read_file(&self, read: &ReadLog, path: &str) -> Result<Option<Vec<u8>>, Rekor2Error> {
        crate::metrics::rekor_request();
        let url = format!("{}/{path}", read.url);
        let resp = self.http.get(&url).send().await.map_err(|e| self.unavailable(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let body = self.bytes(resp).await?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            s => Err(self.unavailable(format!("{url}: HTTP {s}"))),
        }
    }
}

fn parse(text: &str) -> Result<Value, Rekor2Error> {
    serde_json::from_str(text).map_err(|e| Rekor2Error::Malformed(e.to_string()))
}

/// A gRPC gateway error's message (`{"code":…,"message":…}`), or the body as it is.
fn message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;

    fn log_key(seed: u8) -> (p256::ecdsa::SigningKey, CheckpointKey) {
        let sk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let der = sk.verifying_key().to_public_key_der().unwrap();
        (sk.clone(), CheckpointKey::from_der(der.as_bytes()).unwrap())
    }

    fn sign_note(sk: &p256::ecdsa::SigningKey, key: &CheckpointKey, name: &str, text: &str) -> String {
        let sig: p256::ecdsa::DerSignature = sk.sign(text.as_bytes());
        let mut raw = key.key_id(name)[..4].to_vec();
        raw.extend_from_slice(sig.as_bytes());
        format!("{text}\n\u{2014} {name} {}\n", B64.encode(raw))
    }

    fn rekord() -> HashedRekord2 {
        HashedRekord2 {
            digest: Sha256::digest(b"blob").into(),
            signature: b"sig".to_vec(),
            verifier: Verifier::PublicKey(b"spki".to_vec()),
        }
    }

    fn leaves(n: u64) -> Vec<[u8; 32]> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    fn mth(l: &[[u8; 32]]) -> [u8; 32] {
        if l.len() == 1 {
            return l[0];
        }
        let k = split(l.len() as u64) as usize;
        node_hash(&mth(&l[..k]), &mth(&l[k..]))
    }

    /// A log of `others` entries and then `rekord`, with a checkpoint signed by `sk`: the entry as the
    /// server would return it.
    fn logged(sk: &p256::ecdsa::SigningKey, key: &CheckpointKey, origin: &str, others: u64) -> Entry2 {
        let mut l = leaves(others);
        l.push(rekord().leaf_hash());
        let size = l.len() as u64;
        let tiles = tiles_from(&l, 8);
        let (leaf, hashes) = proof_from_tiles(others, size, &tiles).unwrap();
        assert_eq!(leaf, rekord().leaf_hash());
        let root = mth(&l);
        let note = sign_note(sk, key, origin, &format!("{origin}\n{size}\n{}\n", B64.encode(root)));
        Entry2 {
            log_index: others,
            log_id: key.key_id(origin).to_vec(),
            kind: KIND.into(),
            version: VERSION.into(),
            proof: Proof2 { log_index: others, root_hash: root, tree_size: size, hashes, checkpoint: note },
            body: rekord().canonical_body(),
        }
    }

    /// Every tile of every level of the tree over `l`, as a tile server would hold them.
    fn tiles_from(l: &[[u8; 32]], tile_height: u32) -> BTreeMap<TileRef, Vec<[u8; 32]>> {
        let per = 1usize << tile_height;
        let mut out = BTreeMap::new();
        let mut level_hashes = l.to_vec();
        let mut level = 0u64;
        while !level_hashes.is_empty() {
            for (i, chunk) in level_hashes.chunks(per).enumerate() {
                out.insert(TileRef { level, index: i as u64, width: chunk.len() as u64 }, chunk.to_vec());
            }
            // The next level's hashes are the roots of the full tiles.
            level_hashes = level_hashes.chunks(per).filter(|c| c.len() == per).map(mth).collect::<Vec<_>>();
            level += 1;
        }
        out
    }

    #[test]
    fn the_request_and_the_body_are_rekor_tiles_json() {
        let r = rekord();
        let d = B64.encode(r.digest);
        assert_eq!(
            r.request(),
            json!({"hashedRekordRequestV002": {"digest": d, "signature": {"content": "c2ln",
                "verifier": {"publicKey": {"rawBytes": "c3BraQ=="}, "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}})
        );
        assert_eq!(
            String::from_utf8(r.canonical_body()).unwrap(),
            format!(
                r#"{{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{{"hashedRekordV002":{{"data":{{"algorithm":"SHA2_256","digest":"{d}"}},"signature":{{"content":"c2ln","verifier":{{"keyDetails":"PKIX_ECDSA_P256_SHA_256","publicKey":{{"rawBytes":"c3BraQ=="}}}}}}}}}}}}"#
            )
        );
        let cert = HashedRekord2 { verifier: Verifier::Certificate(b"cert".to_vec()), ..r };
        let body = String::from_utf8(cert.canonical_body()).unwrap();
        assert!(body.contains(
            r#""verifier":{"keyDetails":"PKIX_ECDSA_P256_SHA_256","x509Certificate":{"rawBytes":"Y2VydA=="}}"#
        ));
    }

    #[test]
    fn a_response_parses_and_becomes_a_bundle_entry_with_int64_as_strings() {
        let (sk, key) = log_key(7);
        let e = logged(&sk, &key, "log.example", 5);
        let v = json!({
            "logIndex": "5", "logId": {"keyId": B64.encode(&e.log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
            "integratedTime": "0", "inclusionPromise": null,
            "inclusionProof": {"logIndex": "5", "rootHash": B64.encode(e.proof.root_hash), "treeSize": "6",
                "hashes": e.proof.hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": e.proof.checkpoint}},
            "canonicalizedBody": B64.encode(&e.body)
        });
        let parsed = Entry2::from_response(&v).unwrap();
        assert_eq!(parsed, e);
        let t = parsed.tlog_entry();
        assert_eq!(t["logIndex"], "5");
        assert_eq!(t["inclusionProof"]["treeSize"], "6");
        assert!(t.get("integratedTime").is_none() && t.get("inclusionPromise").is_none());
        let mut expected = v.clone();
        expected.as_object_mut().unwrap().retain(|k, _| k != "integratedTime" && k != "inclusionPromise");
        assert_eq!(t, expected);
        assert!(Entry2::from_response(&json!({"logIndex": "1"})).is_err());
        let b = crate::bundle::message_signature_bundle(&rekord(), &parsed);
        assert_eq!(b["mediaType"], crate::bundle::MEDIA_TYPE);
        assert_eq!(b["verificationMaterial"]["publicKey"]["hint"], B64.encode(Sha256::digest(b"spki")));
        assert_eq!(b["verificationMaterial"]["tlogEntries"][0], expected);
        assert_eq!(b["messageSignature"]["messageDigest"]["digest"], B64.encode(rekord().digest));
    }

    #[test]
    fn a_logged_entry_verifies() {
        let (sk, key) = log_key(7);
        for others in [0, 1, 4, 300] {
            let e = logged(&sk, &key, "log.example", others);
            let cp = verify_entry2(&e, &key, "log.example", &rekord()).unwrap();
            assert_eq!(cp.size, others + 1);
        }
    }

    #[test]
    fn a_tampered_body_fails() {
        let (sk, key) = log_key(7);
        let mut e = logged(&sk, &key, "log.example", 4);
        let other = HashedRekord2 { signature: b"other".to_vec(), ..rekord() };
        e.body = other.canonical_body();
        let err = verify_entry2(&e, &key, "log.example", &rekord()).unwrap_err();
        assert!(err.to_string().contains("body"), "{err}");
        // What was sent is checked too, not only what the log says.
        let e = logged(&sk, &key, "log.example", 4);
        assert!(verify_entry2(&e, &key, "log.example", &other).is_err());
    }

    #[test]
    fn a_wrong_proof_fails() {
        let (sk, key) = log_key(7);
        let good = logged(&sk, &key, "log.example", 4);
        let mut e = good.clone();
        e.proof.hashes[0][0] ^= 1;
        let err = verify_entry2(&e, &key, "log.example", &rekord()).unwrap_err();
        assert!(err.to_string().contains("inclusion proof"), "{err}");
        let mut e = good.clone();
        e.log_index = 3;
        e.proof.log_index = 3;
        assert!(verify_entry2(&e, &key, "log.example", &rekord()).is_err(), "another index");
        let mut e = good.clone();
        e.proof.root_hash[0] ^= 1;
        assert!(verify_entry2(&e, &key, "log.example", &rekord()).is_err(), "a root the checkpoint does not sign");
        let mut e = good;
        e.proof.log_index = 3;
        assert!(verify_entry2(&e, &key, "log.example", &rekord()).is_err(), "proof and entry disagree");
    }

    #[test]
    fn a_wrong_origin_fails() {
        let (sk, key) = log_key(7);
        let e = logged(&sk, &key, "log.example", 4);
        let err = verify_entry2(&e, &key, "other.example", &rekord()).unwrap_err();
        assert!(err.to_string().contains("log.example"), "{err}");
        // The origin line and the signer's name must both be the origin.
        let text = format!("other.example\n5\n{}\n", B64.encode(e.proof.root_hash));
        let mut e2 = e.clone();
        e2.proof.checkpoint = sign_note(&sk, &key, "log.example", &text);
        assert!(verify_checkpoint2(&e2.proof.checkpoint, &key, "log.example").is_err());
        let text = format!("log.example\n5\n{}\n", B64.encode(e.proof.root_hash));
        let note = sign_note(&sk, &key, "log.example", &text).replace("\u{2014} log.example ", "\u{2014} other ");
        assert!(verify_checkpoint2(&note, &key, "log.example").is_err());
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_fails() {
        let (sk, key) = log_key(7);
        let (other_sk, other) = log_key(8);
        let e = logged(&other_sk, &other, "log.example", 4);
        let mut e2 = e.clone();
        e2.log_id = key.key_id("log.example").to_vec();
        let err = verify_entry2(&e2, &key, "log.example", &rekord()).unwrap_err();
        assert!(err.to_string().contains("no signature by the configured log key"), "{err}");
        assert!(verify_entry2(&e, &key, "log.example", &rekord()).unwrap_err().to_string().contains("names log"));
        // Another key's signature under this key's hint does not pass either.
        let text = format!("log.example\n5\n{}\n", B64.encode(e.proof.root_hash));
        let sig: p256::ecdsa::DerSignature = other_sk.sign(text.as_bytes());
        let mut raw = key.key_id("log.example")[..4].to_vec();
        raw.extend_from_slice(sig.as_bytes());
        let note = format!("{text}\n\u{2014} log.example {}\n", B64.encode(raw));
        assert!(verify_checkpoint2(&note, &key, "log.example").is_err());
        // A changed tree size breaks the signature.
        let good = logged(&sk, &key, "log.example", 4);
        let forged = good.proof.checkpoint.replacen("\n5\n", "\n6\n", 1);
        assert!(verify_checkpoint2(&forged, &key, "log.example").is_err());
        // Witness lines beside the log's are ignored.
        let witnessed = format!("{}\u{2014} witness AAAAAAAA\n", good.proof.checkpoint);
        assert!(verify_checkpoint2(&witnessed, &key, "log.example").is_ok());
    }

    #[test]
    fn ed25519_checkpoints_use_the_signed_note_key_id() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(sk.verifying_key().as_bytes());
        let key = CheckpointKey::from_der(&der).unwrap();
        let mut h = Sha256::new();
        h.update(b"log.example\n\x01");
        h.update(sk.verifying_key().as_bytes());
        assert_eq!(key.key_id("log.example"), <[u8; 32]>::from(h.finalize()));
        let text = format!("log.example\n1\n{}\n", B64.encode(rekord().leaf_hash()));
        let sig = ed25519_dalek::Signer::sign(&sk, text.as_bytes());
        let mut raw = key.key_id("log.example")[..4].to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        let note = format!("{text}\n\u{2014} log.example {}\n", B64.encode(raw));
        let cp = verify_checkpoint2(&note, &key, "log.example").unwrap();
        assert_eq!((cp.size, cp.root), (1, rekord().leaf_hash()));
        assert!(verify_checkpoint2(&note, &log_key(7).1, "log.example").is_err());
    }

    #[test]
    fn keys_come_from_pem() {
        let (_, key) = log_key(7);
        let CheckpointKey::Ecdsa { der, .. } = &key else { panic!("ECDSA") };
        let pem = pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, der).unwrap();
        assert_eq!(CheckpointKey::from_pem(&pem).unwrap().key_id("x"), <[u8; 32]>::from(Sha256::digest(der)));
        assert!(CheckpointKey::from_pem("nope").is_err());
        assert!(CheckpointKey::from_der(b"nope").is_err());
    }

    #[test]
    fn tile_paths_follow_tlog_tiles() {
        assert_eq!(TileRef { level: 0, index: 0, width: 256 }.path(), "tile/0/000");
        assert_eq!(TileRef { level: 0, index: 0, width: 5 }.path(), "tile/0/000.p/5");
        assert_eq!(TileRef { level: 1, index: 1_234_067, width: 256 }.path(), "tile/1/x001/x234/067");
        assert_eq!(TileRef { level: 2, index: 1000, width: 3 }.path(), "tile/2/x001/000.p/3");
        assert_eq!(TileRef { level: 2, index: 1000, width: 3 }.full_path(), "tile/2/x001/000");
    }

    #[test]
    fn proofs_from_tiles_match_the_tree_for_every_leaf_and_size() {
        // Small tiles (4 hashes) exercise several levels, partial tiles and subtrees inside a tile.
        for th in [1, 2, 8] {
            for size in 1..70u64 {
                let l = leaves(size);
                let tiles = tiles_from(&l, th);
                let root = mth(&l);
                for i in 0..size {
                    let needed = tiles_for_proof_with(i, size, th);
                    let only: BTreeMap<_, _> =
                        tiles.iter().filter(|(t, _)| needed.contains(t)).map(|(t, h)| (*t, h.clone())).collect();
                    assert_eq!(only.len(), needed.len(), "every tile named exists: {needed:?} (size {size})");
                    let (leaf, proof) = proof_from_tiles_with(i, size, &only, th).unwrap();
                    assert_eq!(leaf, l[i as usize]);
                    assert!(verify_inclusion(i, size, leaf, &proof, root), "leaf {i} of {size}, tile height {th}");
                }
                assert!(proof_from_tiles_with(size, size, &tiles, th).is_none());
            }
        }
        // A larger tree with real tiles: two levels, the last tiles partial.
        let l = leaves(70_000);
        let tiles = tiles_from(&l, 8);
        let root = mth(&l);
        for i in [0, 255, 256, 65_535, 65_536, 69_999] {
            let (leaf, proof) = proof_from_tiles(i, 70_000, &tiles).unwrap();
            assert!(verify_inclusion(i, 70_000, leaf, &proof, root));
        }
        assert!(tiles_for_proof(69_999, 70_000).contains(&TileRef { level: 1, index: 1, width: 17 }));
        assert!(proof_from_tiles(5, 70_000, &BTreeMap::new()).is_none(), "missing tiles");
    }
}
