//! A certificate authority of Portico's own: it issues leaf certificates for DNS names and for
//! URIs (a workload identity such as `spiffe://cluster.local/ns/default/sa/web`) and tells
//! whether a chain is one it issued.
//!
//! [`Ca::new`] and [`Ca::issue`] give rcgen's default validity (1975 to 4096), for servers whose
//! certificates live as long as their configuration. A mesh gives lifetimes: a root
//! ([`Ca::root`]) signs an intermediate ([`Ca::intermediate`]) that issues short-lived leaves
//! ([`Ca::issue_valid`]) carrying it in their chain, renewed at two thirds of their life
//! ([`Validity::renew_at`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
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

/// When a certificate is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// When it was issued.
    pub issued: SystemTime,
    /// Not before.
    pub not_before: SystemTime,
    /// Not after.
    pub not_after: SystemTime,
}

impl Validity {
    /// From `now` for `lifetime`, starting a minute early: a peer whose clock is a little
    /// behind still accepts a certificate issued this instant.
    pub fn starting(now: SystemTime, lifetime: Duration) -> Self {
        let skew = Duration::from_secs(60);
        Validity { issued: now, not_before: now.checked_sub(skew).unwrap_or(now), not_after: now + lifetime }
    }

    /// When to replace the certificate: two thirds into the life it was issued for (the
    /// minute of skew before it not counted), so that a renewal that fails has a third of it
    /// left to try again.
    pub fn renew_at(&self) -> SystemTime {
        let life = self.not_after.duration_since(self.issued).unwrap_or_default();
        self.issued + life * 2 / 3
    }

    fn apply(&self, params: &mut CertificateParams) {
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
    }
}

/// A CA with its key: a root, or an intermediate under one.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's own certificate.
    certificate: CertificateDer<'static>,
    /// The root's certificate alone, to verify against.
    roots: RootCertStore,
    /// The root's certificate.
    root: CertificateDer<'static>,
    /// The certificates between a leaf and the root (this CA's, for an intermediate), sent
    /// after the leaf.
    intermediates: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("certificate", &self.certificate).finish_non_exhaustive()
    }
}

