//! Prometheus metrics: what keygate counts and how `/metrics` shows it.
//!
//! One [`Metrics`] per running server, built by `server::prepare` and held
//! by `AppState`; the domains are handed the handles they update (a
//! counter, a histogram) when their services are built, so a hot path
//! touches one or two atomics and no shared lock or label lookup:
//!
//! - HTTP requests by method, route template and status: the server keeps
//!   the handles per worker thread, resolved once per combination.
//! - Key verifications by outcome, cache hits and misses per cache,
//!   sign-ins by outcome: a fixed set of handles made at start.
//! - Database pool (in use, idle, checkout wait, time-outs), invalidation
//!   lag between instances, gateway upstream latency and status by flow.
//!
//! The crate is `prometheus-client`, the Prometheus project's own Rust
//! client; its histogram takes a mutex per observation, so the histogram
//! here is its own, of atomics ([`Histogram`]), encoded through the
//! crate's encoder. Label values are bounded: routes are templates
//! (`/api/v1/run/{flow}`, never a path), flows are capped at
//! [`MAX_FLOW_LABELS`] names with the rest folded into `other`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of the scrape answer (OpenMetrics text, which
/// Prometheus reads natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Distinct flow names the upstream metrics keep; later ones count as
/// `other`, so a user creating flows cannot blow up the series count.
pub const MAX_FLOW_LABELS: usize = 100;
/// The label of every flow past [`MAX_FLOW_LABELS`].
pub const OTHER_FLOW: &str = "other";
/// The label of a flow without an endpoint name.
pub const UNNAMED_FLOW: &str = "unnamed";
/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets for requests and upstream calls (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Buckets for waits that are normally near zero (pool checkout,
/// invalidation lag; seconds).
const WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram of durations made of atomics: an observation is two
/// relaxed additions, with no lock. Buckets and sum may be read a moment
/// apart by a scrape; the count is the buckets' total, so it always
/// agrees with the `+Inf` bucket.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound, and one past the last (`+Inf`).
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn with_bounds(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(HistogramInner {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    fn latency() -> Self {
        Self::with_bounds(LATENCY_BUCKETS)
    }

    fn wait() -> Self {
        Self::with_bounds(WAIT_BUCKETS)
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let inner = &self.0;
        let bucket = inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(inner.bounds.len());
        inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    flow: String,
    status: &'static str,
}

/// How a presented API key fared. Revoked keys are deleted, so they count
/// as `unknown`; `inactive` is a deactivated key or a key of an inactive
/// owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    Valid,
    /// Not shaped like a key at all (refused before any lookup).
    Malformed,
    Unknown,
    /// A key this instance knew that has no row any more.
    Revoked,
    Expired,
    Inactive,
    /// Over the key's own request rate.
    RateLimited,
    ForbiddenAddress,
    MissingScope,
}

impl KeyOutcome {
    /// In declaration order: an outcome's counter is `ALL[outcome as usize]`.
    pub const ALL: [KeyOutcome; 9] = [
        KeyOutcome::Valid,
        KeyOutcome::Malformed,
        KeyOutcome::Unknown,
        KeyOutcome::Revoked,
        KeyOutcome::Expired,
        KeyOutcome::Inactive,
        KeyOutcome::RateLimited,
        KeyOutcome::ForbiddenAddress,
        KeyOutcome::MissingScope,
    ];

    pub fn label(self) -> &'static str {
        match self {
            KeyOutcome::Valid => "valid",
            KeyOutcome::Malformed => "malformed",
            KeyOutcome::Unknown => "unknown",
            KeyOutcome::Expired => "expired",
            KeyOutcome::Inactive => "inactive",
            KeyOutcome::RateLimited => "rate_limited",
            KeyOutcome::ForbiddenAddress => "forbidden_address",
            KeyOutcome::MissingScope => "missing_scope",
            KeyOutcome::Revoked => "revoked",
        }
    }
}

/// The key verification counters, one per outcome, made at start.
#[derive(Debug, Clone)]
pub struct KeyOutcomes(Arc<[Counter; KeyOutcome::ALL.len()]>);

impl KeyOutcomes {
    pub fn record(&self, outcome: KeyOutcome) {
        self.0[outcome as usize].inc();
    }

    /// A key refused for going over its own rate limit.
    pub fn rate_limited(&self) {
        self.record(KeyOutcome::RateLimited);
    }

    pub fn count(&self, outcome: KeyOutcome) -> u64 {
        self.0[outcome as usize].get()
    }
}

/// How a sign-in (password or auto-login) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigninOutcome {
    Success,
    /// Wrong username or password, or an inactive user.
    Failure,
    /// Refused by the back-off before the password was checked.
    Throttled,
}

impl SigninOutcome {
    const ALL: [SigninOutcome; 3] = [
        SigninOutcome::Success,
        SigninOutcome::Failure,
        SigninOutcome::Throttled,
    ];

    fn label(self) -> &'static str {
        match self {
            SigninOutcome::Success => "success",
            SigninOutcome::Failure => "failure",
            SigninOutcome::Throttled => "throttled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SigninOutcomes(Arc<[Counter; SigninOutcome::ALL.len()]>);

impl SigninOutcomes {
    pub fn record(&self, outcome: SigninOutcome) {
        self.0[outcome as usize].inc();
    }
}

/// One cache's hit and miss counters.
#[derive(Debug, Clone)]
pub struct CacheCounters {
    hits: Counter,
    misses: Counter,
}

impl CacheCounters {
    /// Counters that belong to no registry (a cache built outside a
    /// server, as in unit tests).
    pub fn detached() -> Self {
        CacheCounters {
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    pub fn hit(&self) {
        self.hits.inc();
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    /// Records a lookup's result.
    pub fn record(&self, hit: bool) {
        if hit {
            self.hit()
        } else {
            self.miss()
        }
    }
}

/// The handles of one (method, route, status) of the HTTP surface.
#[derive(Debug, Clone)]
pub struct HttpSeries {
    requests: Counter,
    duration: Histogram,
}

impl HttpSeries {
    pub fn observe(&self, elapsed: Duration) {
        self.requests.inc();
        self.duration.observe(elapsed);
    }
}

/// How an upstream call ended, as its status label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamResult {
    /// An answer with this status code.
    Status(u16),
    /// No answer within `KEYGATE_UPSTREAM_TIMEOUT_MS`.
    Timeout,
    /// No answer at all (connection refused, reset, refused address).
    Error,
}

const UPSTREAM_STATUSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "error"];

impl UpstreamResult {
    fn index(self) -> usize {
        match self {
            UpstreamResult::Status(code) => usize::from(code / 100).clamp(1, 5) - 1,
            UpstreamResult::Timeout => 5,
            UpstreamResult::Error => 6,
        }
    }
}

/// One flow's upstream handles, resolved once per cached flow.
#[derive(Debug, Clone)]
pub struct UpstreamSeries {
    results: Arc<[Counter; UPSTREAM_STATUSES.len()]>,
    duration: Histogram,
}

impl UpstreamSeries {
    /// Records a call that took `elapsed` to its answer's headers (or to
    /// its failure).
    pub fn observe(&self, result: UpstreamResult, elapsed: Duration) {
        self.results[result.index()].inc();
        self.duration.observe(elapsed);
    }
}

/// Every metric of one server, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    keys: KeyOutcomes,
    signins: SigninOutcomes,
    caches: Family<CacheLabels, Counter>,
    pool_connections: Family<StateLabel, Gauge>,
    pool_max: Gauge,
    pool_wait: Histogram,
    pool_timeouts: Counter,
    invalidation_lag: Histogram,
    upstream_results: Family<UpstreamLabels, Counter>,
    upstream_duration: Family<FlowLabel, Histogram, fn() -> Histogram>,
    flow_labels: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "keygate_http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: Family<HttpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(Histogram::latency);
        registry.register(
            "keygate_http_request_duration_seconds",
            "Time to answer an HTTP request (to its headers for a streamed answer)",
            http_duration.clone(),
        );
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "keygate_key_verifications",
            "API keys presented, by outcome",
            outcomes.clone(),
        );
        let keys = KeyOutcomes(Arc::new(KeyOutcome::ALL.map(|outcome| {
            outcomes
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.label(),
                })
                .clone()
        })));
        let signin_family = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "keygate_signins",
            "Password sign-ins and auto-logins, by outcome",
            signin_family.clone(),
        );
        let signins = SigninOutcomes(Arc::new(SigninOutcome::ALL.map(|outcome| {
            signin_family
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.label(),
                })
                .clone()
        })));
        let caches = Family::<CacheLabels, Counter>::default();
        registry.register(
            "keygate_cache_lookups",
            "In-memory cache lookups, by cache and result (hit or miss)",
            caches.clone(),
        );
        let pool_connections = Family::<StateLabel, Gauge>::default();
        registry.register(
            "keygate_db_pool_connections",
            "Database connections of the pool, by state (in_use, idle)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "keygate_db_pool_max_connections",
            "The pool's size (KEYGATE_DB_POOL_SIZE)",
            pool_max.clone(),
        );
        let pool_wait = Histogram::wait();
        registry.register(
            "keygate_db_pool_wait_seconds",
            "Time a request waited for a pooled database connection",
            pool_wait.clone(),
        );
        let pool_timeouts = Counter::default();
        registry.register(
            "keygate_db_pool_timeouts",
            "Requests that got no pooled connection within KEYGATE_DB_TIMEOUT_MS",
            pool_timeouts.clone(),
        );
        let invalidation_lag = Histogram::wait();
        registry.register(
            "keygate_invalidation_lag_seconds",
            "Time from another instance's publishing of an invalidation to its handling here \
             (PostgreSQL; includes clock skew between the hosts)",
            invalidation_lag.clone(),
        );
        let upstream_results = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "keygate_upstream_requests",
            "Gateway calls to upstreams, by flow endpoint name and status class",
            upstream_results.clone(),
        );
        let upstream_duration: Family<FlowLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(Histogram::latency);
        registry.register(
            "keygate_upstream_duration_seconds",
            "Time from sending a gateway call to the upstream's response headers, by flow",
            upstream_duration.clone(),
        );
        let metrics = Metrics {
            registry,
            http_requests,
            http_duration,
            keys,
            signins,
            caches,
            pool_connections,
            pool_max,
            pool_wait,
            pool_timeouts,
            invalidation_lag,
            upstream_results,
            upstream_duration,
            flow_labels: Mutex::new(HashSet::new()),
        };
        metrics.set_pool(0, 0, 0);
        metrics
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        text
    }

    /// The handles of one kind of request; callers keep them (the server
    /// does, per worker) rather than asking per request.
    pub fn http_series(&self, method: &'static str, route: &str, status: u16) -> HttpSeries {
        let labels = HttpLabels {
            method,
            route: route.to_string(),
            status,
        };
        HttpSeries {
            requests: self.http_requests.get_or_create(&labels).clone(),
            duration: self.http_duration.get_or_create(&labels).clone(),
        }
    }

    pub fn keys(&self) -> KeyOutcomes {
        self.keys.clone()
    }

    pub fn signins(&self) -> SigninOutcomes {
        self.signins.clone()
    }

    /// The hit and miss counters of the cache called `name`.
    pub fn cache(&self, name: &'static str) -> CacheCounters {
        let counter = |result| {
            self.caches
                .get_or_create(&CacheLabels {
                    cache: name,
                    result,
                })
                .clone()
        };
        CacheCounters {
            hits: counter("hit"),
            misses: counter("miss"),
        }
    }

    /// The pool's state, set when metrics are scraped.
    pub fn set_pool(&self, connections: u32, idle: u32, max: u32) {
        let gauge = |state| {
            self.pool_connections
                .get_or_create(&StateLabel { state })
                .clone()
        };
        gauge("in_use").set(i64::from(connections.saturating_sub(idle)));
        gauge("idle").set(i64::from(idle));
        self.pool_max.set(i64::from(max));
    }

    pub fn pool_wait(&self) -> Histogram {
        self.pool_wait.clone()
    }

    pub fn pool_timeouts(&self) -> Counter {
        self.pool_timeouts.clone()
    }

    pub fn invalidation_lag(&self) -> Histogram {
        self.invalidation_lag.clone()
    }

    /// The upstream handles of the flow with this endpoint name. The
    /// first [`MAX_FLOW_LABELS`] names get their own label; later ones
    /// share [`OTHER_FLOW`]. Called once per cached flow, not per call.
    pub fn upstream_series(&self, endpoint_name: Option<&str>) -> UpstreamSeries {
        let name = endpoint_name.unwrap_or(UNNAMED_FLOW);
        let label = {
            let mut known = self.flow_labels.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(name) || known.len() < MAX_FLOW_LABELS {
                known.insert(name.to_string());
                name.to_string()
            } else {
                OTHER_FLOW.to_string()
            }
        };
        let results = UPSTREAM_STATUSES.map(|status| {
            self.upstream_results
                .get_or_create(&UpstreamLabels {
                    flow: label.clone(),
                    status,
                })
                .clone()
        });
        UpstreamSeries {
            results: Arc::new(results),
            duration: self
                .upstream_duration
                .get_or_create(&FlowLabel { flow: label })
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_counts_under_its_own_label() {
        for (index, outcome) in KeyOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index, "{}", outcome.label());
        }
        for (index, outcome) in SigninOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index, "{}", outcome.label());
        }
        let metrics = Metrics::new();
        metrics.keys().record(KeyOutcome::Revoked);
        let text = metrics.encode();
        assert!(
            text.contains("keygate_key_verifications_total{outcome=\"revoked\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keygate_key_verifications_total{outcome=\"unknown\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn histograms_encode_cumulative_buckets() {
        let metrics = Metrics::new();
        let series = metrics.http_series("GET", "/api/v1/users/whoami", 200);
        series.observe(Duration::from_micros(300));
        series.observe(Duration::from_millis(3));
        series.observe(Duration::from_secs(100));
        let text = metrics.encode();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .to_string()
        };
        let labels = "method=\"GET\",route=\"/api/v1/users/whoami\",status=\"200\"";
        assert!(line(&format!("keygate_http_requests_total{{{labels}}}")).ends_with(" 3"));
        let bucket = |le: &str| {
            line(&format!(
                "keygate_http_request_duration_seconds_bucket{{le=\"{le}\",{labels}}}"
            ))
        };
        assert!(bucket("0.0005").ends_with(" 1"));
        assert!(bucket("0.005").ends_with(" 2"));
        assert!(bucket("60.0").ends_with(" 2"));
        assert!(bucket("+Inf").ends_with(" 3"));
        assert!(line(&format!(
            "keygate_http_request_duration_seconds_count{{{labels}}}"
        ))
        .ends_with(" 3"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn flow_labels_are_capped() {
        let metrics = Metrics::new();
        for n in 0..MAX_FLOW_LABELS + 5 {
            metrics
                .upstream_series(Some(&format!("flow-{n}")))
                .observe(UpstreamResult::Status(200), Duration::from_millis(1));
        }
        metrics
            .upstream_series(Some("flow-0"))
            .observe(UpstreamResult::Timeout, Duration::from_secs(1));
        let text = metrics.encode();
        assert!(text.contains("flow=\"flow-0\",status=\"timeout\"} 1"));
        assert!(text.contains("flow=\"other\",status=\"2xx\"} 5"), "{text}");
        assert!(!text.contains(&format!("flow-{}\"", MAX_FLOW_LABELS)));
    }
}
