//! Shared watches: one watch per kind and scope, its cache, and the events each controller acts on.

use std::collections::HashMap;

use futures::{SinkExt, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::resources::argocd::Application;
use crate::resources::profile::IntegrityProfile;
use crate::resources::provenance::ApplicationProvenance;
use crate::target;

/// A cache of one resource kind and scope, filled by one watch task, whose changes go to the controllers
/// that subscribed (client-go's shared informer). Each subscriber asks only for the news it acts on
/// (`News`): an event whose news did not change since the last one sent is dropped, so status churn
/// wakes nobody. Deletions are always sent. Each list (the first, and a re-list) goes whole only to
/// subscribers that ask for it (a controller that reconciles every object of its own at startup does
/// not), once the cache holds it. Readiness is awaited
/// once, before the controllers start, so reconciles never wait on a half-filled cache.
///
/// Not kube-runtime's shared reflector (`reflect_shared`): its subscribers are not told of deletions,
/// and a deleted record must be rewritten, and a deleted profile's Applications unprotected, at once.
/// Channels are bounded: a slow controller holds the watch back rather than letting events pile up.
pub(super) struct Informer<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    pub(super) store: Store<K>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// Events a subscriber has not taken yet; beyond this, the watch waits for it.
const BUFFER: usize = 1024;

pub(super) type Events<K> = futures::channel::mpsc::Receiver<Result<K, watcher::Error>>;

/// What one controller acts on in an object, as a hash.
pub(super) type News<K> = fn(&K) -> u64;

/// One subscriber: the news it acts on, and whether it is sent the initial list.
pub(super) struct Subscriber<K> {
    pub(super) news: News<K>,
    pub(super) initial_list: bool,
}

impl<K> Subscriber<K> {
    /// Changes after the initial list.
    pub(super) fn changes(news: News<K>) -> Self {
        Subscriber { news, initial_list: false }
    }

    /// The initial list too.
    pub(super) fn everything(news: News<K>) -> Self {
        Subscriber { news, initial_list: true }
    }
}

pub(super) fn hash_of(v: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(v)
}

pub(super) fn informer<K, const N: usize>(
    api: Api<K>,
    what: &'static str,
    subscribers: [Subscriber<K>; N],
) -> (Informer<K>, [Events<K>; N])
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let channels: [_; N] = std::array::from_fn(|_| futures::channel::mpsc::channel(BUFFER));
    let mut senders: Vec<_> = channels.iter().map(|(tx, _)| tx.clone()).collect();
    let receivers = channels.map(|(_, rx)| rx);
    let mut seen: Vec<HashMap<String, u64>> = vec![HashMap::new(); N];
    let mut listed = false;
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
    let reader = store.clone();
    let task = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let uid = obj.meta().uid.clone().unwrap_or_default();
                    for ((tx, seen), sub) in senders.iter_mut().zip(&mut seen).zip(&subscribers) {
                        let h = (sub.news)(&obj);
                        if seen.insert(uid.clone(), h) != Some(h) && listed {
                            let _ = tx.send(Ok(obj.clone())).await;
                        }
                    }
                }
                Ok(watcher::Event::Delete(obj)) => {
                    let uid = obj.meta().uid.clone().unwrap_or_default();
                    for (tx, seen) in senders.iter_mut().zip(&mut seen) {
                        seen.remove(&uid);
                        let _ = tx.send(Ok(obj.clone())).await;
                    }
                }
                // Every list (the first, and each after the watch lost its place), once the cache holds
                // it: a subscriber is not yet reading before the first, and more objects than the buffer
                // holds would hold up the readiness it waits on.
                Ok(watcher::Event::InitDone) => {
                    listed = true;
                    let objects = reader.state();
                    for (tx, _) in senders.iter_mut().zip(&subscribers).filter(|(_, sub)| sub.initial_list) {
                        for obj in &objects {
                            let _ = tx.send(Ok(obj.as_ref().clone())).await;
                        }
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(e) => warn!(resource = what, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    (Informer { store, task }, receivers)
}

/// What a profile change means to its Applications: its spec (the generation), not its status.
pub(super) fn profile_news(p: &IntegrityProfile) -> u64 {
    hash_of(&p.metadata.generation)
}

/// What a profile change means to the profile's own reconcile: its spec, and its status (one written by
/// anyone else is put right at once; Weft's own write is news once, and changes nothing).
pub(super) fn profile_status_news(p: &IntegrityProfile) -> u64 {
    hash_of(&(p.metadata.generation, serde_json::to_string(&p.status).unwrap_or_default()))
}

/// What a provenance change means to its Application: its spec or ownership changed (someone else
/// wrote it), never Weft's own status write.
pub(super) fn provenance_news(ap: &ApplicationProvenance) -> u64 {
    let owners: Vec<(&str, Option<bool>)> =
        ap.owner_references().iter().map(|o| (o.uid.as_str(), o.controller)).collect();
    hash_of(&(ap.metadata.generation, owners))
}

/// What a provenance change means to the profiles' counts: which profile it names or conflicts on.
pub(super) fn selection_news(ap: &ApplicationProvenance) -> u64 {
    let s = ap.status.as_ref();
    hash_of(&(s.and_then(|s| s.profile.as_ref().map(|p| p.name.as_str())), s.map(|s| &s.conflicting_profiles)))
}

/// What in an Application can change its verdict: its identity, labels (profile selection),
/// annotations (image policy overrides), spec, and the revisions it targets and where they were seen.
/// Argo CD's status writes (health, reconciledAt, resources, its generation bump) change none of it.
pub(super) fn application_news(guard: &DeserializeGuard<Application>) -> Option<u64> {
    Some(match &guard.0 {
        Ok(app) => {
            let target = target::sync_target(app).map_err(|e| e.to_string());
            let facts = json!({
                "uid": app.metadata.uid,
                "labels": app.metadata.labels,
                "annotations": app.metadata.annotations.as_ref().map(|a| a.iter().filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/")).collect::<Vec<_>>()),
                "spec": app.spec,
                "target": target.as_ref().map(|t| t.as_ref().map(|t| (&t.sources, format!("{:?}", t.origin)))).ok(),
                "invalid": target.err(),
            });
            hash_of(&facts.to_string())
        }
        Err(invalid) => hash_of(&(&invalid.metadata.uid, &invalid.error)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: serde_json::Value) -> DeserializeGuard<Application> {
        DeserializeGuard(Ok(serde_json::from_value(json).unwrap()))
    }

    #[test]
    fn argo_cds_status_writes_are_no_news_but_a_new_revision_or_label_is() {
        let base = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "n", "uid": "u1", "generation": 3, "labels": {"team": "x"}},
            "spec": {"project": "default", "source": {"repoURL": "https://git.example/r.git", "path": "p"},
                     "destination": {"namespace": "d", "server": "https://kubernetes.default.svc"}},
            "status": {"sync": {"status": "Synced", "revision": "a".repeat(40)}, "health": {"status": "Healthy"},
                       "reconciledAt": "2026-01-01T00:00:00Z"},
        });
        let news = |v: &serde_json::Value| application_news(&app(v.clone())).unwrap();
        let before = news(&base);

        let mut refreshed = base.clone();
        refreshed["metadata"]["generation"] = json!(4);
        refreshed["metadata"]["resourceVersion"] = json!("99");
        refreshed["status"]["reconciledAt"] = json!("2026-01-01T00:03:00Z");
        refreshed["status"]["health"]["status"] = json!("Progressing");
        assert_eq!(news(&refreshed), before, "a refresh changes nothing Weft acts on");

        for (path, value) in [
            (vec!["status", "sync", "revision"], json!("b".repeat(40))),
            (vec!["metadata", "labels", "team"], json!("y")),
            (vec!["metadata", "uid"], json!("u2")),
            (vec!["spec", "source", "path"], json!("q")),
            (vec!["metadata", "annotations"], json!({"weft.dev/image-policy": "strict"})),
            (vec!["operation"], json!({"sync": {"revision": "c".repeat(40)}})),
        ] {
            let mut changed = base.clone();
            let mut at = &mut changed;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = value;
            assert_ne!(news(&changed), before, "{path:?} is news");
        }
    }
}
