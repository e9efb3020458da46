//! TLS termination: certificates chosen by SNI from the Plan, swapped on every reload without
//! touching open connections, and a self-signed default for names nothing covers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use portico_plan::ingress::{Certificate, normalize_host};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM does not parse or the key type is not supported.
    #[error("certificate of Secret {secret}: {reason}")]
    Certificate {
        /// The Secret.
        secret: String,
        /// What is wrong.
        reason: String,
    },
    /// The default certificate could not be generated.
    #[error("generating the default certificate: {0}")]
    Default(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
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
        let generated = rcgen::generate_simple_self_signed(vec!["portico.invalid".to_owned()])?;
        let key = PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes())
            .map_err(|e| TlsError::Certificate { secret: "(default)".into(), reason: e.to_string() })?;
        let signing = any_supported_type(&key)?;
        let default = Arc::new(CertifiedKey::new(vec![generated.cert.der().clone()], signing));
        Ok(CertResolver { current: ArcSwap::from_pointee(CertSet::default()), default })
    }

    /// Serves `certificates` from the next handshake on; returns the ones that do not load.
    pub fn apply(&self, certificates: &[Certificate]) -> Vec<TlsError> {
        let previous = self.current.load();
        let mut next = CertSet::default();
        let mut errors = Vec::new();
        for cert in certificates {
            let pem = (Arc::clone(&cert.cert_pem), Arc::clone(&cert.key_pem));
            let key = match previous.parsed.get(&pem).or_else(|| next.parsed.get(&pem)) {
                Some(key) => Arc::clone(key),
                None => match certified_key(cert) {
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
            for host in &cert.hosts {
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

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let set = self.current.load();
        let found = server_name.map(normalize_host).and_then(|name| {
            set.exact
                .get(name.as_ref())
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

fn certified_key(cert: &Certificate) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&cert.key_pem).map_err(|e| format!("tls.key: {e}"))?;
    let signing = any_supported_type(&key).map_err(|e| format!("tls.key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The server side of TLS: TLS 1.2 and 1.3 only, ALPN h2, then http/1.1, then http/1.0.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // As nginx: a client that offers only HTTP/1.0 (`curl --http1.0`) is served too, not refused
    // with no_application_protocol.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}
