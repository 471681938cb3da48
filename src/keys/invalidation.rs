//! Cache invalidation across instances sharing one PostgreSQL.
//!
//! Each instance runs one background thread with its own connection that
//! `LISTEN`s on [`CHANNEL`] and `NOTIFY`s the invalidations this instance
//! publishes. Received invalidations are applied to the local
//! [`KeyVerifier`]. When the connection drops, the thread reconnects by
//! itself and clears the whole cache, since notifications may have been
//! missed meanwhile; the cache TTL bounds staleness even if the thread
//! cannot reconnect. On SQLite (one instance) publishing is a no-op.
//!
//! Worst-case propagation while connected: the receiver's poll interval
//! (`KEYGATE_NOTIFY_POLL_MS`, default 25 ms) plus one database round trip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, RunQueryDsl};

use super::verify::KeyVerifier;

pub const CHANNEL: &str = "keygate_key_invalidation";
const PING_EVERY: Duration = Duration::from_secs(5);
const RECONNECT_AFTER: Duration = Duration::from_millis(500);
const MAX_UNSENT: usize = 10_000;
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Key(String),
    User(String),
    /// Any flow of this user was created, changed or deleted.
    Flows(String),
    KeyCreated,
    All,
}

impl Invalidation {
    fn payload(&self) -> String {
        match self {
            Invalidation::Key(id) => format!("key:{id}"),
            Invalidation::User(id) => format!("user:{id}"),
            Invalidation::Flows(id) => format!("flows:{id}"),
            Invalidation::KeyCreated => "created".into(),
            Invalidation::All => "all".into(),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':') {
            Some(("key", id)) => Some(Invalidation::Key(id.to_string())),
            Some(("user", id)) => Some(Invalidation::User(id.to_string())),
            Some(("flows", id)) => Some(Invalidation::Flows(id.to_string())),
            _ => match payload {
                "created" => Some(Invalidation::KeyCreated),
                "all" => Some(Invalidation::All),
                _ => None,
            },
        }
    }
}

/// Hands invalidations to the notification thread; a no-op without one.
#[derive(Clone, Default)]
pub struct Publisher {
    outgoing: Option<Sender<Invalidation>>,
}

impl Publisher {
    pub fn publish(&self, invalidation: Invalidation) {
        if let Some(outgoing) = &self.outgoing {
            let _ = outgoing.send(invalidation);
        }
    }
}

/// A publisher and the queue the notification thread will drain.
pub fn queue() -> (Publisher, Receiver<Invalidation>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (Publisher { outgoing: Some(tx) }, rx)
}

/// The running notification thread; stopped with [`Listener::stop`].
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    pub fn spawn(
        url: String,
        verifier: Weak<KeyVerifier>,
        outgoing: Receiver<Invalidation>,
        poll: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let (ready, listening) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("keygate-notify".into())
            .spawn(move || run(&url, &verifier, &outgoing, poll, &thread_stop, ready))
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
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Applies an invalidation; false once the verifier is gone (the app has
/// shut down), which ends the thread.
fn apply(verifier: &Weak<KeyVerifier>, invalidation: &Invalidation) -> bool {
    match verifier.upgrade() {
        Some(verifier) => {
            verifier.apply(invalidation);
            true
        }
        None => false,
    }
}

fn run(
    url: &str,
    verifier: &Weak<KeyVerifier>,
    outgoing: &Receiver<Invalidation>,
    poll: Duration,
    stop: &AtomicBool,
    ready: std::sync::mpsc::SyncSender<()>,
) {
    let mut unsent: Vec<Invalidation> = Vec::new();
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
        if !apply(verifier, &Invalidation::All) {
            return;
        }
        let _ = ready.try_send(());
        let own_pid = backend_pid(&mut conn);
        tracing::debug!("invalidation listener connected");
        if serve_connection(
            &mut conn,
            own_pid,
            verifier,
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
    verifier: &Weak<KeyVerifier>,
    outgoing: &Receiver<Invalidation>,
    poll: Duration,
    stop: &AtomicBool,
    unsent: &mut Vec<Invalidation>,
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
                    if let Some(invalidation) = Invalidation::parse(&n.payload) {
                        if !apply(verifier, &invalidation) {
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
fn wait(
    outgoing: &Receiver<Invalidation>,
    unsent: &mut Vec<Invalidation>,
    pause: Duration,
) -> bool {
    match outgoing.recv_timeout(pause) {
        Ok(invalidation) => unsent.push(invalidation),
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => return false,
    }
    unsent.extend(outgoing.try_iter());
    // A long outage: one "clear everything" says as much as all of them.
    if unsent.len() > MAX_UNSENT {
        unsent.clear();
        unsent.push(Invalidation::All);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for invalidation in [
            Invalidation::Key("k1".into()),
            Invalidation::User("u1".into()),
            Invalidation::Flows("u1".into()),
            Invalidation::KeyCreated,
            Invalidation::All,
        ] {
            assert_eq!(
                Invalidation::parse(&invalidation.payload()),
                Some(invalidation)
            );
        }
        assert_eq!(Invalidation::parse("bogus"), None);
    }
}
