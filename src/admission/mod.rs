//! The admission decision, pure: an object Argo CD applies for a protected Application is admitted only
//! when the Application's recorded revision is vouched for, the object matches one of that revision's
//! signed manifests, and its images passed image verification. `webhook` does the I/O around it.

pub mod matching;
pub mod webhook;

use serde_json::{Value, json};
use thiserror::Error;

use crate::render::manifest::Manifest;
use crate::resources::profile::{EnforcementMode, IgnoreFields};
use crate::resources::provenance::{ImageOutcome, ImageStatus, Verdict};

#[derive(Debug, Error)]
pub enum AdmissionError {
    #[error("not an AdmissionReview: {0}")]
    NotAReview(String),
}

/// One AdmissionReview request, the parts that matter.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub uid: String,
    pub operation: String,
    pub namespace: String,
    pub group: String,
    pub kind: String,
    pub name: String,
    /// `status`, `scale`, … when the request is for a subresource.
    pub sub_resource: String,
    /// The resource addressed (`group`, `version`, plural), which for a subresource is the parent's.
    pub resource: (String, String, String),
    pub username: String,
    /// A dry run changes nothing (and is how Weft asks the apiserver for a manifest's defaults).
    pub dry_run: bool,
    pub object: Value,
    /// The object before an UPDATE.
    pub old_object: Value,
}

impl Request {
    pub fn parse(review: &Value) -> Result<Request, AdmissionError> {
        let r = &review["request"];
        let uid = r["uid"].as_str().ok_or_else(|| AdmissionError::NotAReview("no request.uid".into()))?;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(Request {
            uid: uid.to_string(),
            operation: s(&r["operation"]),
            namespace: s(&r["namespace"]),
            group: s(&r["kind"]["group"]),
            kind: s(&r["kind"]["kind"]),
            name: s(&r["name"]),
            sub_resource: s(&r["subResource"]),
            resource: (s(&r["resource"]["group"]), s(&r["resource"]["version"]), s(&r["resource"]["resource"])),
            username: s(&r["userInfo"]["username"]),
            dry_run: r["dryRun"].as_bool().unwrap_or(false),
            object: r["object"].clone(),
            old_object: r["oldObject"].clone(),
        })
    }

    /// `group/kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        let gk = if self.group.is_empty() { self.kind.clone() } else { format!("{}/{}", self.group, self.kind) };
        let name = self.object["metadata"]["name"].as_str().unwrap_or(&self.name);
        if self.namespace.is_empty() { format!("{gk} {name}") } else { format!("{gk} {}/{name}", self.namespace) }
    }
}

/// Who and what the webhook leaves alone.
#[derive(Clone, Debug, Default)]
pub struct Skips {
    pub namespaces: Vec<String>,
    /// User names; a trailing `*` matches a prefix (`system:serviceaccount:kube-system:*`).
    pub users: Vec<String>,
    /// Kinds, as `Kind` or `group/Kind`.
    pub kinds: Vec<String>,
}

impl Skips {
    /// Why the request is not checked, if it is not.
    pub fn skipped(&self, req: &Request) -> Option<String> {
        if !matches!(req.operation.as_str(), "CREATE" | "UPDATE") {
            return Some(format!("{} is not checked", req.operation));
        }
        if req.dry_run {
            return Some("a dry run changes nothing".into());
        }
        if req.group == "weft.dev" {
            return Some("Weft's own resources are not checked".into());
        }
        // Controllers report what they see through `status`; the apiserver keeps the rest of the object
        // as it was, so there is nothing for the signed manifests to say about it.
        if req.sub_resource == "status" {
            return Some("status writes are not checked".into());
        }
        if let Some(why) = only_bookkeeping(req) {
            return Some(why.into());
        }
        if self.namespaces.contains(&req.namespace) {
            return Some(format!("namespace {} is skipped", req.namespace));
        }
        let user = |u: &String| match u.strip_suffix('*') {
            Some(prefix) => req.username.starts_with(prefix),
            None => *u == req.username,
        };
        if self.users.iter().any(user) {
            return Some(format!("user {} is skipped", req.username));
        }
        let gk = format!("{}/{}", req.group, req.kind);
        if self.kinds.iter().any(|k| *k == req.kind || *k == gk) {
            return Some(format!("kind {} is skipped", req.kind));
        }
        None
    }
}

