//! Does an object match a signed manifest? The manifest of the same group, kind, name (and namespace,
//! when it names one) is found as `kubectl sigstore verify-resource` finds it; then the object must be
//! exactly that manifest as the apiserver stores it. "As the apiserver stores it" comes from one place
//! only, the apiserver's own server-side dry run of the signed manifest: a value the object has that the
//! manifest does not set is allowed only when the dry run has it too (a default), and a value the
//! manifest sets that the object lacks or spells otherwise only when the dry run does the same (a
//! `false` the API drops, `1000m` stored as `1`). Presence counts, not truthiness: a signed
//! `allowPrivilegeEscalation: false` that is gone, or an added `runAsUser: 0`, is a difference. Labels
//! and annotations count like any field, bar a short list the system itself writes (`SYSTEM_METADATA`).
//! `docker.io/`, `library/` and `:latest` image spellings are the same image.

use serde_json::Value;

use crate::render::manifest::{Manifest, TRACKING_ANNOTATION, TRACKING_LABEL, TrackingMethod};
use crate::resources::profile::{IgnoreFields, ObjectPattern};

/// Fields never compared, for every kind (kubectl-sigstore's defaults, and Argo CD's bookkeeping).
const IGNORED: &[&str] = &[
    "metadata.managedFields",
    "metadata.resourceVersion",
    "metadata.selfLink",
    "metadata.creationTimestamp",
    "metadata.generation",
    "metadata.uid",
    "metadata.finalizers",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
    "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration",
    "metadata.annotations.namespace",
    "metadata.annotations.argocd.argoproj.io/installation-id",
    "status",
];

/// Fields ignored for one kind (kubectl-sigstore's defaults).
const IGNORED_BY_KIND: &[(&str, &str)] = &[
    ("ServiceAccount", "secrets"),
    ("ServiceAccount", "imagePullSecrets"),
    ("Service", "spec.ports.*.nodePort"),
    ("Service", "spec.clusterIP"),
    ("Service", "spec.clusterIPs"),
    ("Service", "spec.healthCheckNodePort"),
    // Set by the scheduler's binding, not by whoever applied the Pod.
    ("Pod", "spec.nodeName"),
    ("Deployment", "metadata.annotations.deployment.kubernetes.io/revision"),
    ("DaemonSet", "metadata.annotations.deprecated.daemonset.template.generation"),
    // An Application's operation is Argo CD's own bookkeeping (auto-sync writes it on a child
    // Application of an app of apps), as its status is.
    ("Application", "operation"),
    ("Application", "metadata.annotations.argocd.argoproj.io/refresh"),
    ("Application", "metadata.annotations.argocd.argoproj.io/hydrate"),
];

/// Labels and annotations Kubernetes' own controllers write on objects Argo CD applied; every other
/// added or changed label or annotation is a difference (some change behaviour: an Ingress
/// controller's annotations, `argocd.argoproj.io/sync-options`, Pod Security labels, aggregation labels).
const SYSTEM_METADATA: &[&str] = &[
    // The persistent volume controller binding a claim.
    "metadata.annotations.pv.kubernetes.io/bind-completed",
    "metadata.annotations.pv.kubernetes.io/bound-by-controller",
    "metadata.annotations.volume.beta.kubernetes.io/storage-provisioner",
    "metadata.annotations.volume.kubernetes.io/storage-provisioner",
    "metadata.annotations.volume.kubernetes.io/selected-node",
    // The token controller filling a service account token Secret.
    "metadata.annotations.kubernetes.io/service-account.uid",
];

/// Which Application an object belongs to, from Argo CD's tracking metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// The Application's namespace when the tracking names one (`<namespace>_<name>`).
    pub app_namespace: Option<String>,
    pub app: String,
}

