//! Keyless commit signatures, the gitsign model: git stores a detached CMS `SignedData` (PEM `SIGNED
//! MESSAGE`) whose signer certificate a Fulcio issued for a short-lived key, and the signature is logged
//! in a transparency log. gitsign writes DER; `gpgsm` (`git -c gpg.format=x509`) writes BER with
//! indefinite lengths, so the container is read as BER. The signed attributes must be DER (RFC 5652), as
//! signed.
//!
//! A signature counts when: its `messageDigest` attribute is the SHA-256 of the commit (or tag) object;
//! the log holds an entry of the certificate's that is about this signature (see `logged_for`: gitsign's
//! two forms); that entry verifies against the trust root (signed entry timestamp and inclusion proof);
//! the certificate chains to a certificate authority of the trust root and was valid when the log
//! integrated the entry (not now: Fulcio certificates live ten minutes); and its identity (SAN and OIDC
//! issuer) is one the policy names. The cryptography and the chain are sigstore-verify's, over a Sigstore
//! bundle made from these parts, as gitsign itself verifies since it moved to sigstore-go.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use asn1_rs::{Any, Class, FromBer, Oid, Tag, oid};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sigstore_verify::VerificationPolicy;
use sigstore_verify::types::{Artifact, Bundle};
use thiserror::Error;
use x509_parser::prelude::*;

use super::{KeyInfo, SignatureCheck, Signer};
use crate::images::policy::{Root, Signer as Identity};
use crate::provenance::rekor::Entry;

/// Log entries read for one certificate at most (a Fulcio certificate lives ten minutes: a handful).
const MAX_ENTRIES: usize = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmsError {
    #[error("not PEM: {0}")]
    Pem(String),
    #[error("malformed CMS: {0}")]
    Asn1(&'static str),
    #[error("not a CMS SignedData (content type {0})")]
    NotSignedData(String),
    #[error("the signature is not detached: it carries its own content")]
    NotDetached,
    #[error("{0} signers; exactly one is supported")]
    Signers(usize),
    #[error("digest algorithm {0} is not supported (only SHA-256)")]
    Digest(String),
    #[error("no signed attributes (a signature over the bare content is not supported)")]
    NoSignedAttributes,
    #[error("signed attribute {0} is missing or appears more than once")]
    Attribute(&'static str),
    #[error("the content type attribute is {0}, not id-data")]
    ContentType(String),
    #[error("it carries no certificate for its signer (gpgsm: --include-certs 1 or more)")]
    NoCertificate,
}

const SIGNED_DATA: Oid<'static> = oid!(1.2.840.113549.1.7.2);
const ID_DATA: Oid<'static> = oid!(1.2.840.113549.1.7.1);
const SHA256: Oid<'static> = oid!(2.16.840.1.101.3.4.2.1);
const CONTENT_TYPE: Oid<'static> = oid!(1.2.840.113549.1.9.3);
const MESSAGE_DIGEST: Oid<'static> = oid!(1.2.840.113549.1.9.4);

/// The parts of a CMS signature that verification needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmsSignature {
    /// The signed attributes as signed: DER, tagged as a SET OF.
    pub signed_attributes: Vec<u8>,
    /// The `messageDigest` attribute: SHA-256 of the signed content.
    pub message_digest: Vec<u8>,
    pub signature: Vec<u8>,
    /// The certificates that may be the signer's (those matching its serial number; all when it names
    /// its certificate otherwise), DER.
    pub certificates: Vec<Vec<u8>>,
}

/// One element: the rest of the input, the element, and its raw encoding.
fn next<'a>(i: &'a [u8], what: &'static str) -> Result<(&'a [u8], Any<'a>, &'a [u8]), CmsError> {
    let (rest, any) = Any::from_ber(i).map_err(|_| CmsError::Asn1(what))?;
    let raw = &i[..i.len() - rest.len()];
    Ok((rest, any, raw))
}

fn expect(any: &Any<'_>, class: Class, tag: u32, what: &'static str) -> Result<(), CmsError> {
    (any.class() == class && any.tag() == Tag(tag)).then_some(()).ok_or(CmsError::Asn1(what))
}

