//! The HTTP router of a service: splits requests across revisions by weight.
//!
//! A real HTTP/1.1 reverse proxy on hyper. Request and response bodies stream through; connections
//! to upstreams are pooled and kept alive. A revision is chosen by smooth weighted round-robin
//! (nginx's algorithm), so a split is exact over a short run rather than right only on average, and
//! its upstreams take turns. A connection refused by an upstream is retried once elsewhere, because
//! the request never reached it: that keeps a process being replaced invisible to clients.
//!
//! Nothing here knows about services: the same router is the multi-region front door, with regions
//! as revisions and each region's router as their upstream.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mahavishnu_core::deploy::RevisionMetrics;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::{self, Registry, RevisionStats};

/// The header naming the revision that answered, added to every proxied response.
pub const REVISION_HEADER: &str = "x-mahavishnu-revision";

/// The attribute of a Pub/Sub push message that carries a probe's nonce.
pub const PROBE_ATTRIBUTE: &str = "mahavishnu_probe";

/// How much of a probe path's request body is buffered to look for a nonce. A Pub/Sub push that
/// carries a probe is small; a bigger body is forwarded without being inspected.
const PROBE_BODY_LIMIT: usize = 1 << 20;

/// How many probe answers are remembered; the oldest are forgotten first, so a caller that never
/// reads its answers cannot grow the router without bound.
const PROBE_ANSWERS_KEPT: usize = 256;

/// Name under which requests are counted when no revision could be chosen at all.
const NO_REVISION: &str = "-";

/// One process of a revision: where it listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Its address, normally on loopback.
    pub addr: SocketAddr,
}

/// A revision and its share of traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRevision {
    /// The revision's name, sent back in `x-mahavishnu-revision` and used to key its metrics.
    pub name: String,
    /// Its weight, relative to the other revisions' (normally percentages adding up to 100).
    pub weight: u8,
    /// Its healthy processes; a revision with none gets no traffic, whatever its weight.
    pub upstreams: Vec<Upstream>,
}

/// Every revision a router splits traffic across.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// The revisions, in any order.
    pub revisions: Vec<RouteRevision>,
}

/// A running router. Cheap to clone; every clone controls the same listener, which stops when
/// [`Router::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Router {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("port", &self.handle.port)
            .finish_non_exhaustive()
    }
}

/// What the clones of a `Router` share. Dropping it drops the shutdown sender, which stops the
/// accept loop and winds down open connections.
struct Handle {
    shared: Arc<Shared>,
    port: u16,
    shutdown: watch::Sender<bool>,
}

impl Router {
    /// Binds 127.0.0.1:`port` (0 = any free port) and starts serving on the current tokio runtime.
    /// Until [`Router::set_routes`] is called every request is answered 503.
    pub async fn bind(port: u16) -> std::io::Result<Router> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let port = listener.local_addr()?.port();
        let (shutdown, watcher) = watch::channel(false);
        let shared = Arc::new(Shared::new());
        tokio::spawn(serve(listener, Arc::clone(&shared), watcher));
        Ok(Router {
            handle: Arc::new(Handle {
                shared,
                port,
                shutdown,
            }),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.handle.port
    }

    /// Replaces the table atomically: the very next request to arrive is routed by the new one, so a
    /// rollback is visible at once. Requests already sent upstream finish where they went.
    pub fn set_routes(&self, table: RouteTable) {
        self.handle.shared.set_routes(table);
    }

    /// Per-revision summaries over the last minute plus totals since the router started, for every
    /// revision any table has named (and `-` once a request found no revision at all).
    pub fn metrics(&self) -> BTreeMap<String, RevisionMetrics> {
        self.handle.shared.registry.summaries()
    }

    /// Appends the Prometheus text exposition of this router to `out`, labelled `service`.
    pub fn prometheus(&self, service: &str, out: &mut String) {
        Router::prometheus_all([(service, self)], out);
    }

    /// Appends the Prometheus text exposition of several routers to `out`, each metric family once
    /// (a scrape holding the same family twice is rejected by strict parsers).
    pub fn prometheus_all<'a>(
        routers: impl IntoIterator<Item = (&'a str, &'a Router)>,
        out: &mut String,
    ) {
        let registries: Vec<(&str, &Registry)> = routers
            .into_iter()
            .map(|(service, router)| (service, &router.handle.shared.registry))
            .collect();
        metrics::write_prometheus(registries, out);
    }

    /// Watches POSTs to `path` for a Pub/Sub push whose message attribute `mahavishnu_probe` is
    /// `nonce`. Only requests to paths with a pending probe are inspected, and only their bodies are
    /// buffered (up to 1 MiB; a bigger body is forwarded uninspected).
    pub fn expect_probe(&self, path: &str, nonce: &str) {
        self.handle.shared.probes.expect(path, nonce);
    }

    /// The status the upstream answered the probe push carrying `nonce` with, once it has.
    pub fn probe_answer(&self, nonce: &str) -> Option<u16> {
        self.handle.shared.probes.answer(nonce)
    }

    /// Makes this router a front door: an idempotent request that one revision (a region) answers
    /// with 502 or 503 is asked again of another.
    pub fn set_failover(&self, on: bool) {
        self.handle.shared.failover.store(on, Ordering::Relaxed);
    }

    /// Stops listening; open connections finish the request they are serving and close.
    pub fn shutdown(&self) {
        self.handle.shutdown.send_replace(true);
    }
}