/// The Application an object belongs to, as Argo CD reads it with its tracking `method`:
/// - annotation (and annotation+label): `argocd.argoproj.io/tracking-id:
///   <app>:<group>/<kind>:<namespace>/<name>`, and only when that group, kind and name (and namespace,
///   for a namespaced object) are the object's own. The Deployment controller copies a Deployment's
///   annotations to its ReplicaSets: a ReplicaSet carrying its Deployment's id is not Argo CD's object.
/// - label: `app.kubernetes.io/instance`, which carries only the Application's name (so Pods made from
///   a labelled template carry it too; see `derived`).
pub fn tracked(object: &Value, method: TrackingMethod) -> Option<Tracked> {
    let meta = &object["metadata"];
    let app = match method {
        TrackingMethod::Annotation | TrackingMethod::AnnotationAndLabel => {
            let id = meta["annotations"][TRACKING_ANNOTATION].as_str()?;
            let (app, rest) = id.split_once(':')?;
            let (group_kind, ns_name) = rest.split_once(':')?;
            let (group, kind) = group_kind.split_once('/')?;
            let (namespace, name) = ns_name.split_once('/')?;
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let own_group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let own_ns = meta["namespace"].as_str().unwrap_or_default();
            let same = group == own_group
                && kind == object["kind"].as_str().unwrap_or_default()
                && name == meta["name"].as_str().unwrap_or_default()
                && (own_ns.is_empty() || namespace == own_ns);
            if !same {
                return None;
            }
            app
        }
        TrackingMethod::Label => meta["labels"][TRACKING_LABEL].as_str()?,
    };
    if app.is_empty() {
        return None;
    }
    Some(match app.split_once('_') {
        Some((ns, name)) => Tracked { app_namespace: Some(ns.to_string()), app: name.to_string() },
        None => Tracked { app_namespace: None, app: app.to_string() },
    })
}

/// The controller that made an object, when one did (its controller owner reference, `kind/name`).
pub fn controller_of(object: &Value) -> Option<String> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or_default(), o["name"].as_str().unwrap_or_default()))
}

/// One field that differs: its dotted path, what was signed and what was submitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// The field's path, one key or index each.
    pub path: Vec<String>,
    pub signed: Value,
    pub actual: Value,
    /// A Secret's values are never shown (a crafted review would read them back).
    pub withheld: bool,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Value| {
            let s = match v {
                Value::Null => "(unset)".to_string(),
                _ if self.withheld => "(a value, withheld)".to_string(),
                v => v.to_string(),
            };
            if s.chars().count() > 120 { format!("{}…", s.chars().take(120).collect::<String>()) } else { s }
        };
        write!(f, "{}: signed {}, got {}", self.path.join("."), show(&self.signed), show(&self.actual))
    }
}

/// The signed manifest for `object`: same group, kind and name; same namespace unless the manifest
/// leaves it to the destination.
pub fn find<'a>(signed: &'a [Manifest], object: &Value) -> Option<&'a Manifest> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str();
    signed.iter().find(|m| {
        m.group() == group
            && m.kind() == kind
            && m.name() == name
            && (m.namespace().is_none() || m.namespace() == namespace)
    })
}

/// Whether a signed manifest is a Secret signed by the digest of its values.
pub fn signed_by_digest(signed: &Manifest) -> bool {
    crate::render::manifest::is_secret(&signed.object)
        && signed.object["metadata"]["annotations"][crate::render::manifest::SECRET_VALUES] == "sha256"
}

/// A live Secret as a Secret signed by digest says it: its values digested. And that signed Secret as
/// the apiserver stores it, which needs no dry run: a Secret's one default is its `type`.
pub fn secret_by_digest(signed: &Manifest, live: &Value) -> (Value, Value) {
    let mut object = live.as_object().cloned().unwrap_or_default();
    crate::render::manifest::digest_secret(&mut object);
    let mut stored = signed.object.clone();
    stored.entry("type").or_insert_with(|| Value::String("Opaque".into()));
    (Value::Object(object), Value::Object(stored))
}

/// The profile's extra ignored fields that apply to a manifest.
pub fn extra_ignored<'a>(rules: &'a [IgnoreFields], m: &Manifest) -> Vec<&'a str> {
    ignored_for(rules, m.group(), m.kind(), m.name(), m.namespace().unwrap_or_default())
}

