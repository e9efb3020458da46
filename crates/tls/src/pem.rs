//! Certificate chains and private keys given as PEM, as Secrets and files hold them.
//!
//! The errors say which half is wrong and nothing more: the Ingress names a Secret's
//! `tls.crt`/`tls.key`, the echo workload a file, each in its own words.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What is wrong with a certificate chain or a private key given as PEM.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// A certificate section does not decode (or the bytes could not be read).
    #[error("certificate: {0}")]
    Certificate(pem::Error),
    /// The certificate PEM holds no certificate at all.
    #[error("no certificate")]
    NoCertificate,
    /// No private key decodes (or the bytes could not be read).
    #[error("private key: {0}")]
    Key(pem::Error),
}

/// Every certificate of `pem`, leaf first; an error unless there is at least one.
pub fn chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let chain =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(PemError::Certificate)?;
    // Checked here rather than by rustls, so that the error names the certificate, not the key.
    if chain.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(chain)
}

/// The first private key of `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(PemError::Key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn chain_keeps_every_certificate_in_order() {
        let leaf = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let pem = format!("{}{}", leaf.cert.pem(), other.cert.pem());
        let chain = chain(pem.as_bytes()).unwrap();
        assert_eq!(chain, vec![leaf.cert.der().clone(), other.cert.der().clone()]);
    }

    #[test]
    fn a_chain_without_certificates_is_refused() {
        assert!(matches!(chain(b"not pem"), Err(PemError::NoCertificate)));
        let key_only = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let pem = key_only.signing_key.serialize_pem();
        assert!(matches!(chain(pem.as_bytes()), Err(PemError::NoCertificate)));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(chain(broken.as_bytes()), Err(PemError::Certificate(_))));
    }

    #[test]
    fn key_reads_the_private_key_and_names_a_missing_one() {
        let generated = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let read = key(generated.signing_key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(read.secret_der(), generated.signing_key.serialize_der());
        let error = key(generated.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(error, PemError::Key(pem::Error::NoItemsFound)), "{error:?}");
        assert_eq!(error.to_string(), "private key: no items found");
    }
}
