//! The gateway's upstream client: HTTP/1.1 on hyper's connection API, with
//! the idle connections of each worker thread kept for reuse.
//!
//! Why not the shared `reqwest` client: on the run path its layers (the URL
//! parsed again per request, its pool's lock and hashing, boxed futures, the
//! redirect and time-out wrappers) cost about a quarter of the throughput
//! of nginx doing the same job, where one hyper connection per request in
//! flight matched nginx (see `docs/performance.md`). `reqwest` keeps the
//! short provider calls, where that cost does not matter.
//!
//! Every address, name and port here comes from a flow's upstream URL that
//! passed [`super::Outbound::check_url`].
//!
//! The rules are the shared client's: no redirects (an upstream's 3xx is
//! relayed as it came), no proxy, a connect time-out of
//! `KEYGATE_PROVIDER_TIMEOUT_MS` (name resolution, TCP and TLS together),
//! and at every new connection a name's addresses pass the SSRF rule
//! ([`super::is_public_ip`]) unless `KEYGATE_ALLOW_PRIVATE_UPSTREAMS` is
//! set. `https` upstreams use the system's TLS library and its roots.
//!
//! A connection is driven by the worker thread that opened it (a local
//! task) and goes back to that thread's idle list when its answer has been
//! read to the end; an answer dropped half-read (the caller went away)
//! closes it. An idle connection is used again for at most
//! [`IDLE_TIMEOUT`]; one the upstream closed meanwhile is skipped, and a
//! request that could not be written on it is sent on a fresh one.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::{HeaderValue, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use reqwest::Url;

use super::address::{is_allowed, resolve_allowed};
use crate::error::AppError;

/// How long an idle connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per upstream and worker thread, at most.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// Where a flow's route is sent: a checked URL taken apart once, so a
/// request costs no URL parsing.
#[derive(Debug, Clone)]
pub struct Endpoint {
    tls: bool,
    host: Host,
    port: u16,
    /// The `Host` header: the URL's host, and its port when it names one.
    authority: HeaderValue,
    /// `scheme://host:port`: what idle connections are filed under.
    key: Arc<str>,
    /// The request target without the caller's query.
    path_and_query: String,
    has_query: bool,
    uri: Uri,
    /// `host:port` for error messages (never the path or the query).
    label: String,
}

#[derive(Debug, Clone)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Endpoint {
    /// Takes apart a URL that passed [`super::Outbound::check_url`] (an
    /// `http` or `https` URL with a host): only
    /// [`super::Outbound::endpoint`] calls it, so the checks are not
    /// repeated here.
    pub(super) fn from_checked(url: &Url) -> Result<Endpoint, AppError> {
        let unchecked = || AppError::internal("an upstream URL skipped its check");
        let tls = url.scheme() == "https";
        let host_text = url.host_str().ok_or_else(unchecked)?;
        let port = url.port_or_known_default().ok_or_else(unchecked)?;
        let bare = host_text.trim_start_matches('[').trim_end_matches(']');
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(bare.to_string()),
        };
        let authority = match url.port() {
            Some(port) => format!("{host_text}:{port}"),
            None => host_text.to_string(),
        };
        let mut path_and_query = url.path().to_string();
        if let Some(query) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        let unusable = || AppError::unprocessable("the upstream URL cannot be sent as a request");
        Ok(Endpoint {
            tls,
            port,
            authority: HeaderValue::from_str(&authority).map_err(|_| unusable())?,
            key: Arc::from(format!("{}://{host_text}:{port}", url.scheme())),
            uri: Uri::try_from(path_and_query.as_str()).map_err(|_| unusable())?,
            has_query: url.query().is_some_and(|query| !query.is_empty()),
            path_and_query,
            label: format!("{host_text}:{port}"),
            host,
        })
    }

    /// The request target, with `extra` (the caller's query, already
    /// stripped of the key) added to the URL's own query. 400 when the
    /// caller's query cannot be carried.
    pub fn target(&self, extra: &str) -> Result<Uri, AppError> {
        if extra.is_empty() {
            return Ok(self.uri.clone());
        }
        let separator = if self.has_query { '&' } else { '?' };
        let base = self.path_and_query.trim_end_matches('?');
        Uri::try_from(format!("{base}{separator}{extra}"))
            .map_err(|_| AppError::bad_request("The query string cannot be forwarded"))
    }
}

