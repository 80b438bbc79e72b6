//! Does an object match a signed manifest? The same matching `kubectl sigstore verify-resource` does for
//! a live object: the manifest of the same group, kind, name (and namespace, when it names one), and
//! every field the manifest sets, bar the ignored ones, equal in the object; fields the apiserver adds
//! (defaults, status, bookkeeping) are not in the manifest and so do not count. Lenient as it is: nil and
//! zero values are equal, and `docker.io/`, `library/` and `:latest` image spellings are the same image.

use serde_json::Value;

use crate::manifest::{Manifest, TRACKING_ANNOTATION, TRACKING_LABEL, TrackingMethod};
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
    ("Deployment", "metadata.annotations.deployment.kubernetes.io/revision"),
    ("DaemonSet", "metadata.annotations.deprecated.daemonset.template.generation"),
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
    pub path: String,
    pub signed: Value,
    pub actual: Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Value| {
            let s = if v.is_null() { "(unset)".to_string() } else { v.to_string() };
            if s.chars().count() > 120 { format!("{}…", s.chars().take(120).collect::<String>()) } else { s }
        };
        write!(f, "{}: signed {}, got {}", self.path, show(&self.signed), show(&self.actual))
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

/// The profile's extra ignored fields that apply to a manifest.
pub fn extra_ignored<'a>(rules: &'a [IgnoreFields], m: &Manifest) -> Vec<&'a str> {
    let glob = |pattern: &Option<String>, value: &str| {
        pattern.as_deref().is_none_or(|p| globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(value)))
    };
    let applies = |o: &ObjectPattern| {
        glob(&o.group, m.group())
            && glob(&o.kind, m.kind())
            && glob(&o.name, m.name())
            && glob(&o.namespace, m.namespace().unwrap_or_default())
    };
    rules
        .iter()
        .filter(|r| r.objects.is_empty() || r.objects.iter().any(applies))
        .flat_map(|r| r.fields.iter().map(String::as_str))
        .collect()
}

/// Every field the signed manifest sets that the object does not match (`extra`: more ignored paths).
pub fn differences(signed: &Manifest, object: &Value, extra: &[&str]) -> Vec<Difference> {
    let kind = signed.kind();
    let ignored: Vec<Vec<&str>> = IGNORED
        .iter()
        .copied()
        .chain(IGNORED_BY_KIND.iter().filter(|(k, _)| *k == kind).map(|(_, p)| *p))
        .chain(extra.iter().copied())
        .map(split_path)
        .collect();
    let mut out = Vec::new();
    let signed_value = Value::Object(signed.object.clone());
    compare(&signed_value, object, &mut Vec::new(), &ignored, &mut out);
    out
}

/// Fields of the object that the signed manifest, as the apiserver defaults it (a server-side dry-run
/// create of the manifest), does not have or has otherwise: an added field (an env var, a privileged
/// securityContext, a volume) is a difference, not a default. Name and namespace come from the object.
pub fn additions(signed: &Manifest, defaulted: &Value, object: &Value, extra: &[&str]) -> Vec<Difference> {
    let kind = signed.kind();
    let ignored: Vec<Vec<&str>> = IGNORED
        .iter()
        .copied()
        .chain(IGNORED_BY_KIND.iter().filter(|(k, _)| *k == kind).map(|(_, p)| *p))
        .chain(["metadata.name", "metadata.namespace", "metadata.labels", "metadata.annotations"])
        .chain(extra.iter().copied())
        .map(split_path)
        .collect();
    let defaulted = own_identity(defaulted, object);
    let mut out = Vec::new();
    compare(object, &defaulted, &mut Vec::new(), &ignored, &mut out);
    // Reported as signed (the defaulted manifest) against what was submitted.
    out.into_iter().map(|d| Difference { path: d.path, signed: d.actual, actual: d.signed }).collect()
}

/// The dry run was made under another name, and the apiserver gave it another UID; what it derived from
/// them (a Job's generated `controller-uid` and `job-name` selector and labels) is what the submitted
/// object must derive from its own name and UID. So every string that is the dry run's name or UID is
/// read as the object's.
fn own_identity(defaulted: &Value, object: &Value) -> Value {
    let pairs: Vec<(String, String)> = ["name", "uid"]
        .iter()
        .filter_map(|k| {
            let from = defaulted["metadata"][*k].as_str().filter(|v| !v.is_empty())?;
            let to = object["metadata"][*k].as_str()?;
            Some((from.to_string(), to.to_string()))
        })
        .collect();
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
        (Value::Object(s), Value::Object(a)) => {
            for (k, v) in s {
                path.push(k.clone());
                compare(v, a.get(k).unwrap_or(&Value::Null), path, ignored, out);
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
        (s, a) if s == a || (is_zero(s) && is_zero(a)) => {}
        // A number the apiserver writes as a string or the other way round ("80" and 80) is the same.
        (Value::Number(n), Value::String(t)) | (Value::String(t), Value::Number(n)) if n.to_string() == *t => {}
        _ => out.push(difference(path, signed, actual)),
    }
}

fn difference(path: &[String], signed: &Value, actual: &Value) -> Difference {
    Difference { path: path.join("."), signed: signed.clone(), actual: actual.clone() }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
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
    use crate::manifest::{Limits, parse};
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

    #[test]
    fn defaults_and_bookkeeping_do_not_count_but_a_changed_field_does() {
        let signed = signed();
        let m = find(&signed, &live()).expect("found by group, kind, name, namespace");
        assert_eq!(differences(m, &live(), &[]), []);
        let mut tampered = live();
        tampered["spec"]["replicas"] = json!(5);
        tampered["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        let d: Vec<String> = differences(m, &tampered, &[]).iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
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
        assert_eq!(differences(m, &extra, &[]).len(), 1, "an added container changes the list");
        let rules = vec![IgnoreFields {
            fields: vec!["spec.replicas".into(), "spec.template.spec.containers.*.image".into()],
            objects: vec![ObjectPattern { kind: Some("Deploy*".into()), ..Default::default() }],
        }];
        assert_eq!(differences(m, &tampered, &extra_ignored(&rules, m)), [], "the profile ignores both");
        let elsewhere = vec![IgnoreFields {
            objects: vec![ObjectPattern { name: Some("web".into()), ..Default::default() }],
            ..rules[0].clone()
        }];
        assert!(extra_ignored(&elsewhere, m).is_empty());
    }

    #[test]
    fn a_manifest_without_a_namespace_matches_any_and_others_are_not_found() {
        let signed = signed();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"ports": [{"port": 80, "nodePort": 30080}], "clusterIP": "10.0.0.1"}});
        assert_eq!(differences(find(&signed, &svc).unwrap(), &svc, &[]), []);
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
        let signed = crate::manifest::parse(
            "t",
            r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "shop"}, "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}}"#,
            crate::manifest::Limits::default(),
        )
        .unwrap();
        let dry_run = job("migrate-weft-1234", "u-dry");
        assert_eq!(additions(&signed[0], &dry_run, &job("migrate", "u-live"), &[]), []);
        let mut forged = job("migrate", "u-live");
        forged["spec"]["template"]["metadata"]["labels"]["job-name"] = json!("other");
        assert_eq!(additions(&signed[0], &dry_run, &forged, &[]).len(), 1, "only its own name is derived");
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
