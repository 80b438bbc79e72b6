//! Rendered manifests, as objects: parsed from YAML with limits, selected by the profile's match rules,
//! given the tracking metadata Argo CD will add when it applies them, and normalized and joined into the
//! blob k8s-manifest-sigstore signs (`kubectl sigstore verify-resource` reads it back).
//!
//! Pure functions: no I/O.

use std::collections::BTreeMap;

use globset::Glob;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::reason::Reason;
use crate::resources::profile::ResourceMatch;

/// Annotations k8s-manifest-sigstore writes into signed resources; never part of what is signed.
const SIGSTORE_ANNOTATIONS: [&str; 5] = ["message", "signature", "certificate", "bundle", "resourceBundleRef"];
const SIGSTORE_DOMAIN: &str = "cosign.sigstore.dev";
/// Argo CD's default resource tracking annotation (since 3.0).
pub const TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's tracking label (the `label` and `annotation+label` methods).
pub const TRACKING_LABEL: &str = "app.kubernetes.io/instance";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{source_name}: document {index} is not valid YAML: {reason}")]
    Unparseable { source_name: String, index: usize, reason: String },
    #[error("{source_name}: document {index} is a {found}, not a Kubernetes object")]
    NotAnObject { source_name: String, index: usize, found: &'static str },
    #[error("{source_name}: document {index} has no {field}")]
    MissingField { source_name: String, index: usize, field: &'static str },
    #[error("{source_name}: document {index} is {size} bytes, over the limit of {limit}")]
    TooLarge { source_name: String, index: usize, size: usize, limit: usize },
    #[error("{source_name}: {count} documents, over the limit of {limit}")]
    TooMany { source_name: String, count: usize, limit: usize },
    #[error("match rule {index}: {pattern:?} is not a valid glob: {reason}")]
    BadMatch { index: usize, pattern: String, reason: String },
}

impl ManifestError {
    pub fn reason(&self) -> Reason {
        match self {
            ManifestError::Unparseable { .. } => Reason::ManifestUnparseable,
            ManifestError::NotAnObject { .. } | ManifestError::MissingField { .. } => Reason::ManifestNotAnObject,
            ManifestError::TooLarge { .. } | ManifestError::TooMany { .. } => Reason::ManifestTooLarge,
            ManifestError::BadMatch { .. } => Reason::InvalidMatchRule,
        }
    }
}

/// Limits on what a render may produce.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_document_bytes: usize,
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_document_bytes: 1024 * 1024, max_documents: 10_000 }
    }
}

/// One rendered Kubernetes object.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub object: Map<String, Value>,
}

impl Manifest {
    fn str_at(&self, path: &[&str]) -> Option<&str> {
        let mut v = self.object.get(path[0])?;
        for p in &path[1..] {
            v = v.get(p)?;
        }
        v.as_str()
    }

    pub fn api_version(&self) -> &str {
        self.str_at(&["apiVersion"]).unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.str_at(&["kind"]).unwrap_or_default()
    }

    pub fn group(&self) -> &str {
        self.api_version().rsplit_once('/').map(|(g, _)| g).unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.str_at(&["metadata", "name"]).unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.str_at(&["metadata", "namespace"])
    }

    /// `group/kind namespace/name`, for messages.
    pub fn id(&self) -> String {
        let gk =
            if self.group().is_empty() { self.kind().to_string() } else { format!("{}/{}", self.group(), self.kind()) };
        match self.namespace() {
            Some(ns) => format!("{gk} {ns}/{}", self.name()),
            None => format!("{gk} {}", self.name()),
        }
    }

    fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let meta = self.object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        meta.as_object_mut().expect("made an object above")
    }

    fn string_map_mut(&mut self, key: &str) -> &mut Map<String, Value> {
        let m = self.metadata_mut().entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !m.is_object() {
            *m = Value::Object(Map::new());
        }
        m.as_object_mut().expect("made an object above")
    }
}

