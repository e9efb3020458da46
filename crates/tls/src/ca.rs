//! A certificate authority of Portico's own: it issues leaf certificates for DNS names and for
//! URIs (a workload identity such as `spiffe://cluster.local/ns/default/sa/web`) and tells
//! whether a chain is one it issued.
//!
//! Certificates carry rcgen's default validity (1975 to 4096): lifetimes and rotation belong
//! to whoever runs the CA (the mesh), not to issuing.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;

use crate::{TlsError, provider};

/// A name a leaf certificate is issued for (a subject alternative name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A DNS name, as a server is reached by.
    Dns(String),
    /// A URI, as a workload identity is written (`spiffe://trust-domain/path`).
    Uri(String),
}

/// A leaf certificate and its private key.
pub struct Issued {
    /// The leaf alone: peers trust the CA's certificate on their own, so it is not sent.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("chain", &self.chain).finish_non_exhaustive()
    }
}

/// A self-signed CA with its key, issuing leaves directly (no intermediates).
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Only this CA's certificate, to verify against.
    roots: RootCertStore,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("certificate", self.issuer.der()).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA with a fresh key, named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        // Path length 0: it signs leaves only, so a leaf cannot pose as a CA of its own.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(TlsError::Issue)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(TlsError::Issue)?;
        let mut roots = RootCertStore::empty();
        roots.add(issuer.der().clone())?;
        Ok(Ca { issuer, roots })
    }

    /// The CA's certificate: what a peer trusts to accept the leaves it issues.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// A leaf for `names` with a fresh key, good for both ends of a connection (a mesh
    /// workload serves and connects with one identity).
    pub fn issue(&self, names: &[Name]) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = names
            .iter()
            .map(|name| match name {
                Name::Dns(dns) => dns.as_str().try_into().map(SanType::DnsName),
                Name::Uri(uri) => uri.as_str().try_into().map(SanType::URI),
            })
            .collect::<Result<_, _>>()
            .map_err(TlsError::Issue)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(TlsError::Issue)?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(TlsError::Issue)?;
        Ok(Issued { chain: vec![leaf.der().clone()], key: key.into() })
    }

    /// Whether `chain` (leaf first) was issued by this CA and is valid at `now`. Names are the
    /// caller's to check: a DNS name by the TLS handshake, a URI identity by the mesh.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), TlsError> {
        let (leaf, intermediates) =
            chain.split_first().ok_or(TlsError::Verify(rustls::Error::NoCertificatesPresented))?;
        let leaf = ParsedCertificate::try_from(leaf).map_err(TlsError::Verify)?;
        let algorithms = provider().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&leaf, &self.roots, intermediates, now, algorithms)
            .map_err(TlsError::Verify)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{CertificateError, ClientConfig};

    use super::*;
    use crate::server;
    use crate::testing::handshake;

    const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/web";

    fn web() -> [Name; 2] {
        [Name::Dns("web.default.svc".into()), Name::Uri(IDENTITY.into())]
    }

    /// Whether `der` holds a subject alternative name of `tag` (context-specific, primitive)
    /// with exactly `value`.
    fn has_san(der: &[u8], tag: u8, value: &str) -> bool {
        let Ok(len) = u8::try_from(value.len()) else { return false };
        let wanted: Vec<u8> = [0x80 | tag, len].into_iter().chain(value.bytes()).collect();
        der.windows(wanted.len()).any(|w| w == wanted)
    }

    #[test]
    fn an_issued_certificate_verifies_against_its_ca() {
        let ca = Ca::new("portico test CA").unwrap();
        let issued = ca.issue(&web()).unwrap();
        assert_eq!(issued.chain.len(), 1);
        ca.verify(&issued.chain, UnixTime::now()).unwrap();
    }

    #[test]
    fn a_certificate_of_another_ca_does_not_verify() {
        let ca = Ca::new("ours").unwrap();
        let other = Ca::new("theirs").unwrap();
        let foreign = other.issue(&web()).unwrap();
        let error = ca.verify(&foreign.chain, UnixTime::now()).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::Verify(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
            ),
            "{error:?}"
        );
        assert!(ca.verify(&[other.certificate().clone()], UnixTime::now()).is_err());
        assert!(ca.verify(&[], UnixTime::now()).is_err());
    }

    #[test]
    fn an_issued_certificate_carries_its_names() {
        let ca = Ca::new("portico test CA").unwrap();
        let issued = ca.issue(&web()).unwrap();
        let der = issued.chain[0].as_ref();
        // GeneralName: dNSName is [2], uniformResourceIdentifier is [6] (RFC 5280 §4.2.1.6).
        assert!(has_san(der, 2, "web.default.svc"));
        assert!(has_san(der, 6, IDENTITY));
        assert!(!has_san(der, 2, IDENTITY));
    }

    #[test]
    fn an_issued_certificate_serves_tls_for_its_dns_names_only() {
        let ca = Ca::new("portico test CA").unwrap();
        let issued = ca.issue(&web()).unwrap();
        let server = server::single_cert_config(issued.chain, issued.key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.certificate().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = Arc::new(client);
        let name = |n: &'static str| ServerName::try_from(n).unwrap();
        assert!(handshake(Arc::clone(&client), Arc::clone(&server), name("web.default.svc")).is_ok());
        let wrong = handshake(client, server, name("db.default.svc")).unwrap_err();
        assert!(matches!(wrong, rustls::Error::InvalidCertificate(_)), "{wrong:?}");
    }

    #[test]
    fn names_that_are_not_ascii_are_refused() {
        let ca = Ca::new("portico test CA").unwrap();
        let error = ca.issue(&[Name::Dns("wéb.test".into())]).unwrap_err();
        assert!(matches!(error, TlsError::Issue(_)), "{error:?}");
    }
}
