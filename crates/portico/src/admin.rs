//! Admin HTTP endpoints of `portico run`: liveness, readiness, Prometheus metrics and the served plan,
//! like kube-proxy's healthz and metrics ports.

use std::convert::Infallible;
use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portico_accept::Limits;
use portico_dataplane::DataPlane;
use portico_dataplane::drain::Watch;
use portico_plan::Plan;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const JSON: &str = "application/json";
const NOT_FOUND: &str = "not found; endpoints: /healthz /readyz /metrics /plan\n";
/// Most admin clients connected at once (probes and scrapers); the next wait in the queue.
const CONNECTIONS: usize = 64;

/// What the admin endpoints report; shared with the rest of `run`.
pub struct Admin {
    /// The data planes, each asked for its readiness by `/readyz`.
    planes: Vec<Arc<dyn DataPlane>>,
    /// Shutdown: `/readyz` says not ready once it is signalled.
    drain: Watch,
    /// The plan being served.
    pub plan: ArcSwapOption<Plan>,
    /// Every Prometheus metric of the process (registered before serving starts).
    pub registry: Registry,
    /// The bound on admin connections.
    limits: Arc<Limits>,
}

impl Admin {
    /// Without a plan, reporting the readiness of `planes`, the metrics of `registry` and its
    /// own.
    pub fn new(mut registry: Registry, planes: Vec<Arc<dyn DataPlane>>, drain: Watch) -> Self {
        let counters = portico_accept::Counters::register(registry.sub_registry_with_prefix("portico_admin"));
        let limits = Limits::new("admin", CONNECTIONS, CONNECTIONS, counters);
        Admin { planes, drain, plan: ArcSwapOption::empty(), registry, limits }
    }

    /// `/readyz`: ready when every data plane is and shutdown has not begun; the first line
    /// says which, the next ones each data plane's readiness by name.
    fn readiness(&self) -> (bool, String) {
        let draining = self.drain.is_draining();
        let mut ready = !draining;
        let mut planes = String::new();
        for plane in &self.planes {
            let readiness = plane.readiness();
            ready &= readiness.is_ready();
            let _ = writeln!(planes, "{}: {readiness}", plane.name());
        }
        let first = match (ready, draining) {
            (true, _) => "ready",
            (false, true) => "not ready: shutting down",
            (false, false) => "not ready",
        };
        (ready, format!("{first}\n{planes}"))
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer turns on hyper's header read timeout, so idle half-open clients cannot pile up.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tracing::info!(%address, "admin endpoints serving");
    let gate = admin.limits.gate(address);

    // Dropped on return, which aborts the connections still open: admin requests are tiny.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer, seat) = tokio::select! {
            () = &mut shutdown => break,
            accepted = gate.accept(&listener) => accepted,
        };
        let admin = Arc::clone(&admin);
        let builder = Arc::clone(&builder);
        connections.spawn(async move {
            let _seat = seat;
            let service = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(answer(&req, &admin)) }
            });
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%error, %peer, "admin connection ended with an error");
            }
        });
    }
    tracing::info!(%address, "admin endpoints stopped");
    Ok(())
}

/// Routes one request; HEAD gets the GET answer's headers without its body.
fn answer(req: &Request<Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    let response = match req.uri().path() {
        "/healthz" | "/readyz" | "/metrics" | "/plan" if !head && req.method() != Method::GET => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match admin.readiness() {
            (true, body) => text(StatusCode::OK, body),
            (false, body) => text(StatusCode::SERVICE_UNAVAILABLE, body),
        },
        "/metrics" => metrics(&admin.registry),
        "/plan" => plan(admin.plan.load_full().as_deref()),
        _ => text(StatusCode::NOT_FOUND, NOT_FOUND),
    };
    if head { without_body(response) } else { response }
}

fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => respond(StatusCode::OK, OPENMETRICS, Bytes::from(body)),
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
        }
    }
}