/// A request body for an upstream: bytes in hand, or chunks arriving from
/// a local task (a streamed upload; an `Err` item aborts the request).
pub enum ForwardBody {
    Full(Option<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl ForwardBody {
    pub fn bytes(bytes: Bytes) -> Self {
        ForwardBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ForwardBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ForwardBody::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ForwardBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ForwardBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Why a forwarded request got no answer.
#[derive(Debug)]
pub enum ForwardError {
    /// The name resolves only to addresses the SSRF rule refuses.
    Blocked { host: String },
    /// No connection within the connect time-out.
    ConnectTimeout { label: String },
    /// Name resolution, TCP or TLS failed.
    Connect { label: String, cause: String },
    /// Connected, but no valid answer came.
    Exchange { label: String, cause: String },
}

/// The upstream's answer; its body is streamed from the connection, which
/// goes back to the idle list once the body has been read to its end.
pub type Relayed = Response<RelayBody>;

pub struct RelayBody {
    body: Incoming,
    connection: Option<Returnable>,
}

struct Returnable {
    owner: usize,
    key: Arc<str>,
    sender: SendRequest<ForwardBody>,
}

impl RelayBody {
    /// The body's length when the upstream announced it.
    pub fn exact_length(&self) -> Option<u64> {
        self.body.size_hint().exact()
    }

    fn release(&mut self) {
        if let Some(connection) = self.connection.take() {
            put_idle(connection);
        }
    }
}

impl Stream for RelayBody {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    // Trailers are not relayed.
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(error))) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RelayBody {
    /// An answer read to its end (or without a body) leaves its connection
    /// reusable; one dropped half-read closes it.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

struct Idle {
    sender: SendRequest<ForwardBody>,
    since: Instant,
}

struct IdleGroup {
    owner: usize,
    key: Arc<str>,
    idle: Vec<Idle>,
}

thread_local! {
    /// This worker thread's idle upstream connections, by `Outbound` and
    /// upstream (a handful of groups: a linear search is the cheapest).
    static IDLE: RefCell<Vec<IdleGroup>> = const { RefCell::new(Vec::new()) };
}

fn take_idle(owner: usize, key: &Arc<str>) -> Option<SendRequest<ForwardBody>> {
    IDLE.with(|groups| {
        let mut groups = groups.borrow_mut();
        let group = groups
            .iter_mut()
            .find(|group| group.owner == owner && *group.key == **key)?;
        // The most recently used first: the warmest, the least likely to
        // have been closed by the upstream.
        while let Some(idle) = group.idle.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < IDLE_TIMEOUT {
                return Some(idle.sender);
            }
        }
        None
    })
}

fn put_idle(connection: Returnable) {
    if connection.sender.is_closed() {
        return;
    }
    IDLE.with(|groups| {
        let mut groups = groups.borrow_mut();
        let idle = Idle {
            sender: connection.sender,
            since: Instant::now(),
        };
        match groups
            .iter_mut()
            .find(|group| group.owner == connection.owner && group.key == connection.key)
        {
            Some(group) => {
                if group.idle.len() >= MAX_IDLE_PER_UPSTREAM {
                    group.idle.remove(0);
                }
                group.idle.push(idle);
            }
            None => groups.push(IdleGroup {
                owner: connection.owner,
                key: connection.key,
                idle: vec![idle],
            }),
        }
    });
}

/// The gateway's upstream client of one [`super::Outbound`]: its address
/// policy, connect time-out and TLS set-up; the idle connections are the
/// worker threads'.
#[derive(Clone)]
pub struct Forwarder {
    /// Which `Outbound` this is, so idle connections are not shared
    /// between two of them with different rules (tests run several).
    owner: usize,
    allow_private: bool,
    timeout: Duration,
    tls: tokio_native_tls::TlsConnector,
}

impl Forwarder {
    pub fn new(owner: usize, allow_private: bool, timeout: Duration) -> Result<Self, String> {
        Ok(Forwarder {
            owner,
            allow_private,
            timeout,
            tls: tokio_native_tls::native_tls::TlsConnector::new()
                .map(tokio_native_tls::TlsConnector::from)
                .map_err(|e| format!("cannot set up TLS for upstream connections: {e}"))?,
        })
    }

    /// Sends `request` to `endpoint` on an idle connection of this thread
    /// or a new one (see the module doc). The caller sets the method, the
    /// target ([`Endpoint::target`]) and every header but `Host`.
    pub async fn forward(
        &self,
        endpoint: &Endpoint,
        mut request: Request<ForwardBody>,
    ) -> Result<Relayed, ForwardError> {
        request
            .headers_mut()
            .insert(hyper::header::HOST, endpoint.authority.clone());
        while let Some(mut sender) = take_idle(self.owner, &endpoint.key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.relayed(endpoint, sender, response)),
                Err(mut failed) => match failed.take_message() {
                    // Closed before a byte was written: another connection.
                    Some(unsent) => request = unsent,
                    None => return Err(exchange_error(endpoint, &failed.into_error())),
                },
            }
        }
        let mut sender = self.connect(endpoint).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.relayed(endpoint, sender, response)),
            Err(error) => Err(exchange_error(endpoint, &error)),
        }
    }

    fn relayed(
        &self,
        endpoint: &Endpoint,
        sender: SendRequest<ForwardBody>,
        response: Response<Incoming>,
    ) -> Relayed {
        let connection = Returnable {
            owner: self.owner,
            key: endpoint.key.clone(),
            sender,
        };
        response.map(|body| RelayBody {
            body,
            connection: Some(connection),
        })
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<SendRequest<ForwardBody>, ForwardError> {
        let connecting = async {
            let addresses = self.addresses(endpoint).await?;
            let stream = connect_any(endpoint, &addresses).await?;
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY could not be set on an upstream connection");
            }
            if endpoint.tls {
                let host = match &endpoint.host {
                    Host::Ip(ip) => ip.to_string(),
                    Host::Name(name) => name.clone(),
                };
                let stream = self
                    .tls
                    .connect(&host, stream)
                    .await
                    .map_err(|error| connect_error(endpoint, &error))?;
                handshake(endpoint, TokioIo::new(stream)).await
            } else {
                handshake(endpoint, TokioIo::new(stream)).await
            }
        };
        tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| ForwardError::ConnectTimeout {
                label: endpoint.label.clone(),
            })?
    }

    /// The addresses to try, after the SSRF rule.
    async fn addresses(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, ForwardError> {
        let blocked = || ForwardError::Blocked {
            host: endpoint.label.clone(),
        };
        match &endpoint.host {
            Host::Ip(ip) if is_allowed(*ip, self.allow_private) => {
                Ok(vec![SocketAddr::new(*ip, endpoint.port)])
            }
            Host::Ip(_) => Err(blocked()),
            Host::Name(name) => {
                let found = resolve_allowed(name, endpoint.port, self.allow_private)
                    .await
                    .map_err(|error| connect_error(endpoint, &error))?;
                if found.is_empty() {
                    return Err(blocked());
                }
                Ok(found)
            }
        }
    }
}