/// The profile's extra ignored fields that apply to an object of that group, kind, name and namespace.
pub fn ignored_for<'a>(
    rules: &'a [IgnoreFields],
    group: &str,
    kind: &str,
    name: &str,
    namespace: &str,
) -> Vec<&'a str> {
    let glob = |pattern: &Option<String>, value: &str| {
        pattern.as_deref().is_none_or(|p| globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(value)))
    };
    let applies = |o: &ObjectPattern| {
        glob(&o.group, group) && glob(&o.kind, kind) && glob(&o.name, name) && glob(&o.namespace, namespace)
    };
    rules
        .iter()
        .filter(|r| r.objects.is_empty() || r.objects.iter().any(applies))
        .flat_map(|r| r.fields.iter().map(String::as_str))
        .collect()
}

/// Every difference between `object` and the signed manifest as the apiserver stores it (`defaulted`,
/// its server-side dry run), reported as signed against submitted (`extra`: more ignored paths).
/// - Each field the manifest sets must be in the object, equal; where it is not, the dry run decides
///   (the API drops a `false`, normalizes a quantity): it must show the same as the object.
/// - Each field the object has must be in the dry run, equal: anything else was added.
pub fn check(signed: &Manifest, defaulted: &Value, object: &Value, extra: &[&str]) -> Vec<Difference> {
    let kind = signed.kind();
    let signed_value = Value::Object(signed.object.clone());
    let ignored = ignored_paths(kind, &signed_value, extra);
    let defaulted = own_identity(defaulted, object);
    let mut out = Vec::new();
    let mut changed = Vec::new();
    compare(&signed_value, object, &mut Vec::new(), &ignored, &mut changed);
    out.extend(changed.into_iter().filter(|d| !same(lookup(&defaulted, &d.path), &d.actual)));
    // Name and namespace are the object's own (the dry run ran under another name).
    let identity: Vec<Vec<&str>> =
        ignored.iter().cloned().chain([vec!["metadata", "name"], vec!["metadata", "namespace"]]).collect();
    let mut added = Vec::new();
    compare(object, &defaulted, &mut Vec::new(), &identity, &mut added);
    for d in added {
        if !out.iter().any(|o| o.path == d.path) {
            out.push(Difference { signed: d.actual, actual: d.signed, ..d });
        }
    }
    if signed.group().is_empty() && kind == "Secret" {
        for d in &mut out {
            d.withheld = true;
        }
    }
    out
}

/// The paths never compared for an object of `kind` like `object`, with `extra` (the profile's).
fn ignored_paths<'a>(kind: &str, object: &Value, extra: &[&'a str]) -> Vec<Vec<&'a str>> {
    // An aggregated ClusterRole's rules are the aggregation controller's to write.
    let aggregated = kind == "ClusterRole" && object.get("aggregationRule").is_some();
    IGNORED
        .iter()
        .copied()
        .chain(IGNORED_BY_KIND.iter().filter(|(k, _)| *k == kind).map(|(_, p)| *p))
        .chain(aggregated.then_some("rules"))
        .chain(SYSTEM_METADATA.iter().copied())
        .chain(extra.iter().copied())
        .map(split_path)
        .collect()
}

/// Whether an UPDATE from `old` to `new` changes only what no manifest decides: status, bookkeeping,
/// the system's own metadata, and `extra` (the profile's ignoreFields for the object, such as the
/// replicas an autoscaler owns). Such a write is the cluster's own work: it is admitted whatever the
/// revision's verdict, and whatever the object held before.
pub fn changes_only_ignored(kind: &str, old: &Value, new: &Value, extra: &[&str]) -> bool {
    let ignored = ignored_paths(kind, old, extra);
    let mut changed = Vec::new();
    compare(old, new, &mut Vec::new(), &ignored, &mut changed);
    compare(new, old, &mut Vec::new(), &ignored, &mut changed);
    changed.is_empty()
}

/// The value at a dotted path (array indexes as numbers), or null.
fn lookup<'a>(v: &'a Value, path: &[String]) -> &'a Value {
    let mut at = v;
    for k in path {
        at = match at {
            Value::Object(m) => m.get(k).unwrap_or(&Value::Null),
            Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)).unwrap_or(&Value::Null),
            _ => &Value::Null,
        };
    }
    at
}

