//! Pods that run Portico's built-in echo workload, started in-process at their Pod IP and
//! container ports, so that a folder of manifests runs with nothing else installed. Other
//! Pods are taken to be listening at their address already.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_echo::{Echo, Identity};
use portico_model::{Diagnostic, ObjectKey};
use portico_plan::Plan;
use tokio::sync::{Mutex, oneshot};
use tracing::{debug, info};

/// The echo workloads running for this node's Pods, by listen address.
pub struct LocalPods {
    node: String,
    running: Mutex<BTreeMap<SocketAddr, (ObjectKey, oneshot::Sender<()>)>>,
    applied: AtomicBool,
}

impl LocalPods {
    /// None running yet, for the Pods of `node`.
    pub fn new(node: String) -> Self {
        LocalPods { node, running: Mutex::default(), applied: AtomicBool::new(false) }
    }

    /// Starts the echo workloads `plan` asks of this node and stops those it no longer asks
    /// for; returns what could not be started.
    async fn serve_plan(&self, plan: &Plan) -> Vec<Diagnostic> {
        let mut wanted: BTreeMap<SocketAddr, &ObjectKey> = BTreeMap::new();
        for pod in plan.pods.iter().filter(|p| p.node == self.node) {
            let Some(ip) = pod.ips.first() else { continue };
            // One echo serves TCP and UDP on a port number, so each number counts once.
            for port in pod.containers.iter().filter(|c| c.echo).flat_map(|c| &c.ports) {
                wanted.entry(SocketAddr::new(*ip, port.port)).or_insert(&pod.key);
            }
        }
        let mut running = self.running.lock().await;
        running.retain(|addr, (pod, _)| {
            let keep = wanted.get(addr).is_some_and(|w| *w == pod);
            if !keep {
                debug!(%addr, %pod, "stopping echo");
            }
            keep
        });
        let mut problems = Vec::new();
        for (addr, pod) in wanted {
            if running.contains_key(&addr) {
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
                    running.insert(addr, (pod.clone(), stop));
                }
                Err(err) => problems
                    .push(Diagnostic::error(format!("Pod {pod}: cannot start the echo workload: {err}"))),
            }
        }
        info!(echo_workloads = running.len(), "local Pods applied");
        self.applied.store(true, Ordering::Release);
        problems
    }

    /// Stops every echo workload: after the proxies in front of them have drained.
    pub async fn stop_all(&self) {
        self.running.lock().await.clear();
    }
}

impl DataPlane for LocalPods {
    fn name(&self) -> &'static str {
        "pods"
    }

    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(self.serve_plan(plan))
    }

    fn readiness(&self) -> Readiness {
        Readiness::after_first_plan(self.applied.load(Ordering::Acquire))
    }
}