/// Everything the connections of one router share.
struct Shared {
    client: Client<HttpConnector, UpBody>,
    balancer: Mutex<Balancer>,
    registry: Registry,
    probes: Probes,
    /// Whether a 502 or 503 answer sends an idempotent request to another revision (a front door,
    /// whose revisions are regions).
    failover: AtomicBool,
}

/// The current table and the smooth weighted round-robin state over it. Both change together
/// under one lock, so a request never sees a table with another table's weights.
struct Balancer {
    table: Arc<[Arc<LiveRevision>]>,
    current: Vec<i64>,
}

/// A revision that can take traffic: weight above zero and at least one upstream.
struct LiveRevision {
    /// Its name as a header value; `None` if the name cannot be one (the response then goes
    /// without the header rather than failing).
    header: Option<HeaderValue>,
    stats: Arc<RevisionStats>,
    weight: i64,
    upstreams: Vec<Authority>,
    next: AtomicUsize,
}

impl LiveRevision {
    /// The index of the upstream whose turn it is.
    fn next_upstream(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len()
    }
}

impl Shared {
    fn new() -> Shared {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Upstreams are on this machine: a connect that takes seconds means a wedged process, and
        // failing it lets the retry send the request elsewhere.
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Shared {
            client,
            balancer: Mutex::new(Balancer {
                table: Arc::from(Vec::new()),
                current: Vec::new(),
            }),
            registry: Registry::new(),
            probes: Probes::default(),
            failover: AtomicBool::new(false),
        }
    }

    fn set_routes(&self, table: RouteTable) {
        let mut live = Vec::with_capacity(table.revisions.len());
        for revision in &table.revisions {
            // Every named revision gets counters, so metrics list a revision at 0 % too.
            let stats = self.registry.revision(&revision.name);
            let upstreams: Vec<Authority> = revision
                .upstreams
                .iter()
                .filter_map(|u| Authority::try_from(u.addr.to_string()).ok())
                .collect();
            if revision.weight == 0 || upstreams.is_empty() {
                continue;
            }
            live.push(Arc::new(LiveRevision {
                header: HeaderValue::from_str(&revision.name).ok(),
                stats,
                weight: i64::from(revision.weight),
                upstreams,
                next: AtomicUsize::new(0),
            }));
        }
        let current = vec![0; live.len()];
        let mut balancer = self.balancer.lock().unwrap_or_else(PoisonError::into_inner);
        *balancer = Balancer {
            table: Arc::from(live),
            current,
        };
    }

    /// Smooth weighted round-robin: every revision gains its weight, the one with the most is
    /// chosen and pays back the total. Over any run of `total` picks each revision gets exactly
    /// its weight, interleaved. `exclude` leaves one revision out (a retry after it refused).
    /// Also says whether the table has another revision to retry on.
    fn pick(&self, exclude: Option<&Arc<LiveRevision>>) -> Option<(Arc<LiveRevision>, bool)> {
        let mut guard = self.balancer.lock().unwrap_or_else(PoisonError::into_inner);
        let Balancer { table, current } = &mut *guard;
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, revision) in table.iter().enumerate() {
            if exclude.is_some_and(|e| Arc::ptr_eq(e, revision)) {
                continue;
            }
            current[i] += revision.weight;
            total += revision.weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some((Arc::clone(&table[best]), table.len() > 1))
    }

    async fn handle(
        &self,
        peer: IpAddr,
        request: Request<Incoming>,
    ) -> Result<Response<RespBody>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();

