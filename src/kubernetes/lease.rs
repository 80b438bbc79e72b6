//! Leader election on a `coordination.k8s.io/v1` Lease, so several controller replicas are safe: one
//! holds the Lease and works, renewing it; the others wait and take over once it has not been renewed
//! for its duration. Every write uses the Lease's resourceVersion, so two candidates never both win.
//! A leader that cannot renew in time stops working (the process exits and is restarted) rather than
//! risk two leaders.
//!
//! Expiry is measured as client-go measures it: from the moment this candidate saw the Lease's record
//! last change, by its own monotonic clock, never by comparing the holder's `renewTime` with the local
//! clock (two machines' clocks can disagree by more than the Lease's duration: a fast clock would take
//! over a live leader, a slow one would wait for ever).

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Who holds a Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: never taken, or released on a clean shutdown.
    Nobody,
    Me,
    /// Another candidate; `expired` when it has not renewed within the Lease's duration.
    Other {
        expired: bool,
    },
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    pub identity: String,
    duration: Duration,
    observed: Mutex<Observation>,
}

/// The Lease's record as this candidate last saw it change, and when (by its own clock).
#[derive(Default)]
struct Observation {
    record: String,
    at: Option<Instant>,
}

impl Observation {
    /// Has `record` stayed the same for longer than `held_for`, as of `now`? A record seen for the first
    /// time, or changed, starts the count again.
    fn expired(&mut self, record: String, held_for: Duration, now: Instant) -> bool {
        match self.at {
            Some(at) if self.record == record => now.duration_since(at) > held_for,
            _ => {
                self.record = record;
                self.at = Some(now);
                false
            }
        }
    }
}

/// What changes at every write of the Lease: its resourceVersion (and the holder, for a Lease read
/// without one).
fn record_of(lease: &Lease) -> String {
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).unwrap_or_default();
    format!("{}|{holder}", lease.metadata.resource_version.as_deref().unwrap_or_default())
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String, duration: Duration) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            duration,
            observed: Mutex::new(Observation::default()),
        }
    }

    /// Whether another holder's Lease has gone unrenewed for its duration, by this candidate's clock.
    fn expired(&self, lease: &Lease, held_for: Duration) -> bool {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        observed.expired(record_of(lease), held_for, Instant::now())
    }

    /// Who holds the Lease now, without taking it.
    pub async fn state(&self) -> Result<Holder, Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else { return Ok(Holder::Nobody) };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        if holder.is_empty() {
            return Ok(Holder::Nobody);
        }
        if holder == self.identity {
            return Ok(Holder::Me);
        }
        let held_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(1).max(1) as u64);
        Ok(Holder::Other { expired: self.expired(&lease, held_for) })
    }

    /// One attempt to take or keep the Lease; `true` when this candidate holds it afterwards.
    pub async fn try_hold(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await.map(|_| true));
        };
        let held_for = Duration::from_secs(
            lease.spec.as_ref().and_then(|s| s.lease_duration_seconds).unwrap_or(secs).max(1) as u64,
        );
        let expired = self.expired(&lease, held_for);
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(secs);
        // The resourceVersion read above makes this a compare-and-swap.
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true))
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let mut waiting_logged = false;
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) if !waiting_logged => {
                    info!(lease = %self.name, identity = %self.identity, "another replica leads; waiting");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => warn!(lease = %self.name, error = %e, "cannot read or write the Lease"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the Lease until a renewal has not succeeded for its whole duration; then returns (the
    /// caller must stop working).
    pub async fn keep(&self) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_hold().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.name, "another replica took the Lease");
                    return;
                }
                Err(e) => debug!(error = %e, "renewing the Lease failed; retrying"),
            }
            if last.elapsed() >= self.duration {
                warn!(lease = %self.name, "could not renew the Lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up (on a clean shutdown), so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.name, "released the Lease"),
            Err(e) => warn!(lease = %self.name, error = %e, "cannot release the Lease"),
        }
    }
}

fn conflict_is_false(r: Result<bool, Error>) -> Result<bool, Error> {
    match r {
        Err(Error::Api(s)) if s.code == 409 => Ok(false),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_runs_from_when_the_record_was_seen_to_change_not_from_its_renew_time() {
        let start = Instant::now();
        let held_for = Duration::from_secs(15);
        let mut seen = Observation::default();
        // First sight: whatever renewTime says (a holder whose clock runs an hour slow), not expired.
        assert!(!seen.expired("7|leader".into(), held_for, start));
        assert!(!seen.expired("7|leader".into(), held_for, start + Duration::from_secs(15)));
        // Unchanged for longer than its duration, by this candidate's clock: expired.
        assert!(seen.expired("7|leader".into(), held_for, start + Duration::from_secs(16)));
        // Renewed (a new resourceVersion): the count starts again.
        assert!(!seen.expired("8|leader".into(), held_for, start + Duration::from_secs(17)));
        assert!(!seen.expired("8|leader".into(), held_for, start + Duration::from_secs(31)));
        assert!(seen.expired("8|leader".into(), held_for, start + Duration::from_secs(33)));
    }
}
