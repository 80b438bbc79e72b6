//! `ApplicationProvenance`: Weft's verdict on one Argo CD Application, owned by it (same name and
//! namespace). The controller is the only writer; people and the admission webhook read it.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "ApplicationProvenance",
    plural = "applicationprovenances",
    shortname = "appprov",
    category = "weft",
    namespaced,
    derive = "PartialEq",
    status = "ApplicationProvenanceStatus",
    doc = "Weft's verdict on the revision an Argo CD Application syncs: source, images, signed manifests and provenance.",
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revisionShort"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Profile", type_ = "string", json_path = ".status.profile.name"),
    printcolumn(name = "Manifest", type_ = "string", json_path = ".status.manifestImage", priority = 1),
    printcolumn(name = "Log Index", type_ = "integer", json_path = ".status.rekor.logIndex"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationProvenanceSpec {
    /// The Argo CD Application this record is about (in the same namespace).
    pub application: ApplicationRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationRef {
    pub name: String,
}

/// The verdict at a glance; the conditions say why.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Every step passed: the revision is vouched for.
    Verified,
    /// Every step passed, except that images failed verification under a permissive policy: the
    /// manifests are signed, with a warning.
    Permitted,
    /// A step failed: nothing is vouched for.
    Failed,
    /// Work is under way or waiting on a dependency.
    #[default]
    Pending,
    /// Some steps are not available in this version of Weft: nothing is vouched for.
    Incomplete,
    /// No IntegrityProfile selects the Application.
    Unprotected,
    /// The configuration is wrong (for example two profiles select the Application).
    ConfigError,
    /// The Application object could not be read.
    InvalidApplication,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationProvenanceStatus {
    /// The ApplicationProvenance generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Application generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_generation: Option<i64>,
    pub verdict: Verdict,
    /// The first 12 characters of the revision (of the first source for multi-source Applications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_short: Option<String>,
    /// The exact revisions, one per source, this status is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRevision>,
    /// Where the revision was observed: a sync operation in progress, or the synced status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_origin: Option<RevisionOrigin>,
    /// The profile that selected the Application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileRef>,
    /// When more than one profile selects the Application: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicting_profiles: Vec<String>,
    /// The signed manifest image, `repository@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_image: Option<String>,
    /// The Rekor entry holding the provenance attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor: Option<RekorEntry>,
    /// The Rekor entry holding the verification summary (an SLSA VSA, attached beside the provenance),
    /// written only for a revision that is vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_summary: Option<RekorEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Earlier revisions, newest first, bounded by the profile's history limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Per repository, the revision that last passed source verification: a new revision must descend
    /// from it (downgrade protection) unless the policy allows downgrades.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified_sources: Vec<SourceRevision>,
    /// Kustomize remote bases the sources pull in, pinned to the commit their ref named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_bases: Vec<SourceRevision>,
    /// Every image the rendered manifests run, with what image verification found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageStatus>,
    /// The unit of work this status records: while it is unchanged (and younger than the resync
    /// period), Application events such as Argo CD's refreshes start no pipeline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_unit: Option<WorkUnit>,
}

/// What a recorded verdict was computed from, as a digest: the Application (its UID, sources, destination
/// and project), the exact revisions, the profile's spec, the content of every object the profile refers
/// to (Secrets, ConfigMaps, Argo CD's repository Secrets, the AppProject), and Weft's version and settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkUnit {
    /// Hex SHA-256.
    pub digest: String,
    /// When the pipeline last ran for it.
    pub recorded_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// One image the manifests run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// As the manifests write it.
    pub image: String,
    /// What the reference resolved to when it was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub outcome: ImageOutcome,
    /// The signer that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The SLSA build level its provenance proves, where a policy asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slsa_level: Option<i32>,
    pub reason: String,
    pub message: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageOutcome {
    Verified,
    #[default]
    Failed,
    /// The registry could not be reached; retried.
    Pending,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRevision {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// The commit SHA (or chart version) Argo CD resolved.
    pub revision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionOrigin {
    /// `.operation.sync`: Argo CD is about to apply this revision.
    Operation,
    /// `.status.sync`: the revision Argo CD compared or synced.
    SyncStatus,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRef {
    pub name: String,
    pub generation: i64,
}

/// A transparency log entry. For a Rekor v2 log, which has no entry UUIDs and no integrated times,
/// `uuid` is the hex RFC 6962 leaf hash of the entry and `integratedTime` is 0.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RekorEntry {
    /// Rekor v1: the entry's UUID. Rekor v2: the hex leaf hash of the entry (SHA-256 of 0x00 and its body).
    pub uuid: String,
    pub log_index: i64,
    /// Rekor v1: when the log integrated the entry (Unix seconds). Rekor v2: 0 (the log records no time).
    pub integrated_time: i64,
    /// The log's ID: hex SHA-256 of its public key (Rekor v2: the checkpoint key's ID).
    #[serde(rename = "logID")]
    pub log_id: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub sources: Vec<SourceRevision>,
    pub verdict: Verdict,
    /// The Ready condition's reason for this revision.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor: Option<RekorEntry>,
    /// When this revision's result was recorded (RFC 3339).
    pub recorded_at: String,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "Verified",
            Verdict::Permitted => "Permitted",
            Verdict::Failed => "Failed",
            Verdict::Pending => "Pending",
            Verdict::Incomplete => "Incomplete",
            Verdict::Unprotected => "Unprotected",
            Verdict::ConfigError => "ConfigError",
            Verdict::InvalidApplication => "InvalidApplication",
        }
    }
}