        // Only a pending probe makes a body worth buffering; every other request streams.
        let mut probe: Option<String> = None;
        let (body, mut recover) = if parts.method == Method::POST
            && self.probes.watches(parts.uri.path())
        {
            match buffer_prefix(body, PROBE_BODY_LIMIT).await {
                Ok(Buffered::Whole(bytes)) => {
                    probe = self.probes.nonce_in(parts.uri.path(), &bytes);
                    (UpBody::full(bytes.clone()), Recover::Bytes(bytes))
                }
                Ok(Buffered::Prefix(prefix, rest)) => (
                    UpBody(UpInner::Prefixed(Some(prefix), rest)),
                    Recover::Nothing,
                ),
                Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "unreadable request body\n")),
            }
        } else {
            UpBody::from_client(body)
        };

        strip_hop_by_hop(&mut parts.headers);
        add_forwarded_for(&mut parts.headers, peer);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        let Some((revision, other_revisions)) = self.pick(None) else {
            self.registry
                .revision(NO_REVISION)
                .record(Instant::now(), started.elapsed(), true);
            return Ok(no_healthy());
        };
        let upstream = revision.next_upstream();
        let can_retry = other_revisions || revision.upstreams.len() > 1;
        // The request is consumed by the client, so a retry needs its own copy of the head; make
        // one only when there is somewhere to retry.
        let spare_headers = (can_retry && recover.possible()).then(|| parts.headers.clone());

        let first = self
            .client
            .request(upstream_request(
                &parts.method,
                &revision.upstreams[upstream],
                path.clone(),
                parts.headers,
                body,
            ))
            .await;
        // A refused connection never reached the upstream; an idempotent request may be sent again
        // whatever happened to it (RFC 9110, 9.2.2): a kept-alive connection whose upstream died
        // fails only once the request is written on it. A front door also takes a region's 502 or
        // 503 as a reason to ask another region.
        let idempotent = parts.method.is_idempotent();
        let first = match first {
            Ok(response)
                if idempotent
                    && self.failover.load(Ordering::Relaxed)
                    && matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                    )
                    && spare_headers.is_some() =>
            {
                Err(Retry::Unavailable(response))
            }
            Ok(response) => Ok(response),
            Err(error) if error.is_connect() || idempotent => {
                Err(Retry::Failed(error.is_connect()))
            }
            Err(_) => Err(Retry::No),
        };
        let (served_by, outcome) = match first {
            Err(reason @ (Retry::Failed(_) | Retry::Unavailable(_))) => {
                // Try once more, on another process of the same revision, else on another revision.
                let retry = match (spare_headers, recover.take()) {
                    (Some(headers), Some(body)) => {
                        let target = if revision.upstreams.len() > 1 {
                            Some((
                                Arc::clone(&revision),
                                (upstream + 1) % revision.upstreams.len(),
                            ))
                        } else {
                            self.pick(Some(&revision)).map(|(other, _)| {
                                let index = other.next_upstream();
                                (other, index)
                            })
                        };
                        target.map(|(target, index)| (target, index, headers, body))
                    }
                    _ => None,
                };
                match retry {
                    Some((target, index, headers, body)) => {
                        let second = self
                            .client
                            .request(upstream_request(
                                &parts.method,
                                &target.upstreams[index],
                                path,
                                headers,
                                body,
                            ))
                            .await;
                        match second {
                            Ok(response) => (target, Ok(response)),
                            Err(error) if error.is_connect() => (revision, Err(Failure::Refused)),
                            Err(_) => (target, Err(Failure::AfterSend)),
                        }
                    }
                    None => match reason {
                        Retry::Unavailable(response) => (revision, Ok(response)),
                        Retry::Failed(true) => (revision, Err(Failure::Refused)),
                        _ => (revision, Err(Failure::AfterSend)),
                    },
                }
            }
            Err(Retry::No) => (revision, Err(Failure::AfterSend)),
            Ok(response) => (revision, Ok(response)),
        };

        let response = match outcome {
            Ok(response) => {
                let status = response.status();
                served_by
                    .stats
                    .record(Instant::now(), started.elapsed(), status.is_server_error());
                if let Some(nonce) = probe {
                    self.probes.answered(&nonce, status.as_u16());
                }
                let (mut head, body) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                Response::from_parts(head, Either::Left(body))
            }
            Err(failure) => {
                served_by
                    .stats
                    .record(Instant::now(), started.elapsed(), true);
                match failure {
                    Failure::Refused => no_healthy(),
                    Failure::AfterSend => text(
                        StatusCode::BAD_GATEWAY,
                        "bad gateway: the upstream failed before answering\n",
                    ),
                }
            }
        };
        let mut response = response;
        // Appended, not replaced: behind a front door the region's router has already named the
        // revision, and the front door adds the region after it.
        if let Some(name) = &served_by.header {
            response
                .headers_mut()
                .append(HeaderName::from_static(REVISION_HEADER), name.clone());
        }
        Ok(response)
    }
}

/// Why no upstream answered.
/// Why a first attempt may be made again elsewhere.
enum Retry {
    /// The upstream failed before answering; `true` when it refused the connection.
    Failed(bool),
    /// A front door's region answered 502 or 503.
    Unavailable(Response<Incoming>),
    /// It may not be sent again.
    No,
}

enum Failure {
    /// Every upstream tried refused the connection: the request reached none of them.
    Refused,
    /// The request was sent and the upstream failed before a response head came back.
    AfterSend,
}

fn upstream_request(
    method: &Method,
    authority: &Authority,
    path: PathAndQuery,
    headers: HeaderMap,
    body: UpBody,
) -> Request<UpBody> {
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path);
    let mut request = Request::new(body);
    // An authority and a path always make a valid URI; the fallback is never used.
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    *request.method_mut() = method.clone();
    // Upstreams are spoken to in HTTP/1.1 whatever the client spoke, so keep-alive pooling works.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// The response a client gets when no revision can take its request.
fn no_healthy() -> Response<RespBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable: no revision of this service is healthy\n",
    )
}

fn text(status: StatusCode, message: &'static str) -> Response<RespBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        message.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The body of a response to a client: the upstream's, streamed, or the router's own text.
type RespBody = Either<Incoming, Full<Bytes>>;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), so they are never
/// forwarded. `proxy-*` headers are removed by prefix.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too. Collecting them allocates, but only for
    // messages that carry such a header, which HTTP/1.1 clients rarely send.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn add_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let value = match headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {peer}"),
        None => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(FORWARDED_FOR, value);
    }
}

/// The body sent upstream.
struct UpBody(UpInner);

enum UpInner {
    /// The client's body, not yet polled. It waits in a slot the handler also holds: hyper polls a
    /// body only once its connection is up, so after a refused connect the body is still in the
    /// slot and the handler takes it back for the retry.
    Waiting {
        slot: Arc<Mutex<Option<Incoming>>>,
        hint: SizeHint,
    },
    /// The client's body, being forwarded.
    Streaming(Incoming),
    /// A body held whole (empty, or a buffered probe push).
    Full(Option<Bytes>),
    /// A probe path's body too big to inspect: what was buffered, then the rest.
    Prefixed(Option<Bytes>, Incoming),
}

