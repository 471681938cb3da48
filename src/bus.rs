//! The invalidation bus: what changed, told to every cache that holds it,
//! on this instance before the API answers and on every other instance
//! sharing the PostgreSQL database.
//!
//! Domains publish typed [`Event`]s after a write; caches subscribe
//! ([`Bus::subscribe`]) and drop what the event makes stale. No cache knows
//! another, and no domain knows which caches exist.
//!
//! Across instances, each instance runs one background thread with its own
//! connection that `LISTEN`s on [`CHANNEL`] and `NOTIFY`s the events this
//! instance publishes. Received events are applied to the local
//! subscribers. When the connection drops, the thread reconnects by itself
//! and applies [`Event::All`], since notifications may have been missed
//! meanwhile; the caches' TTL bounds staleness even if the thread cannot
//! reconnect. On SQLite (one instance) the bus is local only.
//!
//! Worst-case propagation while connected: the receiver's poll interval
//! (`KEYGATE_NOTIFY_POLL_MS`, default 25 ms) plus one database round trip.
//!
//! **Changes that take something away are final when the API answers.**
//! Such an event ([`Event::needs_confirmation`]: a key revoked, a user
//! changed, a flow or secret changed; and a key created, which the other
//! instances' key filters must hold before it is handed out) is sent with a sequence number; every
//! other instance applies it and answers on [`ACK_CHANNEL`]. The request
//! that published it waits (in [`confirming`], around every request) until
//! every live instance, i.e. every session PostgreSQL lists with the
//! listener's `application_name`, has acknowledged, for at most
//! [`CONFIRM_WAIT`] ([`KEY_CREATED_WAIT`] for a created key). And an instance whose listener is not connected does
//! not answer from its caches at all ([`Bus::current`]): after a
//! reconnect it clears them (`All`) before trusting them again.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, RunQueryDsl};
use tokio::sync::oneshot;

use crate::metrics::Histogram;
use crate::token::KeyFingerprint;

pub const CHANNEL: &str = "keygate_invalidation";
/// Where instances acknowledge the events that need it: `<origin pid>:<seq>`.
pub const ACK_CHANNEL: &str = "keygate_invalidation_ack";
/// The `application_name` of every listener session: the live instances.
const LISTENER_NAME: &str = "keygate-listener";
/// How long a request waits for the other instances' acknowledgements.
pub const CONFIRM_WAIT: Duration = Duration::from_millis(250);
/// The same for a created key, which other instances' key filters must
/// hold before the key is handed out (a filter that lacks it would refuse
/// it). Creating a key is rare, so it may wait longer.
pub const KEY_CREATED_WAIT: Duration = Duration::from_secs(2);
/// The listener's poll interval while acknowledgements are awaited.
const CONFIRM_POLL: Duration = Duration::from_millis(1);
const PING_EVERY: Duration = Duration::from_secs(5);
const RECONNECT_AFTER: Duration = Duration::from_millis(500);
const MAX_UNSENT: usize = 10_000;
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// What changed. Ids are the changed row's (or its owner's) id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was revoked, deactivated or changed.
    KeyChanged(String),
    /// A key was created: a cached "unknown key" must not hide it, and the
    /// key filter must learn it before the create answers.
    KeyCreated(KeyFingerprint),
    /// A user was renamed, promoted, demoted, deactivated or deleted.
    UserChanged(String),
    /// A flow of this owner was created, changed or deleted.
    FlowsChanged(String),
    /// A provider credential or variable of this owner was saved or deleted.
    SecretsChanged(String),
    /// Stored secrets were re-encrypted under a new secret key.
    SecretRotated,
    /// Anything may have changed (missed notifications).
    All,
}

impl Event {
    /// Events after which a cached answer on another instance would grant
    /// what was just taken away (or serve what was just replaced).
    pub fn needs_confirmation(&self) -> bool {
        matches!(
            self,
            Event::KeyChanged(_)
                | Event::KeyCreated(_)
                | Event::UserChanged(_)
                | Event::FlowsChanged(_)
                | Event::SecretsChanged(_)
        )
    }

    /// How long the publishing request waits for acknowledgements.
    fn confirm_wait(&self) -> Duration {
        match self {
            Event::KeyCreated(_) => KEY_CREATED_WAIT,
            _ => CONFIRM_WAIT,
        }
    }

