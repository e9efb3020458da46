//! Server certificates chosen by SNI, swapped on every reload without touching open
//! connections, and a self-signed default for names nothing covers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::TlsError;
use crate::pem::{self, PemError};

/// One certificate to serve, borrowed from whoever holds it (the Plan).
#[derive(Clone, Copy)]
pub struct Served<'a> {
    /// The Secret it came from, named when it does not load.
    pub secret: &'a dyn fmt::Display,
    /// Names it serves (`*.suffix`: one label under `suffix`); none: every name no other
    /// certificate serves.
    pub hosts: &'a [String],
    /// PEM certificate chain, leaf first.
    pub cert_pem: &'a Arc<[u8]>,
    /// PEM private key.
    pub key_pem: &'a Arc<[u8]>,
}

/// A certificate chain and its key, as PEM.
type PemPair = (Arc<[u8]>, Arc<[u8]>);

/// Certificates by the names they serve.
#[derive(Default)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// From an Ingress `tls` entry without hosts.
    fallback: Option<Arc<CertifiedKey>>,
    /// Parsed keys by their PEM, so that a reload re-parses only what changed.
    parsed: HashMap<PemPair, Arc<CertifiedKey>>,
}

/// Picks the certificate for each TLS handshake from the certificates last applied.
pub struct CertResolver {
    current: ArcSwap<CertSet>,
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    /// A resolver with no certificates yet, and a fresh self-signed default.
    pub fn new() -> Result<Self, TlsError> {
        let generated = rcgen::generate_simple_self_signed(vec!["portico.invalid".to_owned()])
            .map_err(TlsError::Default)?;
        let key = PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes())
            .map_err(|e| TlsError::Certificate { secret: "(default)".into(), reason: e.to_string() })?;
        let signing = any_supported_type(&key)?;
        let default = Arc::new(CertifiedKey::new(vec![generated.cert.der().clone()], signing));
        Ok(CertResolver { current: ArcSwap::from_pointee(CertSet::default()), default })
    }

    /// Serves `certificates` from the next handshake on; returns the ones that do not load.
    pub fn apply<'a>(&self, certificates: impl IntoIterator<Item = Served<'a>>) -> Vec<TlsError> {
        let previous = self.current.load();
        let mut next = CertSet::default();
        let mut errors = Vec::new();
        for cert in certificates {
            let pem = (Arc::clone(cert.cert_pem), Arc::clone(cert.key_pem));
            let key = match previous.parsed.get(&pem).or_else(|| next.parsed.get(&pem)) {
                Some(key) => Arc::clone(key),
                None => match certified_key(cert.cert_pem, cert.key_pem) {
                    Ok(key) => Arc::new(key),
                    Err(reason) => {
                        errors.push(TlsError::Certificate { secret: cert.secret.to_string(), reason });
                        continue;
                    }
                },
            };
            next.parsed.insert(pem, Arc::clone(&key));
            if cert.hosts.is_empty() {
                next.fallback.get_or_insert_with(|| Arc::clone(&key));
            }
            for host in cert.hosts {
                let (map, name) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut next.wildcard, suffix),
                    None => (&mut next.exact, host.as_str()),
                };
                // Certificates come oldest Ingress first: the first claim on a name wins.
                map.entry(name.to_owned()).or_insert_with(|| Arc::clone(&key));
            }
        }
        self.current.store(Arc::new(next));
        errors
    }

    /// The certificate for `server_name`: exact, then wildcard, then the fallback, then the
    /// default. rustls hands the name over lowercase and without a trailing dot, the form
    /// the hosts of the Plan are in.
    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let set = self.current.load();
        let found = server_name.and_then(|name| {
            set.exact
                .get(name)
                .or_else(|| name.split_once('.').and_then(|(_, suffix)| set.wildcard.get(suffix)))
        });
        Arc::clone(found.or(set.fallback.as_ref()).unwrap_or(&self.default))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// A Secret's chain and key, ready to sign with; the reason names `tls.crt` or `tls.key`.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let reason = |error: PemError| match error {
        PemError::Certificate(e) => format!("tls.crt: {e}"),
        PemError::NoCertificate => "tls.crt holds no certificate".to_owned(),
        PemError::Key(e) => format!("tls.key: {e}"),
    };
    let chain = pem::chain(cert_pem).map_err(reason)?;
    let key = pem::key(key_pem).map_err(reason)?;
    let signing = any_supported_type(&key).map_err(|e| format!("tls.key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls::pki_types::{CertificateDer, ServerName};

    use super::*;
    use crate::testing::handshake;
    use crate::{Alpn, client, server};

    /// A Secret as the Plan holds it.
    struct Secret {
        name: String,
        hosts: Vec<String>,
        cert_pem: Arc<[u8]>,
        key_pem: Arc<[u8]>,
        der: CertificateDer<'static>,
    }

    impl Secret {
        fn new(name: &str, hosts: &[&str]) -> Self {
            let names = if hosts.is_empty() { vec!["fallback.test".to_owned()] } else { owned(hosts) };
            let generated = rcgen::generate_simple_self_signed(names).unwrap();
            Secret {
                name: name.to_owned(),
                hosts: owned(hosts),
                cert_pem: generated.cert.pem().into_bytes().into(),
                key_pem: generated.signing_key.serialize_pem().into_bytes().into(),
                der: generated.cert.der().clone(),
            }
        }

        fn served(&self) -> Served<'_> {
            Served {
                secret: &self.name,
                hosts: &self.hosts,
                cert_pem: &self.cert_pem,
                key_pem: &self.key_pem,
            }
        }
    }

    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// The leaf certificate served for `name`.
    fn leaf(resolver: &CertResolver, name: Option<&str>) -> CertificateDer<'static> {
        resolver.pick(name).cert[0].clone()
    }

    #[test]
    fn exact_names_win_over_wildcards() {
        let exact = Secret::new("exact", &["a.test"]);
        let wildcard = Secret::new("wildcard", &["*.test"]);
        let resolver = CertResolver::new().unwrap();
        assert!(resolver.apply([wildcard.served(), exact.served()]).is_empty());
        assert_eq!(leaf(&resolver, Some("a.test")), exact.der);
        assert_eq!(leaf(&resolver, Some("b.test")), wildcard.der);
    }

    #[test]
    fn a_wildcard_covers_one_label_only() {
        let wildcard = Secret::new("wildcard", &["*.test"]);
        let resolver = CertResolver::new().unwrap();
        assert!(resolver.apply([wildcard.served()]).is_empty());
        assert_eq!(leaf(&resolver, Some("b.test")), wildcard.der);
        assert_ne!(leaf(&resolver, Some("x.b.test")), wildcard.der);
        assert_ne!(leaf(&resolver, Some("test")), wildcard.der);
    }

    #[test]
    fn the_first_claim_on_a_name_wins() {
        let older = Secret::new("older", &["a.test"]);
        let newer = Secret::new("newer", &["a.test", "c.test"]);
        let resolver = CertResolver::new().unwrap();
        assert!(resolver.apply([older.served(), newer.served()]).is_empty());
        assert_eq!(leaf(&resolver, Some("a.test")), older.der);
        assert_eq!(leaf(&resolver, Some("c.test")), newer.der);
    }

    #[test]
    fn unknown_names_get_the_fallback_then_the_default() {
        let named = Secret::new("named", &["a.test"]);
        let fallback = Secret::new("fallback", &[]);
        let resolver = CertResolver::new().unwrap();
        assert!(resolver.apply([named.served()]).is_empty());
        let default = leaf(&resolver, None);
        assert_ne!(default, named.der);
        assert_eq!(leaf(&resolver, Some("z.test")), default);

        assert!(resolver.apply([named.served(), fallback.served()]).is_empty());
        assert_eq!(leaf(&resolver, Some("z.test")), fallback.der);
        assert_eq!(leaf(&resolver, None), fallback.der);
    }

    #[test]
    fn a_certificate_that_does_not_load_is_named_and_the_rest_are_served() {
        let good = Secret::new("good", &["a.test"]);
        let mut bad = Secret::new("bad", &["b.test"]);
        bad.cert_pem = Arc::from(&b"not a certificate"[..]);
        let mut no_key = Secret::new("no-key", &["c.test"]);
        no_key.key_pem = Arc::clone(&good.cert_pem);
        let resolver = CertResolver::new().unwrap();
        let errors: Vec<String> = resolver
            .apply([bad.served(), no_key.served(), good.served()])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "certificate of Secret bad: tls.crt holds no certificate",
                "certificate of Secret no-key: tls.key: no items found",
            ]
        );
        assert_eq!(leaf(&resolver, Some("a.test")), good.der);
        assert_ne!(leaf(&resolver, Some("b.test")), bad.der);
    }

    #[test]
    fn a_reload_keeps_keys_whose_pem_did_not_change() {
        let kept = Secret::new("kept", &["a.test"]);
        let resolver = CertResolver::new().unwrap();
        assert!(resolver.apply([kept.served()]).is_empty());
        let before = resolver.pick(Some("a.test"));
        assert!(resolver.apply([kept.served()]).is_empty());
        assert!(Arc::ptr_eq(&before, &resolver.pick(Some("a.test"))));

        let replaced = Secret::new("kept", &["a.test"]);
        assert!(resolver.apply([replaced.served()]).is_empty());
        assert_eq!(leaf(&resolver, Some("a.test")), replaced.der);
    }

    #[test]
    fn a_handshake_is_served_by_the_name_it_asks_for_in_any_case() {
        let a = Secret::new("a", &["a.test"]);
        let wildcard = Secret::new("wildcard", &["*.test"]);
        let resolver = Arc::new(CertResolver::new().unwrap());
        assert!(resolver.apply([a.served(), wildcard.served()]).is_empty());
        let server = server::ingress_config(resolver).unwrap();
        let client = client::endpoint_config(Alpn::Http1).unwrap();
        for (asked, served) in [("A.Test", &a.der), ("other.TEST", &wildcard.der)] {
            let name = ServerName::try_from(asked).unwrap().to_owned();
            let (client, _) = handshake(Arc::clone(&client), Arc::clone(&server), name).unwrap();
            assert_eq!(client.peer_certificates().unwrap()[0], *served, "{asked}");
        }
    }
}