/// The first address that accepts, in the resolver's order.
async fn connect_any(
    endpoint: &Endpoint,
    addresses: &[SocketAddr],
) -> Result<tokio::net::TcpStream, ForwardError> {
    let mut last = None;
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(ForwardError::Connect {
        label: endpoint.label.clone(),
        cause: last.map_or_else(|| "no address".to_string(), |e| e.to_string()),
    })
}

/// Opens HTTP/1.1 on a connected stream and drives it in a local task.
async fn handshake<T>(endpoint: &Endpoint, io: T) -> Result<SendRequest<ForwardBody>, ForwardError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|error| connect_error(endpoint, &error))?;
    actix_web::rt::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

fn connect_error(endpoint: &Endpoint, error: &dyn std::fmt::Display) -> ForwardError {
    ForwardError::Connect {
        label: endpoint.label.clone(),
        cause: error.to_string(),
    }
}

fn exchange_error(endpoint: &Endpoint, error: &hyper::Error) -> ForwardError {
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    ForwardError::Exchange {
        label: endpoint.label.clone(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::from_checked(&Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn takes_a_url_apart_once() {
        let plain = endpoint("http://127.0.0.1:9000/run/flow");
        assert_eq!(plain.authority, "127.0.0.1:9000");
        assert_eq!(plain.label, "127.0.0.1:9000");
        assert_eq!(plain.target("").unwrap(), "/run/flow");
        assert_eq!(
            plain.target("stream=true").unwrap(),
            "/run/flow?stream=true"
        );

        let with_query = endpoint("https://example.test/a?b=1");
        assert!(with_query.tls);
        assert_eq!(with_query.port, 443);
        assert_eq!(with_query.authority, "example.test");
        assert_eq!(with_query.target("c=2").unwrap(), "/a?b=1&c=2");

        let v6 = endpoint("http://[::1]:8080/");
        assert!(matches!(v6.host, Host::Ip(ip) if ip.is_loopback()));
        assert_eq!(v6.authority, "[::1]:8080");
        assert_eq!(v6.target("").unwrap(), "/");
    }

    #[test]
    fn an_empty_body_is_the_end_of_the_stream() {
        assert!(ForwardBody::bytes(Bytes::new()).is_end_stream());
        assert_eq!(
            ForwardBody::bytes(Bytes::from_static(b"abc"))
                .size_hint()
                .exact(),
            Some(3)
        );
    }
}
