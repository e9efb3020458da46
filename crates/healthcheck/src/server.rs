//! The health-check listeners: one per node address and health-check port, answering from a
//! table swapped in whole with each Plan.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portico_accept::{Counters, Limits};
use portico_dataplane::drain::Watch;
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_model::{Diagnostic, ObjectRef};
use portico_plan::Plan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info};

use crate::table::{Check, checks};

/// Most health-check clients connected at once in all, and on one listener: load balancers
/// probe every few seconds, one request per connection.
const CONNECTIONS: usize = 256;
const PER_LISTENER: usize = 64;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The ports and what each reports.
type Table = BTreeMap<u16, Check>;

/// Labels of a health-check answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    service: String,
    code: u16,
}

/// The `healthCheckNodePort` data plane of one node.
pub struct HealthChecks {
    node: String,
    table: Arc<ArcSwap<Table>>,
    listeners: Mutex<BTreeMap<SocketAddr, AbortHandle>>,
    limits: Arc<Limits>,
    drain: Watch,
    applied: AtomicBool,
    answers: Family<Answered, Counter>,
}

impl HealthChecks {
    /// Answers for `node`, until `drain` is signalled; its metrics go into `registry`.
    pub fn new(node: impl Into<String>, drain: Watch, registry: &mut Registry) -> Self {
        let answers = Family::<Answered, Counter>::default();
        registry.register("answers", "Health checks answered, by Service and status code", answers.clone());
        let counters = Counters::register(registry);
        HealthChecks {
            node: node.into(),
            table: Arc::new(ArcSwap::from_pointee(Table::new())),
            listeners: Mutex::new(BTreeMap::new()),
            limits: Limits::new("healthcheck", CONNECTIONS, PER_LISTENER, counters),
            drain,
            applied: AtomicBool::new(false),
            answers,
        }
    }

    /// Opens the listeners `wanted` has and the open ones lack, closes the others; what
    /// cannot be opened is reported and tried again with the next Plan.
    fn reconcile(&self, wanted: BTreeMap<SocketAddr, &Check>) -> Vec<Diagnostic> {
        let mut listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|addr, task| {
            let keep = wanted.contains_key(addr);
            if !keep {
                task.abort();
                info!(listener = %addr, "health check closed");
            }
            keep
        });
        let mut diagnostics = Vec::new();
        for (addr, check) in wanted {
            if listeners.contains_key(&addr) {
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    info!(listener = %addr, service = %check.service, "health check listening");
                    let task = tokio::spawn(self.accept_loop(listener, addr));
                    listeners.insert(addr, task.abort_handle());
                }
                Err(err) => diagnostics.push(
                    Diagnostic::error(format!("cannot listen on {addr} for its health checks: {err}"))
                        .on(ObjectRef::new("Service", check.service.clone()))
                        .field("spec.healthCheckNodePort"),
                ),
            }
        }
        diagnostics
    }

    fn accept_loop(
        &self,
        listener: TcpListener,
        addr: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let gate = self.limits.gate(addr);
        let table = Arc::clone(&self.table);
        let answers = self.answers.clone();
        let drain = self.drain.signaled();
        let port = addr.port();
        async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            // One answer per connection, and a timer so a silent client is let go.
            http.keep_alive(false).timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
            let mut connections = JoinSet::new();
            tokio::pin!(drain);
            loop {
                while connections.try_join_next().is_some() {}
                let (stream, peer, seat) = tokio::select! {
                    () = &mut drain => break,
                    accepted = gate.accept(&listener) => accepted,
                };
                let table = Arc::clone(&table);
                let answers = answers.clone();
                let connection = http.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |_request| {
                        let answer = answer(table.load().get(&port), &answers);
                        async move { Ok::<_, Infallible>(answer) }
                    }),
                );
                connections.spawn(async move {
                    let _seat = seat;
                    if let Err(error) = connection.await {
                        debug!(%error, %peer, "health check connection ended with an error");
                    }
                });
            }
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The answer for one request, whatever its method and path (load balancers differ): 200
/// while the Service has a local endpoint here, else 503, with the counts in JSON.
fn answer(check: Option<&Check>, answers: &Family<Answered, Counter>) -> Response<Full<Bytes>> {
    let (status, body, service) = match check {
        Some(check) => {
            let status =
                if check.local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({
                "service": {"namespace": check.service.namespace, "name": check.service.name},
                "localEndpoints": check.local_endpoints,
                "serviceProxyHealthy": true,
            });
            (status, body.to_string(), check.service.to_string())
        }
        // The listener is closing: its Service is gone.
        None => (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned(), String::new()),
    };
    answers.get_or_create(&Answered { service, code: status.as_u16() }).inc();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

impl DataPlane for HealthChecks {
    fn name(&self) -> &'static str {
        "healthcheck"
    }

    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(async move {
            // The table first: a listener opened below answers from it at once.
            let table = Arc::new(checks(plan, &self.node));
            self.table.store(Arc::clone(&table));
            let addresses = plan.nodes.iter().find(|n| n.name == self.node).map(|n| n.addresses.as_slice());
            let wanted: BTreeMap<SocketAddr, &Check> = table
                .iter()
                .flat_map(|(port, check)| {
                    addresses.unwrap_or_default().iter().map(move |ip| (SocketAddr::new(*ip, *port), check))
                })
                .collect();
            let diagnostics = if self.drain.is_draining() { Vec::new() } else { self.reconcile(wanted) };
            self.applied.store(true, Ordering::Release);
            diagnostics
        })
    }

    fn readiness(&self) -> Readiness {
        Readiness::after_first_plan(self.applied.load(Ordering::Acquire))
    }
}
