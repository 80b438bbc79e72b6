//! The Secrets and ConfigMaps a profile refers to, gathered before any verification runs (from the
//! cluster, or from YAML documents for the CLI), so the verification itself is synchronous and has one
//! clear error for a missing object or key.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde::Deserialize;
use thiserror::Error;

use crate::reason::Reason;
use crate::repository::access::ProjectRules;
use crate::repository::access::{RepoCredentials, RepoSecret};
use crate::resources::profile::{IntegrityProfileSpec, KeyRef, ObjectRef, SigningKey};

pub const ARGOCD_SECRET_TYPE_LABEL: &str = "argocd.argoproj.io/secret-type";
pub const ARGOCD_GPG_KEYS_CM: &str = "argocd-gpg-keys-cm";
pub const ARGOCD_KNOWN_HOSTS_CM: &str = "argocd-ssh-known-hosts-cm";
pub const ARGOCD_TLS_CERTS_CM: &str = "argocd-tls-certs-cm";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Secret,
    ConfigMap,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("{kind} {name} is referenced by the profile but does not exist in its namespace")]
    Missing { kind: &'static str, name: String },
    #[error("{kind} {name} has no key {key:?} (keys: {available})")]
    MissingKey { kind: &'static str, name: String, key: String, available: String },
    #[error("{kind} {name} key {key:?} is not UTF-8 text")]
    NotText { kind: &'static str, name: String, key: String },
    #[error("cannot read the resources file: {0}")]
    Parse(String),
    #[error("cannot read {kind} {name}: {reason}")]
    Fetch { kind: &'static str, name: String, reason: String },
}

impl ReferenceError {
    pub fn reason(&self) -> Reason {
        match self {
            ReferenceError::Missing { .. } => Reason::ReferencedObjectMissing,
            ReferenceError::MissingKey { .. } => Reason::ReferencedKeyMissing,
            ReferenceError::NotText { .. } => Reason::ReferencedKeyInvalid,
            ReferenceError::Parse(_) => Reason::ResourcesUnreadable,
            ReferenceError::Fetch { .. } => Reason::ReferencedObjectUnavailable,
        }
    }
}

crate::status::step_error!(ReferenceError);

/// The referenced objects: for each, its keys and values.
#[derive(Clone, Debug, Default)]
pub struct ReferencedObjects {
    objects: BTreeMap<(Kind, String), BTreeMap<String, Vec<u8>>>,
    pub repo_secrets: Vec<RepoSecret>,
    /// Argo CD AppProjects, by name (the one an Application names decides what it may fetch).
    pub projects: BTreeMap<String, ProjectRules>,
}

/// A Secret or ConfigMap as written in YAML (either `data`/`stringData`, or `data`/`binaryData`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    kind: Option<String>,
    metadata: Option<Meta>,
    /// An AppProject's spec.
    #[serde(default)]
    spec: Option<serde_json::Value>,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
    #[serde(default)]
    binary_data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl ReferencedObjects {
    pub fn insert(&mut self, kind: Kind, name: &str, data: BTreeMap<String, Vec<u8>>) {
        self.objects.insert((kind, name.to_string()), data);
    }

    /// Reads Secrets and ConfigMaps from YAML documents, as a user would apply them, and Argo CD
    /// AppProjects. Other kinds are ignored; Argo CD repository Secrets (by their label) also become
    /// repository credentials.
    pub fn from_yaml(text: &str) -> Result<ReferencedObjects, ReferenceError> {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).map_err(|e| ReferenceError::Parse(e.to_string()))?;
        let mut referenced = ReferencedObjects::default();
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            let d: Document =
                serde_json::from_value(doc).map_err(|e| ReferenceError::Parse(format!("document {}: {e}", i + 1)))?;
            if d.kind.as_deref() == Some("AppProject") {
                let name = d.metadata.and_then(|m| m.name).ok_or_else(|| {
                    ReferenceError::Parse(format!("document {}: an AppProject without metadata.name", i + 1))
                })?;
                let rules = project_rules(&name, d.spec.unwrap_or_default())
                    .map_err(|e| ReferenceError::Parse(format!("document {}: {e}", i + 1)))?;
                referenced.projects.insert(name, rules);
                continue;
            }
            let kind = match d.kind.as_deref() {
                Some("Secret") => Kind::Secret,
                Some("ConfigMap") => Kind::ConfigMap,
                _ => continue,
            };
            let meta = d.metadata.ok_or_else(|| ReferenceError::Parse(format!("document {}: no metadata", i + 1)))?;
            let name =
                meta.name.ok_or_else(|| ReferenceError::Parse(format!("document {}: no metadata.name", i + 1)))?;
            let b64 = |k: &str, v: &str| {
                base64::engine::general_purpose::STANDARD.decode(v.trim()).map_err(|e| {
                    ReferenceError::Parse(format!("{} {name}: key {k:?} is not base64: {e}", kind.as_str()))
                })
            };
            let mut data = BTreeMap::new();
            match kind {
                Kind::Secret => {
                    for (k, v) in &d.data {
                        data.insert(k.clone(), b64(k, v)?);
                    }
                    for (k, v) in d.string_data {
                        data.insert(k, v.into_bytes());
                    }
                }
                Kind::ConfigMap => {
                    for (k, v) in d.data {
                        data.insert(k, v.into_bytes());
                    }
                    for (k, v) in &d.binary_data {
                        data.insert(k.clone(), b64(k, v)?);
                    }
                }
            }
            if kind == Kind::Secret
                && let Some(t) = meta.labels.get(ARGOCD_SECRET_TYPE_LABEL)
                && let Some(s) = repo_secret(&name, t, &data)
            {
                referenced.repo_secrets.push(s);
            }
            referenced.insert(kind, &name, data);
        }
        Ok(referenced)
    }

    fn object(&self, kind: Kind, name: &str) -> Result<&BTreeMap<String, Vec<u8>>, ReferenceError> {
        self.objects
            .get(&(kind, name.to_string()))
            .ok_or(ReferenceError::Missing { kind: kind.as_str(), name: name.to_string() })
    }

    /// The text values an `ObjectRef` points at: its one key, or every key when none is named.
    pub fn texts(&self, r: &ObjectRef) -> Result<Vec<String>, ReferenceError> {
        let (kind, key_ref) = split(r);
        self.texts_of(kind, key_ref)
    }

    pub fn texts_of(&self, kind: Kind, key_ref: &KeyRef) -> Result<Vec<String>, ReferenceError> {
        let obj = self.object(kind, &key_ref.name)?;
        let text = |k: &str, v: &[u8]| {
            String::from_utf8(v.to_vec()).map_err(|_| ReferenceError::NotText {
                kind: kind.as_str(),
                name: key_ref.name.clone(),
                key: k.to_string(),
            })
        };
        match &key_ref.key {
            Some(k) => {
                let v = obj.get(k).ok_or_else(|| ReferenceError::MissingKey {
                    kind: kind.as_str(),
                    name: key_ref.name.clone(),
                    key: k.clone(),
                    available: obj.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
                Ok(vec![text(k, v)?])
            }
            None => obj.iter().map(|(k, v)| text(k, v)).collect(),
        }
    }

    /// A single value, which must exist.
    pub fn text(&self, kind: Kind, name: &str, key: &str) -> Result<String, ReferenceError> {
        let r = KeyRef { name: name.to_string(), key: Some(key.to_string()) };
        Ok(self.texts_of(kind, &r)?.remove(0))
    }

    /// A signing key's PEM and, when it names one, its password, from its Secret.
    pub fn signing_key(&self, key: &SigningKey) -> Result<(String, Option<String>), ReferenceError> {
        let name = &key.secret_ref.name;
        let pem = self.text(Kind::Secret, name, &key.key_name())?;
        let password = key.password_key.as_ref().map(|k| self.text(Kind::Secret, name, k)).transpose()?;
        Ok((pem, password))
    }

    /// A digest of what the referenced holds for an Application whose sources are `repos` (of AppProject
    /// `project`): every referenced object, the AppProjects, and the repository Secrets that serve those
    /// repositories (another team's new Secret is no change for this Application).
    pub fn fingerprint(&self, repos: &[&str], project: Option<&str>) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |v: &[u8]| {
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        };
        for ((kind, name), data) in &self.objects {
            field(kind.as_str().as_bytes());
            field(name.as_bytes());
            for (k, v) in data {
                field(k.as_bytes());
                field(v);
            }
        }
        let serving: Vec<&RepoSecret> = repos
            .iter()
            .filter_map(|url| crate::repository::access::credentials_for(url, project, &self.repo_secrets))
            .collect();
        for s in serving {
            let c = &s.credentials;
            for v in [Some(&s.name), Some(&s.url), s.project.as_ref(), c.username.as_ref(), c.password.as_ref()]
                .into_iter()
                .chain([
                    c.bearer_token.as_ref(),
                    c.ssh_private_key.as_ref(),
                    c.known_hosts.as_ref(),
                    c.tls_certs.as_ref(),
                ])
            {
                field(v.map(String::as_bytes).unwrap_or(b"\0"));
            }
            field(&[u8::from(s.is_template), u8::from(c.insecure), u8::from(c.insecure_ignore_host_key)]);
        }
        for (name, p) in &self.projects {
            field(name.as_bytes());
            for r in p.source_repos.iter().chain(["|".to_string()].iter()).chain(&p.source_namespaces) {
                field(r.as_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// Optional objects (such as Argo CD's known-hosts ConfigMap) may be absent.
    pub fn optional_text(&self, kind: Kind, name: &str, key: &str) -> Option<String> {
        self.text(kind, name, key).ok()
    }
}

pub fn split(r: &ObjectRef) -> (Kind, &KeyRef) {
    match (&r.secret_ref, &r.config_map_ref) {
        (Some(s), _) => (Kind::Secret, s),
        (None, Some(c)) => (Kind::ConfigMap, c),
        // The schema requires exactly one; an empty reference names nothing.
        (None, None) => (Kind::ConfigMap, &EMPTY_REF),
    }
}

static EMPTY_REF: KeyRef = KeyRef { name: String::new(), key: None };

/// Turns an Argo CD repository Secret into credentials.
pub fn repo_secret(name: &str, secret_type: &str, data: &BTreeMap<String, Vec<u8>>) -> Option<RepoSecret> {
    let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.clone()).ok()).filter(|s| !s.is_empty());
    let is_template = match secret_type {
        "repository" => false,
        "repo-creds" => true,
        _ => return None,
    };
    Some(RepoSecret {
        name: name.to_string(),
        is_template,
        url: get("url")?,
        project: get("project"),
        credentials: RepoCredentials {
            secret: Some(name.to_string()),
            username: get("username"),
            password: get("password"),
            bearer_token: get("bearerToken"),
            ssh_private_key: get("sshPrivateKey"),
            insecure_ignore_host_key: get("insecureIgnoreHostKey").is_some_and(|v| v == "true"),
            known_hosts: None,
            tls_certs: None,
            insecure: get("insecure").is_some_and(|v| v == "true"),
        },
    })
}

/// An AppProject's `spec` as the rules Weft applies (sourceRepos, sourceNamespaces).
pub fn project_rules(name: &str, spec: serde_json::Value) -> Result<ProjectRules, String> {
    let mut rules: ProjectRules =
        serde_json::from_value(spec).map_err(|e| format!("AppProject {name}: unreadable spec: {e}"))?;
    rules.name = name.to_string();
    Ok(rules)
}

/// Every Secret and ConfigMap a profile refers to (by kind and name).
pub fn wanted(spec: &IntegrityProfileSpec) -> BTreeSet<(Kind, String)> {
    let mut refs: Vec<ObjectRef> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut add = |r: &ObjectRef| refs.push(r.clone());
    for p in spec.source_integrity.iter().flat_map(|s| s.git.iter()).flat_map(|g| &g.policies) {
        if let Some(gpg) = &p.gpg {
            match &gpg.keyring {
                Some(r) => add(r),
                None if gpg.mode != crate::resources::profile::SignatureMode::None => add(&default_keyring()),
                None => {}
            }
        }
        if let Some(ssh) = &p.ssh {
            add(&ssh.allowed_signers);
        }
        if let Some(m) = &p.source_materials {
            add(&m.key);
        }
    }
    if let Some(ms) = &spec.manifest_signing {
        if let Some(key) = &ms.key {
            secrets.push(key.secret_ref.name.clone());
        }
        if let Some(c) = ms.image.as_ref().and_then(|i| i.credentials.as_ref()) {
            secrets.push(c.secret_ref.name.clone());
        }
    }
    if let Some(r) = spec.provenance.as_ref().and_then(|p| p.rekor.as_ref()) {
        add(&r.public_key);
    }
    if let Some(iv) = &spec.image_verification {
        if let Some(r) = &iv.trusted_root {
            add(r);
        }
        for signer in iv.policies.iter().flat_map(|p| &p.signers) {
            if let Some(k) = &signer.key {
                add(k);
            }
        }
        secrets.extend(iv.credentials.iter().flatten().map(|c| c.secret_ref.name.clone()));
    }
    let mut out: BTreeSet<(Kind, String)> = secrets.into_iter().map(|s| (Kind::Secret, s)).collect();
    for r in &refs {
        let (k, kr) = split(r);
        if !kr.name.is_empty() {
            out.insert((k, kr.name.clone()));
        }
    }
    out
}

/// Argo CD's own GPG keyring, used when a policy names keys but no keyring.
pub fn default_keyring() -> ObjectRef {
    ObjectRef { config_map_ref: Some(KeyRef { name: ARGOCD_GPG_KEYS_CM.into(), key: None }), secret_ref: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_secrets_configmaps_and_repository_credentials() {
        let yaml = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys}
data: {cosign.pub: aGVsbG8=}
stringData: {note: plain}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-gpg-keys-cm}
data: {4AEE18F83AFDEB23: "-----BEGIN PGP PUBLIC KEY BLOCK-----"}
---
apiVersion: v1
kind: Secret
metadata:
  name: repo
  labels: {argocd.argoproj.io/secret-type: repository}
stringData: {url: "https://git.example.com/shop/cart", username: u, password: p}
---
kind: Deployment
metadata: {name: ignored}
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: shop, namespace: argocd}
spec: {sourceRepos: ["https://git.example.com/shop/*"], destinations: [{server: "*", namespace: "*"}]}
"#;
        let referenced = ReferencedObjects::from_yaml(yaml).unwrap();
        assert_eq!(referenced.text(Kind::Secret, "keys", "cosign.pub").unwrap(), "hello");
        assert_eq!(referenced.text(Kind::Secret, "keys", "note").unwrap(), "plain");
        assert_eq!(referenced.texts(&default_keyring()).unwrap().len(), 1);
        assert_eq!(referenced.repo_secrets.len(), 1);
        assert_eq!(referenced.repo_secrets[0].credentials.username.as_deref(), Some("u"));
        assert!(referenced.projects["shop"].permits_repo("https://git.example.com/shop/cart"));
        assert!(!referenced.projects["shop"].permits_repo("https://git.example.com/private"));
        let missing = referenced.text(Kind::Secret, "keys", "cosign.key").unwrap_err();
        assert_eq!(missing.to_string(), "Secret keys has no key \"cosign.key\" (keys: cosign.pub, note)");
        assert!(matches!(referenced.text(Kind::Secret, "nope", "x"), Err(ReferenceError::Missing { .. })));
    }

    #[test]
    fn broken_documents_are_specific_errors() {
        assert!(
            matches!(ReferencedObjects::from_yaml("kind: Secret\nmetadata: {name: s}\ndata: {k: '%%%'}"), Err(ReferenceError::Parse(m)) if m.contains("not base64"))
        );
        assert!(
            matches!(ReferencedObjects::from_yaml("kind: Secret\ndata: {}"), Err(ReferenceError::Parse(m)) if m.contains("no metadata"))
        );
        assert!(matches!(ReferencedObjects::from_yaml("{unclosed"), Err(ReferenceError::Parse(_))));
    }
}
