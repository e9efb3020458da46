//! Mutual TLS between mesh proxies: TLS 1.3 only and ALPN `h2` (the HTTP/2 CONNECT tunnels
//! ride on it), both ends showing a leaf issued under the mesh's root and known by the one
//! SPIFFE ID in it. A client accepts only the identity it expects of the workload it dials,
//! whatever address answered; a server accepts any identity of the root and hands it to the
//! authorization policy.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use x509_parser::extensions::GeneralName;

use crate::ca::signed_under;
use crate::client::AnyCertificate;
use crate::spiffe::SpiffeId;
use crate::{Issued, TlsError, provider};

/// The application protocol of the tunnels.
pub const ALPN: &[u8] = b"h2";

/// The SPIFFE ID a leaf certificate carries: its one `spiffe://` URI name.
pub fn identity_of(leaf: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let bad = |why: &str| TlsError::Identity(why.to_owned());
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| bad("the certificate does not parse"))?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|_| bad("its subject alternative names do not parse"))?
        .ok_or_else(|| bad("it has no subject alternative name"))?;
    let mut ids = names.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    match (ids.next(), ids.next()) {
        (Some(id), None) => id.parse().map_err(|e: crate::InvalidSpiffeId| bad(&e.to_string())),
        (None, _) => Err(bad("it carries no SPIFFE ID")),
        (Some(_), Some(_)) => Err(bad("it carries more than one SPIFFE ID")),
    }
}

/// The client side, showing `local` and accepting only a peer that is `expected`.
pub fn client_config(
    local: &Issued,
    root: &CertificateDer<'static>,
    expected: SpiffeId,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let signatures = AnyCertificate(Arc::clone(&provider));
    let verifier = Arc::new(Expected { roots: roots(root)?, expected, signatures });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(local.chain.clone(), local.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The server side, showing `local` and requiring a client certificate of the root.
pub fn server_config(local: &Issued, root: &CertificateDer<'static>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(root)?), Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::Identity(format!("the client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(clients)
        .with_single_cert(local.chain.clone(), local.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The identity of the peer whose chain (leaf first) a handshake verified.
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, TlsError> {
    let leaf = chain.and_then(<[_]>::first).ok_or_else(|| TlsError::Identity("no certificate".into()))?;
    identity_of(leaf)
}

fn roots(root: &CertificateDer<'static>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone())?;
    Ok(roots)
}

/// A server's chain must lead to the root and its leaf must carry the expected identity; the
/// name the client dialled (an address) is not what is checked.
#[derive(Debug)]
struct Expected {
    roots: RootCertStore,
    expected: SpiffeId,
    /// Signatures are checked as towards any endpoint.
    signatures: AnyCertificate,
}

impl ServerCertVerifier for Expected {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        signed_under(&self.roots, end_entity, intermediates, now)?;
        match identity_of(end_entity) {
            Ok(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            Ok(id) => Err(rustls::Error::General(format!("the peer is {id}, not {}", self.expected))),
            Err(e) => Err(rustls::Error::General(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("the mesh speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, SystemTime};

    use rustls::pki_types::ServerName;

    use super::*;
    use crate::ca::{Ca, Name, Validity};
    use crate::testing::handshake;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::service_account("cluster.local", "default", sa).unwrap()
    }

    fn mesh() -> (Ca, Ca) {
        let life = Validity::starting(SystemTime::now(), Duration::from_secs(3600));
        let root = Ca::root("mesh root", life).unwrap();
        let intermediate = root.intermediate("mesh intermediate", life).unwrap();
        (root, intermediate)
    }

    fn leaf(ca: &Ca, sa: &str) -> Issued {
        let life = Validity::starting(SystemTime::now(), Duration::from_secs(600));
        ca.issue_valid(&[Name::Uri(id(sa).to_string())], life).unwrap()
    }

    fn address() -> ServerName<'static> {
        ServerName::try_from("198.18.10.2").unwrap()
    }

    #[test]
    fn both_ends_learn_each_other_s_identity() {
        let (root, ca) = mesh();
        let (client, server) = (leaf(&ca, "client"), leaf(&ca, "web"));
        let client = client_config(&client, root.certificate(), id("web")).unwrap();
        let server = server_config(&server, root.certificate()).unwrap();
        let (client, server) = handshake(client, server, address()).unwrap();
        assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(client.alpn_protocol(), Some(ALPN));
        assert_eq!(peer_identity(server.peer_certificates()).unwrap(), id("client"));
        assert_eq!(peer_identity(client.peer_certificates()).unwrap(), id("web"));
    }

    #[test]
    fn a_client_refuses_a_server_that_is_not_the_workload_it_dialled() {
        let (root, ca) = mesh();
        let client = client_config(&leaf(&ca, "client"), root.certificate(), id("web")).unwrap();
        let impostor = server_config(&leaf(&ca, "db"), root.certificate()).unwrap();
        let error = handshake(client, impostor, address()).unwrap_err();
        assert!(error.to_string().contains("is spiffe://cluster.local/ns/default/sa/db"), "{error}");
    }

    #[test]
    fn another_root_s_workloads_are_refused_both_ways() {
        let (root, ca) = mesh();
        let (_, foreign) = mesh();
        let client = client_config(&leaf(&ca, "client"), root.certificate(), id("web")).unwrap();
        let stranger = server_config(&leaf(&foreign, "web"), root.certificate()).unwrap();
        assert!(handshake(client, stranger, address()).is_err());
        let outsider = client_config(&leaf(&foreign, "client"), root.certificate(), id("web")).unwrap();
        let server = server_config(&leaf(&ca, "web"), root.certificate()).unwrap();
        assert!(handshake(outsider, server, address()).is_err());
    }

    #[test]
    fn a_client_without_a_certificate_is_refused() {
        let (root, ca) = mesh();
        let server = server_config(&leaf(&ca, "web"), root.certificate()).unwrap();
        let anonymous = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Expected {
                roots: roots(root.certificate()).unwrap(),
                expected: id("web"),
                signatures: AnyCertificate(provider()),
            }))
            .with_no_client_auth();
        assert!(handshake(Arc::new(anonymous), server, address()).is_err());
    }

    #[test]
    fn identities_are_read_from_uri_names_only() {
        let ca = Ca::new("test").unwrap();
        let dns_only = ca.issue(&[Name::Dns("web.default.svc".into())]).unwrap();
        assert!(identity_of(&dns_only.chain[0]).unwrap_err().to_string().contains("no SPIFFE ID"));
        let two = ca.issue(&[Name::Uri(id("a").to_string()), Name::Uri(id("b").to_string())]).unwrap();
        assert!(identity_of(&two.chain[0]).unwrap_err().to_string().contains("more than one"));
        assert!(identity_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}
