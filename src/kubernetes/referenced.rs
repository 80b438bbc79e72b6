//! Reading what a profile refers to from the cluster: the named Secrets and ConfigMaps in the profile's
//! namespace, and Argo CD's repository Secrets and the Application's AppProject in Argo CD's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use crate::referenced::{self, Kind, ReferenceError, ReferencedObjects};
use crate::resources::profile::IntegrityProfileSpec;

/// Gathers the objects `spec` refers to (absent ones are left out, so the verification reports exactly
/// which one is missing), the repository credentials, and the AppProject `project` when named.
pub async fn referenced(
    client: &Client,
    namespace: &str,
    spec: &IntegrityProfileSpec,
    argocd_namespace: &str,
    project: Option<&str>,
) -> Result<ReferencedObjects, ReferenceError> {
    let mut referenced = ReferencedObjects::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for (kind, name) in referenced::wanted(spec) {
        let fetch_err =
            |e: kube::Error| ReferenceError::Fetch { kind: kind.as_str(), name: name.clone(), reason: short(&e) };
        let data = match kind {
            Kind::Secret => secrets.get_opt(&name).await.map_err(fetch_err)?.map(secret_data),
            Kind::ConfigMap => config_maps.get_opt(&name).await.map_err(fetch_err)?.map(config_map_data),
        };
        if let Some(data) = data {
            referenced.insert(kind, &name, data);
        }
    }
    // Argo CD's known hosts, for ssh repositories; optional.
    let argocd_cms: Api<ConfigMap> = Api::namespaced(client.clone(), argocd_namespace);
    for name in [referenced::ARGOCD_KNOWN_HOSTS_CM, referenced::ARGOCD_TLS_CERTS_CM] {
        if let Ok(Some(cm)) = argocd_cms.get_opt(name).await {
            referenced.insert(Kind::ConfigMap, name, config_map_data(cm));
        }
    }
    referenced.repo_secrets = repo_secrets(client, argocd_namespace).await?;
    if let Some(name) = project {
        let projects: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            argocd_namespace,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "AppProject"),
                "appprojects",
            ),
        );
        let fetch_err = |reason: String| ReferenceError::Fetch { kind: "AppProject", name: name.to_string(), reason };
        // Absent: left out, so the verdict says the project does not exist (Argo CD refuses such an app).
        if let Some(p) = projects.get_opt(name).await.map_err(|e| fetch_err(short(&e)))? {
            let spec = p.data.get("spec").cloned().unwrap_or_default();
            referenced.projects.insert(name.to_string(), referenced::project_rules(name, spec).map_err(fetch_err)?);
        }
    }
    Ok(referenced)
}

/// Argo CD's repository Secrets. Without permission to list them, repositories are fetched without
/// credentials (public ones still work) rather than failing every verification.
pub async fn repo_secrets(
    client: &Client,
    argocd_namespace: &str,
) -> Result<Vec<crate::repository::access::RepoSecret>, ReferenceError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), argocd_namespace);
    let lp = ListParams::default().labels(referenced::ARGOCD_SECRET_TYPE_LABEL);
    let list = match api.list(&lp).await {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => return Ok(Vec::new()),
        Err(e) => {
            return Err(ReferenceError::Fetch {
                kind: "Secret",
                name: "(Argo CD repository secrets)".into(),
                reason: e.to_string(),
            });
        }
    };
    Ok(list
        .items
        .into_iter()
        .filter_map(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            let t = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(referenced::ARGOCD_SECRET_TYPE_LABEL))
                .cloned()
                .unwrap_or_default();
            referenced::repo_secret(&name, &t, &secret_data(s))
        })
        .collect())
}

/// The apiserver's own message, without the debug form of its Status.
fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

fn config_map_data(c: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    for (k, v) in c.binary_data.unwrap_or_default() {
        out.insert(k, v.0);
    }
    out
}