fn oid_of(any: &Any<'_>, what: &'static str) -> Result<Oid<'static>, CmsError> {
    any.as_oid().map(|o| o.to_owned()).map_err(|_| CmsError::Asn1(what))
}

/// The elements of a constructed value.
fn elements<'a>(mut i: &'a [u8], what: &'static str) -> Result<Vec<(Any<'a>, &'a [u8])>, CmsError> {
    let mut out = Vec::new();
    while !i.is_empty() {
        let (rest, any, raw) = next(i, what)?;
        out.push((any, raw));
        i = rest;
    }
    Ok(out)
}

/// Reads an armored CMS signature as git stores it.
pub fn parse(armored: &str) -> Result<CmsSignature, CmsError> {
    const BEGIN: &str = "-----BEGIN SIGNED MESSAGE-----";
    const END: &str = "-----END SIGNED MESSAGE-----";
    let start = armored.find(BEGIN).ok_or_else(|| CmsError::Pem("no BEGIN SIGNED MESSAGE line".into()))?;
    let body = &armored[start + BEGIN.len()..];
    let end = body.find(END).ok_or_else(|| CmsError::Pem("no END SIGNED MESSAGE line".into()))?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = B64.decode(b64).map_err(|e| CmsError::Pem(e.to_string()))?;
    parse_der(&der)
}

fn parse_der(input: &[u8]) -> Result<CmsSignature, CmsError> {
    let (_, info, _) = next(input, "ContentInfo")?;
    expect(&info, Class::Universal, Tag::Sequence.0, "ContentInfo")?;
    let (i, kind, _) = next(info.data, "contentType")?;
    let kind = oid_of(&kind, "contentType")?;
    if kind != SIGNED_DATA {
        return Err(CmsError::NotSignedData(kind.to_id_string()));
    }
    let (_, content, _) = next(i, "content")?;
    expect(&content, Class::ContextSpecific, 0, "content")?;
    let (_, signed_data, _) = next(content.data, "SignedData")?;
    expect(&signed_data, Class::Universal, Tag::Sequence.0, "SignedData")?;

    let fields = elements(signed_data.data, "SignedData")?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let [_version, _algorithms, (encap, _), rest @ ..] = fields.as_slice() else {
        return Err(CmsError::Asn1("SignedData"));
    };
    let encap = elements(encap.data, "encapContentInfo")?;
    match encap.as_slice() {
        [(t, _)] if oid_of(t, "eContentType")? == ID_DATA => {}
        [(t, _)] => return Err(CmsError::ContentType(oid_of(t, "eContentType")?.to_id_string())),
        _ => return Err(CmsError::NotDetached),
    }
    let mut certificates = Vec::new();
    let mut signer_infos = None;
    for (any, _) in rest {
        match (any.class(), any.tag().0) {
            (Class::ContextSpecific, 0) => {
                for (cert, raw) in elements(any.data, "certificates")? {
                    if cert.class() == Class::Universal && cert.tag() == Tag::Sequence {
                        certificates.push(raw.to_vec());
                    }
                }
            }
            (Class::ContextSpecific, 1) => {}
            (Class::Universal, t) if t == Tag::Set.0 => signer_infos = Some(any),
            _ => return Err(CmsError::Asn1("SignedData")),
        }
    }
    let signer_infos = elements(signer_infos.ok_or(CmsError::Asn1("signerInfos"))?.data, "signerInfos")?;
    let [(signer, _)] = signer_infos.as_slice() else { return Err(CmsError::Signers(signer_infos.len())) };

    // version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature, [1] unsignedAttrs?
    let parts = elements(signer.data, "SignerInfo")?;
    let [_version, (sid, _), (digest, _), (attrs, attrs_raw), _algorithm, (signature, _), ..] = parts.as_slice() else {
        return Err(CmsError::Asn1("SignerInfo"));
    };
    let (digest, _) =
        elements(digest.data, "digestAlgorithm")?.into_iter().next().ok_or(CmsError::Asn1("digestAlgorithm"))?;
    let digest = oid_of(&digest, "digestAlgorithm")?;
    if digest != SHA256 {
        return Err(CmsError::Digest(digest.to_id_string()));
    }
    if attrs.class() != Class::ContextSpecific || attrs.tag() != Tag(0) {
        return Err(CmsError::NoSignedAttributes);
    }
    if attrs.header.length().definite().is_err() {
        return Err(CmsError::Asn1("signed attributes are not DER"));
    }
    // What was signed is the attributes' DER with the SET OF tag in place of [0] IMPLICIT.
    let mut signed_attributes = attrs_raw.to_vec();
    signed_attributes[0] = 0x31;
    let message_digest = signed_attribute_values(attrs.data)?;
    expect(signature, Class::Universal, Tag::OctetString.0, "signature")?;

    let serial = match (sid.class(), sid.tag().0) {
        (Class::Universal, t) if t == Tag::Sequence.0 => {
            elements(sid.data, "issuerAndSerialNumber")?.get(1).map(|(n, _)| n.data.to_vec())
        }
        _ => None,
    };
    let certificates: Vec<Vec<u8>> = certificates
        .into_iter()
        .filter(|der| match (&serial, X509Certificate::from_der(der)) {
            (Some(s), Ok((_, c))) => c.tbs_certificate.raw_serial() == s.as_slice(),
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        })
        .collect();
    if certificates.is_empty() {
        return Err(CmsError::NoCertificate);
    }
    Ok(CmsSignature { signed_attributes, message_digest, signature: signature.data.to_vec(), certificates })
}

