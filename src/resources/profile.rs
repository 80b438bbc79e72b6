//! `IntegrityProfile`: what a team applies to say which Applications Weft protects, and how.
//!
//! The schema generated from these types is the contract: enums for every closed set of values, and CEL
//! rules (`x_kube(validation)`) for what spans fields, so the apiserver rejects a malformed profile with a
//! message a person can act on.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A team's integrity policy for the Argo CD Applications it selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "IntegrityProfile",
    plural = "integrityprofiles",
    shortname = "iprof",
    category = "weft",
    namespaced,
    derive = "PartialEq",
    status = "IntegrityProfileStatus",
    doc = "How Weft verifies, signs and records the Argo CD Applications this profile selects (in its own namespace).",
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".status.summary.sourceMode",
        description = "Strongest git signature mode among the source policies"
    ),
    printcolumn(name = "Enforcement", type_ = "string", json_path = ".status.summary.enforcement"),
    printcolumn(
        name = "Apps",
        type_ = "integer",
        json_path = ".status.selectedApplications",
        description = "Applications this profile alone selects"
    ),
    printcolumn(
        name = "Conflicts",
        type_ = "integer",
        json_path = ".status.conflictingApplications",
        description = "Applications another profile selects too (nothing is vouched for them)"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityProfileSpec {
    /// Which Applications (in this profile's namespace) the profile governs. An Application is selected
    /// when any term matches it. Exactly one profile may select an Application.
    #[x_kube(validation = Rule::new("size(self) > 0").message("applicationSelector needs at least one term; use [{name: \"*\"}] to select every Application in the namespace"))]
    #[schemars(length(max = 32))]
    pub application_selector: Vec<ApplicationSelectorTerm>,

    /// Source integrity: the git commits Argo CD syncs must be signed by allowed keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_integrity: Option<SourceIntegrity>,

    /// How the rendered manifests are signed and where the signed manifest image is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_signing: Option<ManifestSigning>,

    /// Where provenance attestations are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceSettings>,

    /// Which signatures the container images in the manifests must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_verification: Option<ImageVerification>,

    /// What the admission webhook does with objects that do not match the signed manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
}

/// One way of selecting Applications; every field that is set must match.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) || has(self.project) || has(self.matchLabels) || has(self.matchExpressions)").message("a selector term must set name, project, matchLabels or matchExpressions (name: \"*\" selects every Application)"))]
pub struct ApplicationSelectorTerm {
    /// Glob on the Application name, e.g. `shop-*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("name glob must not be empty"))]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    /// Glob on the Application's Argo CD project (`spec.project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("project glob must not be empty"))]
    #[schemars(length(max = 253))]
    pub project: Option<String>,
    /// Labels the Application must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Label requirements, as in a Kubernetes label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub match_expressions: Option<Vec<LabelRequirement>>,
}

/// A label selector requirement (`key`, `operator`, `values`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)").message("operators In and NotIn need values; Exists and DoesNotExist take none"))]
pub struct LabelRequirement {
    #[schemars(length(max = 317))]
    pub key: String,
    pub operator: LabelOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Option<Vec<String>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Source integrity settings. The `git` block accepts Argo CD 3.5's `AppProject.spec.sourceIntegrity`
/// field names, so a project's policies copy across unchanged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceIntegrity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitIntegrity>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitIntegrity {
    /// Policies by repository URL; exactly one policy may match a repository.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub policies: Vec<GitPolicy>,
}

/// How the commits of the repositories matching `repos` must be signed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.gpg) || self.gpg.mode == 'none' || (has(self.gpg.keys) && size(self.gpg.keys) > 0) || has(self.ssh) || has(self.keyless)").message("gpg.mode head or strict needs allowed signers: gpg.keys, ssh.allowedSigners, or keyless.identities"))]
#[x_kube(validation = Rule::new("!(has(self.requireSignedTag) && self.requireSignedTag) || (has(self.gpg) && self.gpg.mode != 'none')").message("requireSignedTag needs gpg.mode head or strict"))]
pub struct GitPolicy {
    /// Repository URL globs (`*` crosses `/`); a leading `!` excludes.
    #[x_kube(validation = Rule::new("size(self) > 0").message("a policy needs at least one repos entry"))]
    #[x_kube(validation = Rule::new("self.exists(r, !r.url.startsWith('!'))").message("repos needs at least one URL that is not an exclusion (!…)"))]
    #[schemars(length(max = 64))]
    pub repos: Vec<RepoPattern>,
    /// Signature requirements (Argo CD's field name; SSH signers below count as allowed keys too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg: Option<GpgPolicy>,
    /// SSH signature verification against git's `allowed_signers` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshPolicy>,
    /// Keyless (gitsign-style) X.509 signatures: a certificate from the Fulcio of `trustedRoot`, for one
    /// of these identities, with the signature in a transparency log that root names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessCommits>,
    /// The synced revision must be the commit of an annotated tag signed by an allowed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signed_tag: Option<bool>,
    /// Allow a newly synced revision that does not descend from the last verified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downgrade: Option<bool>,
    /// When this repository is a kustomize remote base: accept a ref that follows a branch (or no ref),
    /// verified at the branch tip Weft sees, which need not be what Argo CD renders. By default a base
    /// must be pinned to a commit SHA or a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unpinned_bases: Option<bool>,
    /// An Interlace-style signed list of file hashes that the verified tree must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_materials: Option<SourceMaterials>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepoPattern {
    #[x_kube(validation = Rule::new("self != '' && self != '!'").message("repository URL pattern must not be empty"))]
    #[schemars(length(max = 2048))]
    pub url: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpgPolicy {
    pub mode: SignatureMode,
    /// Allowed keys: 16-hex key IDs or 40-hex fingerprints; subkeys of these keys count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^(0[xX])?([0-9A-Fa-f]{16}|[0-9A-Fa-f]{40})$'))").message("each gpg key must be a 16-hex key ID or a 40-hex fingerprint"))]
    #[schemars(length(max = 64), inner(length(max = 42)))]
    pub keys: Option<Vec<String>>,
    /// Where the public keys are (armored OpenPGP). Defaults to Argo CD's `argocd-gpg-keys-cm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<ObjectRef>,
}

/// How much of the history must be signed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// No signature is required.
    #[default]
    None,
    /// The synced commit (or the annotated tag that names it) must be signed.
    Head,
    /// Every commit back to seal commits must be signed.
    Strict,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SshPolicy {
    /// A file in git's `allowed_signers` format; the `git` namespace and validity options apply.
    pub allowed_signers: ObjectRef,
}

/// Who may sign commits keylessly, and the Sigstore trust root their certificates and log entries are
/// checked against.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeylessCommits {
    /// Any one of these certificate identities is enough.
    #[x_kube(validation = Rule::new("size(self) > 0").message("keyless needs at least one identity"))]
    #[schemars(length(max = 32))]
    pub identities: Vec<KeylessIdentity>,
    /// A `trusted_root.json` (Sigstore's format): the certificate authorities, and the transparency logs
    /// that are searched for each signature (Rekor v1). Sigstore's public-good root when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root: Option<ObjectRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceMaterials {
    /// Path (relative to the Application's source path) of the sha256sum-style hash list.
    #[serde(default = "default_hash_list")]
    pub hash_list: String,
    /// Path of its signature (cosign `sign-blob` base64, or an armored OpenPGP detached signature).
    #[serde(default = "default_hash_list_signature")]
    pub signature: String,
    /// The public key that must have made the signature.
    pub key: ObjectRef,
    /// Every tracked file under the source path must be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_complete: Option<bool>,
}

fn default_hash_list() -> String {
    "source-materials".into()
}
fn default_hash_list_signature() -> String {
    "source-materials.sig".into()
}

/// A key in a Secret or a ConfigMap in the profile's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.configMapRef)").message("set exactly one of secretRef and configMapRef"))]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
}