/// Parses a stream of YAML documents (a render's output) into objects. Empty documents are skipped;
/// `List` kinds are flattened, as `kubectl apply` does.
pub fn parse(source_name: &str, text: &str, limits: Limits) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in split_documents(text).into_iter().enumerate() {
        let index = i + 1;
        if doc.len() > limits.max_document_bytes {
            return Err(ManifestError::TooLarge {
                source_name: source_name.into(),
                index,
                size: doc.len(),
                limit: limits.max_document_bytes,
            });
        }
        if doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            continue;
        }
        let value: Value = serde_saphyr::from_str(doc).map_err(|e| ManifestError::Unparseable {
            source_name: source_name.into(),
            index,
            reason: e.to_string().lines().next().unwrap_or_default().to_string(),
        })?;
        let object = match value {
            Value::Null => continue,
            Value::Object(o) => o,
            other => {
                return Err(ManifestError::NotAnObject {
                    source_name: source_name.into(),
                    index,
                    found: kind_of(&other),
                });
            }
        };
        let m = Manifest { object };
        if m.kind().is_empty() {
            return Err(ManifestError::MissingField { source_name: source_name.into(), index, field: "kind" });
        }
        if m.api_version().is_empty() {
            return Err(ManifestError::MissingField { source_name: source_name.into(), index, field: "apiVersion" });
        }
        if m.kind().ends_with("List") && m.object.get("items").is_some_and(Value::is_array) {
            let items = m.object.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            for item in items {
                match item {
                    Value::Object(o) => out.push(Manifest { object: o }),
                    other => {
                        return Err(ManifestError::NotAnObject {
                            source_name: source_name.into(),
                            index,
                            found: kind_of(&other),
                        });
                    }
                }
            }
        } else {
            if m.name().is_empty() && m.str_at(&["metadata", "generateName"]).is_none() {
                return Err(ManifestError::MissingField {
                    source_name: source_name.into(),
                    index,
                    field: "metadata.name",
                });
            }
            out.push(m);
        }
        if out.len() > limits.max_documents {
            return Err(ManifestError::TooMany {
                source_name: source_name.into(),
                count: out.len(),
                limit: limits.max_documents,
            });
        }
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Splits on `---` document separators (at the start of a line).
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs
}

/// Keeps the resources the profile's `manifestSigning.match` rules select (every resource when there are
/// none).
pub fn select(manifests: Vec<Manifest>, rules: &[ResourceMatch]) -> Result<Vec<Manifest>, ManifestError> {
    if rules.is_empty() {
        return Ok(manifests);
    }
    let compile = |i: usize, p: &Option<String>| -> Result<Option<globset::GlobMatcher>, ManifestError> {
        p.as_deref()
            .map(|p| {
                Glob::new(p).map(|g| g.compile_matcher()).map_err(|e| ManifestError::BadMatch {
                    index: i,
                    pattern: p.into(),
                    reason: e.kind().to_string(),
                })
            })
            .transpose()
    };
    let mut compiled = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        compiled.push([compile(i, &r.group)?, compile(i, &r.kind)?, compile(i, &r.name)?, compile(i, &r.namespace)?]);
    }
    Ok(manifests
        .into_iter()
        .filter(|m| {
            let fields = [m.group(), m.kind(), m.name(), m.namespace().unwrap_or("")];
            compiled.iter().any(|rule| rule.iter().zip(fields).all(|(g, f)| g.as_ref().is_none_or(|g| g.is_match(f))))
        })
        .collect())
}

/// Where the scope of kinds the manifests use is learnt beyond what [`Scopes`] knows: the cluster's
/// discovery, for the controller. Boxed futures: it is held as a trait object.
pub trait ScopeSource: Send + Sync {
    /// Teaches `scopes` what it knows of the kinds among `manifests` that `scopes` does not know yet.
    fn fill<'a>(&'a self, manifests: &'a [Manifest], scopes: &'a mut Scopes) -> futures::future::BoxFuture<'a, ()>;
}

/// How Argo CD marks the objects it applies (argocd-cm `application.resourceTrackingMethod`), spelled
/// on the command line as Argo CD spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrackingMethod {
    Annotation,
    Label,
    #[value(name = "annotation+label")]
    AnnotationAndLabel,
}

