//! TLS and identity for every data plane: the certificates a listener serves by SNI
//! ([`sni`]), the server configurations built on them ([`server`]), certificates and keys read
//! from PEM ([`pem`]), a CA that issues and verifies ([`ca`]), how endpoints are spoken to
//! over TLS ([`client`]), workload identities ([`spiffe`]) and mutual TLS between mesh proxies
//! ([`mesh`]).
//!
//! One crypto provider (ring) and one set of protocol versions (TLS 1.3 and 1.2) are chosen
//! here, so that the Ingress, the echo workload and later the mesh cannot drift apart.
#![forbid(unsafe_code)]

pub mod ca;
pub mod client;
pub mod mesh;
pub mod pem;
pub mod server;
pub mod sni;
pub mod spiffe;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use ca::{Ca, CaPem, Issued, Name, Validity};
pub use client::Alpn;
pub use pem::PemError;
pub use sni::{CertResolver, Served};
pub use spiffe::{InvalidSpiffeId, SpiffeId};

/// What can go wrong loading, issuing or verifying certificates.
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
    Default(rcgen::Error),
    /// A CA or a certificate it issues could not be generated (e.g. a name that is not ASCII).
    #[error("issuing a certificate: {0}")]
    Issue(rcgen::Error),
    /// A peer's certificate carries no usable workload identity.
    #[error("no workload identity: {0}")]
    Identity(String),
    /// A CA kept as PEM cannot be used.
    #[error("{0}")]
    Ca(String),
    /// A certificate chain is not one the CA issued, or not valid now.
    #[error("certificate does not verify: {0}")]
    Verify(rustls::Error),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider every configuration here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Both ends of a handshake run in memory, so that tests see what a peer would negotiate
/// without sockets.
#[cfg(test)]
mod testing {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

    /// Completes a handshake between `client` (asking for `name`) and `server`, or fails with
    /// the error of the side that gave up first.
    pub(crate) fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: ServerName<'static>,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let mut client = ClientConnection::new(client, name)?;
        let mut server = ServerConnection::new(server)?;
        // A TLS 1.2 or 1.3 handshake takes at most a few flights each way.
        for _ in 0..8 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok((client, server));
            }
            transfer(&mut client, &mut server)?;
            transfer(&mut server, &mut client)?;
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    /// Moves every TLS byte `from` wants to send into `to`, which processes them as they come.
    fn transfer<A, B>(
        from: &mut ConnectionCommon<A>,
        to: &mut ConnectionCommon<B>,
    ) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).map_err(|e| rustls::Error::General(e.to_string()))?;
            to.process_new_packets()?;
        }
        Ok(())
    }
}