    fn payload(&self) -> String {
        match self {
            Event::KeyChanged(id) => format!("key:{id}"),
            Event::UserChanged(id) => format!("user:{id}"),
            Event::FlowsChanged(id) => format!("flows:{id}"),
            Event::SecretsChanged(id) => format!("secrets:{id}"),
            Event::KeyCreated(fingerprint) => format!("created:{}", fingerprint.to_hex()),
            Event::SecretRotated => "rotated".into(),
            Event::All => "all".into(),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':') {
            Some(("key", id)) => Some(Event::KeyChanged(id.to_string())),
            Some(("user", id)) => Some(Event::UserChanged(id.to_string())),
            Some(("flows", id)) => Some(Event::FlowsChanged(id.to_string())),
            Some(("secrets", id)) => Some(Event::SecretsChanged(id.to_string())),
            Some(("created", hash)) => KeyFingerprint::from_hex(hash).map(Event::KeyCreated),
            _ => match payload {
                "rotated" => Some(Event::SecretRotated),
                "all" => Some(Event::All),
                _ => None,
            },
        }
    }
}

/// A cache (or anything else) that must hear about changes.
pub trait Subscriber: Send + Sync {
    fn on_event(&self, event: &Event);
}

/// Local delivery: the subscribers, held weakly so the bus keeps nothing
/// alive.
#[derive(Default)]
struct Subscribers(RwLock<Vec<Weak<dyn Subscriber>>>);

impl Subscribers {
    fn deliver(&self, event: &Event) {
        let subscribers = self.0.read().unwrap_or_else(|p| p.into_inner());
        for subscriber in subscribers.iter().filter_map(Weak::upgrade) {
            subscriber.on_event(event);
        }
    }
}

/// The bus: publish here, subscribe here.
pub struct Bus {
    subscribers: Arc<Subscribers>,
    outgoing: Option<Sender<Outgoing>>,
    listener: Option<Listener>,
    /// False while the listener is not connected: caches gated on it answer
    /// nothing (see [`Bus::current`]).
    current: Arc<AtomicBool>,
}

/// An event on its way to the other instances, with whom to tell once they
/// all have applied it.
struct Outgoing {
    event: Event,
    confirmed: Option<oneshot::Sender<()>>,
    /// When it was published, sent along so the receivers can measure the
    /// lag (`keygate_invalidation_lag_seconds`).
    published: SystemTime,
}

tokio::task_local! {
    /// The confirmations the current request waits for (see
    /// [`confirming`]).
    static CONFIRMATIONS: RefCell<Vec<oneshot::Receiver<()>>>;
}

impl Bus {
    /// A bus for one instance (SQLite): local delivery only.
    pub fn local() -> Self {
        Bus {
            subscribers: Arc::default(),
            outgoing: None,
            listener: None,
            current: Arc::new(AtomicBool::new(true)),
        }
    }

    /// A bus that also carries events between instances sharing the
    /// PostgreSQL database at `url`. Returns once the listener is connected
    /// (or after a few seconds; it keeps trying in the background).
    pub fn postgres(url: String, poll: Duration) -> Self {
        Self::postgres_measured(url, poll, None)
    }

    /// [`Bus::postgres`], observing in `lag` how long each event from
    /// another instance took from its publishing to its handling here.
    pub fn postgres_measured(url: String, poll: Duration, lag: Option<Histogram>) -> Self {
        let subscribers = Arc::<Subscribers>::default();
        let current = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let link = Link {
            subscribers: Arc::downgrade(&subscribers),
            outgoing: rx,
            poll,
            stop: Arc::new(AtomicBool::new(false)),
            current: current.clone(),
            lag,
        };
        let listener = Listener::spawn(url, link);
        Bus {
            subscribers,
            outgoing: Some(tx),
            listener: Some(listener),
            current,
        }
    }

    /// True while this instance hears every other instance's changes:
    /// always on SQLite, while the listener is connected on PostgreSQL.
    /// Caches answer only while it holds (`GuardedCache::gated`).
    pub fn current(&self) -> Arc<AtomicBool> {
        self.current.clone()
    }

