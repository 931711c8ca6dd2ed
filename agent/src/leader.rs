//! Leader election on a `coordination.k8s.io/v1` Lease: among any number of agent replicas
//! exactly one reconciles at a time. Owns the Lease record (holder, renew time, transitions),
//! the acquire/renew/step-down loop and the release on shutdown.
//!
//! Written here rather than taken from `kube-lease-manager` (the one crate that supports
//! kube 5): that crate keeps reporting "leader" while renewals fail (an API server outage
//! only logs errors), so a cut-off leader would go on applying after its Lease expired and a
//! follower took over. Here, as in client-go's `leaderelection`, a leader that could not renew
//! within the renew deadline steps down by itself, and followers judge expiry by their own
//! clock (time since they last saw the record change), so clock skew between nodes cannot
//! make two leaders.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Lease validity when the flag is not given (client-go's default for controllers).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Shortest lease accepted: each renewal is an API request every third of it.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "--lease-duration {0:?} is shorter than {MIN_LEASE_DURATION:?}; the agent would spend its time renewing"
    )]
    DurationTooShort(Duration),
    #[error(
        "Lease {namespace}/{name}: {source}; check the agent's RBAC (get/create/update leases in that namespace)"
    )]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Where the Lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica: the pod name, else hostname and process id.
    pub identity: String,
    pub lease_duration: Duration,
}

impl ElectionConfig {
    /// A leader renews every `renew_period`; renewals are retried until `renew_deadline`, after
    /// which it steps down — well before followers may take over at `lease_duration`.
    fn renew_period(&self) -> Duration {
        self.lease_duration / 5
    }
    fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// Identity of this replica: `POD_NAME` in a cluster (stable in logs and the Lease), otherwise
/// `hostname-pid` so several processes on one machine differ.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "berth-agent".into());
    format!("{host}-{}", std::process::id())
}

/// Running election: `is_leader()` and `changed()` for the controller, `release()` at shutdown.
#[derive(Debug)]
pub struct Election {
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts campaigning in the background. Fails only on a bad configuration or when the
    /// Lease cannot be read at all (missing RBAC is better reported at start than in a loop).
    pub async fn start(client: Client, config: ElectionConfig) -> Result<Election, LeaderError> {
        if config.lease_duration < MIN_LEASE_DURATION {
            return Err(LeaderError::DurationTooShort(config.lease_duration));
        }
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        api.get_opt(&config.lease_name)
            .await
            .map_err(|source| LeaderError::Api {
                namespace: config.namespace.clone(),
                name: config.lease_name.clone(),
                source,
            })?;
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(campaign(api, config, tx, stop_rx));
        Ok(Election {
            leader: rx,
            stop: stop_tx,
            task,
        })
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver that sees every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops campaigning and, if leading, hands the Lease back so a follower takes over at
    /// once instead of after the lease duration.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What a follower last saw of the Lease, and when (by its own clock).
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    duration: Duration,
    at: Instant,
}

async fn campaign(
    api: Api<Lease>,
    config: ElectionConfig,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut observed: Option<Observed> = None;
    let mut last_renew: Option<Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &config, &mut observed).await {
            Ok(true) => {
                last_renew = Some(Instant::now());
                if !*leader.borrow() {
                    tracing::info!(identity = %config.identity, lease = %config.lease_name, "became leader");
                }
                leader.send_replace(true);
            }
            Ok(false) => {
                if *leader.borrow() {
                    tracing::warn!(identity = %config.identity, "lost the Lease to another replica; stopping work");
                }
                last_renew = None;
                leader.send_replace(false);
            }
            Err(e) => {
                // A leader keeps its role while it can still renew in time; past the deadline
                // the Lease may expire under it, so it stops applying before anyone else starts.
                let expired = last_renew.is_none_or(|t| t.elapsed() >= config.renew_deadline());
                if *leader.borrow() && expired {
                    tracing::warn!(identity = %config.identity, error = %e, "could not renew the Lease in time; stepping down");
                    leader.send_replace(false);
                    last_renew = None;
                } else {
                    tracing::debug!(error = %e, "Lease request failed; retrying");
                }
            }
        }
        let period = config.renew_period();
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        match release(&api, &config).await {
            Ok(()) => tracing::info!(identity = %config.identity, "released the Lease"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the Lease; followers take over when it expires")
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// One round: create the Lease, renew it, or take it over once it has expired. Writes carry
/// the resourceVersion read just before, so of two replicas racing only one succeeds.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds(config.lease_duration)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    let changed = observed
        .as_ref()
        .is_none_or(|o| o.holder != holder || o.renew != spec.renew_time || o.duration != duration);
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew: spec.renew_time.clone(),
            duration,
            at: Instant::now(),
        });
    }
    let mine = holder.as_deref() == Some(config.identity.as_str());
    let free = holder.is_none()
        || observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= o.duration);
    if !mine && !free {
        return Ok(false);
    }
    let mut new = spec;
    if !mine {
        new.acquire_time = Some(now());
        new.lease_transitions = Some(new.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    new.holder_identity = Some(config.identity.clone());
    new.lease_duration_seconds = Some(seconds(config.lease_duration));
    new.renew_time = Some(now());
    lease.spec = Some(new);
    match api
        .replace(&config.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        // Someone else wrote first: they hold it (or renewed it); look again next round.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Empties the holder so followers take over on their next round.
async fn release(api: &Api<Lease>, config: &ElectionConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        return Ok(());
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    lease.spec = Some(spec);
    api.replace(&config.lease_name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_before_followers_may_take_over() {
        let c = ElectionConfig {
            lease_name: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            lease_duration: Duration::from_secs(15),
        };
        assert!(c.renew_deadline() < c.lease_duration);
        assert!(
            c.renew_period() * 2 < c.renew_deadline(),
            "at least two renewal attempts before stepping down"
        );
    }
}
