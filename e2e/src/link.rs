//! A bandwidth-limiting, fault-injecting HTTP proxy that stands for one network link.
//!
//! [`Link::start`] puts a link in front of an upstream (the local registry); clients talk to
//! [`Link::addr`] instead, and the test turns the link's faults on and off while they do.
//! The link forwards HTTP/1.1 requests as they are and streams every body through, so memory
//! stays bounded whatever the size of a blob.
//!
//! A request meets, in order: the counters, the pause switch, the injected failures and the
//! Range stripping. Each chunk of a response body then meets:
//!
//! - the throttle: one token bucket for the whole link, so parallel connections share it;
//! - the pause switch: no byte flows while the link is paused;
//! - the meter: counts served bytes and cuts the response that reaches a drop point;
//! - the corruption: one byte flipped in the bodies of chosen blobs.

use std::{
    collections::HashSet,
    convert::Infallible,
    io,
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
    uri::{Authority, InvalidUriParts, Scheme},
};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    body::{Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::task::AbortOnDropHandle;

/// The largest piece of a body sent at once, so that the rate and the faults act at a fine
/// grain and parallel connections take turns.
const CHUNK: usize = 64 * 1024;

/// How many bytes an idle link may send at once before the rate applies: one chunk, or 5 ms
/// of the rate when that is more, so that timer granularity (a sleep lasts at least ~1 ms)
/// does not hold a fast link below its rate.
fn burst(bytes_per_second: Option<f64>) -> f64 {
    (bytes_per_second.unwrap_or(0.0) * 0.005).max(CHUNK as f64)
}

/// The longest a chunk sleeps before looking at the bucket again.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// How a [`Link`] starts out. Every field can be changed while it runs; the default is an
/// unlimited link without faults.
#[derive(Clone, Debug, Default)]
pub struct LinkConfig {
    /// The rate in Mbit/s (10⁶ bits per second) that all response bodies share, or `None` for
    /// no limit. A rate of zero or less stops every body until the rate changes.
    pub mbps: Option<f64>,
    /// Cut the connection once for every this many response-body bytes that flow through
    /// the link, counted across all responses: the response that reaches the next multiple
    /// ends there with an error. `None` (or zero) for never.
    pub drop_every_bytes: Option<u64>,
    /// Forward requests without their `Range` header, so that ranged reads get the whole
    /// body with status 200, as from registries and CDNs that ignore Range.
    pub ignore_range: bool,
}

/// A running link: a proxy on `127.0.0.1` in front of one upstream, with switches for its
/// rate and faults.
///
/// Start one with [`Link::start`]. The proxy, and every connection through it, stops when the
/// `Link` is dropped or [shut down](Link::shutdown).
pub struct Link {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: AbortOnDropHandle<()>,
}

impl Link {
    /// Listens on a free port of `127.0.0.1` and forwards every request to `upstream` (plain
    /// HTTP), shaped by `config`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr, config: LinkConfig) -> io::Result<Link> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(upstream, config)?);
        let task = AbortOnDropHandle::new(tokio::spawn(serve(listener, shared.clone())));
        tracing::info!(%addr, %upstream, "link started");
        Ok(Link { addr, shared, task })
    }

    /// Where clients connect, in place of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The response-body bytes the link has passed on to clients, over all requests.
    ///
    /// Bodies that the link makes up itself (injected failures, 502s) do not count. A byte
    /// counts when it is handed to the client's connection, so a client that hangs up may
    /// have received a little less.
    pub fn bytes_served(&self) -> u64 {
        lock(&self.shared.meter).served
    }

    /// The requests the link has received, including those answered with an injected failure.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The requests that carried a `Range` header when they arrived, whether or not the link
    /// forwarded it.
    pub fn range_requests(&self) -> u64 {
        self.shared.range_requests.load(Ordering::Relaxed)
    }

    /// Changes the shared rate in Mbit/s, or lifts it with `None`. Bodies already waiting for
    /// their turn move at the new rate.
    pub fn set_rate_mbps(&self, mbps: Option<f64>) {
        self.shared.throttle.set_rate(mbps.and_then(bytes_per_second));
    }

    /// Stalls the link (`true`) or lets it flow again (`false`).
    ///
    /// While paused no response byte flows: connections stay open, new requests wait before
    /// they are forwarded, and bodies in flight stop between chunks.
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.send_replace(paused);
    }

    /// Answers the next `count` requests with `status` and a registry-style error body,
    /// without forwarding them. A 429 carries `Retry-After: 1`. Replaces an earlier call's
    /// remaining count.
    ///
    /// # Panics
    ///
    /// When `status` is not a valid HTTP status code (100 to 999).
    pub fn fail_next(&self, count: u32, status: u16) {
        let status = StatusCode::from_u16(status).expect("an HTTP status code from 100 to 999");
        *lock(&self.shared.failures) = Failures { remaining: count, status };
    }

    /// Corrupts every successful response for `/v2/<name>/blobs/<digest>`: one byte in the
    /// middle of the body is flipped, so the body keeps its length but not its digest.
    pub fn corrupt_blob(&self, digest: &str) {
        lock(&self.shared.corrupted).insert(digest.to_owned());
    }

    /// Changes how often the link cuts a response, in bytes of response bodies; `None` for
    /// never. The count of bytes already served carries on.
    pub fn set_drop_every_bytes(&self, bytes: Option<u64>) {
        lock(&self.shared.meter).drop_every = bytes;
    }

    /// Whether the link strips `Range` headers from now on.
    pub fn set_ignore_range(&self, ignore: bool) {
        self.shared.ignore_range.store(ignore, Ordering::Relaxed);
    }

    /// Stops the proxy and waits until it no longer listens; open connections are closed.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Converts Mbit/s to bytes per second; an infinite or undefined rate is no limit at all.