/// Checks the content type attribute and returns the message digest.
fn signed_attribute_values(attrs: &[u8]) -> Result<Vec<u8>, CmsError> {
    let mut content_type = Vec::new();
    let mut digest = Vec::new();
    for (attr, _) in elements(attrs, "signed attributes")? {
        let parts = elements(attr.data, "attribute")?;
        let [(kind, _), (values, _)] = parts.as_slice() else { return Err(CmsError::Asn1("attribute")) };
        let kind = oid_of(kind, "attribute type")?;
        let values = elements(values.data, "attribute values")?;
        if kind == CONTENT_TYPE {
            content_type.extend(values);
        } else if kind == MESSAGE_DIGEST {
            digest.extend(values);
        }
    }
    let [(content_type, _)] = content_type.as_slice() else { return Err(CmsError::Attribute("contentType")) };
    let content_type = oid_of(content_type, "contentType")?;
    if content_type != ID_DATA {
        return Err(CmsError::ContentType(content_type.to_id_string()));
    }
    let [(digest, _)] = digest.as_slice() else { return Err(CmsError::Attribute("messageDigest")) };
    expect(digest, Class::Universal, Tag::OctetString.0, "messageDigest")?;
    Ok(digest.data.to_vec())
}

fn key_info(der: &[u8], known: bool) -> KeyInfo {
    let (subject, issuer) = match crate::signing::keyless::identity_of(der) {
        Ok((subject, issuer, _)) => (subject, Some(issuer)),
        Err(e) => (e.to_string(), None),
    };
    KeyInfo { kind: "x509", fingerprint: subject, primary_fingerprint: None, user_id: issuer, principals: None, known }
}

/// Finds the log entries a certificate made (Rekor v1's search index by public key, as gitsign searches).
/// Only the holder of the certificate's key can log an entry under it, so a tenant cannot bury them.
pub trait LogSearch: Send + Sync {
    /// The log's URL (for messages).
    fn describe(&self) -> String;
    /// `Err` when no log could be asked (unreachable, refusing): the verdict is then undecided.
    fn entries(&self, certificate_pem: &str) -> Result<Vec<Entry>, String>;
}