/// A named object in the profile's namespace, and optionally one key of it (all keys when unset).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("must be the name of a Secret or ConfigMap (lower-case DNS name)"))]
    #[schemars(length(max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub key: Option<String>,
}

/// A Secret in the profile's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub secret_ref: NameRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NameRef {
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("must be the name of a Secret (lower-case DNS name)"))]
    #[schemars(length(max = 253))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.key) != has(self.keyless)").message("manifestSigning needs exactly one of key (a long-lived cosign key) and keyless (a Fulcio certificate for the controller's identity)"))]
pub struct ManifestSigning {
    /// The cosign-format ECDSA P-256 private key (encrypted, with its password, or PKCS#8 PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SigningKey>,
    /// Keyless: no long-lived key. Each run signs with a key made for it, certified by Fulcio for the
    /// identity of the token at `tokenPath` (the controller's projected ServiceAccount token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessSigning>,
    /// Which rendered resources are signed; every resource when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub r#match: Option<Vec<ResourceMatch>>,
    /// Where the signed manifest image is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ManifestImage>,
    /// How Secrets are signed: `digest` (the default) signs the SHA-256 of each value, so the manifest
    /// image proves what a Secret holds without telling it; `include` publishes the values themselves,
    /// and anyone who can pull the image can read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretValues>,
}