/// Adds the tracking metadata Argo CD adds at apply time, so the signed manifest is what the cluster
/// will hold: `argocd.argoproj.io/tracking-id: <app>:<group>/<kind>:<namespace>/<name>` (namespace-scoped
/// objects without a namespace take the destination's), and/or the `app.kubernetes.io/instance` label.
/// `app` is `<appNamespace>_<name>` when the Application lives outside Argo CD's namespace.
/// `cluster_scoped` says which group and kind are cluster-scoped (see [`Scopes`]).
pub fn add_tracking(
    manifests: &mut [Manifest],
    app: &str,
    destination_namespace: Option<&str>,
    method: TrackingMethod,
    scopes: &Scopes,
) {
    for m in manifests {
        if m.kind() == "CustomResourceDefinition" {
            continue; // Argo CD puts no tracking metadata on CRDs
        }
        if m.namespace().is_none()
            && let Some(ns) = destination_namespace
            && !scopes.is_cluster_scoped(m.group(), m.kind())
        {
            m.metadata_mut().insert("namespace".into(), Value::String(ns.into()));
        }
        if matches!(method, TrackingMethod::Annotation | TrackingMethod::AnnotationAndLabel) {
            let id = format!(
                "{app}:{}/{}:{}/{}",
                m.group(),
                m.kind(),
                m.namespace().unwrap_or(destination_namespace.unwrap_or("")),
                m.name()
            );
            m.string_map_mut("annotations").insert(TRACKING_ANNOTATION.into(), Value::String(id));
        }
        if matches!(method, TrackingMethod::Label | TrackingMethod::AnnotationAndLabel) {
            m.string_map_mut("labels").insert(TRACKING_LABEL.into(), Value::String(app.into()));
        }
    }
}

/// The annotation on a Secret signed by digest: its values are `sha256:<hex>` of what they hold.
pub const SECRET_VALUES: &str = "weft.dev/secret-values";

/// Whether a manifest is a core Secret.
pub fn is_secret(object: &Map<String, Value>) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// A Secret's values replaced by their SHA-256 (`stringData` folded into `data` first, as the apiserver
/// does), marked with [`SECRET_VALUES`]. A manifest image then proves what the Secret holds without
/// telling it to whoever can pull the image; the webhook digests the live Secret the same way. Each
/// value becomes `sha256:<hex>`, base64-encoded as Secret data is, so the result is still a Secret the
/// apiserver (and kubectl-sigstore's dry run) can read.
pub fn digest_secret(object: &mut Map<String, Value>) {
    use base64::Engine as _;
    use sha2::{Digest as _, Sha256};
    let b64 = base64::engine::general_purpose::STANDARD;
    let digested = |bytes: &[u8]| Value::String(b64.encode(format!("sha256:{}", hex::encode(Sha256::digest(bytes)))));
    let mut values: Map<String, Value> = Map::new();
    if let Some(Value::Object(data)) = object.remove("data") {
        for (k, v) in data {
            let text = v.as_str().unwrap_or_default();
            // Undecodable data is digested as written (the apiserver would refuse it anyway).
            let bytes = b64.decode(text).unwrap_or_else(|_| text.as_bytes().to_vec());
            values.insert(k, digested(&bytes));
        }
    }
    if let Some(Value::Object(data)) = object.remove("stringData") {
        for (k, v) in data {
            values.insert(k, digested(v.as_str().unwrap_or_default().as_bytes()));
        }
    }
    if !values.is_empty() {
        object.insert("data".into(), Value::Object(values));
    }
    let mut m = Manifest { object: std::mem::take(object) };
    m.string_map_mut("annotations").insert(SECRET_VALUES.into(), Value::String("sha256".into()));
    *object = m.object;
}

/// Which kinds are cluster-scoped, as Argo CD decides it: the CRDs among the manifests say for their own
/// kinds, then the cluster's discovery (what [`Scopes::learn`] was told), then the built-in kinds.
#[derive(Debug, Default, Clone)]
pub struct Scopes {
    /// (group, kind) → cluster-scoped.
    known: std::collections::HashMap<(String, String), bool>,
}

impl Scopes {
    /// The scopes the CRDs among `manifests` declare.
    pub fn of_crds(manifests: &[Manifest]) -> Self {
        let mut scopes = Scopes::default();
        for m in manifests.iter().filter(|m| m.kind() == "CustomResourceDefinition") {
            let spec = &m.object.get("spec").cloned().unwrap_or_default();
            if let (Some(group), Some(kind), Some(scope)) =
                (spec["group"].as_str(), spec["names"]["kind"].as_str(), spec["scope"].as_str())
            {
                scopes.learn(group, kind, scope == "Cluster");
            }
        }
        scopes
    }

    /// Records a kind's scope (the first word stands: a CRD in the manifests goes before discovery).
    pub fn learn(&mut self, group: &str, kind: &str, cluster: bool) {
        self.known.entry((group.to_string(), kind.to_string())).or_insert(cluster);
    }

    /// Whether the scope of a kind is known.
    pub fn knows(&self, group: &str, kind: &str) -> bool {
        self.known.contains_key(&(group.to_string(), kind.to_string())) || is_builtin_cluster_scoped(kind)
    }