/// A CA as PEM text: what a state folder or a Secret keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The CA's own certificate.
    pub certificate: String,
    /// Its private key (PKCS#8).
    pub key: String,
    /// The certificates between it and the root, nearest first (none for a root or an
    /// intermediate right under it).
    pub chain: String,
    /// The root's certificate, which peers trust.
    pub root: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem").field("certificate", &self.certificate).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA with a fresh key, named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        // Path length 0: it signs leaves only, so a leaf cannot pose as a CA of its own.
        Ca::self_signed(ca_params(common_name, 0))
    }

    /// A root named `common_name` for `validity`, which signs intermediates (path length 1)
    /// rather than leaves.
    pub fn root(common_name: &str, validity: Validity) -> Result<Self, TlsError> {
        let mut params = ca_params(common_name, 1);
        validity.apply(&mut params);
        Ca::self_signed(params)
    }

    fn self_signed(params: CertificateParams) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Issue)?;
        let certificate = params.self_signed(&key).map_err(TlsError::Issue)?.der().clone();
        let mut roots = RootCertStore::empty();
        roots.add(certificate.clone())?;
        let root = certificate.clone();
        Ok(Ca { issuer: Issuer::new(params, key), certificate, roots, root, intermediates: Vec::new() })
    }

    /// An intermediate CA under this one, named `common_name`, for `validity`: it issues the
    /// leaves, and a leaf's chain carries it.
    pub fn intermediate(&self, common_name: &str, validity: Validity) -> Result<Self, TlsError> {
        let mut params = ca_params(common_name, 0);
        validity.apply(&mut params);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(TlsError::Issue)?;
        let certificate = params.signed_by(&key, &self.issuer).map_err(TlsError::Issue)?.der().clone();
        let mut intermediates = vec![certificate.clone()];
        intermediates.extend(self.intermediates.iter().cloned());
        Ok(Ca {
            issuer: Issuer::new(params, key),
            certificate,
            roots: self.roots.clone(),
            root: self.root.clone(),
            intermediates,
        })
    }

    /// This CA as PEM text.
    pub fn to_pem(&self) -> CaPem {
        let pem = |der: &CertificateDer<'_>| {
            let body: Vec<String> = base64(der.as_ref())
                .as_bytes()
                .chunks(64)
                .map(|line| String::from_utf8_lossy(line).into_owned())
                .collect();
            format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", body.join("\n"))
        };
        // A root's chain is empty; an intermediate's starts with itself, which `certificate` holds.
        let above = self.intermediates.iter().skip(1);
        CaPem {
            certificate: pem(&self.certificate),
            key: self.issuer.key().serialize_pem(),
            chain: above.map(pem).collect(),
            root: pem(&self.root),
        }
    }

    /// A CA kept as PEM text. Checked whole: the key must be the certificate's and the chain
    /// must lead from it to the root, or a leaf it issued would not verify.
    pub fn from_pem(pem: &CaPem) -> Result<Self, TlsError> {
        let bad = |what: &str, why: String| TlsError::Ca(format!("{what}: {why}"));
        let key = KeyPair::from_pem(&pem.key).map_err(|e| bad("the CA key", e.to_string()))?;
        let certificate = one_certificate(&pem.certificate).map_err(|e| bad("the CA certificate", e))?;
        let root = one_certificate(&pem.root).map_err(|e| bad("the root certificate", e))?;
        let chain = match pem.chain.trim().is_empty() {
            true => Vec::new(),
            false => crate::pem::chain(pem.chain.as_bytes()).map_err(|e| bad("the chain", e.to_string()))?,
        };
        let issuer = Issuer::from_ca_cert_der(&certificate, key)
            .map_err(|e| bad("the CA certificate", e.to_string()))?;
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).map_err(|e| bad("the root certificate", e.to_string()))?;
        let intermediates = match certificate == root {
            true => Vec::new(),
            false => std::iter::once(certificate.clone()).chain(chain).collect(),
        };
        let ca = Ca { issuer, certificate, roots, root, intermediates };
        let probe = ca.issue(&[Name::Dns("probe.invalid".into())])?;
        ca.verify(&probe.chain, UnixTime::now()).map_err(|e| {
            bad("the CA", format!("a certificate it issues does not verify against the root ({e}): the key is not the certificate's, or the chain does not lead to the root"))
        })?;
        Ok(ca)
    }

    /// The root's certificate, which peers trust.
    pub fn root_certificate(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// This CA's certificate (for an intermediate: not what peers trust, the root is).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// A leaf for `names` with a fresh key, good for both ends of a connection (a mesh
    /// workload serves and connects with one identity).
    pub fn issue(&self, names: &[Name]) -> Result<Issued, TlsError> {
        self.issue_with(names, None)
    }

    /// A leaf for `names` good for `validity`; its chain carries the intermediates.
    pub fn issue_valid(&self, names: &[Name], validity: Validity) -> Result<Issued, TlsError> {
        self.issue_with(names, Some(validity))
    }

    fn issue_with(&self, names: &[Name], validity: Option<Validity>) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::default();
        if let Some(validity) = validity {
            validity.apply(&mut params);
        }
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
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().cloned());
        Ok(Issued { chain, key: key.into() })
    }

    /// Whether `chain` (leaf first) was issued by this CA and is valid at `now`. Names are the
    /// caller's to check: a DNS name by the TLS handshake, a URI identity by the mesh.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), TlsError> {
        let (leaf, intermediates) =
            chain.split_first().ok_or(TlsError::Verify(rustls::Error::NoCertificatesPresented))?;
        signed_under(&self.roots, leaf, intermediates, now).map_err(TlsError::Verify)
    }
}

/// Whether `leaf`, with `intermediates`, leads to one of `roots` and is valid at `now`.
pub(crate) fn signed_under(
    roots: &RootCertStore,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let leaf = ParsedCertificate::try_from(leaf)?;
    let algorithms = provider().signature_verification_algorithms.all;
    verify_server_cert_signed_by_trust_anchor(&leaf, roots, intermediates, now, algorithms).map(|_| ())
}

/// The one certificate of `pem`.
fn one_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    let mut all = crate::pem::chain(pem.as_bytes()).map_err(|e| e.to_string())?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => Err(format!("{n} certificates where one was expected")),
    }
}

