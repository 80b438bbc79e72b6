//! The profile's `imageVerification`, compiled: globs, signers (keys parsed, regular expressions
//! built), the trust root and the trusted builders, with a fingerprint that keys the verdict cache, so a
//! changed policy never reuses a verdict made under the old one. Also the per-Application override,
//! which may only tighten.

use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use sigstore_verify::Verifier;
use sigstore_verify::crypto::SubjectAltName;
use sigstore_verify::trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, TrustedRoot};
use sigstore_verify::types::DerPublicKey;
use thiserror::Error;

use crate::reason::Reason;
use crate::referenced::{ReferenceError, ReferencedObjects};
use crate::resources::profile::{
    ImageEnforcement, ImagePolicy, ImageSigner, ImageVerification, KeylessIdentity, ObjectRef,
};

/// The annotation on an Application that tightens image verification for it.
pub const OVERRIDE_ANNOTATION: &str = "weft.dev/image-verification";

#[derive(Debug, Error)]
pub enum ImagePolicyError {
    #[error("{0}")]
    Reference(#[from] ReferenceError),
    #[error("image policy {policy}: glob {glob:?} is invalid: {reason}")]
    Glob { policy: usize, glob: String, reason: String },
    #[error("image policy {policy}: regular expression {pattern:?} is invalid: {reason}")]
    Regex { policy: usize, pattern: String, reason: String },
    #[error("image policy {policy}: {what} holds no usable public key: {reason}")]
    Key { policy: usize, what: String, reason: String },
    #[error("image policy {policy}: a signer must be either key or keyless")]
    Signer { policy: usize },
    #[error("the trusted root {what} is not a valid trusted_root.json: {reason}")]
    TrustedRoot { what: String, reason: String },
    #[error("annotation {OVERRIDE_ANNOTATION} is not valid: {0}")]
    Override(String),
    #[error("annotation {OVERRIDE_ANNOTATION} would loosen the profile ({0}); an Application may only tighten it")]
    Loosens(String),
}

impl ImagePolicyError {
    pub fn reason(&self) -> Reason {
        match self {
            ImagePolicyError::Reference(e) => e.reason(),
            ImagePolicyError::Glob { .. } | ImagePolicyError::Regex { .. } | ImagePolicyError::Signer { .. } => {
                Reason::InvalidImagePolicy
            }
            ImagePolicyError::Key { .. } => Reason::InvalidImageSignerKey,
            ImagePolicyError::TrustedRoot { .. } => Reason::InvalidTrustedRoot,
            ImagePolicyError::Override(_) => Reason::InvalidImageOverride,
            ImagePolicyError::Loosens(_) => Reason::ImageOverrideLoosens,
        }
    }
}

crate::status::step_error!(ImagePolicyError);

/// An exact string, or a regular expression that matches anywhere unless anchored (as cosign's
/// `--certificate-identity-regexp`).
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Pattern(regex::Regex),
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Pattern(r) => r.is_match(value),
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => s.clone(),
            Matcher::Pattern(r) => format!("~/{}/", r.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Signer {
    /// `ignore_tlog`: a signature counts without a transparency log entry (the profile's `ignoreTlog`).
    Key {
        label: String,
        key: DerPublicKey,
        ignore_tlog: bool,
    },
    Keyless {
        issuer: Matcher,
        subject: Matcher,
    },
}

impl Signer {
    /// How the signer is named in verdicts.
    pub fn describe(&self) -> String {
        match self {
            Signer::Key { label, ignore_tlog: false, .. } => format!("key {label}"),
            Signer::Key { label, ignore_tlog: true, .. } => format!("key {label} (ignoreTlog: in no transparency log)"),
            Signer::Keyless { issuer, subject } => {
                format!("keyless subject {} issuer {}", subject.describe(), issuer.describe())
            }
        }
    }

    /// A keyless signer from a profile's identity. `Err(Some((pattern, reason)))` for an invalid regular
    /// expression, `Err(None)` when the issuer or the subject is missing.
    pub fn keyless(k: &KeylessIdentity) -> Result<Signer, Option<(String, String)>> {
        let m = |exact: &Option<String>, pattern: &Option<String>| match (exact, pattern) {
            (Some(e), _) => Ok(Matcher::Exact(e.clone())),
            (None, Some(p)) => regex::Regex::new(p).map(Matcher::Pattern).map_err(|e| Some((p.clone(), e.to_string()))),
            (None, None) => Err(None),
        };
        Ok(Signer::Keyless { issuer: m(&k.issuer, &k.issuer_reg_exp)?, subject: m(&k.subject, &k.subject_reg_exp)? })
    }

    /// Does a verified certificate's identity satisfy this keyless signer?
    pub fn accepts_identity(&self, san: Option<&SubjectAltName>, issuer: Option<&str>) -> bool {
        match self {
            Signer::Keyless { issuer: want_issuer, subject } => {
                san.is_some_and(|s| subject.matches(s.as_str())) && issuer.is_some_and(|i| want_issuer.matches(i))
            }
            Signer::Key { .. } => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// `policy N (glob, glob)`, for messages.
    pub label: String,
    globs: GlobSet,
    pub signers: Vec<Signer>,
    pub min_slsa_level: u8,
}

impl Policy {
    pub fn covers(&self, image_name: &str) -> bool {
        self.globs.is_match(image_name)
    }
}

/// A compiled `imageVerification`.
#[derive(Clone)]
pub struct ImagePolicies {
    pub enforcement: ImageEnforcement,
    pub policies: Vec<Policy>,
    /// Builder ID → the SLSA build level it reaches.
    pub builders: Vec<(String, u8)>,
    /// A verifier over the trust root, built once.
    pub verifier: Arc<Verifier>,
    /// Whether the trust root names certificate transparency logs (private roots often do not; then
    /// certificates carry no SCT to check).
    pub has_ct_logs: bool,
    /// The registry credentials (dockerconfigjson documents).
    pub credentials: Vec<String>,
    /// sha256 over everything above that decides a verdict.
    pub fingerprint: String,
}

impl ImagePolicies {
    pub fn compile(iv: &ImageVerification, referenced: &ReferencedObjects) -> Result<ImagePolicies, ImagePolicyError> {
        let mut fp = Sha256::new();
        let mut policies = Vec::new();
        for (i, p) in iv.policies.iter().enumerate() {
            let n = i + 1;
            let mut set = GlobSetBuilder::new();
            for g in &p.images {
                let glob = GlobBuilder::new(g).literal_separator(true).build().map_err(|e| ImagePolicyError::Glob {
                    policy: n,
                    glob: g.clone(),
                    reason: e.kind().to_string(),
                })?;
                set.add(glob);
            }
            let globs = set.build().map_err(|e| ImagePolicyError::Glob {
                policy: n,
                glob: String::new(),
                reason: e.to_string(),
            })?;
            let mut signers = Vec::new();
            for s in &p.signers {
                match (&s.key, &s.keyless) {
                    (Some(r), None) => signers.extend(keys(n, r, referenced, s.ignore_tlog == Some(true))?),
                    (None, Some(k)) => signers.push(Signer::keyless(k).map_err(|e| match e {
                        Some((pattern, reason)) => ImagePolicyError::Regex { policy: n, pattern, reason },
                        None => ImagePolicyError::Signer { policy: n },
                    })?),
                    _ => return Err(ImagePolicyError::Signer { policy: n }),
                }
            }
            if signers.is_empty() {
                return Err(ImagePolicyError::Signer { policy: n });
            }
            let min_slsa_level = p.min_slsa_level.unwrap_or(0).clamp(0, 3) as u8;
            fp.update(format!("policy {n} {:?} {min_slsa_level}\n", p.images));
            for s in &signers {
                match s {
                    Signer::Key { key, ignore_tlog, .. } => {
                        fp.update(format!("key {} {ignore_tlog}\n", hex::encode(key.as_bytes())))
                    }
                    other => fp.update(format!("{}\n", other.describe())),
                }
            }
            let label = format!("policy {n} ({})", p.images.join(", "));
            policies.push(Policy { label, globs, signers, min_slsa_level });
        }
        let builders: Vec<(String, u8)> =
            iv.trusted_builders.iter().flatten().map(|b| (b.id.clone(), b.level.clamp(1, 3) as u8)).collect();
        for (id, level) in &builders {
            fp.update(format!("builder {id} {level}\n"));
        }
        let root = Root::load(iv.trusted_root.as_ref(), referenced)?;
        fp.update(root.digest);
        fp.update(iv.enforcement.as_str());
        let credentials = iv
            .credentials
            .iter()
            .flatten()
            .map(|c| referenced.text(crate::referenced::Kind::Secret, &c.secret_ref.name, ".dockerconfigjson"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImagePolicies {
            enforcement: iv.enforcement,
            policies,
            builders,
            verifier: root.verifier,
            has_ct_logs: root.has_ct_logs,
            credentials,
            fingerprint: hex::encode(fp.finalize()),
        })
    }

    /// Policies with one signer for every image, against the trusted root `root_json`: how Weft checks
    /// its own manifest images (the webhook, `weft provenance verify`). The signer is a public key (PEM)
    /// or a keyless identity.
    pub fn one_signer(signer: OneSigner, root_json: &str) -> Result<ImagePolicies, ImagePolicyError> {
        let config_map = |name: &str, key: &str, value: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {key: value}})
                .to_string()
        };
        let reference = |name: &str, key: &str| ObjectRef {
            config_map_ref: Some(crate::resources::profile::KeyRef { name: name.into(), key: Some(key.into()) }),
            ..Default::default()
        };
        let mut documents = vec![config_map("trusted-root", "trusted_root.json", root_json)];
        let signer = match signer {
            OneSigner::Key(pem) => {
                documents.push(config_map("signing-key", "cosign.pub", pem));
                ImageSigner { key: Some(reference("signing-key", "cosign.pub")), ..Default::default() }
            }
            OneSigner::Keyless(identity) => ImageSigner { keyless: Some(identity), ..Default::default() },
        };
        let verification = ImageVerification {
            policies: vec![ImagePolicy { images: vec!["**".into()], signers: vec![signer], ..Default::default() }],
            trusted_root: Some(reference("trusted-root", "trusted_root.json")),
            ..Default::default()
        };
        let referenced = ReferencedObjects::from_yaml(&documents.join("\n---\n"))?;
        ImagePolicies::compile(&verification, &referenced)
    }

    /// The policies that cover an image name (`registry/repository`).
    pub fn covering(&self, image_name: &str) -> Vec<&Policy> {
        self.policies.iter().filter(|p| p.covers(image_name)).collect()
    }

    /// The SLSA level a builder's provenance proves: its trusted level, or 1 for anyone else.
    pub fn builder_level(&self, builder_id: &str) -> u8 {
        self.builders.iter().find(|(id, _)| id == builder_id).map(|(_, l)| *l).unwrap_or(1)
    }

    /// Applies an Application's override, refusing anything that loosens the profile.
    pub fn tighten(&mut self, o: &Override) -> Result<(), ImagePolicyError> {
        if let Some(e) = o.enforcement {
            if self.enforcement == ImageEnforcement::Strict && e == ImageEnforcement::Permissive {
                return Err(ImagePolicyError::Loosens("enforcement permissive, the profile says strict".into()));
            }
            self.enforcement = e;
        }
        if let Some(level) = o.min_slsa_level {
            if level > 3 {
                return Err(ImagePolicyError::Override(format!("minSlsaLevel {level} is above 3")));
            }
            if let Some(p) = self.policies.iter().find(|p| p.min_slsa_level > level) {
                return Err(ImagePolicyError::Loosens(format!(
                    "minSlsaLevel {level}, {} requires {}",
                    p.label, p.min_slsa_level
                )));
            }
            for p in &mut self.policies {
                p.min_slsa_level = level;
            }
        }
        let mut fp = Sha256::new();
        fp.update(format!("{}{:?}{:?}", self.fingerprint, o.enforcement, o.min_slsa_level));
        self.fingerprint = hex::encode(fp.finalize());
        Ok(())
    }
}

/// The value of the `weft.dev/image-verification` annotation (JSON or YAML).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    #[serde(default)]
    pub enforcement: Option<ImageEnforcement>,
    #[serde(default)]
    pub min_slsa_level: Option<u8>,
}

impl Override {
    pub fn parse(text: &str) -> Result<Override, ImagePolicyError> {
        serde_saphyr::from_str(text).map_err(|e| ImagePolicyError::Override(e.to_string()))
    }
}

/// The one signer of [`ImagePolicies::one_signer`].
pub enum OneSigner<'a> {
    /// A public key, PEM.
    Key(&'a str),
    Keyless(KeylessIdentity),
}

/// A Sigstore trust root, read and checked once.
#[derive(Clone)]
pub struct Root {
    pub verifier: Arc<Verifier>,
    /// The transparency logs it names (their base URLs).
    pub logs: Vec<String>,
    /// Whether it names certificate transparency logs (private roots often do not; then certificates
    /// carry no SCT to check).
    pub has_ct_logs: bool,
    /// sha256 of the root's JSON.
    pub digest: [u8; 32],
}

impl Root {
    /// The root an `ObjectRef` points at; Sigstore's public-good root when `None`.
    pub fn load(r: Option<&ObjectRef>, referenced: &ReferencedObjects) -> Result<Root, ImagePolicyError> {
        let (json, what) = match r {
            Some(r) => (referenced.texts(r)?.join(""), describe(r)),
            None => (SIGSTORE_PRODUCTION_TRUSTED_ROOT.to_string(), "built in".to_string()),
        };
        let root = TrustedRoot::from_json(&json)
            .map_err(|e| ImagePolicyError::TrustedRoot { what: what.clone(), reason: e.to_string() })?;
        // The verifier rejects malformed or unusable trust material up front.
        let verifier =
            Verifier::new(&root).map_err(|e| ImagePolicyError::TrustedRoot { what, reason: e.to_string() })?;
        Ok(Root {
            verifier: Arc::new(verifier),
            logs: root.tlogs.iter().map(|t| t.base_url.clone()).collect(),
            has_ct_logs: !root.ctlogs.is_empty(),
            digest: Sha256::digest(json.as_bytes()).into(),
        })
    }
}

fn describe(r: &ObjectRef) -> String {
    let (kind, k) = crate::referenced::split(r);
    match &k.key {
        Some(key) => format!("{} {} key {key}", kind.as_str(), k.name),
        None => format!("{} {}", kind.as_str(), k.name),
    }
}

/// Every PEM public key in the values an `ObjectRef` points at.
fn keys(
    policy: usize,
    r: &ObjectRef,
    referenced: &ReferencedObjects,
    ignore_tlog: bool,
) -> Result<Vec<Signer>, ImagePolicyError> {
    let what = describe(r);
    let mut out = Vec::new();
    for text in referenced.texts(r)? {
        for block in text.split_inclusive("-----END PUBLIC KEY-----").filter(|b| b.contains("-----BEGIN")) {
            let key = DerPublicKey::from_pem(block.trim()).map_err(|e| ImagePolicyError::Key {
                policy,
                what: what.clone(),
                reason: e.to_string(),
            })?;
            out.push(Signer::Key { label: format!("from {what}"), key, ignore_tlog });
        }
    }
    if out.is_empty() {
        return Err(ImagePolicyError::Key { policy, what, reason: "no PEM PUBLIC KEY block".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(images: &[&str], min: Option<i32>) -> ImageVerification {
        ImageVerification {
            policies: vec![ImagePolicy {
                images: images.iter().map(|s| s.to_string()).collect(),
                signers: vec![ImageSigner {
                    key: None,
                    ignore_tlog: None,
                    keyless: Some(KeylessIdentity {
                        issuer: Some("https://issuer.example".into()),
                        subject_reg_exp: Some("^https://ci\\.example/".into()),
                        ..Default::default()
                    }),
                }],
                min_slsa_level: min,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn globs_keep_star_within_a_segment() {
        let p = ImagePolicies::compile(&profile(&["registry.example.com/shop/*"], None), &ReferencedObjects::default())
            .unwrap();
        assert_eq!(p.covering("registry.example.com/shop/cart").len(), 1);
        assert!(p.covering("registry.example.com/shop/team/cart").is_empty());
        assert!(p.covering("registry.example.com/other/cart").is_empty());
        let p = ImagePolicies::compile(&profile(&["registry.example.com/**"], None), &ReferencedObjects::default())
            .unwrap();
        assert_eq!(p.covering("registry.example.com/shop/team/cart").len(), 1);
    }

    #[test]
    fn overrides_only_tighten() {
        let mut p = ImagePolicies::compile(&profile(&["**"], Some(2)), &ReferencedObjects::default()).unwrap();
        let before = p.fingerprint.clone();
        let lower = Override::parse("minSlsaLevel: 1").unwrap();
        assert!(matches!(p.clone().tighten(&lower), Err(ImagePolicyError::Loosens(_))));
        p.enforcement = ImageEnforcement::Strict;
        let permissive = Override::parse(r#"{"enforcement": "permissive"}"#).unwrap();
        assert!(matches!(p.clone().tighten(&permissive), Err(ImagePolicyError::Loosens(_))));
        p.tighten(&Override::parse("minSlsaLevel: 3").unwrap()).unwrap();
        assert_eq!(p.policies[0].min_slsa_level, 3);
        assert_ne!(p.fingerprint, before);
        assert!(matches!(Override::parse("minSLSA: 3"), Err(ImagePolicyError::Override(_))));
    }

    #[test]
    fn identities_match_exactly_or_by_unanchored_pattern() {
        let p = ImagePolicies::compile(&profile(&["**"], None), &ReferencedObjects::default()).unwrap();
        let s = &p.policies[0].signers[0];
        let san = SubjectAltName::Uri("https://ci.example/shop/.github/workflows/build.yml@refs/heads/main".into());
        assert!(s.accepts_identity(Some(&san), Some("https://issuer.example")));
        assert!(!s.accepts_identity(Some(&san), Some("https://issuer.example.evil")));
        let other = SubjectAltName::Email("someone@example.com".into());
        assert!(!s.accepts_identity(Some(&other), Some("https://issuer.example")));
        assert!(!s.accepts_identity(None, Some("https://issuer.example")));
    }

    #[test]
    fn broken_policies_are_specific_errors() {
        let mut iv = profile(&["registry.example.com/[shop"], None);
        assert!(matches!(
            ImagePolicies::compile(&iv, &ReferencedObjects::default()),
            Err(ImagePolicyError::Glob { .. })
        ));
        iv = profile(&["**"], None);
        iv.policies[0].signers[0].keyless.as_mut().unwrap().subject_reg_exp = Some("(".into());
        assert!(matches!(
            ImagePolicies::compile(&iv, &ReferencedObjects::default()),
            Err(ImagePolicyError::Regex { .. })
        ));
    }
}