/// How a Secret's values are signed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecretValues {
    /// By digest: the values are not published.
    #[default]
    Digest,
    /// As they are: published in the manifest image, readable by whoever can pull it.
    Include,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeylessSigning {
    /// Fulcio's URL (e.g. `https://fulcio.sigstore.dev`, or your own).
    #[serde(rename = "fulcioURL")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("fulcioURL must be an http(s) URL"))]
    pub fulcio_url: String,
    /// The OIDC identity token Fulcio is shown: a file the controller reads at each signing (a projected
    /// ServiceAccount token, audience `sigstore`, which the kubelet renews). Default:
    /// `/var/run/secrets/weft/sigstore/token`, where the chart mounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_path: Option<String>,
    /// The identity the certificate must name (what verifiers are told to expect): a certificate for
    /// any other identity is refused before anything is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<SigningIdentity>,
    /// A timestamp authority (RFC 3161) that timestamps each signature, e.g.
    /// `https://timestamp.sigstore.dev/api/v1/timestamp`. A Rekor v2 log records no time of its own, so
    /// keyless signing with one needs it: the timestamp is what shows the certificate was valid.
    #[serde(rename = "timestampURL", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("timestampURL must be an http(s) URL"))]
    pub timestamp_url: Option<String>,
}

/// Exactly who signs: a certificate names this subject and issuer, or it is not Weft's.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningIdentity {
    /// The OIDC issuer (the cluster's ServiceAccount token issuer).
    pub issuer: String,
    /// The certificate's subject, e.g. `https://kubernetes.io/namespaces/weft-system/serviceaccounts/weft-controller`.
    pub subject: String,
}

/// Where the chart mounts the controller's projected ServiceAccount token for Fulcio.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/weft/sigstore/token";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    pub secret_ref: KeyRef,
    /// Key of the Secret holding the key's password (cosign's encrypted format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

impl SigningKey {
    /// The Secret's key that holds the private key: `cosign.key` unless the reference names one.
    pub fn key_name(&self) -> String {
        self.secret_ref.key.clone().unwrap_or_else(|| "cosign.key".into())
    }
}

/// Globs on a resource's group, kind, name and namespace; unset fields match anything.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestImage {
    /// OCI repository, e.g. `registry.example.com/manifests/shop`.
    #[x_kube(validation = Rule::new("!self.contains('@') && self.matches('^[a-z0-9]')").message("repository must be an OCI repository name without tag or digest, e.g. registry.example.com/manifests/shop"))]
    #[schemars(length(max = 512))]
    pub repository: String,
    /// A `kubernetes.io/dockerconfigjson` Secret with the registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.rekor) && has(self.unlogged) && self.unlogged)").message("provenance is either logged (rekor) or unlogged, not both"))]
