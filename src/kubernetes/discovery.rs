//! The scope (namespaced or cluster-wide) of the kinds manifests use, as the cluster's discovery says.

use kube::Client;
use kube::api::GroupVersionKind;

use futures::FutureExt;

use crate::render::manifest::{Manifest, ScopeSource, Scopes};

/// The scope of the kinds manifests use, as the cluster's discovery serves them (what Argo CD asks
/// too); cached per kind, since a kind's scope does not change. Kinds the cluster does not serve (yet)
/// are left to [`Scopes`]' other sources.
pub struct ScopeDiscovery {
    client: Client,
    known: std::sync::Mutex<std::collections::HashMap<(String, String, String), bool>>,
}

impl ScopeDiscovery {
    pub fn new(client: Client) -> Self {
        ScopeDiscovery { client, known: Default::default() }
    }

    async fn learn(&self, manifests: &[Manifest], scopes: &mut Scopes) {
        for m in manifests {
            if scopes.knows(m.group(), m.kind()) {
                continue;
            }
            let version = m.api_version().rsplit('/').next().unwrap_or_default();
            let key = (m.group().to_string(), version.to_string(), m.kind().to_string());
            let cached = self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
            let cluster = match cached {
                Some(c) => c,
                None => {
                    let gvk = GroupVersionKind::gvk(&key.0, &key.1, &key.2);
                    match kube::discovery::pinned_kind(&self.client, &gvk).await {
                        Ok((_, caps)) => {
                            let c = caps.scope == kube::discovery::Scope::Cluster;
                            self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), c);
                            c
                        }
                        Err(_) => continue,
                    }
                }
            };
            scopes.learn(&key.0, &key.2, cluster);
        }
    }
}

impl ScopeSource for ScopeDiscovery {
    fn fill<'a>(&'a self, manifests: &'a [Manifest], scopes: &'a mut Scopes) -> futures::future::BoxFuture<'a, ()> {
        self.learn(manifests, scopes).boxed()
    }
}
