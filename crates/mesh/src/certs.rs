//! Workload certificates: one short-lived leaf per identity served on this node, issued when
//! first needed and issued again two thirds into its life. A new leaf serves new connections
//! only: a connection keeps the identities its handshake proved, so a renewal drops nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use portico_tls::{Ca, Issued, Name, SpiffeId, TlsError, Validity};
use rustls::{ClientConfig, ServerConfig};

/// One identity's leaf and what it serves with.
#[derive(Debug)]
pub struct Credentials {
    /// The identity.
    pub identity: SpiffeId,
    /// The leaf, its chain and key.
    pub issued: Issued,
    /// When it is good.
    pub validity: Validity,
    /// The server side of tunnels to this identity.
    pub server: Arc<ServerConfig>,
    /// Counts the leaves issued for the identity: pooled tunnels are kept per leaf.
    pub serial: u64,
}

/// The leaves of the identities served here.
pub struct Certificates {
    ca: Ca,
    lifetime: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_identity: HashMap<SpiffeId, Arc<Credentials>>,
    /// Client sides by (local identity, its leaf's serial, the identity expected of the peer).
    clients: HashMap<(SpiffeId, u64, SpiffeId), Arc<ClientConfig>>,
    serial: u64,
}

impl Certificates {
    /// Leaves issued by `ca`, each good for `lifetime`.
    pub fn new(ca: Ca, lifetime: Duration) -> Self {
        Certificates { ca, lifetime, inner: Mutex::new(Inner::default()) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current leaf of `identity`: issued now if there is none or it is due for renewal.
    pub fn get(&self, identity: &SpiffeId, now: SystemTime) -> Result<Arc<Credentials>, TlsError> {
        if let Some(held) = self.inner().by_identity.get(identity)
            && now < held.validity.renew_at()
        {
            return Ok(Arc::clone(held));
        }
        self.issue(identity, now)
    }

    fn issue(&self, identity: &SpiffeId, now: SystemTime) -> Result<Arc<Credentials>, TlsError> {
        let validity = Validity::starting(now, self.lifetime);
        let issued = self.ca.issue_valid(&[Name::Uri(identity.to_string())], validity)?;
        let server = portico_tls::mesh::server_config(&issued, self.ca.root_certificate())?;
        let mut inner = self.inner();
        inner.serial += 1;
        let credentials = Arc::new(Credentials {
            identity: identity.clone(),
            issued,
            validity,
            server,
            serial: inner.serial,
        });
        inner.by_identity.insert(identity.clone(), Arc::clone(&credentials));
        let serial = credentials.serial;
        inner.clients.retain(|(local, s, _), _| local != identity || *s == serial);
        Ok(credentials)
    }

    /// The client side of a tunnel from `local` to a peer that must be `expected`.
    pub fn client(&self, local: &Credentials, expected: &SpiffeId) -> Result<Arc<ClientConfig>, TlsError> {
        let key = (local.identity.clone(), local.serial, expected.clone());
        if let Some(config) = self.inner().clients.get(&key) {
            return Ok(Arc::clone(config));
        }
        let config =
            portico_tls::mesh::client_config(&local.issued, self.ca.root_certificate(), expected.clone())?;
        self.inner().clients.insert(key, Arc::clone(&config));
        Ok(config)
    }

    /// Renews every leaf due at `now`, and forgets identities no longer served; the renewed
    /// identities, with their new leaves' ends.
    pub fn renew(
        &self,
        serving: &[SpiffeId],
        now: SystemTime,
    ) -> Result<Vec<(SpiffeId, SystemTime)>, TlsError> {
        let due: Vec<SpiffeId> = {
            let mut inner = self.inner();
            inner.by_identity.retain(|id, _| serving.contains(id));
            inner.clients.retain(|(id, _, _), _| serving.contains(id));
            inner
                .by_identity
                .values()
                .filter(|c| now >= c.validity.renew_at())
                .map(|c| c.identity.clone())
                .collect()
        };
        due.into_iter().map(|id| self.issue(&id, now).map(|c| (id, c.validity.not_after))).collect()
    }

    /// The identities held, with their leaves' ends.
    pub fn held(&self) -> Vec<(SpiffeId, SystemTime)> {
        self.inner().by_identity.values().map(|c| (c.identity.clone(), c.validity.not_after)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::service_account("cluster.local", "default", sa).unwrap()
    }

    fn certificates(lifetime: Duration) -> Certificates {
        let now = SystemTime::now();
        let root = Ca::root("root", Validity::starting(now, Duration::from_secs(86_400))).unwrap();
        let ca = root.intermediate("ca", Validity::starting(now, Duration::from_secs(86_400))).unwrap();
        Certificates::new(ca, lifetime)
    }

    #[test]
    fn a_leaf_is_kept_until_two_thirds_of_its_life_then_issued_again() {
        let certs = certificates(Duration::from_secs(90));
        let now = SystemTime::now();
        let first = certs.get(&id("web"), now).unwrap();
        assert_eq!(portico_tls::mesh::identity_of(&first.issued.chain[0]).unwrap(), id("web"));
        let same = certs.get(&id("web"), now + Duration::from_secs(30)).unwrap();
        assert_eq!(same.serial, first.serial);
        // Two thirds of 90 s.
        assert!(certs.renew(&[id("web")], now + Duration::from_secs(59)).unwrap().is_empty());
        let renewed = certs.renew(&[id("web")], now + Duration::from_secs(61)).unwrap();
        assert_eq!(renewed.len(), 1);
        let second = certs.get(&id("web"), now + Duration::from_secs(61)).unwrap();
        assert!(second.serial > first.serial);
        assert_ne!(second.issued.chain[0], first.issued.chain[0]);
    }

    #[test]
    fn client_sides_follow_the_leaf_and_identities_no_longer_served_are_forgotten() {
        let certs = certificates(Duration::from_secs(3600));
        let now = SystemTime::now();
        let web = certs.get(&id("web"), now).unwrap();
        let a = certs.client(&web, &id("db")).unwrap();
        assert!(Arc::ptr_eq(&a, &certs.client(&web, &id("db")).unwrap()), "kept while the leaf is");
        certs.get(&id("db"), now).unwrap();
        certs.renew(&[id("db")], now).unwrap();
        let held: Vec<SpiffeId> = certs.held().into_iter().map(|(id, _)| id).collect();
        assert_eq!(held, vec![id("db")]);
    }
}