/// Rekor v1's search index, over HTTP (blocking: signatures are checked on worker threads).
pub struct RekorSearch {
    urls: Vec<String>,
    http: OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl RekorSearch {
    pub fn new(urls: Vec<String>) -> RekorSearch {
        RekorSearch { urls, http: OnceLock::new() }
    }

    fn http(&self) -> Result<&reqwest::blocking::Client, String> {
        self.http
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
                    .map_err(|e| format!("cannot make an HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn search(&self, url: &str, certificate_pem: &str) -> Result<Option<Vec<Entry>>, String> {
        let http = self.http()?;
        let url = url.trim_end_matches('/');
        let query = json!({"publicKey": {"format": "x509", "content": B64.encode(certificate_pem)}});
        let response =
            http.post(format!("{url}/api/v1/index/retrieve")).json(&query).send().map_err(|e| format!("{url}: {e}"))?;
        // A log without a search index (Rekor v2) cannot be asked; another log of the root may answer.
        if matches!(response.status().as_u16(), 404 | 405 | 501) {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("{url}: search answered {}", response.status()));
        }
        let uuids: Vec<String> = response.json().map_err(|e| format!("{url}: search answer: {e}"))?;
        let mut entries = Vec::new();
        for uuid in uuids.iter().take(MAX_ENTRIES) {
            if uuid.is_empty() || !uuid.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("{url}: search answered a malformed entry id {uuid:?}"));
            }
            let v: Value = http
                .get(format!("{url}/api/v1/log/entries/{uuid}"))
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.json())
                .map_err(|e| format!("{url}: entry {uuid}: {e}"))?;
            entries.push(Entry::from_response(&v).map_err(|e| format!("{url}: entry {uuid}: {e}"))?);
        }
        Ok(Some(entries))
    }
}

impl LogSearch for RekorSearch {
    fn describe(&self) -> String {
        self.urls.join(", ")
    }

    fn entries(&self, certificate_pem: &str) -> Result<Vec<Entry>, String> {
        let mut found = Vec::new();
        let mut searchable = false;
        for url in &self.urls {
            if let Some(entries) = self.search(url, certificate_pem)? {
                searchable = true;
                found.extend(entries);
            }
        }
        if !searchable {
            return Err(format!("none of the trust root's logs ({}) can be searched", self.describe()));
        }
        Ok(found)
    }
}

/// Who may sign keylessly, and against what they are checked.
pub struct KeylessSigners {
    root: Root,
    identities: Vec<Identity>,
    log: Box<dyn LogSearch>,
    id: String,
}

impl fmt::Debug for KeylessSigners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeylessSigners").field("id", &self.id).field("log", &self.log.describe()).finish()
    }
}

impl KeylessSigners {
    pub fn new(root: Root, identities: Vec<Identity>, log: Box<dyn LogSearch>) -> KeylessSigners {
        let mut h = Sha256::new();
        h.update(root.digest);
        for i in &identities {
            h.update(i.describe());
            h.update(b"\n");
        }
        KeylessSigners { root, identities, log, id: hex::encode(h.finalize()) }
    }

    /// Identifies the trust root and the identities, for caches.
    pub fn identity(&self) -> &str {
        &self.id
    }

    /// Checks a CMS signature over `payload`, the object `object` (hex ID) without its signature.
    pub fn check(&self, object: &str, payload: &[u8], armored: &str) -> SignatureCheck {
        let cms = match parse(armored) {
            Ok(c) => c,
            Err(e) => return SignatureCheck::Malformed(format!("unreadable X.509 (CMS) signature: {e}")),
        };
        let leaf = &cms.certificates[0];
        if Sha256::digest(payload).as_slice() != cms.message_digest.as_slice() {
            return SignatureCheck::Bad { key: key_info(leaf, false) };
        }
        let mut policy = VerificationPolicy::any_identity();
        if !self.root.has_ct_logs {
            policy = policy.skip_sct();
        }
        let mut why = Vec::new();
        for cert in cms.certificates.iter().take(4) {
            let pem = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, cert).unwrap_or_default();
            let entries = match self.log.entries(&pem) {
                Ok(e) => e,
                Err(why) => return SignatureCheck::Undecided(format!("the transparency log cannot be read: {why}")),
            };
            for entry in &entries {
                let Some((artifact, signature)) = logged_for(entry, &cms, object) else { continue };
                let verified = message_bundle(&signature, cert, entry).and_then(|bundle| {
                    self.root
                        .verifier
                        .verify(Artifact::from_blob(&artifact), &bundle, &policy)
                        .map_err(|e| e.to_string())
                });
                match verified {
                    Ok(result) => {
                        let (subject, issuer) = (result.identity(), result.issuer());
                        if self.identities.iter().any(|i| i.accepts_identity(subject, issuer)) {
                            return SignatureCheck::Good(Signer::Keyless {
                                subject: subject.map(|s| s.as_str().to_string()).unwrap_or_default(),
                                issuer: issuer.unwrap_or_default().to_string(),
                                log_index: entry.log_index,
                                integrated_time: entry.integrated_time,
                            });
                        }
                        return SignatureCheck::UnknownKey { key: key_info(cert, true) };
                    }
                    Err(e) => why.push(format!("entry {}: {e}", entry.log_index)),
                }
            }
        }
        if why.is_empty() {
            return SignatureCheck::NotLogged { key: Box::new(key_info(leaf, false)), log: self.log.describe() };
        }
        why.truncate(3);
        SignatureCheck::Unverified { key: Box::new(key_info(leaf, false)), reason: why.join("; ") }
    }
}

