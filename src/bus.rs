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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, RunQueryDsl};

pub const CHANNEL: &str = "keygate_invalidation";
const PING_EVERY: Duration = Duration::from_secs(5);
const RECONNECT_AFTER: Duration = Duration::from_millis(500);
const MAX_UNSENT: usize = 10_000;
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// What changed. Ids are the changed row's (or its owner's) id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was revoked, deactivated or changed.
    KeyChanged(String),
    /// A key was created: a cached "unknown key" must not hide it.
    KeyCreated,
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
    fn payload(&self) -> String {
        match self {
            Event::KeyChanged(id) => format!("key:{id}"),
            Event::UserChanged(id) => format!("user:{id}"),
            Event::FlowsChanged(id) => format!("flows:{id}"),
            Event::SecretsChanged(id) => format!("secrets:{id}"),
            Event::KeyCreated => "created".into(),
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
            _ => match payload {
                "created" => Some(Event::KeyCreated),
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
    outgoing: Option<Sender<Event>>,
    listener: Option<Listener>,
}

impl Bus {
    /// A bus for one instance (SQLite): local delivery only.
    pub fn local() -> Self {
        Bus {
            subscribers: Arc::default(),
            outgoing: None,
            listener: None,
        }
    }

    /// A bus that also carries events between instances sharing the
    /// PostgreSQL database at `url`. Returns once the listener is connected
    /// (or after a few seconds; it keeps trying in the background).
    pub fn postgres(url: String, poll: Duration) -> Self {
        let subscribers = Arc::<Subscribers>::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let listener = Listener::spawn(url, Arc::downgrade(&subscribers), rx, poll);
        Bus {
            subscribers,
            outgoing: Some(tx),
            listener: Some(listener),
        }
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
    /// it to the other instances.
    pub fn publish(&self, event: Event) {
        self.subscribers.deliver(&event);
        if let Some(outgoing) = &self.outgoing {
            let _ = outgoing.send(event);
        }
    }

    /// Stops the listener thread after it has sent what is queued.
    pub fn stop(&self) {
        if let Some(listener) = &self.listener {
            listener.stop();
        }
    }
}

/// The running notification thread; stopped with [`Listener::stop`].
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    fn spawn(
        url: String,
        subscribers: Weak<Subscribers>,
        outgoing: Receiver<Event>,
        poll: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let (ready, listening) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("keygate-notify".into())
            .spawn(move || run(&url, &subscribers, &outgoing, poll, &thread_stop, ready))
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

fn run(
    url: &str,
    subscribers: &Weak<Subscribers>,
    outgoing: &Receiver<Event>,
    poll: Duration,
    stop: &AtomicBool,
    ready: std::sync::mpsc::SyncSender<()>,
) {
    let mut unsent: Vec<Event> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match PgConnection::establish(url) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "invalidation listener cannot connect; retrying");
                if !wait(outgoing, &mut unsent, RECONNECT_AFTER) {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(&mut conn) {
            tracing::warn!(%error, "LISTEN failed; reconnecting");
            if !wait(outgoing, &mut unsent, RECONNECT_AFTER) {
                return;
            }
            continue;
        }
        // Anything may have changed while this instance was not listening.
        if !apply(subscribers, &Event::All) {
            return;
        }
        let _ = ready.try_send(());
        let own_pid = backend_pid(&mut conn);
        tracing::debug!("invalidation listener connected");
        if serve_connection(
            &mut conn,
            own_pid,
            subscribers,
            outgoing,
            poll,
            stop,
            &mut unsent,
        ) {
            return;
        }
    }
}

/// Relays on one connection; returns true when told to stop (or when
/// nothing can publish any more), false when the connection broke.
fn serve_connection(
    conn: &mut PgConnection,
    own_pid: Option<i32>,
    subscribers: &Weak<Subscribers>,
    outgoing: &Receiver<Event>,
    poll: Duration,
    stop: &AtomicBool,
    unsent: &mut Vec<Event>,
) -> bool {
    let mut last_ping = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match outgoing.recv_timeout(if stopping { Duration::ZERO } else { poll }) {
            Ok(invalidation) => unsent.push(invalidation),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return true,
        }
        unsent.extend(outgoing.try_iter());
        while let Some(invalidation) = unsent.first() {
            let sent = diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(CHANNEL)
                .bind::<Text, _>(invalidation.payload())
                .execute(conn);
            if let Err(error) = sent {
                tracing::warn!(%error, "NOTIFY failed; reconnecting");
                return false;
            }
            unsent.remove(0);
        }
        if stopping {
            return true;
        }
        for notification in conn.notifications_iter() {
            match notification {
                // This instance applied its own changes before sending them.
                Ok(n) if Some(n.process_id) == own_pid => {}
                Ok(n) => {
                    if let Some(invalidation) = Event::parse(&n.payload) {
                        if !apply(subscribers, &invalidation) {
                            return true;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "invalidation connection lost; reconnecting");
                    return false;
                }
            }
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
fn wait(outgoing: &Receiver<Event>, unsent: &mut Vec<Event>, pause: Duration) -> bool {
    match outgoing.recv_timeout(pause) {
        Ok(invalidation) => unsent.push(invalidation),
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => return false,
    }
    unsent.extend(outgoing.try_iter());
    // A long outage: one "clear everything" says as much as all of them.
    if unsent.len() > MAX_UNSENT {
        unsent.clear();
        unsent.push(Event::All);
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
            Event::KeyCreated,
            Event::All,
        ] {
            assert_eq!(Event::parse(&event.payload()), Some(event));
        }
        assert_eq!(Event::parse("bogus"), None);
    }
}