    /// Delivers every event to `subscriber` from now on, for as long as it
    /// lives (the bus holds it weakly).
    pub fn subscribe<S: Subscriber + 'static>(&self, subscriber: &Arc<S>) {
        let subscriber: Weak<S> = Arc::downgrade(subscriber);
        let subscriber: Weak<dyn Subscriber> = subscriber;
        self.subscribers
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(subscriber);
    }

    /// Applies `event` to this instance's subscribers at once, then sends
    /// it to the other instances. Inside a request (see
    /// [`confirming`]) an event that needs it is confirmed by the
    /// other instances before the answer leaves.
    pub fn publish(&self, event: Event) {
        self.subscribers.deliver(&event);
        let Some(outgoing) = &self.outgoing else {
            return;
        };
        let confirmed = if event.needs_confirmation() {
            let (confirmed, awaited) = oneshot::channel();
            let in_request = CONFIRMATIONS
                .try_with(|waits| waits.borrow_mut().push(awaited))
                .is_ok();
            in_request.then_some(confirmed)
        } else {
            None
        };
        let _ = outgoing.send(Outgoing {
            event,
            confirmed,
            published: SystemTime::now(),
        });
    }

    /// [`Bus::publish`] for commands run outside a request (the CLI, an
    /// import): blocks until every other live instance has applied the
    /// event, whatever it is (or its wait has passed). Not for async code.
    pub fn publish_and_wait(&self, event: Event) {
        self.subscribers.deliver(&event);
        let Some(outgoing) = &self.outgoing else {
            return;
        };
        let (confirmed, awaited) = oneshot::channel();
        let confirmed = Some(confirmed);
        let outgoing_event = Outgoing {
            event,
            confirmed,
            published: SystemTime::now(),
        };
        if outgoing.send(outgoing_event).is_ok() {
            let _ = awaited.blocking_recv();
        }
    }

    /// Stops the listener thread after it has sent what is queued.
    pub fn stop(&self) {
        if let Some(listener) = &self.listener {
            listener.stop();
        }
    }
}

/// Runs `answer` (the rest of a request, below the key check) so that it
/// completes only once every live instance has applied the events it
/// published that need confirmation (or [`CONFIRM_WAIT`] has passed): a
/// revocation is final everywhere when its DELETE returns. The `auth`
/// middleware wraps every request's handling in it.
pub async fn confirming<T>(answer: impl std::future::Future<Output = T>) -> T {
    CONFIRMATIONS
        .scope(RefCell::new(Vec::new()), async move {
            let response = answer.await;
            let awaited = CONFIRMATIONS.with(|waits| std::mem::take(&mut *waits.borrow_mut()));
            for confirmation in awaited {
                // A dropped sender (listener gone) counts as answered: the
                // listener enforces the deadline.
                let _ = confirmation.await;
            }
            response
        })
        .await
}

/// The running notification thread; stopped with [`Listener::stop`].
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    fn spawn(url: String, link: Link) -> Self {
        let stop = link.stop.clone();
        let (ready, listening) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("keygate-notify".into())
            .spawn(move || run(&url, &link, ready))
            .map_err(|e| tracing::error!(error = %e, "cannot start the invalidation thread"))
            .ok();
        // Serve only once this instance hears other instances' changes (or
        // give up waiting; it keeps trying in the background).
        if thread.is_some() && listening.recv_timeout(FIRST_CONNECT_WAIT).is_err() {
            tracing::warn!("invalidation listener not connected yet; continuing to retry");
        }
        Listener {
            stop,
            thread: Mutex::new(thread),
        }
    }

    /// Stops the thread after it has sent what is queued.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Delivers an event; false once the bus is gone (the app has shut
/// down), which ends the thread.
fn apply(subscribers: &Weak<Subscribers>, event: &Event) -> bool {
    match subscribers.upgrade() {
        Some(subscribers) => {
            subscribers.deliver(event);
            true
        }
        None => false,
    }
}

/// What the listener thread works with.
struct Link {
    subscribers: Weak<Subscribers>,
    outgoing: Receiver<Outgoing>,
    poll: Duration,
    stop: Arc<AtomicBool>,
    current: Arc<AtomicBool>,
    lag: Option<Histogram>,
}

/// An event sent with a sequence number, waiting for the instances that
/// were listening to acknowledge it.
struct Awaited {
    seq: u64,
    expected: HashSet<i32>,
    deadline: Instant,
    reply: oneshot::Sender<()>,
}

fn run(url: &str, link: &Link, ready: std::sync::mpsc::SyncSender<()>) {
    let mut unsent: Vec<Outgoing> = Vec::new();
    let seq = AtomicU64::new(0);
    while !link.stop.load(Ordering::SeqCst) {
        link.current.store(false, Ordering::SeqCst);
        let mut conn = match connect(url) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "invalidation listener cannot connect; retrying");
                if !wait(&link.outgoing, &mut unsent, RECONNECT_AFTER) {
                    return;
                }
                continue;
            }
        };
        // Anything may have changed while this instance was not listening.
        if !apply(&link.subscribers, &Event::All) {
            return;
        }
        link.current.store(true, Ordering::SeqCst);
        let _ = ready.try_send(());
        let own_pid = backend_pid(&mut conn);
        tracing::debug!("invalidation listener connected");
        if serve_connection(&mut conn, own_pid, link, &seq, &mut unsent) {
            return;
        }
    }
}