/// An UPDATE that changes nothing a manifest says: it writes `status` (through the main resource, for a
/// kind without a status subresource), takes finalizers away (so that an object being deleted can go),
/// or is Argo CD's bookkeeping on an Application (`operation`, the refresh annotation). Such a write is
/// admitted whatever the revision's verdict: the cluster's own work must go on during a new revision,
/// and nothing it changes is what runs.
fn only_bookkeeping(req: &Request) -> Option<&'static str> {
    if req.operation != "UPDATE" || !req.old_object.is_object() {
        return None;
    }
    let finalizers = |v: &Value| -> Vec<String> {
        v["metadata"]["finalizers"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let (new, old) = (finalizers(&req.object), finalizers(&req.old_object));
    if !new.iter().all(|f| old.contains(f)) {
        return None;
    }
    let application = req.group == "argoproj.io" && req.kind == "Application";
    // The rest as it was (bookkeeping the apiserver moves on every write aside).
    let rest = |v: &Value| {
        let mut v = v.clone();
        if let Some(top) = v.as_object_mut() {
            top.remove("status");
            if application {
                top.remove("operation");
            }
        }
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["finalizers", "managedFields", "resourceVersion", "generation"] {
                meta.remove(k);
            }
            if application && let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("argocd.argoproj.io/refresh");
                a.remove("argocd.argoproj.io/hydrate");
                if a.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
        v
    };
    if rest(&req.object) != rest(&req.old_object) {
        return None;
    }
    Some(if new.len() < old.len() {
        "removing finalizers is never blocked"
    } else if application {
        "an Application's status and operation are Argo CD's bookkeeping, not checked"
    } else {
        "status writes are not checked"
    })
}

/// What the webhook knows of an Application, from its ApplicationProvenance and profile.
#[derive(Clone, Debug)]
pub struct AppEvidence {
    /// `namespace/name` of the Application.
    pub application: String,
    pub verdict: Verdict,
    pub revision: String,
    /// The Ready condition's reason and message.
    pub reason: String,
    pub message: String,
    pub manifest_image: Option<String>,
    pub images: Vec<ImageStatus>,
    pub mode: EnforcementMode,
    /// The profile's `enforcement.ignoreFields`.
    pub ignore_fields: Vec<IgnoreFields>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub message: String,
    pub warnings: Vec<String>,
    /// A denial that audit mode turned into a warning (recorded as an Event).
    pub audited: bool,
    /// Admitted because it matches what Weft vouched for (not merely because nothing protects it).
    pub vouched: bool,
}

impl Decision {
    pub fn allow(message: impl Into<String>) -> Decision {
        Decision { allowed: true, message: message.into(), warnings: Vec::new(), audited: false, vouched: false }
    }

    /// A denial, or in audit mode an admission with a warning.
    pub fn deny(ev: &AppEvidence, message: String) -> Decision {
        match ev.mode {
            EnforcementMode::Enforce => Decision::refuse(message),
            EnforcementMode::Audit => Decision {
                allowed: true,
                warnings: vec![format!("audit: {message}")],
                message,
                audited: true,
                vouched: false,
            },
        }
    }

    /// A denial whatever the mode (Weft cannot tell what protects the object).
    pub fn refuse(message: String) -> Decision {
        Decision { allowed: false, message, warnings: Vec::new(), audited: false, vouched: false }
    }

    /// The AdmissionReview response.
    pub fn review(&self, uid: &str) -> Value {
        let mut response = json!({"uid": uid, "allowed": self.allowed});
        if !self.allowed {
            response["status"] = json!({"code": 403, "reason": "Forbidden", "message": self.message});
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }
}

/// The decision for an object of a protected Application. `manifests` are the signed manifests of
/// `ev.manifest_image` (or why they could not be read); `defaulted`, the object's signed manifest as the
/// apiserver defaults it (or why it could not be had), against which fields the object adds are checked.
pub fn decide(
    req: &Request,
    ev: &AppEvidence,
    manifests: Result<&[Manifest], String>,
    defaulted: Result<&Value, String>,
) -> Decision {
    let what = req.describe();
    let rev = ev.revision.chars().take(12).collect::<String>();
    let head = format!("weft: {what} of Application {} at revision {rev}", ev.application);
    if !matches!(ev.verdict, Verdict::Verified | Verdict::Permitted) {
        return Decision::deny(
            ev,
            format!(
                "{head}: the revision is not vouched for (verdict {}, {}: {}); it is admitted once Weft verifies it",
                ev.verdict.as_str(),
                ev.reason,
                ev.message
            ),
        );
    }
    let Some(image) = &ev.manifest_image else {
        return Decision::deny(ev, format!("{head}: no signed manifests are recorded for the revision"));
    };
    let manifests = match manifests {
        Ok(m) => m,
        Err(e) => return Decision::deny(ev, format!("{head}: the signed manifests ({image}) cannot be read: {e}")),
    };
    let Some(signed) = matching::find(manifests, &req.object) else {
        return Decision::deny(ev, format!("{head}: not among the signed manifests ({image})"));
    };
    let extra = matching::extra_ignored(&ev.ignore_fields, signed);
    let differences = match defaulted {
        Ok(d) => matching::check(signed, d, &req.object, &extra),
        Err(e) => {
            return Decision::deny(
                ev,
                format!("{head}: cannot compare with the signed manifest as the apiserver stores it: {e}"),
            );
        }
    };
    if !differences.is_empty() {
        let shown: Vec<String> = differences.iter().take(5).map(ToString::to_string).collect();
        let more = if differences.len() > 5 { format!(" (and {} more)", differences.len() - 5) } else { String::new() };
        return Decision::deny(
            ev,
            format!("{head}: does not match the signed manifest ({image}): {}{more}", shown.join("; ")),
        );
    }
    let mut warnings = Vec::new();
    for image in matching::images(&req.object) {
        let status = ev.images.iter().find(|i| i.image == image);
        match status.map(|s| s.outcome) {
            Some(ImageOutcome::Verified) => {}
            _ if ev.verdict == Verdict::Permitted => {
                let why =
                    status.map(|s| format!("{}: {}", s.reason, s.message)).unwrap_or_else(|| "not checked".into());
                warnings.push(format!("image {image} did not pass verification ({why}); permitted by the profile"));
            }
            _ => {
                let why =
                    status.map(|s| format!("{}: {}", s.reason, s.message)).unwrap_or_else(|| "not checked".into());
                return Decision::deny(ev, format!("{head}: image {image} did not pass verification ({why})"));
            }
        }
    }
    Decision {
        allowed: true,
        message: format!("{head}: matches the signed manifests"),
        warnings,
        audited: false,
        vouched: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::manifest::{Limits, parse};

    fn request(object: Value) -> Request {
        Request {
            uid: "u".into(),
            operation: "CREATE".into(),
            namespace: "shop".into(),
            group: "apps".into(),
            kind: "Deployment".into(),
            name: "cart".into(),
            sub_resource: String::new(),
            resource: Default::default(),
            username: "system:serviceaccount:argocd:argocd-application-controller".into(),
            dry_run: false,
            object,
            old_object: Value::Null,
        }
    }

    fn deployment(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    fn evidence(verdict: Verdict, image_outcome: ImageOutcome) -> AppEvidence {
        AppEvidence {
            application: "argocd/shop-cart".into(),
            verdict,
            revision: "9f2c1e4b7a3d00".into(),
            reason: "Verified".into(),
            message: "every step passed".into(),
            manifest_image: Some("registry.example/m@sha256:ab".into()),
            images: vec![ImageStatus {
                image: "registry.example/shop/cart:1".into(),
                outcome: image_outcome,
                reason: "ImageNotSigned".into(),
                ..Default::default()
            }],
            mode: EnforcementMode::Enforce,
            ignore_fields: Vec::new(),
        }
    }

    #[test]
    fn a_matching_object_of_a_verified_revision_is_admitted_and_anything_else_denied_with_the_reason() {
        let signed = parse("t", &deployment("registry.example/shop/cart:1").to_string(), Limits::default()).unwrap();
        let ok = request(deployment("registry.example/shop/cart:1"));
        let defaults = deployment("registry.example/shop/cart:1");
        let ev = evidence(Verdict::Verified, ImageOutcome::Verified);
        assert!(decide(&ok, &ev, Ok(&signed), Ok(&defaults)).allowed);

        let tampered = request(deployment("registry.example/shop/cart:2"));
        let d = decide(&tampered, &ev, Ok(&signed), Ok(&defaults));
        assert!(!d.allowed);
        assert!(d.message.contains("Application argocd/shop-cart at revision 9f2c1e4b7a3d"), "{}", d.message);
        assert!(d.message.contains("spec.template.spec.containers.0.image"), "{}", d.message);

        let mut privileged = deployment("registry.example/shop/cart:1");
        privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
        let d = decide(&request(privileged), &ev, Ok(&signed), Ok(&defaults));
        assert!(!d.allowed, "a field the signed manifest does not have, and that is no default, is denied");
        assert!(
            d.message.contains("containers.0.securityContext.privileged: signed (unset), got true"),
            "{}",
            d.message
        );
        let d = decide(&ok, &ev, Ok(&signed), Err("dry run refused".into()));
        assert!(!d.allowed && d.message.contains("dry run refused"), "fails closed: {}", d.message);

        let failed = AppEvidence { verdict: Verdict::Failed, reason: "Unsigned".into(), ..ev.clone() };
        let d = decide(&ok, &failed, Ok(&signed), Ok(&defaults));
        assert!(!d.allowed && d.message.contains("verdict Failed, Unsigned"), "{}", d.message);
        assert!(!decide(&ok, &ev, Err("registry down".into()), Ok(&defaults)).allowed, "fails closed");

        let audit = AppEvidence { mode: EnforcementMode::Audit, ..failed };
        let d = decide(&ok, &audit, Ok(&signed), Ok(&defaults));
        assert!(d.allowed && d.audited && d.warnings[0].starts_with("audit: "), "{d:?}");
    }

    #[test]
    fn images_that_failed_are_denied_unless_the_verdict_permits_them() {
        let signed = parse("t", &deployment("registry.example/shop/cart:1").to_string(), Limits::default()).unwrap();
        let ok = request(deployment("registry.example/shop/cart:1"));
        let defaults = deployment("registry.example/shop/cart:1");
        let d = decide(&ok, &evidence(Verdict::Verified, ImageOutcome::Failed), Ok(&signed), Ok(&defaults));
        assert!(!d.allowed && d.message.contains("ImageNotSigned"), "{}", d.message);
        let d = decide(&ok, &evidence(Verdict::Permitted, ImageOutcome::Failed), Ok(&signed), Ok(&defaults));
        assert!(d.allowed && d.warnings.len() == 1, "{d:?}");
    }

    #[test]
    fn skips_cover_operations_weft_namespaces_users_and_kinds() {
        let skips = Skips {
            namespaces: vec!["kube-system".into()],
            users: vec!["system:serviceaccount:kube-system:*".into()],
            kinds: vec!["Event".into(), "coordination.k8s.io/Lease".into()],
        };
        let base = request(json!({}));
        assert!(skips.skipped(&base).is_none());
        assert!(skips.skipped(&Request { operation: "DELETE".into(), ..base.clone() }).is_some());
        assert!(skips.skipped(&Request { group: "weft.dev".into(), ..base.clone() }).is_some());
        assert!(skips.skipped(&Request { sub_resource: "status".into(), ..base.clone() }).is_some());
        assert!(skips.skipped(&Request { sub_resource: "scale".into(), ..base.clone() }).is_none());
        let with = |f: Value, data: &str| json!({"metadata": {"name": "c", "finalizers": f}, "data": {"x": data}});
        let update = |old: Value, new: Value| Request {
            operation: "UPDATE".into(),
            object: new,
            old_object: old,
            ..base.clone()
        };
        let removal = update(with(json!(["a", "b"]), "1"), with(json!(["b"]), "1"));
        assert!(skips.skipped(&removal).is_some(), "finalizer removal goes through");
        let smuggled = update(with(json!(["a", "b"]), "1"), with(json!(["b"]), "2"));
        assert!(skips.skipped(&smuggled).is_none(), "not with another change");
        let added = update(with(json!(["a"]), "1"), with(json!(["a", "c"]), "1"));
        assert!(skips.skipped(&added).is_none(), "adding one is a change like any other");
        let status = |phase: &str, data: &str| json!({"metadata": {"name": "c"}, "data": {"x": data}, "status": {"phase": phase}});
        assert!(skips.skipped(&update(status("A", "1"), status("B", "1"))).is_some(), "status is never judged");
        assert!(skips.skipped(&update(status("A", "1"), status("B", "2"))).is_none(), "not with another change");
        let app = |op: Value, refresh: Option<&str>, path: &str| {
            let mut a = json!({"metadata": {"name": "child", "annotations": {"argocd.argoproj.io/tracking-id": "t"}},
                "spec": {"source": {"path": path}}, "operation": op});
            if let Some(r) = refresh {
                a["metadata"]["annotations"]["argocd.argoproj.io/refresh"] = json!(r);
            }
            a
        };
        let child = |old: Value, new: Value| Request {
            group: "argoproj.io".into(),
            kind: "Application".into(),
            ..update(old, new)
        };
        let sync = json!({"sync": {"revision": "abc"}});
        assert!(skips.skipped(&child(app(Value::Null, None, "p"), app(sync.clone(), Some("normal"), "p"))).is_some());
        assert!(skips.skipped(&child(app(Value::Null, None, "p"), app(sync.clone(), None, "q"))).is_none());
        assert!(
            skips.skipped(&update(app(Value::Null, None, "p"), app(sync, None, "p"))).is_none(),
            "only an Application's operation is bookkeeping"
        );
        assert!(skips.skipped(&Request { namespace: "kube-system".into(), ..base.clone() }).is_some());
        let hpa =
            Request { username: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into(), ..base.clone() };
        assert!(skips.skipped(&hpa).is_some());
        let lease = Request { group: "coordination.k8s.io".into(), kind: "Lease".into(), ..base };
        assert!(skips.skipped(&lease).is_some());
    }
}