/// How to get the request body back for a retry.
enum Recover {
    Empty,
    Bytes(Bytes),
    Slot(Arc<Mutex<Option<Incoming>>>),
    Nothing,
}

impl Recover {
    fn possible(&self) -> bool {
        !matches!(self, Recover::Nothing)
    }

    /// The body again, unless it was already sent.
    fn take(&mut self) -> Option<UpBody> {
        match std::mem::replace(self, Recover::Nothing) {
            Recover::Empty => Some(UpBody(UpInner::Full(None))),
            Recover::Bytes(bytes) => Some(UpBody::full(bytes)),
            Recover::Slot(slot) => {
                let body = slot.lock().unwrap_or_else(PoisonError::into_inner).take()?;
                Some(UpBody(UpInner::Streaming(body)))
            }
            Recover::Nothing => None,
        }
    }
}

impl UpBody {
    fn full(bytes: Bytes) -> UpBody {
        UpBody(UpInner::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// Wraps the client's body. An empty body (most GETs) needs no slot, so the common case
    /// allocates nothing.
    fn from_client(body: Incoming) -> (UpBody, Recover) {
        if body.is_end_stream() {
            return (UpBody(UpInner::Full(None)), Recover::Empty);
        }
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        (
            UpBody(UpInner::Waiting {
                slot: Arc::clone(&slot),
                hint,
            }),
            Recover::Slot(slot),
        )
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let inner = &mut self.0;
        loop {
            match inner {
                UpInner::Waiting { slot, .. } => {
                    // Once polled, the body is on its way: take it out of the slot so the handler
                    // can no longer retry with it.
                    let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    match taken {
                        Some(body) => *inner = UpInner::Streaming(body),
                        None => *inner = UpInner::Full(None),
                    }
                }
                UpInner::Streaming(body) => return Pin::new(body).poll_frame(cx),
                UpInner::Full(bytes) => {
                    return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
                }
                UpInner::Prefixed(prefix, rest) => {
                    if let Some(prefix) = prefix.take() {
                        return Poll::Ready(Some(Ok(Frame::data(prefix))));
                    }
                    return Pin::new(rest).poll_frame(cx);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            // A body that was empty never gets a slot, so a waiting one has data to come.
            UpInner::Waiting { .. } => false,
            UpInner::Streaming(body) => body.is_end_stream(),
            UpInner::Full(bytes) => bytes.is_none(),
            UpInner::Prefixed(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            UpInner::Waiting { hint, .. } => *hint,
            UpInner::Streaming(body) => body.size_hint(),
            UpInner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpInner::Prefixed(prefix, rest) => {
                let extra = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

/// A probe path's body: whole when it fits the limit, else what was read and the rest.
enum Buffered {
    Whole(Bytes),
    Prefix(Bytes, Incoming),
}

async fn buffer_prefix(mut body: Incoming, limit: usize) -> Result<Buffered, hyper::Error> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers on a push are not part of what is inspected; they are dropped.
        if let Ok(data) = frame?.into_data() {
            buffer.extend_from_slice(&data);
            if buffer.len() > limit {
                return Ok(Buffered::Prefix(buffer.freeze(), body));
            }
        }
    }
    Ok(Buffered::Whole(buffer.freeze()))
}

/// Pending probes and the answers seen. `pending` is read without the lock on every request, so a
/// router with no probe pending never takes it.
#[derive(Default)]
struct Probes {
    pending: AtomicUsize,
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    /// (path, nonce) pairs still waiting for their push.
    expected: Vec<(String, String)>,
    /// (nonce, status) of pushes answered, oldest first.
    answers: VecDeque<(String, u16)>,
}

/// The part of a Pub/Sub push envelope a probe is recognised by.
#[derive(serde::Deserialize)]
struct Envelope {
    message: EnvelopeMessage,
}

#[derive(serde::Deserialize)]
struct EnvelopeMessage {
    #[serde(default)]
    attributes: BTreeMap<String, serde_json::Value>,
}

impl Probes {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expect(&self, path: &str, nonce: &str) {
        let mut state = self.lock();
        if !state.expected.iter().any(|(p, n)| p == path && n == nonce) {
            state.expected.push((path.to_owned(), nonce.to_owned()));
        }
        self.pending.store(state.expected.len(), Ordering::Release);
    }

    fn watches(&self, path: &str) -> bool {
        self.pending.load(Ordering::Acquire) > 0
            && self.lock().expected.iter().any(|(p, _)| p == path)
    }

    /// The pending nonce a push to `path` with this body carries, if any.
    fn nonce_in(&self, path: &str, body: &[u8]) -> Option<String> {
        let envelope: Envelope = serde_json::from_slice(body).ok()?;
        let nonce = envelope.message.attributes.get(PROBE_ATTRIBUTE)?.as_str()?;
        let state = self.lock();
        state
            .expected
            .iter()
            .any(|(p, n)| p == path && n == nonce)
            .then(|| nonce.to_owned())
    }

    fn answered(&self, nonce: &str, status: u16) {
        let mut state = self.lock();
        state.expected.retain(|(_, n)| n != nonce);
        self.pending.store(state.expected.len(), Ordering::Release);
        state.answers.retain(|(n, _)| n != nonce);
        if state.answers.len() >= PROBE_ANSWERS_KEPT {
            state.answers.pop_front();
        }
        state.answers.push_back((nonce.to_owned(), status));
    }

    fn answer(&self, nonce: &str) -> Option<u16> {
        self.lock()
            .answers
            .iter()
            .find(|(n, _)| n == nonce)
            .map(|(_, status)| *status)
    }
}

/// Resolves once the router is shut down, or dropped (the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; dropping it here keeps the callers' futures
    // spawnable.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections until the router is shut down or dropped.
async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(
                    stream,
                    peer.ip(),
                    Arc::clone(&shared),
                    shutdown.clone(),
                ));
            }
            // Out of file descriptors and the like: pause instead of spinning on the error, and
            // keep serving the connections already open.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: IpAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { shared.handle(peer, request).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use http_body_util::StreamBody;

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    /// A tiny upstream named `name`: `/echo` streams the request body back, `/fail` answers 500,
    /// `/slow` answers after 100 ms, `/push` answers 202 once it has read the body, anything else
    /// answers 200 with the name.
    async fn upstream(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| async move {
                    let response: Response<Either<Incoming, Full<Bytes>>> =
                        match request.uri().path() {
                            "/echo" => Response::new(Either::Left(request.into_body())),
                            "/fail" => {
                                let mut r = Response::new(Either::Right(Full::from(name)));
                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                r
                            }
                            "/slow" => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                Response::new(Either::Right(Full::from(name)))
                            }
                            "/push" => {
                                let _ = request.into_body().collect().await;
                                let mut r = Response::new(Either::Right(Full::from(name)));
                                *r.status_mut() = StatusCode::ACCEPTED;
                                r
                            }
                            _ => Response::new(Either::Right(Full::from(name))),
                        };
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// An address nothing listens on: bound, then closed.
    async fn dead_addr() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    }

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build(HttpConnector::new())
    }

    fn revision(name: &str, weight: u8, addrs: &[SocketAddr]) -> RouteRevision {
        RouteRevision {
            name: name.to_owned(),
            weight,
            upstreams: addrs.iter().map(|&addr| Upstream { addr }).collect(),
        }
    }

    fn table(revisions: Vec<RouteRevision>) -> RouteTable {
        RouteTable { revisions }
    }

    /// Sends one request and returns the status, the revision header and the body.
    async fn send(
        client: &TestClient,
        router: &Router,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> (u16, Option<String>, String) {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", router.port()))
            .body(Full::new(body))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let revision = response
            .headers()
            .get(REVISION_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            revision,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn get(
        client: &TestClient,
        router: &Router,
        path: &str,
    ) -> (u16, Option<String>, String) {
        send(client, router, Method::GET, path, Bytes::new()).await
    }

    #[tokio::test]
    async fn split_90_10_over_2000_requests_is_within_two_points() {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![
            revision("rev-a", 90, &[a]),
            revision("rev-b", 10, &[b]),
        ]));
        let client = client();
        let mut to_a = 0;
        for _ in 0..2000 {
            let (status, header, body) = get(&client, &router, "/").await;
            assert_eq!(status, 200);
            match body.as_str() {
                "a" => {
                    assert_eq!(header.as_deref(), Some("rev-a"));
                    to_a += 1;
                }
                "b" => assert_eq!(header.as_deref(), Some("rev-b")),
                other => panic!("unexpected body {other}"),
            }
        }
        let share = f64::from(to_a) / 2000.0 * 100.0;
        assert!((88.0..=92.0).contains(&share), "rev-a got {share} %");
        let metrics = router.metrics();
        assert_eq!(metrics["rev-a"].requests, to_a as u64);
        assert_eq!(metrics["rev-b"].requests, 2000 - to_a as u64);
    }

    #[tokio::test]
    async fn upstreams_of_a_revision_take_turns() {
        let (a1, a2) = (upstream("a1").await, upstream("a2").await);
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[a1, a2])]));
        let client = client();
        let mut bodies = Vec::new();
        for _ in 0..10 {
            bodies.push(get(&client, &router, "/").await.2);
        }
        assert_eq!(
            bodies.iter().filter(|b| *b == "a1").count(),
            5,
            "{bodies:?}"
        );
        assert_eq!(
            bodies.iter().filter(|b| *b == "a2").count(),
            5,
            "{bodies:?}"
        );
    }

