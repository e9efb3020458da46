//! TLS towards endpoints: what is checked of an endpoint's certificate, and which application
//! protocol is asked for.
//!
//! Like ingress-nginx (`proxy-ssl-verify` off by default), the endpoint's certificate is not
//! checked against a CA, since in-cluster endpoints are reached by IP and mostly carry
//! self-signed certificates; its signatures are still verified, so the endpoint must hold
//! the key of the certificate it shows.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::{TlsError, provider};

/// The application protocol asked of an endpoint over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2` (gRPC and HTTP/2 endpoints).
    H2,
}

/// The client side of TLS towards endpoints, asking for `alpn`.
pub fn endpoint_config(alpn: Alpn) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(Arc::clone(&provider)));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate, but only with signatures made by its key; the mesh's verifier
/// checks signatures with it too.
#[derive(Debug)]
pub(crate) struct AnyCertificate(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::{IpAddr, Ipv4Addr};

    use rustls::ServerConfig;
    use rustls::server::ResolvesServerCert;
    use rustls::sign::{CertifiedKey, SingleCertAndKey};

    use super::*;
    use crate::testing::handshake;
    use crate::{pem, server};

    /// An endpoint reached by IP, as the Ingress reaches them.
    fn endpoint() -> ServerName<'static> {
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)).into())
    }

    /// A self-signed certificate for a name the client never asks for, and its key.
    fn self_signed(name: &str) -> (CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>) {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let key = pem::key(generated.signing_key.serialize_pem().as_bytes()).unwrap();
        (generated.cert.der().clone(), key)
    }

    /// A server showing `cert` and signing with `key`, whether or not they belong together.
    fn showing(
        cert: CertificateDer<'static>,
        key: &rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Arc<ServerConfig> {
        let signing = rustls::crypto::ring::sign::any_supported_type(key).unwrap();
        let resolver: Arc<dyn ResolvesServerCert> =
            Arc::new(SingleCertAndKey::from(CertifiedKey::new(vec![cert], signing)));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        Arc::new(config)
    }

    #[test]
    fn each_protocol_asks_for_its_own_alpn_only() {
        assert_eq!(endpoint_config(Alpn::Http1).unwrap().alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(endpoint_config(Alpn::H2).unwrap().alpn_protocols, vec![b"h2".to_vec()]);
        let (cert, key) = self_signed("endpoint.test");
        let server = server::single_cert_config(vec![cert], key).unwrap();
        for (alpn, expected) in [(Alpn::Http1, &b"http/1.1"[..]), (Alpn::H2, b"h2")] {
            let client = endpoint_config(alpn).unwrap();
            let (client, _) = handshake(client, Arc::clone(&server), endpoint()).unwrap();
            assert_eq!(client.alpn_protocol(), Some(expected));
        }
    }

    #[test]
    fn an_endpoint_certificate_is_not_checked_against_a_ca_or_a_name() {
        let (cert, key) = self_signed("somewhere-else.test");
        let (client, _) =
            handshake(endpoint_config(Alpn::Http1).unwrap(), showing(cert.clone(), &key), endpoint())
                .unwrap();
        assert_eq!(client.peer_certificates().unwrap()[0], cert);
    }

    #[test]
    fn an_endpoint_must_sign_with_the_key_of_its_certificate() {
        let (cert, _) = self_signed("endpoint.test");
        let (_, other_key) = self_signed("other.test");
        let refused = handshake(endpoint_config(Alpn::Http1).unwrap(), showing(cert, &other_key), endpoint());
        assert!(refused.is_err(), "a signature by another key was accepted");
    }
}