/// Equal. An unset field, an explicit null and an empty map or list are the same to the API; a `false`,
/// `0` or `""` is a value (`allowPrivilegeEscalation: false` is not the default `true`).
fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    a == b || (empty(a) && empty(b))
}

/// The dry run was made under another name, and the apiserver gave it another UID; what it derived from
/// them (a Job's generated `controller-uid` and `job-name` selector and labels) is what the submitted
/// object must derive from its own name and UID. So every string that is the dry run's name or UID is
/// read as the object's. So is the name of the token volume the apiserver adds to a Pod
/// (`kube-api-access-` and five random characters, drawn again on every create).
fn own_identity(defaulted: &Value, object: &Value) -> Value {
    let mut pairs: Vec<(String, String)> = ["name", "uid"]
        .iter()
        .filter_map(|k| {
            let from = defaulted["metadata"][*k].as_str().filter(|v| !v.is_empty())?;
            let to = object["metadata"][*k].as_str()?;
            Some((from.to_string(), to.to_string()))
        })
        .collect();
    let token_volume = |v: &Value| {
        let volumes = v["spec"]["volumes"].as_array()?;
        let name = volumes.iter().filter_map(|v| v["name"].as_str()).find(|n| {
            n.strip_prefix("kube-api-access-")
                .is_some_and(|r| r.len() == 5 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        })?;
        Some(name.to_string())
    };
    if let (Some(from), Some(to)) = (token_volume(defaulted), token_volume(object)) {
        pairs.push((from, to));
    }
    let mut out = defaulted.clone();
    rewrite(&mut out, &pairs);
    out
}

fn rewrite(v: &mut Value, pairs: &[(String, String)]) {
    match v {
        Value::String(s) => {
            if let Some((_, to)) = pairs.iter().find(|(from, _)| from == s) {
                *s = to.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, pairs)),
        Value::Object(map) => map.values_mut().for_each(|i| rewrite(i, pairs)),
        _ => {}
    }
}

/// Splits a dotted path, keeping annotation and label keys (which contain dots and slashes) whole.
fn split_path(path: &str) -> Vec<&str> {
    for map in ["metadata.annotations.", "metadata.labels."] {
        if let Some(key) = path.strip_prefix(map) {
            let mut parts: Vec<&str> = map.trim_end_matches('.').split('.').collect();
            parts.push(key);
            return parts;
        }
    }
    path.split('.').collect()
}

fn is_ignored(path: &[String], ignored: &[Vec<&str>]) -> bool {
    ignored.iter().any(|p| p.len() == path.len() && p.iter().zip(path).all(|(a, b)| *a == "*" || a == b))
}

fn compare(signed: &Value, actual: &Value, path: &mut Vec<String>, ignored: &[Vec<&str>], out: &mut Vec<Difference>) {
    if is_ignored(path, ignored) {
        return;
    }
    match (signed, actual) {
        // A map against a missing one: field by field, so that each is reported (and ignored) on its own.
        (Value::Object(s), Value::Object(_) | Value::Null) => {
            for (k, v) in s {
                path.push(k.clone());
                compare(v, actual.get(k).unwrap_or(&Value::Null), path, ignored, out);
                path.pop();
            }
        }
        (Value::Array(s), Value::Array(a)) if s.len() == a.len() => {
            for (i, (sv, av)) in s.iter().zip(a).enumerate() {
                path.push(i.to_string());
                compare(sv, av, path, ignored, out);
                path.pop();
            }
        }
        (Value::String(s), Value::String(a)) if path.last().is_some_and(|k| k == "image") => {
            if canonical_image(s) != canonical_image(a) {
                out.push(difference(path, signed, actual));
            }
        }
        (s, a) if same(s, a) => {}
        _ => out.push(difference(path, signed, actual)),
    }
}

fn difference(path: &[String], signed: &Value, actual: &Value) -> Difference {
    Difference { path: path.to_vec(), signed: signed.clone(), actual: actual.clone(), withheld: false }
}

/// `nginx`, `docker.io/nginx:latest` and `docker.io/library/nginx` are one image.
fn canonical_image(image: &str) -> String {
    match crate::images::reference::ImageRef::parse(image) {
        Ok(r) => match (&r.digest, &r.tag) {
            (Some(d), _) => r.pinned(d),
            (None, tag) => format!("{}:{}", r.name(), tag.as_deref().unwrap_or("latest")),
        },
        Err(_) => image.to_string(),
    }
}

/// Every image an object runs (its pod specs), for checking against image verification.
pub fn images(object: &Value) -> Vec<String> {
    let Some(map) = object.as_object() else { return Vec::new() };
    let m = Manifest { object: map.clone() };
    crate::images::collect::uses(std::slice::from_ref(&m)).into_iter().map(|u| u.image).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::manifest::{Limits, parse};
    use serde_json::json;

    fn signed() -> Vec<Manifest> {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cart
  namespace: shop
  annotations: {argocd.argoproj.io/tracking-id: "shop-cart:apps/Deployment:shop/cart"}
spec:
  replicas: 3
  template:
    spec:
      containers: [{name: app, image: "nginx", ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: cart}
spec: {ports: [{port: 80}]}
"#;
        parse("t", yaml, Limits::default()).unwrap()
    }

    fn live() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cart", "namespace": "shop", "uid": "u", "resourceVersion": "7", "generation": 2,
                "annotations": {"argocd.argoproj.io/tracking-id": "shop-cart:apps/Deployment:shop/cart",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}", "deployment.kubernetes.io/revision": "4"}},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 600, "paused": false,
                "template": {"spec": {"containers": [{"name": "app", "image": "docker.io/library/nginx:latest",
                    "imagePullPolicy": "Always", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}},
            "status": {"replicas": 3}})
    }

    /// The signed Deployment as the apiserver's dry run returns it: its defaults, under another name.
    fn defaulted() -> Value {
        let mut d = live();
        d["metadata"]["name"] = json!("cart-weft-1a2b3c4d");
        d["metadata"]["uid"] = json!("dry");
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx");
        d
    }

    fn shown(d: &[Difference]) -> Vec<String> {
        d.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_bookkeeping_do_not_count_but_a_changed_field_does() {
        let signed = signed();
        let m = find(&signed, &live()).expect("found by group, kind, name, namespace");
        assert_eq!(shown(&check(m, &defaulted(), &live(), &[])), Vec::<String>::new());
        let mut tampered = live();
        tampered["spec"]["replicas"] = json!(5);
        tampered["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        assert_eq!(
            shown(&check(m, &defaulted(), &tampered, &[])),
            [
                "spec.replicas: signed 3, got 5",
                "spec.template.spec.containers.0.image: signed \"nginx\", got \"nginx:1.27\""
            ]
        );
        let mut extra = live();
        extra["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "x", "image": "evil"}));
        assert_eq!(check(m, &defaulted(), &extra, &[]).len(), 1, "an added container changes the list");
        let rules = vec![IgnoreFields {
            fields: vec!["spec.replicas".into(), "spec.template.spec.containers.*.image".into()],
            objects: vec![ObjectPattern { kind: Some("Deploy*".into()), ..Default::default() }],
        }];
        assert_eq!(check(m, &defaulted(), &tampered, &extra_ignored(&rules, m)), [], "the profile ignores both");
        let elsewhere = vec![IgnoreFields {
            objects: vec![ObjectPattern { name: Some("web".into()), ..Default::default() }],
            ..rules[0].clone()
        }];
        assert!(extra_ignored(&elsewhere, m).is_empty());
    }

    #[test]
    fn presence_counts_not_truthiness_and_only_the_dry_run_supplies_defaults() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec:
  replicas: 0
  template:
    spec:
      automountServiceAccountToken: false
      hostUsers: false
      hostNetwork: false
      containers: [{name: app, image: nginx, securityContext: {allowPrivilegeEscalation: false}}]
"#;
        let signed = parse("t", yaml, Limits::default()).unwrap();
        let m = &signed[0];
        let stored = |dry: bool| {
            let mut v = Value::Object(m.object.clone());
            v["spec"]["template"]["spec"].as_object_mut().unwrap().remove("hostNetwork"); // omitempty: the API drops it
            v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
            if dry {
                v["metadata"]["name"] = json!("cart-weft-1a2b3c4d");
            }
            v
        };
        let (dry, live) = (stored(true), stored(false));
        assert_eq!(check(m, &dry, &live, &[]), [], "a false the API drops is dropped by the dry run too");
        for (path, why) in [
            ("/spec/replicas", "replicas: 0"),
            ("/spec/template/spec/automountServiceAccountToken", "automountServiceAccountToken: false"),
            ("/spec/template/spec/hostUsers", "hostUsers: false"),
            ("/spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation", "allowPrivilegeEscalation"),
        ] {
            let mut removed = live.clone();
            let (parent, key) = path.rsplit_once('/').unwrap();
            removed.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
            let d = check(m, &dry, &removed, &[]);
            assert_eq!(d.len(), 1, "removing a signed {why} is a difference: {d:?}");
            assert!(d[0].to_string().ends_with("got (unset)"), "{}", d[0]);
        }
        let mut root = live.clone();
        root["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        assert_eq!(
            shown(&check(m, &dry, &root, &[])),
            ["spec.template.spec.containers.0.securityContext.runAsUser: signed (unset), got 0"],
            "an added zero is an addition"
        );
        let mut empty = live.clone();
        empty["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({});
        assert_eq!(check(m, &dry, &empty, &[]), [], "an empty map is no value");
    }

    #[test]
    fn added_labels_and_annotations_are_differences_bar_what_the_system_writes() {
        let object = |kind: &str, api: &str, meta: Value| json!({"apiVersion": api, "kind": kind, "metadata": meta});
        let cases = [
            (
                "Ingress",
                "networking.k8s.io/v1",
                "annotations",
                "nginx.ingress.kubernetes.io/server-snippet",
                "deny all;",
            ),
            ("ConfigMap", "v1", "annotations", "argocd.argoproj.io/sync-options", "Replace=true"),
            ("Namespace", "v1", "labels", "pod-security.kubernetes.io/enforce", "privileged"),
            (
                "ClusterRole",
                "rbac.authorization.k8s.io/v1",
                "labels",
                "rbac.authorization.k8s.io/aggregate-to-admin",
                "true",
            ),
            ("Secret", "v1", "labels", "argocd.argoproj.io/secret-type", "cluster"),
        ];
        for (kind, api, map, key, value) in cases {
            let signed = parse("t", &object(kind, api, json!({"name": "x"})).to_string(), Limits::default()).unwrap();
            let dry = object(kind, api, json!({"name": "x-weft-1", "uid": "d"}));
            let live = object(kind, api, json!({"name": "x", "uid": "l", map: {key: value}}));
            let d = check(&signed[0], &dry, &live, &[]);
            assert_eq!(d.len(), 1, "{kind} {key}: {d:?}");
            assert_eq!(d[0].path, ["metadata", map, key], "{kind}");
        }
        let pvc = |meta: Value| object("PersistentVolumeClaim", "v1", meta);
        let signed = parse("t", &pvc(json!({"name": "data"})).to_string(), Limits::default()).unwrap();
        let bound = pvc(json!({"name": "data", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}}));
        assert_eq!(check(&signed[0], &pvc(json!({"name": "data-weft-1"})), &bound, &[]), [], "the binder's mark");
    }

    #[test]
    fn a_secrets_values_are_never_shown() {
        let secret = |v: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": v}});
        let signed = parse("t", &secret("c2lnbmVk").to_string(), Limits::default()).unwrap();
        let d = shown(&check(&signed[0], &secret("c2lnbmVk"), &secret("bGl2ZQ=="), &[]));
        assert_eq!(d, ["data.password: signed (a value, withheld), got (a value, withheld)"]);
        let cm = parse(
            "t",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "a"}}"#,
            Limits::default(),
        )
        .unwrap();
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "b"}});
        assert_eq!(
            shown(&check(&cm[0], &Value::Object(cm[0].object.clone()), &live, &[])),
            [r#"data.k: signed "a", got "b""#]
        );
    }

    #[test]
    fn argo_cds_operation_on_a_child_application_is_its_own_bookkeeping() {
        let app = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "child", "namespace": "argocd"},
            "spec": {"project": "default"}});
        let signed = parse("t", &app.to_string(), Limits::default()).unwrap();
        let mut live = app.clone();
        live["operation"] = json!({"sync": {"revision": "abc"}, "initiatedBy": {"automated": true}});
        live["status"] = json!({"sync": {"status": "OutOfSync"}});
        live["metadata"]["annotations"] = json!({"argocd.argoproj.io/refresh": "normal"});
        assert_eq!(check(&signed[0], &app, &live, &[]), []);
        live["spec"]["project"] = json!("other");
        assert_eq!(check(&signed[0], &app, &live, &[]).len(), 1);
    }

    #[test]
    fn a_manifest_without_a_namespace_matches_any_and_others_are_not_found() {
        let signed = signed();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"ports": [{"port": 80, "nodePort": 30080}], "clusterIP": "10.0.0.1"}});
        let dry = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart-weft-1", "namespace": "shop"},
            "spec": {"ports": [{"port": 80, "nodePort": 30999}], "clusterIP": "10.0.0.9"}});
        assert_eq!(check(find(&signed, &svc).unwrap(), &dry, &svc, &[]), []);
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cart"}});
        assert!(find(&signed, &other).is_none());
        let wrong_ns =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart", "namespace": "x"}});
        assert!(find(&signed, &wrong_ns).is_none());
    }

    #[test]
    fn what_the_apiserver_derives_from_a_jobs_own_name_and_uid_is_checked_against_the_object() {
        let job = |name: &str, uid: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "shop", "uid": uid},
                "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
                         "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": uid, "job-name": name}},
                                      "spec": {"containers": [{"name": "m", "image": "x"}]}}}})
        };
        let signed = crate::render::manifest::parse(
            "t",
            r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "shop"}, "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}}"#,
            crate::render::manifest::Limits::default(),
        )
        .unwrap();
        let dry_run = job("migrate-weft-1234", "u-dry");
        assert_eq!(check(&signed[0], &dry_run, &job("migrate", "u-live"), &[]), []);
        let mut forged = job("migrate", "u-live");
        forged["spec"]["template"]["metadata"]["labels"]["job-name"] = json!("other");
        assert_eq!(check(&signed[0], &dry_run, &forged, &[]).len(), 1, "only its own name is derived");
    }

    #[test]
    fn a_bare_pods_generated_token_volume_is_its_own_and_an_aggregated_roles_rules_are_the_controllers() {
        let pod = |name: &str, volume: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "m", "image": "x", "volumeMounts": [{"name": volume, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                         "volumes": [{"name": volume, "projected": {"sources": []}}]}})
        };
        let signed = crate::render::manifest::parse(
            "t",
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": [{"name": "m", "image": "x"}]}}"#,
            crate::render::manifest::Limits::default(),
        )
        .unwrap();
        let dry_run = pod("p-weft-1", "kube-api-access-ab12c");
        assert_eq!(check(&signed[0], &dry_run, &pod("p", "kube-api-access-zz9yx"), &[]), []);
        let forged = pod("p", "host");
        assert_eq!(check(&signed[0], &dry_run, &forged, &[]).len(), 2, "another volume is not the token's");

        let role = |rules: Value, aggregation: bool| {
            let mut r = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "view-shop"}, "rules": rules});
            if aggregation {
                r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"shop/aggregate": "true"}}]});
            }
            r
        };
        let text = |v: &Value| serde_json::to_string(v).unwrap();
        let aggregated = crate::render::manifest::parse(
            "t",
            &text(&role(json!([]), true)),
            crate::render::manifest::Limits::default(),
        )
        .unwrap();
        let filled = role(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]), true);
        assert_eq!(check(&aggregated[0], &role(json!([]), true), &filled, &[]), []);
        let plain = crate::render::manifest::parse(
            "t",
            &text(&role(json!([]), false)),
            crate::render::manifest::Limits::default(),
        )
        .unwrap();
        let widened = role(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]), false);
        assert_eq!(check(&plain[0], &role(json!([]), false), &widened, &[]).len(), 1, "but not a plain role's");
    }

    #[test]
    fn an_update_of_only_what_no_manifest_decides_is_the_clusters_own_work() {
        let old = live();
        let mut scaled = live();
        scaled["spec"]["replicas"] = json!(7);
        scaled["status"] = json!({"replicas": 7});
        assert!(!changes_only_ignored("Deployment", &old, &scaled, &[]));
        assert!(changes_only_ignored("Deployment", &old, &scaled, &["spec.replicas"]), "the autoscaler's replicas");
        let mut status = live();
        status["status"] = json!({"replicas": 1});
        status["metadata"]["resourceVersion"] = json!("99");
        assert!(changes_only_ignored("Deployment", &old, &status, &[]));
        let mut smuggled = scaled.clone();
        smuggled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil");
        assert!(!changes_only_ignored("Deployment", &old, &smuggled, &["spec.replicas"]));
        let mut labelled = live();
        labelled["metadata"]["labels"] = json!({"pod-security.kubernetes.io/enforce": "privileged"});
        assert!(!changes_only_ignored("Deployment", &old, &labelled, &[]), "an added label is a change");
    }

    #[test]
    fn a_secret_signed_by_digest_is_checked_by_the_digest_of_the_live_values() {
        let mut signed = crate::render::manifest::parse(
            "t",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"password": "hunter2"}}"#,
            crate::render::manifest::Limits::default(),
        )
        .unwrap();
        crate::render::manifest::digest_secret(&mut signed[0].object);
        assert!(signed_by_digest(&signed[0]));
        let live = |password: &str| {
            use base64::Engine as _;
            let value = base64::engine::general_purpose::STANDARD.encode(password);
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "db", "namespace": "shop", "uid": "u"}, "data": {"password": value}})
        };
        let (object, stored) = secret_by_digest(&signed[0], &live("hunter2"));
        assert_eq!(check(&signed[0], &stored, &object, &[]), []);
        let (object, stored) = secret_by_digest(&signed[0], &live("letmein"));
        let differences = check(&signed[0], &stored, &object, &[]);
        assert_eq!(shown(&differences), ["data.password: signed (a value, withheld), got (a value, withheld)"]);
    }

    #[test]
    fn tracking_names_the_application_only_for_the_object_it_was_written_for() {
        use TrackingMethod::*;
        assert_eq!(tracked(&live(), Annotation), Some(Tracked { app_namespace: None, app: "shop-cart".into() }));
        let svc = |id: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop",
                   "annotations": {TRACKING_ANNOTATION: id}, "labels": {TRACKING_LABEL: "blog"}}})
        };
        assert_eq!(
            tracked(&svc("team_shop-cart:/Service:shop/cart"), Annotation),
            Some(Tracked { app_namespace: Some("team".into()), app: "shop-cart".into() })
        );
        // A ReplicaSet with its Deployment's annotations is not the Deployment.
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "cart-5d8f", "namespace": "shop",
            "annotations": {TRACKING_ANNOTATION: "shop-cart:apps/Deployment:shop/cart"}}});
        assert_eq!(tracked(&rs, Annotation), None);
        for other in
            ["shop-cart:/ConfigMap:shop/cart", "shop-cart:/Service:shop/other", "shop-cart:/Service:x/cart", "garbage"]
        {
            assert_eq!(tracked(&svc(other), Annotation), None, "{other}");
        }
        // The label counts only where Argo CD tracks by label.
        assert_eq!(tracked(&svc("garbage"), Label).map(|t| t.app), Some("blog".into()));
        assert_eq!(tracked(&svc("garbage"), AnnotationAndLabel), None);
        assert_eq!(tracked(&json!({"metadata": {}}), Annotation), None);
    }
}