    #[tokio::test]
    async fn set_routes_takes_effect_on_the_very_next_request() {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let router = Router::bind(0).await.unwrap();
        let client = client();
        for round in 0..20 {
            router.set_routes(table(vec![
                revision("rev-a", 100, &[a]),
                revision("rev-b", 0, &[b]),
            ]));
            assert_eq!(get(&client, &router, "/").await.2, "a", "round {round}");
            // The rollout, then the rollback: each must show on the next request.
            router.set_routes(table(vec![
                revision("rev-a", 0, &[a]),
                revision("rev-b", 100, &[b]),
            ]));
            assert_eq!(get(&client, &router, "/").await.2, "b", "round {round}");
        }
    }

    #[tokio::test]
    async fn revision_without_upstreams_gets_no_traffic_and_nothing_answers_503() {
        let b = upstream("b").await;
        let router = Router::bind(0).await.unwrap();
        let client = client();
        // Before any table, and with a table of nothing servable: 503, counted under "-".
        let (status, header, body) = get(&client, &router, "/").await;
        assert_eq!(status, 503);
        assert_eq!(header, None);
        assert!(
            body.contains("no revision of this service is healthy"),
            "{body}"
        );

        router.set_routes(table(vec![
            revision("rev-a", 90, &[]),
            revision("rev-b", 10, &[b]),
            revision("rev-c", 0, &[b]),
        ]));
        for _ in 0..50 {
            let (status, header, _) = get(&client, &router, "/").await;
            assert_eq!((status, header.as_deref()), (200, Some("rev-b")));
        }

        router.set_routes(table(vec![
            revision("rev-a", 100, &[]),
            revision("rev-c", 0, &[b]),
        ]));
        assert_eq!(get(&client, &router, "/").await.0, 503);

        let metrics = router.metrics();
        assert_eq!(metrics["-"].requests, 2);
        assert_eq!(metrics["-"].errors, 2);
        assert_eq!(metrics["rev-a"].requests, 0);
        assert_eq!(metrics["rev-b"].requests, 50);
        assert_eq!(metrics["rev-c"].requests, 0);
    }