/// A listening session, named so other instances can count it as live.
fn connect(url: &str) -> Result<PgConnection, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    for statement in [
        format!("SET application_name TO '{LISTENER_NAME}'"),
        format!("LISTEN {CHANNEL}"),
        format!("LISTEN {ACK_CHANNEL}"),
    ] {
        diesel::sql_query(statement)
            .execute(&mut conn)
            .map_err(|e| e.to_string())?;
    }
    Ok(conn)
}

/// Relays on one connection; returns true when told to stop (or when
/// nothing can publish any more), false when the connection broke.
fn serve_connection(
    conn: &mut PgConnection,
    own_pid: Option<i32>,
    link: &Link,
    seq: &AtomicU64,
    unsent: &mut Vec<Outgoing>,
) -> bool {
    let mut last_ping = Instant::now();
    let mut awaited: Vec<Awaited> = Vec::new();
    loop {
        let stopping = link.stop.load(Ordering::SeqCst);
        let pause = match () {
            _ if stopping => Duration::ZERO,
            _ if awaited.is_empty() => link.poll,
            _ => CONFIRM_POLL,
        };
        match link.outgoing.recv_timeout(pause) {
            Ok(outgoing) => unsent.push(outgoing),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return true,
        }
        unsent.extend(link.outgoing.try_iter());
        if !unsent.is_empty() {
            match send_all(conn, unsent, seq, &mut awaited) {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "NOTIFY failed; reconnecting");
                    return false;
                }
            }
        }
        if stopping {
            return true;
        }
        // Taken out first (answering needs the connection); the iterator
        // repeats an error forever once the connection is gone, so stop at
        // the first.
        let mut received = Vec::new();
        for notification in conn.notifications_iter() {
            let failed = notification.is_err();
            received.push(notification);
            if failed {
                break;
            }
        }
        for notification in received {
            match notification {
                // This instance applied its own changes before sending them.
                Ok(n) if Some(n.process_id) == own_pid => {}
                Ok(n) if n.channel == ACK_CHANNEL => {
                    acknowledged(&mut awaited, own_pid, n.process_id, &n.payload)
                }
                Ok(n) => {
                    let (payload, ack) = match n.payload.rsplit_once('#') {
                        Some((payload, seq)) => (payload, Some(seq)),
                        None => (n.payload.as_str(), None),
                    };
                    let (payload, published) = unstamp(payload);
                    if let Some(invalidation) = Event::parse(payload) {
                        if !apply(&link.subscribers, &invalidation) {
                            return true;
                        }
                        if let (Some(lag), Some(published)) = (&link.lag, published) {
                            // Clocks of two hosts may disagree: a "negative"
                            // lag counts as none.
                            lag.observe(
                                SystemTime::now()
                                    .duration_since(published)
                                    .unwrap_or_default(),
                            );
                        }
                    }
                    if let Some(seq) = ack {
                        let sent = diesel::sql_query("SELECT pg_notify($1, $2)")
                            .bind::<Text, _>(ACK_CHANNEL)
                            .bind::<Text, _>(format!("{}:{seq}", n.process_id))
                            .execute(conn);
                        if let Err(error) = sent {
                            tracing::warn!(%error, "acknowledgement failed; reconnecting");
                            return false;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "invalidation connection lost; reconnecting");
                    return false;
                }
            }
        }
        let now = Instant::now();
        let (settled, waiting) = std::mem::take(&mut awaited)
            .into_iter()
            .partition(|wait: &Awaited| wait.expected.is_empty() || now >= wait.deadline);
        awaited = waiting;
        for wait in settled {
            if !wait.expected.is_empty() {
                tracing::warn!(
                    missing = wait.expected.len(),
                    "instances did not acknowledge an invalidation in time"
                );
            }
            let _ = wait.reply.send(());
        }
        if last_ping.elapsed() >= PING_EVERY {
            if let Err(error) = diesel::sql_query("SELECT 1").execute(conn) {
                tracing::warn!(%error, "invalidation connection lost; reconnecting");
                return false;
            }
            last_ping = Instant::now();
        }
    }
}

