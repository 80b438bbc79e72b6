//! Image references and digests. A digest is what is verified and cached; a tag is only a pointer that
//! is resolved again every time, so a tag moved after verification is caught.

use std::fmt;

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("{0:?} is not a valid image reference: {1}")]
    Invalid(String, String),
    #[error("{0:?} names a digest that is not sha256 (only sha256 digests are verified)")]
    UnsupportedDigest(String),
}

/// `sha256:<64 lower-case hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Digest(s.to_string()))
    }

    /// The digest of some content, as a registry computes it.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// cosign's tag scheme: `sha256-<hex>` plus a suffix (`.sig`, `.att`, or none for the referrers
    /// fallback index).
    pub fn tag(&self, suffix: &str) -> String {
        format!("sha256-{}{suffix}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container image reference as a manifest writes it, normalized the way the kubelet reads it
/// (`nginx` is `docker.io/library/nginx:latest`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// As written in the manifest.
    pub written: String,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// When the reference pins a digest, that digest is what runs, whatever the tag says.
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(written: &str) -> Result<ImageRef, ReferenceError> {
        let r: oci_client::Reference = written
            .parse()
            .map_err(|e: oci_client::ParseError| ReferenceError::Invalid(written.to_string(), e.to_string()))?;
        let digest = match r.digest() {
            Some(d) => Some(Digest::parse(d).ok_or_else(|| ReferenceError::UnsupportedDigest(written.to_string()))?),
            None => None,
        };
        Ok(ImageRef {
            written: written.to_string(),
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest,
        })
    }

    /// `registry/repository`: what image policies match on.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The reference pinned to a digest.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_like_the_kubelet_does() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!((r.name().as_str(), r.tag.as_deref()), ("docker.io/library/nginx", Some("latest")));
        let r = ImageRef::parse("registry.example.com:5000/shop/cart:1.2").unwrap();
        assert_eq!((r.name().as_str(), r.tag.as_deref()), ("registry.example.com:5000/shop/cart", Some("1.2")));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("registry.example.com/x/y:1@{d}")).unwrap();
        assert_eq!(r.digest.as_ref().map(Digest::as_str), Some(d.as_str()));
        assert_eq!(r.pinned(r.digest.as_ref().unwrap()), format!("registry.example.com/x/y@{d}"));
    }

    #[test]
    fn broken_references_and_other_digests_are_specific_errors() {
        assert!(matches!(ImageRef::parse(""), Err(ReferenceError::Invalid(..))));
        assert!(matches!(ImageRef::parse("shop/Cart:1"), Err(ReferenceError::Invalid(..))));
        let sha512 = format!("x/y@sha512:{}", "a".repeat(128));
        assert!(matches!(ImageRef::parse(&sha512), Err(ReferenceError::UnsupportedDigest(_))));
        assert!(Digest::parse("sha256:ABC").is_none());
        assert_eq!(Digest::of(b"").tag(".sig").len(), "sha256-".len() + 64 + 4);
    }
}