    #[tokio::test]
    async fn dead_upstream_is_retried_on_a_live_one() {
        let live = upstream("live").await;
        let other = upstream("other").await;
        let dead = dead_addr().await;
        let router = Router::bind(0).await.unwrap();
        let client = client();

        // Same revision first: every request that picks the dead process lands on the live one.
        router.set_routes(table(vec![revision("rev-a", 100, &[dead, live])]));
        for _ in 0..10 {
            let (status, _, body) = get(&client, &router, "/").await;
            assert_eq!((status, body.as_str()), (200, "live"));
        }
        // A body is retried too: it was never sent.
        for _ in 0..4 {
            let (status, _, body) = send(
                &client,
                &router,
                Method::POST,
                "/echo",
                Bytes::from_static(b"hello"),
            )
            .await;
            assert_eq!((status, body.as_str()), (200, "hello"));
        }

        // Then another revision: a revision whose only process is gone hands its share over.
        router.set_routes(table(vec![
            revision("rev-a", 90, &[dead]),
            revision("rev-b", 10, &[other]),
        ]));
        for _ in 0..10 {
            let (status, header, body) = get(&client, &router, "/").await;
            assert_eq!(
                (status, header.as_deref(), body.as_str()),
                (200, Some("rev-b"), "other")
            );
        }

        // Nowhere to go: 503, counted as an error of the revision chosen.
        router.set_routes(table(vec![revision("rev-c", 100, &[dead])]));
        assert_eq!(get(&client, &router, "/").await.0, 503);
        let metrics = router.metrics();
        assert_eq!((metrics["rev-c"].requests, metrics["rev-c"].errors), (1, 1));
        assert_eq!(
            (metrics["rev-b"].requests, metrics["rev-b"].errors),
            (10, 0)
        );
    }