/// NOTIFYs everything queued, in order; an event that needs confirmation
/// carries `#<seq>` and is awaited from every other live listener.
fn send_all(
    conn: &mut PgConnection,
    unsent: &mut Vec<Outgoing>,
    seq: &AtomicU64,
    awaited: &mut Vec<Awaited>,
) -> diesel::QueryResult<()> {
    while let Some(outgoing) = unsent.first_mut() {
        let number = outgoing
            .confirmed
            .is_some()
            .then(|| seq.fetch_add(1, Ordering::Relaxed));
        let stamped = stamp(&outgoing.event.payload(), outgoing.published);
        let payload = match number {
            Some(number) => format!("{stamped}#{number}"),
            None => stamped,
        };
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(payload)
            .execute(conn)?;
        let outgoing = unsent.remove(0);
        if let (Some(number), Some(reply)) = (number, outgoing.confirmed) {
            let expected = live_listeners(conn)?;
            awaited.push(Awaited {
                seq: number,
                expected,
                deadline: Instant::now() + outgoing.event.confirm_wait(),
                reply,
            });
        }
    }
    Ok(())
}

/// An event's payload with its publishing time: `<event>@<unix µs>`
/// (before the `#<seq>` of an event that is confirmed). No event payload
/// holds an `@` of its own.
fn stamp(payload: &str, published: SystemTime) -> String {
    let micros = published
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    format!("{payload}@{micros}")
}

/// The payload and its publishing time, if it carries one (an instance of
/// an older version sends none).
fn unstamp(stamped: &str) -> (&str, Option<SystemTime>) {
    match stamped.rsplit_once('@') {
        Some((payload, micros)) => match micros.parse::<u64>() {
            Ok(micros) => (payload, Some(UNIX_EPOCH + Duration::from_micros(micros))),
            Err(_) => (stamped, None),
        },
        None => (stamped, None),
    }
}

/// Records `from`'s acknowledgement of one of this instance's events.
fn acknowledged(awaited: &mut [Awaited], own_pid: Option<i32>, from: i32, payload: &str) {
    let Some((origin, seq)) = payload.split_once(':') else {
        return;
    };
    if origin.parse::<i32>().ok() != own_pid {
        return;
    }
    if let Ok(seq) = seq.parse::<u64>() {
        for wait in awaited.iter_mut().filter(|wait| wait.seq == seq) {
            wait.expected.remove(&from);
        }
    }
}

/// The other instances' listener sessions on this database.
fn live_listeners(conn: &mut PgConnection) -> diesel::QueryResult<HashSet<i32>> {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let rows: Vec<Pid> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind::<Text, _>(LISTENER_NAME)
    .load(conn)?;
    Ok(rows.into_iter().map(|row| row.pid).collect())
}

/// The server process id of this connection, which PostgreSQL puts on the
/// notifications it sent.
fn backend_pid(conn: &mut PgConnection) -> Option<i32> {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .map(|row| row.pid)
        .ok()
}

/// Waits before reconnecting while still collecting what to publish;
/// false when nothing can publish any more (the app is gone).
fn wait(outgoing: &Receiver<Outgoing>, unsent: &mut Vec<Outgoing>, pause: Duration) -> bool {
    match outgoing.recv_timeout(pause) {
        Ok(invalidation) => unsent.push(invalidation),
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => return false,
    }
    unsent.extend(outgoing.try_iter());
    // A long outage: one "clear everything" says as much as all of them.
    if unsent.len() > MAX_UNSENT {
        unsent.clear();
        unsent.push(Outgoing {
            event: Event::All,
            confirmed: None,
            published: SystemTime::now(),
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for event in [
            Event::KeyChanged("k1".into()),
            Event::UserChanged("u1".into()),
            Event::FlowsChanged("u1".into()),
            Event::SecretsChanged("u1".into()),
            Event::SecretRotated,
            Event::KeyCreated(KeyFingerprint(u128::MAX - 7)),
            Event::All,
        ] {
            assert_eq!(Event::parse(&event.payload()), Some(event));
        }
        assert_eq!(Event::parse("bogus"), None);
    }

    #[test]
    fn stamps_round_trip_and_old_payloads_still_parse() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let stamped = stamp(&Event::KeyChanged("k1".into()).payload(), at);
        assert_eq!(stamped, "key:k1@1700000000123456");
        assert_eq!(unstamp(&stamped), ("key:k1", Some(at)));
        assert_eq!(unstamp("key:k1"), ("key:k1", None));
        assert_eq!(unstamp("all"), ("all", None));
    }
}
