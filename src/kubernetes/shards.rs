//! Shards: when one replica is not enough, replicas split the Applications by a stable hash of their
//! UID (as Argo CD's application controller shards split clusters by a hash). Each shard is held by a
//! Lease, `<lease>-shard-<i>`, renewed like the leader's. A replica with no shard takes any free one;
//! a replica holding shards takes another only when its holder stopped renewing it (the replica died:
//! taken over as soon as the Lease expires) or when it has stood free for a whole Lease duration
//! (fewer replicas than shards), so replicas starting together spread one shard each.
//!
//! A shard whose Lease could not be renewed for its duration is dropped at once: its Applications are
//! left to whoever takes the Lease next, so two replicas never work on one shard knowingly. A gained
//! shard's Applications are reconciled at once (what was recorded is not redone: see the unit of work).

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use kube::Client;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::kubernetes::lease::{Elector, Holder};

pub struct Shards {
    count: u32,
    held: RwLock<BTreeSet<u32>>,
    gained: broadcast::Sender<u32>,
    electors: Vec<Elector>,
    duration: Duration,
    tracking: tokio::sync::Mutex<Tracking>,
}

#[derive(Default)]
struct Tracking {
    /// When each held shard's Lease was last renewed.
    renewed: HashMap<u32, Instant>,
    /// Since when each shard has been seen free.
    free_since: HashMap<u32, Instant>,
}

/// The shard of an Application: the first 8 bytes of the SHA-256 of its UID, modulo the count. Stable
/// across replicas, versions and restarts (a UID never changes).
pub fn shard_of(uid: &str, count: u32) -> u32 {
    let digest = Sha256::digest(uid.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    (n % u64::from(count.max(1))) as u32
}

impl Shards {
    pub fn new(client: Client, namespace: &str, lease: &str, identity: &str, count: u32, duration: Duration) -> Shards {
        let count = count.max(1);
        let electors = (0..count)
            .map(|i| Elector::new(client.clone(), namespace, &format!("{lease}-shard-{i}"), identity.into(), duration))
            .collect();
        Shards {
            count,
            held: RwLock::new(BTreeSet::new()),
            gained: broadcast::channel(64).0,
            electors,
            duration,
            tracking: Default::default(),
        }
    }

    /// Whether this replica works on the Application with `uid` now.
    pub fn holds(&self, uid: &str) -> bool {
        self.held.read().unwrap_or_else(|p| p.into_inner()).contains(&shard_of(uid, self.count))
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Shards gained from now on.
    pub fn gained(&self) -> broadcast::Receiver<u32> {
        self.gained.subscribe()
    }

    fn held(&self) -> BTreeSet<u32> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, shard: u32, held: bool) {
        let mut h = self.held.write().unwrap_or_else(|p| p.into_inner());
        if held {
            h.insert(shard)
        } else {
            h.remove(&shard)
        };
    }

    /// Takes and keeps shards until dropped (the caller selects on shutdown, then calls `release`).
    pub async fn run(&self) {
        loop {
            self.tick().await;
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// One round: renew what is held, take what may be taken.
    pub async fn tick(&self) {
        let mut tracking = self.tracking.lock().await;
        let Tracking { renewed, free_since } = &mut *tracking;
        {
            for (i, elector) in (0u32..).zip(&self.electors) {
                if self.held().contains(&i) {
                    match elector.try_hold().await {
                        Ok(true) => {
                            renewed.insert(i, Instant::now());
                        }
                        Ok(false) => {
                            warn!(shard = i, "another replica took the shard");
                            self.set(i, false);
                        }
                        Err(e) => {
                            let since = renewed.get(&i).map(|t| t.elapsed()).unwrap_or(self.duration);
                            if since >= self.duration {
                                warn!(shard = i, error = %e, "could not renew the shard's Lease in time; leaving it");
                                self.set(i, false);
                            }
                        }
                    }
                    continue;
                }
                let take = match elector.state().await {
                    Ok(Holder::Other { expired: false }) => {
                        free_since.remove(&i);
                        false
                    }
                    Ok(Holder::Other { expired: true }) | Ok(Holder::Me) => true,
                    Ok(Holder::Nobody) => {
                        let since = *free_since.entry(i).or_insert_with(Instant::now);
                        self.held().is_empty() || since.elapsed() >= self.duration
                    }
                    Err(e) => {
                        warn!(shard = i, error = %e, "cannot read the shard's Lease");
                        false
                    }
                };
                if take && matches!(elector.try_hold().await, Ok(true)) {
                    info!(shard = i, shards = self.count, identity = %elector.identity, "took the shard");
                    renewed.insert(i, Instant::now());
                    free_since.remove(&i);
                    self.set(i, true);
                    let _ = self.gained.send(i);
                }
            }
        }
    }

    /// Gives every held shard up (on a clean shutdown): others take them over a Lease duration later,
    /// without waiting for the Leases to expire first.
    pub async fn release(&self) {
        for i in self.held() {
            self.set(i, false);
            self.electors[i as usize].release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(
            shard_of("5e2f0c1a-0000-4000-8000-000000000001", 3),
            shard_of("5e2f0c1a-0000-4000-8000-000000000001", 3)
        );
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[shard_of(&format!("uid-{i}"), 3) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }
}