pub struct ProvenanceSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor: Option<RekorSettings>,
    /// Record provenance without a transparency log: a signed attestation attached to the manifest image
    /// and nothing else (for a first run, or where no log can be reached). Nobody else can then tell when
    /// it was made, or that it was not replaced; the status says so. Without `rekor` and without this, no
    /// provenance is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlogged: Option<bool>,
    /// How many revisions the ApplicationProvenance history keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("historyLimit must be between 1 and 100"))]
    pub history_limit: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RekorSettings {
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("rekor url must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// The log's public key (PEM), to verify what the log returns (for a Rekor v2 log: the key that signs
    /// its checkpoints).
    pub public_key: ObjectRef,
    /// The log's API: 1 (Rekor v1, the default) or 2 (Rekor v2, rekor-tiles). A Rekor v2 log holds
    /// `hashedrekord` v0.0.2 entries and signs no entry timestamps: the Sigstore bundles carry its entries,
    /// and the legacy `.sig` and `.att` layers carry no log bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 1 || self == 2").message("rekor version must be 1 or 2"))]
    pub version: Option<i32>,
    /// Rekor v2 only: where the log's checkpoint and tiles are read (to rebuild an entry the log already
    /// holds, so that a retry makes no second entry). Default: `url`.
    #[serde(default, rename = "readURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("rekor readURL must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub read_url: Option<String>,
    /// Rekor v2 only: the origin (first line) of the log's signed checkpoints. Default: the host of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub origin: Option<String>,
}

impl RekorSettings {
    /// Is this a Rekor v2 log?
    pub fn is_v2(&self) -> bool {
        self.version == Some(2)
    }

    /// Where a Rekor v2 log's checkpoint and tiles are read.
    pub fn read_url(&self) -> &str {
        self.read_url.as_deref().unwrap_or(&self.url)
    }

    /// The origin a Rekor v2 log signs its checkpoints under: as configured, else the host of its URL.
    pub fn origin(&self) -> String {
        if let Some(o) = &self.origin {
            return o.clone();
        }
        reqwest::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
    }
}

/// Which container images the rendered manifests may run. Every image must be covered by at least one
/// policy, and satisfy every policy that covers it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageVerification {
    /// `strict` (the default): an image that fails stops the manifests from being signed.
    /// `permissive`: the manifests are signed anyway, with a warning condition and an Event.
    #[serde(default)]
    pub enforcement: ImageEnforcement,
    #[x_kube(validation = Rule::new("size(self) > 0").message("imageVerification needs at least one policy; an image no policy covers fails verification"))]
    #[schemars(length(max = 32))]
    pub policies: Vec<ImagePolicy>,
    /// A `trusted_root.json` (Sigstore's format) naming the certificate authorities and transparency logs
    /// signatures are checked against. Sigstore's public-good root, built into Weft, when unset; nothing is
    /// fetched over the network either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root: Option<ObjectRef>,
    /// `kubernetes.io/dockerconfigjson` Secrets with credentials for the registries images come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub credentials: Option<Vec<SecretRef>>,
    /// The builders whose SLSA provenance counts for `minSlsaLevel`, each with the SLSA build level it
    /// reaches. Provenance from any other builder proves level 1 at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub trusted_builders: Option<Vec<TrustedBuilder>>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageEnforcement {
    /// An image that fails verification stops the manifests from being signed.
    #[default]
    Strict,
    /// Failures are reported as warnings; the manifests are still signed.
    Permissive,
}

impl ImageEnforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageEnforcement::Strict => "strict",
            ImageEnforcement::Permissive => "permissive",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicy {
    /// Globs on the image name without tag or digest, normalized (`nginx` is `docker.io/library/nginx`);
    /// `*` stays within one path segment, `**` crosses them.
    #[x_kube(validation = Rule::new("size(self) > 0").message("an image policy needs at least one images glob"))]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub images: Vec<String>,
    /// Any one of these signers is enough; SLSA provenance must be signed by one of them too.
    #[x_kube(validation = Rule::new("size(self) > 0").message("an image policy needs at least one signer"))]
    #[schemars(length(max = 16))]
    pub signers: Vec<ImageSigner>,
    /// Minimum SLSA build level proven by a signed provenance attestation for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3").message("minSlsaLevel must be between 0 and 3 (the SLSA v1 build levels)"))]
    pub min_slsa_level: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrustedBuilder {
    /// The provenance's builder ID (`runDetails.builder.id`, or `builder.id` in SLSA v0.2), exactly.
    #[x_kube(validation = Rule::new("self != ''").message("a trusted builder needs an id"))]
    #[schemars(length(max = 1024))]
    pub id: String,
    /// The SLSA build level this builder reaches.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3").message("a builder's level must be between 1 and 3"))]
    pub level: i32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.key) != has(self.keyless)").message("a signer is either key or keyless, not both"))]
#[x_kube(validation = Rule::new("!has(self.ignoreTlog) || !self.ignoreTlog || has(self.key)").message("ignoreTlog applies to key signers only"))]
pub struct ImageSigner {
    /// A cosign public key (PEM). Without `key`, every key of the Secret or ConfigMap is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<ObjectRef>,
    /// With `key`: a signature counts without a transparency log entry, as `cosign verify
    /// --insecure-ignore-tlog` counts it. Anyone holding the key can then sign unseen, and nobody can
    /// tell when a signature was made: for images no log is in reach of (air-gapped, a first run). Each
    /// verdict says so. Signatures only: attestations (SLSA provenance) still need the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_tlog: Option<bool>,
    /// A certificate identity, as Fulcio (or the authority in `trustedRoot`) issues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessIdentity>,
}

/// The certificate's issuer (the OIDC issuer extension) and subject (its email or URI SAN). Regular
/// expressions match anywhere unless anchored, as cosign's `--certificate-identity-regexp` does.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.issuer) != has(self.issuerRegExp)").message("set exactly one of issuer and issuerRegExp"))]
#[x_kube(validation = Rule::new("has(self.subject) != has(self.subjectRegExp)").message("set exactly one of subject and subjectRegExp"))]
pub struct KeylessIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub issuer_reg_exp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject_reg_exp: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    #[serde(default)]
    pub mode: EnforcementMode,
    /// Fields the admission webhook does not compare, beyond kubectl-sigstore's defaults (for fields a
    /// controller legitimately changes), as kubectl-sigstore's `ignoreFields`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ignore_fields: Vec<IgnoreFields>,
    /// Workloads (Pods, Deployments, Jobs, …) that no Argo CD Application tracks, created in a namespace
    /// a protected Application deploys to by anyone but Kubernetes' own controllers: `deny` refuses
    /// them (in `audit` mode: admits them with a warning), `allow` (the default) leaves them alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untracked_workloads: Option<UntrackedWorkloads>,
}