    pub fn is_cluster_scoped(&self, group: &str, kind: &str) -> bool {
        match self.known.get(&(group.to_string(), kind.to_string())) {
            Some(cluster) => *cluster,
            None => is_builtin_cluster_scoped(kind),
        }
    }
}

/// The built-in cluster-scoped kinds (for kinds neither the manifests nor the cluster describe).
fn is_builtin_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "PersistentVolume"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "StorageClass"
            | "PriorityClass"
            | "IngressClass"
            | "RuntimeClass"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "APIService"
            | "CSIDriver"
            | "CSINode"
            | "VolumeAttachment"
            | "CertificateSigningRequest"
            | "ClusterIssuer"
    )
}

/// One resource as k8s-manifest-sigstore normalizes it: its signature annotations removed, an empty
/// annotations map dropped, keys sorted (through JSON), serialized as YAML.
pub fn normalize(m: &Manifest) -> String {
    let mut object = m.object.clone();
    if let Some(Value::Object(meta)) = object.get_mut("metadata")
        && let Some(Value::Object(ann)) = meta.get_mut("annotations")
    {
        ann.retain(|k, _| !is_sigstore_annotation(k));
        if ann.is_empty() {
            meta.remove("annotations");
        }
    }
    // serde_json's map is ordered by key, so the YAML has sorted keys at every level.
    let sorted: BTreeMap<String, Value> = object.into_iter().collect();
    serde_saphyr::to_string(&sorted).unwrap_or_default()
}

fn is_sigstore_annotation(key: &str) -> bool {
    let Some(name) = key.strip_prefix(SIGSTORE_DOMAIN).and_then(|r| r.strip_prefix('/')) else { return false };
    let base =
        name.split_once('_').map(|(b, n)| if n.bytes().all(|c| c.is_ascii_digit()) { b } else { name }).unwrap_or(name);
    SIGSTORE_ANNOTATIONS.contains(&base)
}

/// The signed blob: every resource normalized, joined by `\n---\n`.
pub fn blob(manifests: &[Manifest]) -> Vec<u8> {
    manifests.iter().map(|m| normalize(m).trim_end().to_string()).collect::<Vec<_>>().join("\n---\n").into_bytes()
}

