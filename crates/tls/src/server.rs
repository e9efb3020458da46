//! The server side of TLS: what the Ingress and the echo workload listen with.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::sni::CertResolver;
use crate::{TlsError, provider};

/// The Ingress: certificates by SNI, TLS 1.2 and 1.3 only, ALPN h2, then http/1.1, then
/// http/1.0.
pub fn ingress_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // As nginx: a client that offers only HTTP/1.0 (`curl --http1.0`) is served too, not refused
    // with no_application_protocol.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}

/// One certificate whatever name is asked (the echo workload): TLS 1.2 and 1.3, ALPN h2, then
/// http/1.1. Fails if the key is not the certificate's; rustls's own error, so that the
/// caller can say where the pair came from.
pub fn single_cert_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls::pki_types::ServerName;

    use super::*;
    use crate::testing::handshake;
    use crate::{Alpn, client, pem};

    /// A client that offers exactly `alpn` and checks no certificate.
    fn offering(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut config = Arc::unwrap_or_clone(client::endpoint_config(Alpn::Http1).unwrap());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn negotiated(client: Arc<rustls::ClientConfig>, server: Arc<ServerConfig>) -> Option<Vec<u8>> {
        let name = ServerName::try_from("a.test").unwrap();
        let (client, _) = handshake(client, server, name).unwrap();
        client.alpn_protocol().map(<[u8]>::to_vec)
    }

    #[test]
    fn the_ingress_prefers_h2_and_still_serves_http_1_0() {
        let config = ingress_config(Arc::new(CertResolver::new().unwrap())).unwrap();
        let all: [&[u8]; 3] = [b"http/1.0", b"http/1.1", b"h2"];
        assert_eq!(negotiated(offering(&all), Arc::clone(&config)).as_deref(), Some(&b"h2"[..]));
        assert_eq!(negotiated(offering(&[b"http/1.0"]), config).as_deref(), Some(&b"http/1.0"[..]));
    }

    #[test]
    fn one_certificate_serves_h2_and_http_1_1_only() {
        let generated = rcgen::generate_simple_self_signed(vec!["echo.test".to_owned()]).unwrap();
        let chain = vec![generated.cert.der().clone()];
        let key = pem::key(generated.signing_key.serialize_pem().as_bytes()).unwrap();
        let config = single_cert_config(chain, key).unwrap();
        assert_eq!(negotiated(offering(&[b"h2"]), Arc::clone(&config)).as_deref(), Some(&b"h2"[..]));
        let refused = handshake(offering(&[b"http/1.0"]), config, ServerName::try_from("a.test").unwrap());
        assert!(refused.is_err(), "http/1.0 alone was negotiated");
    }

    #[test]
    fn one_certificate_refuses_a_key_of_another() {
        let first = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let second = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let key = pem::key(second.signing_key.serialize_pem().as_bytes()).unwrap();
        let error = single_cert_config(vec![first.cert.der().clone()], key).unwrap_err();
        assert!(matches!(error, rustls::Error::InconsistentKeys(_)), "{error:?}");
    }
}