/// What a log entry of the signer's certificate vouches for, when it is about this signature: the
/// artifact and the signature over it. gitsign logs one of two: a `hashedrekord` over the DER signed
/// attributes with the CMS signature itself (offline mode; also what gpgsm users log), or one over the
/// object's hex ID, signed by the same key (its default, "online" mode: the ID covers the CMS signature).
fn logged_for(entry: &Entry, cms: &CmsSignature, object: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let body = entry.body_json().ok()?;
    if body["kind"] != "hashedrekord" || body["spec"]["data"]["hash"]["algorithm"] != "sha256" {
        return None;
    }
    let hash = body["spec"]["data"]["hash"]["value"].as_str()?;
    let signature = B64.decode(body["spec"]["signature"]["content"].as_str()?).ok()?;
    if hash == hex::encode(Sha256::digest(&cms.signed_attributes)) && signature == cms.signature {
        return Some((cms.signed_attributes.clone(), signature));
    }
    if !object.is_empty() && hash == hex::encode(Sha256::digest(object.as_bytes())) {
        return Some((object.as_bytes().to_vec(), signature));
    }
    None
}

/// The Sigstore bundle that says what the CMS signature and its log entry say: a message signature over
/// the DER signed attributes, with the signer's certificate and the entry.
fn message_bundle(signature: &[u8], cert: &[u8], entry: &Entry) -> Result<Bundle, String> {
    let tlog = crate::bundle::tlog_entry(entry).map_err(|e| e.to_string())?;
    let body = entry.body_json().map_err(|e| e.to_string())?;
    let digest = body["spec"]["data"]["hash"]["value"].as_str().and_then(|h| hex::decode(h).ok()).unwrap_or_default();
    let bundle = json!({
        "mediaType": crate::bundle::MEDIA_TYPE,
        "verificationMaterial": {"certificate": {"rawBytes": B64.encode(cert)}, "tlogEntries": [tlog]},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
            "signature": B64.encode(signature)
        }
    });
    Bundle::from_json(&bundle.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_signatures_are_errors_not_panics() {
        assert!(matches!(parse("no armor"), Err(CmsError::Pem(_))));
        let armored =
            |der: &[u8]| format!("-----BEGIN SIGNED MESSAGE-----\n{}\n-----END SIGNED MESSAGE-----\n", B64.encode(der));
        for der in [
            &b""[..],
            &[0x30, 0x80][..],
            &[0x30, 0x80, 0x00, 0x00][..],
            &[0x30, 0x03, 0x06, 0x01, 0x2a][..],
            &[0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02][..],
            &[0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80, 0x30, 0x80][..],
        ] {
            assert!(parse(&armored(der)).is_err(), "{der:?}");
        }
        // gpgsm's own opening (BER, indefinite lengths), cut short.
        assert!(
            parse("-----BEGIN SIGNED MESSAGE-----\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\n-----END SIGNED MESSAGE-----")
                .is_err()
        );
    }

    #[test]
    fn another_content_type_is_not_signed_data() {
        // ContentInfo { id-data, [0] {} }
        let der = [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0xa0, 0x00];
        assert_eq!(parse_der(&der), Err(CmsError::NotSignedData("1.2.840.113549.1.7.1".into())));
    }
}
