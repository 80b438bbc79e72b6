//! Every container image the rendered manifests would run: containers, init and ephemeral containers,
//! in Pods, pod templates and every workload kind. Anything shaped like a workload (`spec.template.spec`,
//! as Argo Rollouts and many operators use) counts too: an image that is missed is an image that is not
//! verified.

use serde_json::Value;

use crate::render::manifest::Manifest;

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// One use of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUse {
    /// The reference as written (possibly empty or malformed: that is reported, not skipped).
    pub image: String,
    /// `kind namespace/name`, and the container.
    pub used_by: String,
}

/// The pod specs inside one object.
fn pod_specs(m: &Manifest) -> Vec<&Value> {
    let at = |path: &[&str]| {
        let mut v = m.object.get(path[0])?;
        for p in &path[1..] {
            v = v.get(p)?;
        }
        v.is_object().then_some(v)
    };
    let paths: &[&[&str]] = match m.kind() {
        "Pod" => &[&["spec"]],
        "PodTemplate" => &[&["template", "spec"]],
        "CronJob" => &[&["spec", "jobTemplate", "spec", "template", "spec"]],
        _ => &[&["spec", "template", "spec"], &["spec", "jobTemplate", "spec", "template", "spec"]],
    };
    paths.iter().filter_map(|p| at(p)).collect()
}

/// Every image use, in manifest order.
pub fn uses(manifests: &[Manifest]) -> Vec<ImageUse> {
    let mut out = Vec::new();
    for m in manifests {
        for spec in pod_specs(m) {
            for list in CONTAINER_LISTS {
                for c in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                    out.push(ImageUse {
                        image: c.get("image").and_then(Value::as_str).unwrap_or_default().trim().to_string(),
                        used_by: format!("{} container {name}", m.id()),
                    });
                }
            }
        }
    }
    out
}

/// The distinct images, in order of first use, each with every place it is used.
pub fn distinct(uses: Vec<ImageUse>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for u in uses {
        match out.iter_mut().find(|(image, _)| *image == u.image) {
            Some((_, by)) => by.push(u.used_by),
            None => out.push((u.image, vec![u.used_by])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::manifest::{Limits, parse};

    const YAML: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec:
  initContainers: [{name: init, image: "busybox:1.36"}]
  containers: [{name: app, image: "registry.example.com/shop/cart:1"}]
  ephemeralContainers: [{name: debug, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: shop}
spec: {template: {spec: {containers: [{name: web, image: "registry.example.com/shop/web:2"}]}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c, namespace: shop}
spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: job, image: "registry.example.com/shop/job:3"}]}}}}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r, namespace: shop}
spec: {template: {spec: {containers: [{name: canary, image: "registry.example.com/shop/canary:4"}, {name: broken}]}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: shop}
data: {image: "not-an-image-use"}
"#;

    #[test]
    fn every_container_of_every_workload_kind_is_found() {
        let manifests = parse("test", YAML, Limits::default()).unwrap();
        let found = distinct(uses(&manifests));
        let images: Vec<&str> = found.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(
            images,
            [
                "busybox:1.36",
                "registry.example.com/shop/cart:1",
                "registry.example.com/shop/web:2",
                "registry.example.com/shop/job:3",
                "registry.example.com/shop/canary:4",
                "",
            ]
        );
        assert_eq!(found[0].1, ["Pod shop/p container init", "Pod shop/p container debug"]);
        assert_eq!(found[5].1, ["argoproj.io/Rollout shop/r container broken"]);
    }
}
