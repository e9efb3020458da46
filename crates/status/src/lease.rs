//! One writer among several replicas: a `coordination.k8s.io/v1` Lease, taken and renewed as
//! client-go's leader election does. A holder renews every retry period; another replica
//! takes the Lease over only once it has seen the record unchanged for a whole lease duration,
//! timed by its own clock (never by comparing its clock with the holder's). A holder that
//! cannot renew for the renew deadline stops writing before anyone may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Which Lease, who asks for it, and its timing.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name: replicas that share it elect one writer.
    pub name: String,
    /// This replica's name in `holderIdentity`.
    pub identity: String,
    /// How long a holder's claim lasts without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How long a holder goes on writing without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the Lease is read, renewed or tried.
    pub retry: Duration,
}

impl LeaseOptions {
    /// client-go's timing (15 s, 10 s, 2 s) for `name` in `namespace`, asked for by `identity`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaseOptions {
        LeaseOptions {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it yet: create it.
    Create,
    /// This replica holds it: renew it.
    Renew,
    /// Its holder let it go, or has not renewed it for a lease duration: take it.
    TakeOver,
    /// Another replica holds it.
    Wait,
}

/// The step for a Lease read as `spec` (`None`: there is none), whose record this replica has
/// seen unchanged for `unchanged_for`.
pub fn step(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration, duration: Duration) -> Step {
    let Some(spec) = spec else { return Step::Create };
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        None => Step::TakeOver,
        Some(holder) if holder == identity => Step::Renew,
        Some(_) => {
            let lasts = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(duration, Duration::from_secs);
            if unchanged_for >= lasts { Step::TakeOver } else { Step::Wait }
        }
    }
}

/// A running election; it stops when dropped.
pub struct Election {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
    api: Api<Lease>,
    options: LeaseOptions,
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Election {
    /// Campaigns for the Lease until dropped.
    pub fn start(client: Client, options: LeaseOptions) -> Election {
        let api = Api::<Lease>::namespaced(client, &options.namespace);
        let (tell, leader) = watch::channel(false);
        let task = tokio::spawn(campaign(api.clone(), options.clone(), tell));
        Election { leader, task, api, options }
    }

    /// Whether this replica holds the Lease, and news of each change.
    pub fn leader(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops campaigning and, when holding the Lease, gives it up at once so that another
    /// replica takes over without waiting a lease duration.
    pub async fn release(self) {
        self.task.abort();
        if !*self.leader.borrow() {
            return;
        }
        let Ok(Some(mut lease)) = self.api.get_opt(&self.options.name).await else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.options.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.options.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.options.name, "lease released"),
            Err(error) => tracing::warn!(lease = %self.options.name, %error, "lease not released"),
        }
    }
}

/// Reads and renews or tries the Lease every retry period, telling `leader` each change.
async fn campaign(api: Api<Lease>, options: LeaseOptions, leader: watch::Sender<bool>) {
    let mut seen: Option<(String, Instant)> = None;
    let mut renewed: Option<Instant> = None;
    loop {
        let holds = match attempt(&api, &options, &mut seen).await {
            Ok(holds) => {
                renewed = holds.then(Instant::now);
                holds
            }
            Err(error) => {
                tracing::warn!(lease = %options.name, %error, "lease: the API server did not answer");
                // Still the holder until the renew deadline: a blip does not stop the writes.
                renewed.is_some_and(|at| at.elapsed() < options.renew_deadline)
            }
        };
        leader.send_if_modified(|was| {
            if *was != holds {
                tracing::info!(lease = %options.name, identity = %options.identity, leader = holds, "lease");
            }
            std::mem::replace(was, holds) != holds
        });
        tokio::time::sleep(options.retry).await;
    }
}

/// One round: whether this replica holds the Lease after it.
async fn attempt(
    api: &Api<Lease>,
    options: &LeaseOptions,
    seen: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let duration = i32::try_from(options.duration.as_secs()).unwrap_or(i32::MAX);
    let current = api.get_opt(&options.name).await?;
    let version = current.as_ref().and_then(|l| l.metadata.resource_version.clone()).unwrap_or_default();
    if seen.as_ref().is_none_or(|(v, _)| *v != version) {
        *seen = Some((version, Instant::now()));
    }
    let unchanged_for = seen.as_ref().map_or(Duration::ZERO, |(_, at)| at.elapsed());
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let mut lease = match step(spec, &options.identity, unchanged_for, options.duration) {
        Step::Wait => return Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(options.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(options.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_lost(api.create(&PostParams::default(), &lease).await);
        }
        Step::Renew | Step::TakeOver => current.unwrap_or_default(),
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(options.identity.as_str()) {
        spec.holder_identity = Some(options.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.lease_duration_seconds = Some(duration);
    spec.renew_time = Some(now);
    // The replace carries the version read: if anyone wrote in between, it is refused.
    conflict_is_lost(api.replace(&options.name, &PostParams::default(), &lease).await)
}

/// A write's outcome: done, or lost to another replica's write (409).
fn conflict_is_lost(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    const FIFTEEN: Duration = Duration::from_secs(15);

    #[test]
    fn no_lease_is_created_and_ones_own_is_renewed() {
        assert_eq!(step(None, "a", Duration::ZERO, FIFTEEN), Step::Create);
        assert_eq!(step(Some(&held_by("a")), "a", Duration::from_secs(60), FIFTEEN), Step::Renew);
    }

    #[test]
    fn anothers_lease_is_taken_only_after_a_whole_duration_unchanged() {
        let other = held_by("b");
        assert_eq!(step(Some(&other), "a", Duration::from_secs(14), FIFTEEN), Step::Wait);
        assert_eq!(step(Some(&other), "a", Duration::from_secs(15), FIFTEEN), Step::TakeOver);
        let short = LeaseSpec { lease_duration_seconds: Some(1), ..other };
        assert_eq!(step(Some(&short), "a", Duration::from_secs(1), FIFTEEN), Step::TakeOver);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let released = LeaseSpec { holder_identity: Some(String::new()), ..held_by("b") };
        assert_eq!(step(Some(&released), "a", Duration::ZERO, FIFTEEN), Step::TakeOver);
        let none = LeaseSpec { holder_identity: None, ..held_by("b") };
        assert_eq!(step(Some(&none), "a", Duration::ZERO, FIFTEEN), Step::TakeOver);
    }
}
