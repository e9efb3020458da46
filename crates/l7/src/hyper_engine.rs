//! hyper's server as an engine: each request it parsed (HTTP/2, and HTTP/1.x under
//! [`crate::Http1Engine::Hyper`]) checked, decided and forwarded through the exchange.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::body::ClientBody;
use crate::decision::{Decision, Exchange, Head, ProxyBody};
use crate::request::{self};
use crate::shared::{Conn, Shared};

/// Serves one request; never fails (errors become 4xx/5xx responses).
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some(table) = shared.table.load_full() else {
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(response);
    };
    let mut exchange = Exchange::new(shared, table, conn, req.method().as_str(), req.uri().path());
    // Boxed: hyper moves each HTTP/2 stream's future into its own task, several copies on the
    // way, and serving one is kilobytes of state; copied whole, it costs more than the box.
    Ok(Box::pin(exchange.serve(req.map(ClientBody::Hyper))).await)
}

impl Exchange {
    /// Serves a request hyper's server read: HTTP/2, or HTTP/1.x when hyper serves it all
    /// ([`crate::Http1Engine::Hyper`]).
    pub(crate) async fn serve(&mut self, req: Request<ClientBody>) -> Response<ProxyBody> {
        let version = match req.version() {
            Version::HTTP_10 => request::Version::Http10,
            Version::HTTP_11 => request::Version::Http11,
            _ => request::Version::Http2,
        };
        let uri = req.uri();
        let target = request::Target::Split {
            scheme: uri.scheme_str(),
            authority: uri.authority().map(http::uri::Authority::as_str),
            path_and_query: uri.path_and_query().map_or("", http::uri::PathAndQuery::as_str),
        };
        let head = request::Head { method: req.method().as_str(), version, target, fields: req.headers() };
        let checked = match request::check(&head) {
            Ok(checked) => checked,
            Err(refusal) => return self.refuse(refusal),
        };
        let table = Arc::clone(&self.table);
        let length = checked.length();
        let head = Head {
            method: req.method().as_str(),
            host: checked.authority,
            path: checked.path,
            query: checked.query,
            length,
            fields: req.headers(),
        };
        let mut answer = match self.decide(&table, &head) {
            Decision::Answer(status, text) => self.local(status, &text),
            Decision::Redirect(status, location) => self.redirect(status, &location),
            Decision::Forward(forward) => {
                let host = checked.authority.to_owned();
                return self.forward(req, forward, &host).await;
            }
        };
        // A body that is not read leaves an HTTP/1 connection unusable, as on the HTTP/1.1 engine.
        if checked.has_body() {
            answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        answer
    }
}