fn bytes_per_second(mbps: f64) -> Option<f64> {
    mbps.is_finite().then(|| mbps.max(0.0) * 1_000_000.0 / 8.0)
}

/// Locks a mutex whose holders never panic while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What went wrong while carrying one exchange across the link. Each becomes a response or a
/// cut connection, never a panic.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// The upstream URI could not be formed from the request's path.
    #[error("building the upstream URI for {path}: {source}")]
    UpstreamUri {
        path: String,
        #[source]
        source: InvalidUriParts,
    },
    /// The upstream could not be reached, or failed before its response head.
    #[error("forwarding {method} {path} to {upstream}: {source}")]
    Forward {
        method: Method,
        path: String,
        upstream: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The upstream failed in the middle of a response body.
    #[error("reading the body of {path} from {upstream}: {source}")]
    ReadBody {
        path: String,
        upstream: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The link cut the body on purpose (`drop_every_bytes`).
    #[error("dropped the connection after {sent} bytes of the body of {path}")]
    Dropped { path: String, sent: u64 },
}

/// A body the link sends to its clients.
type LinkBody = UnsyncBoxBody<Bytes, LinkError>;

/// The state of one link that its connections and its handle share.
struct Shared {
    upstream: SocketAddr,
    authority: Authority,
    client: Client<HttpConnector, Incoming>,
    throttle: Throttle,
    paused: watch::Sender<bool>,
    meter: Mutex<Meter>,
    failures: Mutex<Failures>,
    corrupted: Mutex<HashSet<String>>,
    ignore_range: AtomicBool,
    requests: AtomicU64,
    range_requests: AtomicU64,
}

impl Shared {
    fn new(upstream: SocketAddr, config: LinkConfig) -> io::Result<Shared> {
        let authority = Authority::from_str(&upstream.to_string()).map_err(io::Error::other)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Ok(Shared {
            upstream,
            authority,
            client,
            throttle: Throttle::new(config.mbps.and_then(bytes_per_second)),
            paused: watch::Sender::new(false),
            meter: Mutex::new(Meter { drop_every: config.drop_every_bytes, ..Meter::default() }),
            failures: Mutex::new(Failures { remaining: 0, status: StatusCode::OK }),
            corrupted: Mutex::new(HashSet::new()),
            ignore_range: AtomicBool::new(config.ignore_range),
            requests: AtomicU64::new(0),
            range_requests: AtomicU64::new(0),
        })
    }

    /// Carries one request across the link and its response back.
    async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<LinkBody> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if request.headers().contains_key(header::RANGE) {
            self.range_requests.fetch_add(1, Ordering::Relaxed);
        }

        // A paused link holds requests too, as if their bytes were stuck on the wire.
        self.wait_until_flowing().await;

        if let Some(status) = self.take_failure() {
            return injected_failure(status);
        }

        if self.ignore_range.load(Ordering::Relaxed) {
            request.headers_mut().remove(header::RANGE);
            request.headers_mut().remove(header::IF_RANGE);
        }

        let path = request.uri().path().to_owned();
        let corrupt = blob_digest(&path).is_some_and(|d| lock(&self.corrupted).contains(d));
        let response = match self.forward(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(%error, "link answers 502");
                return bad_gateway(&error);
            }
        };

        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let corrupt_at = (corrupt && parts.status.is_success()).then(|| middle(&parts.headers));
        let egress = Egress {
            shared: self.clone(),
            upstream: body,
            path,
            pending: Bytes::new(),
            sent: 0,
            corrupt_at,
            flow: Flow::Open,
        };
        Response::from_parts(parts, egress.into_body())
    }

    /// Sends `request` to the upstream, with its path and query, its headers (hop-by-hop
    /// ones aside) and its body streaming.
    ///
    /// The `Host` header stays the one the client sent, the link's own address, so that the
    /// URLs the registry builds from it (upload locations) lead back through the link.
    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Incoming>, LinkError> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        parts.uri = Uri::from_parts(uri)
            .map_err(|source| LinkError::UpstreamUri { path: path.clone(), source })?;
        remove_hop_by_hop(&mut parts.headers);
        let method = parts.method.clone();

        self.client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|source| LinkError::Forward { method, path, upstream: self.upstream, source })
    }

    /// Returns at once while the link flows; waits while it is paused.
    async fn wait_until_flowing(&self) {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|paused| !paused).await;
    }

    /// The status to answer this request with instead of forwarding it, if any are left.
    fn take_failure(&self) -> Option<StatusCode> {
        let mut failures = lock(&self.failures);
        if failures.remaining == 0 {
            return None;
        }
        failures.remaining -= 1;
        Some(failures.status)
    }
}