/// Standard base64 with padding, as PEM bodies are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The parameters of a CA certificate named `common_name` that may sign `path_len` more CAs
/// below it.
fn ca_params(common_name: &str, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
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
    fn a_leaf_of_an_intermediate_verifies_against_the_root_within_its_life_only() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let root = Ca::root("portico mesh root", Validity::starting(now, 3650 * day)).unwrap();
        let intermediate =
            root.intermediate("portico mesh intermediate", Validity::starting(now, 365 * day)).unwrap();
        let life = Validity::starting(now, day);
        let leaf = intermediate.issue_valid(&web(), life).unwrap();
        assert_eq!(leaf.chain.len(), 2, "the leaf and the intermediate");
        assert_eq!(&leaf.chain[1], intermediate.certificate());
        let at =
            |t: SystemTime| UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        root.verify(&leaf.chain, at(now)).unwrap();
        intermediate.verify(&leaf.chain, at(now)).unwrap();
        // Without the intermediate the leaf does not reach the root.
        assert!(root.verify(&leaf.chain[..1], at(now)).is_err());
        // Expired, and not yet valid.
        let expired = root.verify(&leaf.chain, at(now + 2 * day)).unwrap_err();
        assert!(
            matches!(
                expired,
                TlsError::Verify(rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                ))
            ),
            "{expired:?}"
        );
        assert!(root.verify(&leaf.chain, at(now - day)).is_err());
        // Renewed after two thirds of its life: 16 h in, for a day.
        assert_eq!(life.renew_at().duration_since(now).unwrap(), Duration::from_secs(16 * 3600));
        let short = Validity::starting(now, Duration::from_secs(6));
        assert_eq!(
            short.renew_at().duration_since(now).unwrap(),
            Duration::from_secs(4),
            "the skew is not life"
        );
        // Another root's intermediate is not ours.
        let other = Ca::root("theirs", Validity::starting(now, day)).unwrap();
        let foreign = other
            .intermediate("theirs too", Validity::starting(now, day))
            .unwrap()
            .issue_valid(&web(), life)
            .unwrap();
        assert!(root.verify(&foreign.chain, at(now)).is_err());
    }

    #[test]
    fn an_intermediate_cannot_sign_another_ca() {
        let now = SystemTime::now();
        let root = Ca::root("root", Validity::starting(now, Duration::from_secs(3600))).unwrap();
        let intermediate =
            root.intermediate("intermediate", Validity::starting(now, Duration::from_secs(3600))).unwrap();
        let below = intermediate
            .intermediate("too deep", Validity::starting(now, Duration::from_secs(3600)))
            .unwrap();
        let leaf = below.issue_valid(&web(), Validity::starting(now, Duration::from_secs(600))).unwrap();
        assert_eq!(leaf.chain.len(), 3);
        assert!(root.verify(&leaf.chain, UnixTime::now()).is_err(), "path length 0 under the root's 1");
    }

    #[test]
    fn names_that_are_not_ascii_are_refused() {
        let ca = Ca::new("portico test CA").unwrap();
        let error = ca.issue(&[Name::Dns("wéb.test".into())]).unwrap_err();
        assert!(matches!(error, TlsError::Issue(_)), "{error:?}");
    }

    #[test]
    fn base64_is_written_as_pem_bodies_are() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn a_ca_kept_as_pem_issues_what_its_root_verifies() {
        let now = SystemTime::now();
        let root = Ca::root("root", Validity::starting(now, Duration::from_secs(86_400))).unwrap();
        let intermediate =
            root.intermediate("intermediate", Validity::starting(now, Duration::from_secs(3600))).unwrap();
        // The root itself, read back, signs a new intermediate that the original root trusts.
        let root_again = Ca::from_pem(&root.to_pem()).unwrap();
        assert_eq!(root_again.certificate(), root.certificate());
        let fresh =
            root_again.intermediate("again", Validity::starting(now, Duration::from_secs(3600))).unwrap();
        let leaf = fresh.issue_valid(&web(), Validity::starting(now, Duration::from_secs(600))).unwrap();
        root.verify(&leaf.chain, UnixTime::now()).unwrap();
        // The intermediate, read back, issues leaves carrying it.
        let pem = intermediate.to_pem();
        assert!(pem.chain.is_empty(), "nothing between an intermediate and its root");
        assert_eq!(pem.root, root.to_pem().certificate);
        let again = Ca::from_pem(&pem).unwrap();
        let leaf = again.issue_valid(&web(), Validity::starting(now, Duration::from_secs(600))).unwrap();
        assert_eq!(&leaf.chain[1], intermediate.certificate());
        root.verify(&leaf.chain, UnixTime::now()).unwrap();
        assert_eq!(again.root_certificate(), root.certificate());
    }

    #[test]
    fn a_ca_whose_parts_do_not_belong_together_is_refused() {
        let now = SystemTime::now();
        let day = Validity::starting(now, Duration::from_secs(86_400));
        let root = Ca::root("root", day).unwrap();
        let intermediate = root.intermediate("intermediate", day).unwrap();
        let other = Ca::root("other", day).unwrap();
        let wrong_key = CaPem { key: other.to_pem().key, ..intermediate.to_pem() };
        let wrong_root = CaPem { root: other.to_pem().root, ..intermediate.to_pem() };
        for (pem, what) in [(wrong_key, "key"), (wrong_root, "root")] {
            let error = Ca::from_pem(&pem).unwrap_err().to_string();
            assert!(error.contains("does not verify against the root"), "{what}: {error}");
        }
        let two = CaPem {
            certificate: format!("{}{}", root.to_pem().certificate, root.to_pem().certificate),
            ..root.to_pem()
        };
        assert!(Ca::from_pem(&two).unwrap_err().to_string().contains("2 certificates"));
        let garbage = CaPem { key: "not a key".into(), ..root.to_pem() };
        assert!(Ca::from_pem(&garbage).unwrap_err().to_string().contains("the CA key"));
    }
}