/// Sorts resources by kind, namespace and name, so the same render always gives the same blob.
pub fn sort(manifests: &mut [Manifest]) {
    manifests.sort_by(|a, b| {
        (a.group(), a.kind(), a.namespace().unwrap_or(""), a.name()).cmp(&(
            b.group(),
            b.kind(),
            b.namespace().unwrap_or(""),
            b.name(),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Manifest {
        parse("t", yaml, Limits::default()).unwrap().remove(0)
    }

    #[test]
    fn parses_streams_skipping_empty_documents_and_flattening_lists() {
        let text = "---\n# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: b}}\n";
        let ms = parse("t", text, Limits::default()).unwrap();
        assert_eq!(ms.iter().map(Manifest::id).collect::<Vec<_>>(), ["ConfigMap a", "Service b"]);
    }

    #[test]
    fn bad_input_is_a_specific_error() {
        let l = Limits::default();
        assert!(matches!(parse("x.yaml", "a: [unclosed", l), Err(ManifestError::Unparseable { index: 1, .. })));
        assert!(matches!(parse("x.yaml", "- a\n- b\n", l), Err(ManifestError::NotAnObject { found: "list", .. })));
        assert!(matches!(parse("x.yaml", "just a string", l), Err(ManifestError::NotAnObject { found: "string", .. })));
        assert!(matches!(
            parse("x.yaml", "apiVersion: v1\nmetadata: {name: a}", l),
            Err(ManifestError::MissingField { field: "kind", .. })
        ));
        assert!(matches!(
            parse("x.yaml", "apiVersion: v1\nkind: ConfigMap", l),
            Err(ManifestError::MissingField { field: "metadata.name", .. })
        ));
        let small = Limits { max_document_bytes: 10, max_documents: 10 };
        assert!(matches!(
            parse("x.yaml", "apiVersion: v1\nkind: ConfigMap\n", small),
            Err(ManifestError::TooLarge { .. })
        ));
        let few = Limits { max_document_bytes: 1000, max_documents: 1 };
        let two = "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: A\nmetadata: {name: b}\n";
        assert!(matches!(parse("x.yaml", two, few), Err(ManifestError::TooMany { .. })));
    }

    #[test]
    fn normalization_drops_signature_annotations_and_sorts_keys() {
        let m = one(
            "kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: a\n  annotations:\n    cosign.sigstore.dev/message: x\n    cosign.sigstore.dev/signature_1: y\ndata: {z: '1', a: '2'}\n",
        );
        assert_eq!(
            normalize(&m),
            "apiVersion: v1\ndata:\n  a: \"2\"\n  z: \"1\"\nkind: ConfigMap\nmetadata:\n  name: a\n"
        );
        let kept = one(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, annotations: {team: x, cosign.sigstore.dev/other: y}}\n",
        );
        assert!(normalize(&kept).contains("team: x") && normalize(&kept).contains("cosign.sigstore.dev/other"));
    }

    #[test]
    fn tracking_metadata_matches_what_argo_cd_adds() {
        let mut ms = parse(
            "t",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
            Limits::default(),
        )
        .unwrap();
        add_tracking(&mut ms, "shop-cart", Some("shop"), TrackingMethod::AnnotationAndLabel, &Scopes::default());
        let ann = |m: &Manifest| m.object["metadata"]["annotations"][TRACKING_ANNOTATION].as_str().unwrap().to_string();
        assert_eq!(ann(&ms[0]), "shop-cart:apps/Deployment:shop/cart");
        assert_eq!(ms[0].namespace(), Some("shop"));
        assert_eq!(ann(&ms[1]), "shop-cart:/Namespace:shop/shop");
        assert_eq!(ms[1].namespace(), None, "cluster-scoped objects get no namespace");
        assert_eq!(ms[0].object["metadata"]["labels"][TRACKING_LABEL], "shop-cart");
    }

    #[test]
    fn a_custom_resources_scope_comes_from_its_crd_or_from_discovery_not_from_a_list() {
        let text = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: guards.shop.example}\nspec: {group: shop.example, scope: Cluster, names: {kind: Guard, plural: guards}}\n---\napiVersion: shop.example/v1\nkind: Guard\nmetadata: {name: g}\n---\napiVersion: policy.example/v1\nkind: ClusterPolicy\nmetadata: {name: p}\n---\napiVersion: policy.example/v1\nkind: Policy\nmetadata: {name: q}\n";
        let mut ms = parse("t", text, Limits::default()).unwrap();
        let mut scopes = Scopes::of_crds(&ms);
        scopes.learn("policy.example", "ClusterPolicy", true);
        scopes.learn("shop.example", "Guard", false); // the manifests' own CRD goes first
        add_tracking(&mut ms, "shop-cart", Some("shop"), TrackingMethod::Annotation, &scopes);
        let namespaces: Vec<Option<&str>> = ms.iter().map(|m| m.namespace()).collect();
        assert_eq!(namespaces, [None, None, None, Some("shop")]);
    }

    #[test]
    fn a_secret_signed_by_digest_tells_nothing_of_its_values_and_matches_the_live_one() {
        let rendered = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ndata: {password: aHVudGVyMg==}\nstringData: {user: admin}\n";
        let mut signed = parse("t", rendered, Limits::default()).unwrap().remove(0);
        digest_secret(&mut signed.object);
        let text = serde_json::to_string(&signed.object).unwrap();
        assert!(!text.contains("aHVudGVyMg") && !text.contains("admin") && !text.contains("hunter2"), "{text}");
        assert_eq!(signed.object["metadata"]["annotations"][SECRET_VALUES], "sha256");
        // The apiserver stores stringData as data; digested, the live Secret is the signed one.
        let live = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}});
        let mut digested = live.as_object().unwrap().clone();
        digest_secret(&mut digested);
        assert_eq!(digested["data"], signed.object["data"]);
        assert!(is_secret(&digested));
    }

    #[test]
    fn match_rules_select_by_globs() {
        let ms = parse(
            "t",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: shop}\n",
            Limits::default(),
        )
        .unwrap();
        let rules: Vec<ResourceMatch> = serde_saphyr::from_str("[{kind: 'Deploy*'}, {group: '', name: 'x*'}]").unwrap();
        assert_eq!(
            select(ms.clone(), &rules).unwrap().iter().map(Manifest::id).collect::<Vec<_>>(),
            ["apps/Deployment shop/cart"]
        );
        assert_eq!(select(ms, &[]).unwrap().len(), 2);
    }

    #[test]
    fn the_blob_joins_normalized_documents() {
        let ms = parse(
            "t",
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: B\nmetadata: {name: b}\n",
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(blob(&ms)).unwrap(),
            "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: B\nmetadata:\n  name: b"
        );
    }
}