/// Accepts connections until the task is aborted.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this set, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, shared.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: give connections time to close.
                    tracing::warn!(%error, "link cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves the requests of one client connection, keeping it alive between them.
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(shared.handle(request).await) }
    });
    let served = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "link connection ended");
    }
}

/// The headers that describe one connection rather than the message (RFC 9110, 7.6.1),
/// which a proxy must not pass on.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_str(name.trim()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The digest in a blob path, `/v2/<name>/blobs/<digest>`.
fn blob_digest(path: &str) -> Option<&str> {
    let (_, digest) = path.strip_prefix("/v2/")?.rsplit_once("/blobs/")?;
    (!digest.is_empty() && !digest.contains('/')).then_some(digest)
}

/// The offset of the byte to flip in a body: its middle, where a flip leaves the framing of
/// a tar or gzip stream alone, or its start when the length is not known.
fn middle(headers: &HeaderMap) -> u64 {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    length.and_then(|v| v.parse::<u64>().ok()).map_or(0, |length| length / 2)
}

/// The answer to a request the link fails on purpose, in the registry's error format.
fn injected_failure(status: StatusCode) -> Response<LinkBody> {
    let code =
        if status == StatusCode::TOO_MANY_REQUESTS { "TOOMANYREQUESTS" } else { "UNAVAILABLE" };
    let body =
        serde_json::json!({"errors": [{"code": code, "message": "injected by the e2e link"}]});
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The answer when the upstream cannot be reached.
fn bad_gateway(error: &LinkError) -> Response<LinkBody> {
    let mut response = Response::new(full(format!("{error}\n")));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn full(text: String) -> LinkBody {
    Full::new(Bytes::from(text)).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// Requests left to fail, and how.
struct Failures {
    remaining: u32,
    status: StatusCode,
}

/// One response body on its way from the upstream to the client, a chunk at a time.
struct Egress {
    shared: Arc<Shared>,
    upstream: Incoming,
    path: String,
    /// What the upstream sent and the client has not yet got.
    pending: Bytes,
    /// Body bytes sent so far.
    sent: u64,
    /// The body offset of the byte to flip, for corrupted blobs.
    corrupt_at: Option<u64>,
    flow: Flow,
}

/// Where a body stands.
enum Flow {
    Open,
    /// The meter cut the body; the error follows the bytes before the cut.
    Cut,
    Finished,
}

impl Egress {
    fn into_body(self) -> LinkBody {
        let frames = futures::stream::unfold(self, |mut egress| async move {
            let frame = egress.next_frame().await?;
            Some((frame, egress))
        });
        StreamBody::new(frames).boxed_unsync()
    }

    /// The next frame for the client: a chunk of at most [`CHUNK`] bytes once the throttle,
    /// the pause switch and the meter let it go; the trailers; or the error that ends a
    /// cut body.
    async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, LinkError>> {
        match self.flow {
            Flow::Open => {}
            Flow::Cut => {
                // Yield once, so that the connection flushes the bytes before the cut before
                // the error tears it down.
                tokio::task::yield_now().await;
                return Some(Err(self.dropped()));
            }
            Flow::Finished => return None,
        }

        while self.pending.is_empty() {
            match self.upstream.frame().await {
                None => {
                    self.flow = Flow::Finished;
                    return None;
                }
                Some(Err(source)) => {
                    self.flow = Flow::Finished;
                    let (path, upstream) = (self.path.clone(), self.shared.upstream);
                    return Some(Err(LinkError::ReadBody { path, upstream, source }));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.pending = data,
                    Err(trailers) => return Some(Ok(trailers)),
                },
            }
        }
        let mut chunk = self.pending.split_to(self.pending.len().min(CHUNK));

        self.shared.throttle.acquire(chunk.len()).await;
        self.shared.wait_until_flowing().await;

        let admitted = lock(&self.shared.meter).admit(chunk.len() as u64);
        if admitted < chunk.len() as u64 {
            chunk.truncate(admitted as usize);
            if chunk.is_empty() {
                return Some(Err(self.dropped()));
            }
            self.flow = Flow::Cut;
        }

        if let Some(at) = self.corrupt_at {
            chunk = flip_byte(chunk, self.sent, at);
        }
        self.sent += chunk.len() as u64;
        Some(Ok(Frame::data(chunk)))
    }

    fn dropped(&mut self) -> LinkError {
        self.flow = Flow::Finished;
        tracing::debug!(path = %self.path, sent = self.sent, "link drops a connection");
        LinkError::Dropped { path: self.path.clone(), sent: self.sent }
    }
}

/// Flips the byte at body offset `at` if `chunk`, which starts at body offset `start`, holds
/// it.
fn flip_byte(chunk: Bytes, start: u64, at: u64) -> Bytes {
    let Some(index) = at.checked_sub(start).filter(|i| *i < chunk.len() as u64) else {
        return chunk;
    };
    let mut bytes = BytesMut::from(chunk);
    bytes[index as usize] ^= 0xff;
    bytes.freeze()
}

/// Counts the response-body bytes of the whole link, and decides where it drops connections.
#[derive(Debug, Default)]
struct Meter {
    /// Bytes passed on to clients.
    served: u64,
    /// Cut once per this many bytes; `None` or zero for never.
    drop_every: Option<u64>,
    /// The served count at the last cut, so that each drop point cuts once.
    last_cut: u64,
}

impl Meter {
    /// Counts a chunk of `len` bytes about to be sent and returns how many of them may go.
    ///
    /// Fewer than `len` means the chunk reaches a drop point, a multiple of `drop_every`: the
    /// bytes before it go, and the response is cut there. A body that ends exactly at a drop
    /// point is not cut; the next byte to flow through the link is.
    fn admit(&mut self, len: u64) -> u64 {
        let admitted = match self.drop_every.filter(|every| *every > 0) {
            None => len,
            Some(every) => {
                let mut point = self.served.div_ceil(every).max(1) * every;
                if point == self.last_cut {
                    point += every;
                }
                if point < self.served + len {
                    self.last_cut = point;
                    point - self.served
                } else {
                    len
                }
            }
        };
        self.served += admitted;
        admitted
    }
}

/// One token bucket for the whole link: every chunk of every response waits here for its
/// share of the rate, in the order the chunks arrived.
struct Throttle {
    bucket: Mutex<Bucket>,
    rate_changed: Notify,
}

impl Throttle {
    fn new(bytes_per_second: Option<f64>) -> Throttle {
        Throttle {
            bucket: Mutex::new(Bucket::new(bytes_per_second, Instant::now())),
            rate_changed: Notify::new(),
        }
    }

    /// Waits until `bytes` more bytes fit into the rate.
    async fn acquire(&self, bytes: usize) {
        let position = lock(&self.bucket).reserve(bytes, Instant::now());
        loop {
            // Created before looking at the bucket, so that a change in between is not missed.
            let rate_changed = self.rate_changed.notified();
            let wait = lock(&self.bucket).wait(position, Instant::now());
            match wait {
                Some(Duration::ZERO) => return,
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait.min(MAX_WAIT)) => {}
                        () = rate_changed => {}
                    }
                }
                None => rate_changed.await,
            }
        }
    }

    fn set_rate(&self, bytes_per_second: Option<f64>) {
        lock(&self.bucket).set_rate(bytes_per_second, Instant::now());
        self.rate_changed.notify_waiters();
    }
}