fn plan(plan: Option<&Plan>) -> Response<Full<Bytes>> {
    let Some(plan) = plan else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no plan yet\n");
    };
    match serde_json::to_vec_pretty(plan) {
        Ok(json) => respond(StatusCode::OK, JSON, Bytes::from(json)),
        Err(error) => {
            tracing::warn!(%error, "cannot encode the plan as JSON");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the plan\n")
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, TEXT, body.into())
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Keeps the length the GET body would have: hyper drops HEAD bodies over HTTP/1.1 but not over h2.
fn without_body(response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    use hyper::body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(len) = body.size_hint().exact() {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;

    use portico_dataplane::{Readiness, drain};
    use portico_testkit::http::Answer;
    use prometheus_client::metrics::counter::Counter;
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    }

    async fn start(admin: Arc<Admin>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, admin, async move {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    /// One request with `Connection: close`; panics unless a whole head with a status came back.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let answer = portico_testkit::http::send(addr, request.as_bytes()).await;
        assert_ne!(answer.status, 0, "no answer: {answer:?}");
        answer
    }

    fn admin() -> Arc<Admin> {
        Arc::new(Admin::new(Registry::default(), Vec::new(), drain::channel().1))
    }

    /// A data plane whose readiness the test sets.
    struct Plane(std::sync::Mutex<Readiness>);

    impl DataPlane for Plane {
        fn name(&self) -> &'static str {
            "test"
        }
        fn apply<'a>(&'a self, _: &'a Arc<Plan>) -> portico_dataplane::Applying<'a> {
            Box::pin(std::future::ready(Vec::new()))
        }
        fn readiness(&self) -> Readiness {
            self.0.lock().map(|r| r.clone()).unwrap_or(Readiness::Ready)
        }
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let server = start(admin()).await;
        let answer = request(server.addr, "GET", "/healthz").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok\n");
        assert_eq!(answer.header("content-type"), Some(TEXT));
    }

    #[tokio::test]
    async fn readyz_follows_every_data_plane_and_the_drain() {
        let plane = Arc::new(Plane(std::sync::Mutex::new(Readiness::NotReady("no plan applied yet".into()))));
        let (trigger, watch) = drain::channel();
        let admin =
            Arc::new(Admin::new(Registry::default(), vec![plane.clone() as Arc<dyn DataPlane>], watch));
        let server = start(Arc::clone(&admin)).await;
        let before = request(server.addr, "GET", "/readyz").await;
        assert_eq!(before.status, 503);
        assert_eq!(before.body, "not ready\ntest: not ready: no plan applied yet\n");
        *plane.0.lock().unwrap() = Readiness::Ready;
        let after = request(server.addr, "GET", "/readyz").await;
        assert_eq!(after.status, 200);
        assert_eq!(after.body, "ready\ntest: ready\n");
        tokio::spawn(trigger.drain(std::time::Duration::from_secs(1)));
        tokio::task::yield_now().await;
        let draining = request(server.addr, "GET", "/readyz").await;
        assert_eq!(draining.status, 503);
        assert_eq!(draining.body, "not ready: shutting down\ntest: ready\n");
    }

    #[tokio::test]
    async fn metrics_are_openmetrics() {
        let mut registry = Registry::default();
        let events = Counter::<u64>::default();
        registry.register("portico_test_events", "Events seen by the test", events.clone());
        events.inc();
        let server = start(Arc::new(Admin::new(registry, Vec::new(), drain::channel().1))).await;
        let answer = request(server.addr, "GET", "/metrics").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some(OPENMETRICS));
        assert!(answer.body.contains("portico_test_events_total 1\n"), "{}", answer.body);
        assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    }

    #[tokio::test]
    async fn plan_is_served_once_stored() {
        let admin = admin();
        let server = start(Arc::clone(&admin)).await;
        let none = request(server.addr, "GET", "/plan").await;
        assert_eq!(none.status, 503);
        assert_eq!(none.body, "no plan yet\n");

        let planned = portico_plan::plan(
            &portico_model::Store::default(),
            &portico_plan::PlanConfig::default(),
            &portico_plan::Allocations::default(),
            42,
        );
        admin.plan.store(Some(Arc::new(planned.plan)));
        let some = request(server.addr, "GET", "/plan").await;
        assert_eq!(some.status, 200);
        assert_eq!(some.header("content-type"), Some(JSON));
        assert!(some.body.contains("\"generation\": 42"), "{}", some.body);
        let json: serde_json::Value = serde_json::from_str(&some.body).unwrap();
        assert_eq!(json["generation"], 42);
    }

    #[tokio::test]
    async fn head_has_headers_without_body() {
        let server = start(admin()).await;
        let answer = request(server.addr, "HEAD", "/healthz").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-length"), Some("3"));
        assert_eq!(answer.body, "");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let server = start(admin()).await;
        let answer = request(server.addr, "GET", "/nope").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body, NOT_FOUND);
    }

    #[tokio::test]
    async fn post_is_405() {
        let server = start(admin()).await;
        let answer = request(server.addr, "POST", "/healthz").await;
        assert_eq!(answer.status, 405);
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    }

    #[tokio::test]
    async fn shutdown_stops_serving() {
        let server = start(admin()).await;
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
        server.stop.send(()).unwrap();
        let result =
            tokio::time::timeout(std::time::Duration::from_secs(5), server.task).await.unwrap().unwrap();
        assert!(result.is_ok());
        assert!(TcpStream::connect(server.addr).await.is_err());
    }
}
