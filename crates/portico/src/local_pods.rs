//! Pods that run Portico's built-in echo workload, started in-process at their Pod IP and
//! container ports, so that a folder of manifests runs with nothing else installed. Other
//! Pods are taken to be listening at their address already.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use portico_echo::{Echo, Identity};
use portico_model::ObjectKey;
use portico_plan::Plan;
use tokio::sync::oneshot;
use tracing::{debug, info};

/// The echo workloads running for this node's Pods, by listen address.
#[derive(Default)]
pub struct LocalPods {
    running: BTreeMap<SocketAddr, (ObjectKey, oneshot::Sender<()>)>,
}

impl LocalPods {
    /// Starts the echo workloads `plan` asks of `node` and stops those it no longer asks
    /// for; returns what could not be started.
    pub async fn apply(&mut self, plan: &Plan, node: &str) -> Vec<String> {
        let mut wanted: BTreeMap<SocketAddr, &ObjectKey> = BTreeMap::new();
        for pod in plan.pods.iter().filter(|p| p.node == node) {
            let Some(ip) = pod.ips.first() else { continue };
            // One echo serves TCP and UDP on a port number, so each number counts once.
            for port in pod.containers.iter().filter(|c| c.echo).flat_map(|c| &c.ports) {
                wanted.entry(SocketAddr::new(*ip, port.port)).or_insert(&pod.key);
            }
        }
        self.running.retain(|addr, (pod, _)| {
            let keep = wanted.get(addr).is_some_and(|w| *w == pod);
            if !keep {
                debug!(%addr, %pod, "stopping echo");
            }
            keep
        });
        let mut problems = Vec::new();
        for (addr, pod) in wanted {
            if self.running.contains_key(&addr) {
                continue;
            }
            let identity = Identity {
                pod: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                service: None,
            };
            match Echo::bind(addr, identity, None).await {
                Ok(echo) => {
                    let (stop, stopped) = oneshot::channel::<()>();
                    tokio::spawn(echo.run(async {
                        let _ = stopped.await;
                    }));
                    self.running.insert(addr, (pod.clone(), stop));
                }
                Err(err) => problems.push(format!("Pod {pod}: cannot start the echo workload: {err}")),
            }
        }
        info!(echo_workloads = self.running.len(), "local Pods applied");
        problems
    }

    /// Stops every echo workload.
    pub fn stop_all(&mut self) {
        self.running.clear();
    }
}