/// The accounts of a token bucket, kept as running totals: a chunk may go once the bytes the
/// rate has allowed reach the bytes reserved up to and including that chunk.
#[derive(Debug)]
struct Bucket {
    /// `None` for no limit.
    bytes_per_second: Option<f64>,
    /// Bytes the rate has allowed since the start; at most a [`burst`] ahead of `reserved`.
    allowed: f64,
    /// Bytes of chunks that went or wait, since the start.
    reserved: f64,
    /// When `allowed` was last brought up to date.
    updated: Instant,
}

impl Bucket {
    fn new(bytes_per_second: Option<f64>, now: Instant) -> Bucket {
        Bucket { bytes_per_second, allowed: burst(bytes_per_second), reserved: 0.0, updated: now }
    }

    /// Queues `bytes` behind every chunk already queued, and returns the position in the
    /// running total that they wait for.
    fn reserve(&mut self, bytes: usize, now: Instant) -> f64 {
        self.refill(now);
        self.reserved += bytes as f64;
        self.reserved
    }

    /// How much longer the chunk at `position` waits: zero once it may go, `None` while the
    /// rate is zero.
    fn wait(&mut self, position: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let missing = position - self.allowed;
        if missing <= 0.0 {
            return Some(Duration::ZERO);
        }
        let rate = self.bytes_per_second?;
        if rate <= 0.0 {
            return None;
        }
        Some(
            Duration::try_from_secs_f64(missing / rate)
                .unwrap_or(MAX_WAIT)
                .max(Duration::from_nanos(1)),
        )
    }

    fn set_rate(&mut self, bytes_per_second: Option<f64>, now: Instant) {
        self.refill(now);
        self.bytes_per_second = bytes_per_second;
    }

    /// Credits what the rate allowed since the last update, keeping at most a burst in hand.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        let ceiling = self.reserved + burst(self.bytes_per_second);
        self.allowed = match self.bytes_per_second {
            Some(rate) if rate > 0.0 => (self.allowed + rate * elapsed).min(ceiling),
            Some(_) => self.allowed,
            None => ceiling,
        };
    }
}

#[cfg(test)]
mod tests;
