//! A fleet of echo backends: each answers HTTP/1.1, h2c and UDP on one port with what it saw
//! and its Pod name, so a test can tell which backend answered.

use std::net::SocketAddr;

use portico_echo::{Echo, Identity};
use tokio::sync::watch;

use crate::net::{LOCALHOST, assert_loopback};

/// Running echo backends, stopped when the fleet is dropped.
#[derive(Debug)]
pub struct Fleet {
    addrs: Vec<SocketAddr>,
    _stop: watch::Sender<bool>,
}

impl Fleet {
    /// Starts one echo backend for each (loopback address, Pod name); port 0 takes a free
    /// port.
    pub async fn start(members: impl IntoIterator<Item = (SocketAddr, String)>) -> Fleet {
        let (stop, stopped) = watch::channel(false);
        let mut addrs = Vec::new();
        for (addr, pod) in members {
            assert_loopback(addr.ip());
            let identity = Identity { pod: Some(pod), ..Identity::default() };
            let echo =
                Echo::bind(addr, identity, None).await.unwrap_or_else(|e| panic!("echo on {addr}: {e}"));
            addrs.push(echo.local_addr());
            let mut stopped = stopped.clone();
            tokio::spawn(echo.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
        }
        Fleet { addrs, _stop: stop }
    }

    /// Starts `n` echo backends on free ports of 127.0.0.1, named `pod-0`, `pod-1`, …
    pub async fn on_localhost(n: usize) -> Fleet {
        Fleet::start((0..n).map(|i| (SocketAddr::new(LOCALHOST, 0), format!("pod-{i}")))).await
    }

    /// Where the backends listen, in the order they were given.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Leaves the backends running as long as the runtime does, and gives their addresses.
    pub fn detach(self) -> Vec<SocketAddr> {
        let Fleet { addrs, _stop: stop } = self;
        tokio::spawn(async move {
            let _kept = stop;
            std::future::pending::<()>().await;
        });
        addrs
    }
}