    #[tokio::test]
    async fn failure_after_sending_is_502_and_retried_only_when_idempotent() {
        // Accepts, reads the request, and hangs up without answering.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let rude = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            }
        });
        let live = upstream("live").await;
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[rude, live])]));
        let client = client();
        // A POST may have done its work before the upstream hung up: it is not sent again.
        let (status, header, _) = send(
            &client,
            &router,
            Method::POST,
            "/",
            Bytes::from_static(b"order"),
        )
        .await;
        assert_eq!((status, header.as_deref()), (502, Some("rev-a")));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(router.metrics()["rev-a"].errors, 1);
        // A GET may be sent again (a kept-alive connection to a process that died fails this way):
        // the live process answers it, whichever of the two the turn starts with.
        for _ in 0..2 {
            let (status, _, body) = get(&client, &router, "/").await;
            assert_eq!((status, body.as_str()), (200, "live"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_front_door_asks_another_region_when_one_answers_503() {
        let down = crate::router::Router::bind(0).await.unwrap(); // a region's router with nothing healthy
        let up = upstream("b").await;
        let door = Router::bind(0).await.unwrap();
        let down_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, down.port()));
        door.set_routes(table(vec![
            revision("region-a", 1, &[down_addr]),
            revision("region-b", 1, &[up]),
        ]));
        let client = client();
        let (status, _, _) = get(&client, &door, "/").await;
        let (again, _, _) = get(&client, &door, "/").await;
        assert!(
            status == 503 || again == 503,
            "without failover one of two requests meets region-a's 503"
        );
        door.set_failover(true);
        for _ in 0..4 {
            let (status, _, body) = get(&client, &door, "/").await;
            assert_eq!((status, body.as_str()), (200, "b"));
        }
        let (status, _, _) = send(&client, &door, Method::POST, "/", Bytes::new()).await;
        let (again, _, _) = send(&client, &door, Method::POST, "/", Bytes::new()).await;
        assert!(
            status == 503 || again == 503,
            "a POST is not sent to a second region"
        );
    }

    #[tokio::test]
    async fn bodies_stream_both_ways() {
        let echo = upstream("echo").await;
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[echo])]));

        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, router.port()))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, StreamBody<_>>(TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let request = Request::post("/echo")
            .header(header::HOST, "svc")
            .body(StreamBody::new(rx))
            .unwrap();
        let response = tokio::spawn(sender.send_request(request));

        // 5 MB in 64 KiB chunks of varying bytes. The first chunk must come back before the
        // second is sent: a router that buffered either body would never answer, and the
        // timeout fails the test.
        let chunk = |i: usize| {
            Bytes::from(
                (0..65536)
                    .map(|j| ((i * 31 + j) % 251) as u8)
                    .collect::<Vec<u8>>(),
            )
        };
        let chunks = 5_000_000usize.div_ceil(65536);
        let mut expected = Vec::new();
        tx.send(Ok(Frame::data(chunk(0)))).await.unwrap();
        expected.extend_from_slice(&chunk(0));
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("the response head came before the request body ended")
            .unwrap()
            .unwrap();
        assert_eq!(response.headers()[REVISION_HEADER], "rev-a");
        let mut body = response.into_body();
        let mut received = Vec::new();
        while received.len() < 65536 {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("the first chunk came back before the rest was sent")
                .unwrap()
                .unwrap();
            received.extend_from_slice(&frame.into_data().unwrap());
        }
        let sending = tokio::spawn(async move {
            for i in 1..chunks {
                tx.send(Ok(Frame::data(chunk(i)))).await.unwrap();
            }
        });
        for i in 1..chunks {
            expected.extend_from_slice(&chunk(i));
        }
        while let Some(frame) = body.frame().await {
            received.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        sending.await.unwrap();
        assert!(expected.len() >= 5_000_000);
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "the echoed body differs");
    }

    #[tokio::test]
    async fn metrics_count_requests_and_errors_per_revision() {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![
            revision("rev-a", 50, &[a]),
            revision("rev-b", 50, &[b]),
        ]));
        let client = client();
        // Equal weights alternate, so each revision gets 45 good requests and 5 errors.
        for _ in 0..90 {
            assert_eq!(get(&client, &router, "/").await.0, 200);
        }
        for _ in 0..10 {
            assert_eq!(get(&client, &router, "/fail").await.0, 500);
        }
        let metrics = router.metrics();
        for name in ["rev-a", "rev-b"] {
            let m = &metrics[name];
            assert_eq!((m.requests, m.errors), (50, 5), "{name}: {m:?}");
            assert!((m.error_rate - 0.1).abs() < 1e-9, "{name}: {m:?}");
            assert!(m.rps > 0.0, "{name}: {m:?}");
        }

        // One revision, 98 quick requests and 2 that take 100 ms: the median stays low, the 99th
        // percentile is the slow ones.
        router.set_routes(table(vec![revision("rev-slow", 100, &[a])]));
        for _ in 0..98 {
            get(&client, &router, "/").await;
        }
        for _ in 0..2 {
            get(&client, &router, "/slow").await;
        }
        let m = &router.metrics()["rev-slow"];
        assert_eq!((m.requests, m.errors), (100, 0));
        let (p50, p99) = (m.p50_ms.unwrap(), m.p99_ms.unwrap());
        assert!(p50 > 0.0 && p50 < 20.0, "p50 {p50}");
        assert!((90.0..400.0).contains(&p99), "p99 {p99}");
    }

    /// Parses one sample line `name{k="v",...} value`, returning the name, labels and value.
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let open = line.find('{').expect("labels");
        let name = &line[..open];
        assert!(!name.is_empty());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line}"
        );
        let mut labels = Vec::new();
        let mut rest = line[open + 1..].chars().peekable();
        loop {
            let key: String = std::iter::from_fn(|| rest.next_if(|c| *c != '=')).collect();
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad key in {line}"
            );
            assert_eq!(rest.next(), Some('='), "{line}");
            assert_eq!(rest.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match rest.next().expect("unterminated label value") {
                    '\\' => match rest.next() {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => panic!("bad escape {other:?} in {line}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match rest.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("unexpected {other:?} in {line}"),
            }
        }
        assert_eq!(rest.next(), Some(' '), "{line}");
        let value: String = rest.collect();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        (name.to_owned(), labels, value)
    }

    #[tokio::test]
    async fn prometheus_text_parses_line_by_line() {
        let a = upstream("a").await;
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[a])]));
        let client = client();
        for _ in 0..7 {
            get(&client, &router, "/").await;
        }
        get(&client, &router, "/fail").await;
        let mut out = String::new();
        router.prometheus("web \"main\"", &mut out);

        let mut samples = BTreeMap::new();
        for line in out.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                assert!(
                    comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                    "{line}"
                );
                continue;
            }
            let (name, labels, value) = parse_sample(line);
            assert_eq!(
                labels[0],
                ("service".to_owned(), "web \"main\"".to_owned()),
                "{line}"
            );
            assert_eq!(labels[1].0, "revision", "{line}");
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.clone());
            samples.insert((name, labels[1].1.clone(), le), value);
        }
        let sample = |name: &str, le: Option<&str>| {
            samples[&(name.to_owned(), "rev-a".to_owned(), le.map(str::to_owned))]
        };
        assert_eq!(sample("mahavishnu_requests_total", None), 8.0);
        assert_eq!(sample("mahavishnu_request_errors_total", None), 1.0);
        assert_eq!(
            sample("mahavishnu_request_duration_seconds_count", None),
            8.0
        );
        assert_eq!(
            sample("mahavishnu_request_duration_seconds_bucket", Some("+Inf")),
            8.0
        );
        let sum = sample("mahavishnu_request_duration_seconds_sum", None);
        assert!(sum > 0.0 && sum < 8.0, "sum {sum}");
        for kind in ["counter", "histogram"] {
            assert!(out.contains(&format!(" {kind}\n")), "{out}");
        }
    }

    /// A Pub/Sub push envelope carrying `nonce`, padded to at least `size` bytes.
    fn push(nonce: &str, size: usize) -> Bytes {
        let data = "x".repeat(size);
        Bytes::from(
            serde_json::json!({
                "message": {
                    "data": data,
                    "attributes": { PROBE_ATTRIBUTE: nonce },
                    "messageId": "1",
                },
                "subscription": "projects/p/subscriptions/s",
            })
            .to_string(),
        )
    }

    #[tokio::test]
    async fn probe_push_is_recorded_with_the_upstream_status() {
        let a = upstream("a").await;
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[a])]));
        let client = client();
        router.expect_probe("/push", "n-1");

        // The right nonce on another path is not inspected.
        let (status, _, _) = send(&client, &router, Method::POST, "/other", push("n-1", 10)).await;
        assert_eq!(status, 200);
        assert_eq!(router.probe_answer("n-1"), None);
        // Another nonce on the watched path is not it; too big a body is forwarded intact, not
        // inspected.
        send(&client, &router, Method::POST, "/push", push("n-2", 10)).await;
        assert_eq!(router.probe_answer("n-2"), None);
        let big = push("n-1", 2 << 20);
        let (status, _, _) = send(&client, &router, Method::POST, "/push", big.clone()).await;
        assert_eq!(status, 202);
        assert_eq!(router.probe_answer("n-1"), None);
        let (status, _, echoed) = send(&client, &router, Method::POST, "/echo", big.clone()).await;
        assert_eq!((status, echoed.len()), (200, big.len()));
        // A GET on the path is not a push.
        get(&client, &router, "/push").await;
        assert_eq!(router.probe_answer("n-1"), None);

        send(&client, &router, Method::POST, "/push", push("n-1", 10)).await;
        assert_eq!(router.probe_answer("n-1"), Some(202));
        assert_eq!(router.probe_answer("n-2"), None);
        assert_eq!(
            router.handle.shared.probes.pending.load(Ordering::SeqCst),
            0
        );
    }

    #[tokio::test]
    async fn probe_path_body_larger_than_the_limit_is_forwarded_intact() {
        let echo = upstream("echo").await;
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[echo])]));
        router.expect_probe("/echo", "n-1");
        let client = client();
        let big = push("n-1", 3 << 20);
        let (status, _, echoed) = send(&client, &router, Method::POST, "/echo", big.clone()).await;
        assert_eq!(status, 200);
        assert!(echoed.as_bytes() == &big[..], "the body changed on its way");
        assert_eq!(router.probe_answer("n-1"), None);
        // A small one on the same path is inspected and passes through whole as well.
        let small = push("n-1", 100);
        let (status, _, echoed) =
            send(&client, &router, Method::POST, "/echo", small.clone()).await;
        assert_eq!((status, echoed.as_bytes()), (200, &small[..]));
        assert_eq!(router.probe_answer("n-1"), Some(200));
    }

    #[tokio::test]
    async fn headers_are_forwarded_without_hop_by_hop_ones() {
        // An upstream that answers with the request's headers, one per line, and some hop-by-hop
        // headers of its own.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let mut lines = format!("{} {}\n", request.method(), request.uri());
                    for (name, value) in request.headers() {
                        lines.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
                    }
                    let mut response = Response::new(Full::new(Bytes::from(lines)));
                    response
                        .headers_mut()
                        .insert("x-upstream", HeaderValue::from_static("1"));
                    response
                        .headers_mut()
                        .insert("proxy-authenticate", HeaderValue::from_static("x"));
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let router = Router::bind(0).await.unwrap();
        router.set_routes(table(vec![revision("rev-a", 100, &[addr])]));
        let client = client();
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(format!("http://127.0.0.1:{}/a/b?c=d&e", router.port()))
            .header("x-custom", "kept")
            .header("x-forwarded-for", "10.0.0.1")
            .header("proxy-authorization", "secret")
            .header("te", "trailers")
            .header("connection", "x-drop-me")
            .header("x-drop-me", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.headers()["x-upstream"], "1");
        assert_eq!(response.headers()[REVISION_HEADER], "rev-a");
        assert!(!response.headers().contains_key("proxy-authenticate"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8(body.to_vec()).unwrap();
        assert!(seen.starts_with("DELETE /a/b?c=d&e\n"), "{seen}");
        assert!(seen.contains("x-custom: kept\n"), "{seen}");
        assert!(
            seen.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1\n"),
            "{seen}"
        );
        assert!(
            seen.contains(&format!("host: 127.0.0.1:{}\n", router.port())),
            "{seen}"
        );
        for dropped in [
            "proxy-authorization",
            "te:",
            "x-drop-me",
            "connection: x-drop",
        ] {
            assert!(!seen.contains(dropped), "{dropped} forwarded: {seen}");
        }
    }

    #[tokio::test]
    async fn shutdown_stops_listening() {
        let router = Router::bind(0).await.unwrap();
        let port = router.port();
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
        );
        router.clone().shutdown();
        // The accept loop ends on its next turn; give it a moment.
        let mut refused = false;
        for _ in 0..50 {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "still listening after shutdown");

        // Dropping the last clone stops it too.
        let router = Router::bind(0).await.unwrap();
        let port = router.port();
        drop(router);
        let mut refused = false;
        for _ in 0..50 {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "still listening after the last clone was dropped");
    }
}