/// What happens to a workload nobody tracks, in a namespace a protected Application deploys to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UntrackedWorkloads {
    #[default]
    Allow,
    Deny,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreFields {
    /// Dotted paths (`spec.replicas`, `metadata.annotations.example.com/key`); `*` matches any one key or
    /// list index.
    #[x_kube(validation = Rule::new("size(self) > 0").message("ignoreFields needs at least one field"))]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub fields: Vec<String>,
    /// The objects they apply to (all when empty); each set field must match, `*` globs allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub objects: Vec<ObjectPattern>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPattern {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub namespace: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementMode {
    /// Deny objects that do not match the signed manifests.
    #[default]
    Enforce,
    /// Admit them, and record an Event and a metric.
    Audit,
}

/// What the controller observed about a profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityProfileStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Applications this profile alone selects.
    #[serde(default)]
    pub selected_applications: i32,
    /// Applications that this and at least one other profile select.
    #[serde(default)]
    pub conflicting_applications: i32,
    /// Up to 20 of the conflicting Applications, with the other profiles, so they can be found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ProfileConflict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ProfileSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConflict {
    pub application: String,
    pub profiles: Vec<String>,
}

/// Short forms of the spec for printer columns.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSummary {
    pub source_mode: String,
    pub enforcement: String,
}

impl IntegrityProfileSpec {
    /// The strongest signature mode any git policy asks for.
    pub fn strongest_source_mode(&self) -> SignatureMode {
        let policies = self.source_integrity.iter().flat_map(|s| s.git.iter()).flat_map(|g| &g.policies);
        let modes = policies.map(|p| p.gpg.as_ref().map(|g| g.mode).unwrap_or_default());
        modes
            .max_by_key(|m| match m {
                SignatureMode::None => 0,
                SignatureMode::Head => 1,
                SignatureMode::Strict => 2,
            })
            .unwrap_or_default()
    }
}

impl SignatureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::None => "none",
            SignatureMode::Head => "head",
            SignatureMode::Strict => "strict",
        }
    }
}

impl EnforcementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Enforce => "enforce",
            EnforcementMode::Audit => "audit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rekor_v2_log_reads_from_its_url_and_is_named_by_its_host_unless_told_otherwise() {
        let r: RekorSettings = serde_json::from_value(serde_json::json!({
            "url": "https://log.example.com:8443/", "version": 2,
            "publicKey": {"configMapRef": {"name": "k", "key": "k"}}
        }))
        .unwrap();
        assert!(r.is_v2());
        assert_eq!(r.read_url(), "https://log.example.com:8443/");
        assert_eq!(r.origin(), "log.example.com");
        let r: RekorSettings = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:3003", "version": 2, "readURL": "http://127.0.0.1:3004", "origin": "o",
            "publicKey": {"configMapRef": {"name": "k", "key": "k"}}
        }))
        .unwrap();
        assert_eq!((r.read_url(), r.origin().as_str()), ("http://127.0.0.1:3004", "o"));
        let v1: RekorSettings = serde_json::from_value(serde_json::json!({
            "url": "https://rekor.example.com", "publicKey": {"configMapRef": {"name": "k", "key": "k"}}
        }))
        .unwrap();
        assert!(!v1.is_v2());
        assert_eq!(serde_json::to_value(&v1).unwrap().as_object().unwrap().len(), 2, "v1 serializes as before");
    }
}
