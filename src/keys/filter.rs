//! The key filter: which keys exist, in a few megabytes, so a key that is
//! not stored is refused without a database round trip.
//!
//! It is a Bloom filter over [`KeyFingerprint`]s (the head of each stored
//! key's SHA-256), 16 bits and 8 probes per key: 4 MB at a million keys
//! (sized with room for a quarter more), with one unknown key in about 1,700 let through to the database
//! (which then refuses it). It never refuses a stored key:
//!
//! - **Loading.** It is filled from the database in the background at
//!   start (a page of hashes at a time); until that finishes, every miss
//!   goes to the database. Keys created meanwhile are recorded and added
//!   when the load ends, so none falls between the load and the events.
//! - **This instance's keys** are added when the create publishes
//!   [`Event::KeyCreated`], before the API answers.
//! - **Other instances' keys (PostgreSQL).** The create waits until every
//!   other live instance has acknowledged the event (the bus's
//!   confirmations, [`crate::bus::KEY_CREATED_WAIT`]), and a trigger on
//!   the key table notifies every insert, whoever wrote it. While this
//!   instance's listener is not connected (`Bus::current`), the filter
//!   answers nothing; after a reconnect ([`Event::All`]) it reloads.
//! - **Other processes (SQLite).** A trigger logs every insert to
//!   `key_inserts`; before refusing, the filter reads what was logged since
//!   it last looked, on a connection of its own (in-process, microseconds,
//!   no pool), at most once per [`LOG_FRESH`] (1 ms).
//! - **Growing.** Past one key per 10 bits it reloads at twice the size in
//!   the background, answering from the old bits meanwhile (PostgreSQL;
//!   on SQLite a reload empties the insert log, so the old bits stop
//!   answering until it is done).
//!
//! Revoked and deleted keys stay in the bits until the next reload; they
//! are misses that the database (or the negative cache) answers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::bus::{Event, Subscriber};
use crate::db::{self, ConnectionManager, DatabaseUrl, DbConnection, DbPool};
use crate::keys::store;
use crate::token::{KeyFingerprint, TokenDigest};

const BITS_PER_KEY: usize = 16;
/// The filter grows when keys fill it this densely (about 0.6 % of
/// unknown keys then pass).
const GROW_AT_BITS_PER_KEY: usize = 10;
const PROBES: u32 = 8;
/// The smallest filter: 64 Ki keys (128 KB).
const MIN_KEYS: usize = 1 << 16;
/// Hashes read per query while loading.
const LOAD_PAGE: i64 = 10_000;
/// How long a failed load waits before it tries again.
const LOAD_RETRY: Duration = Duration::from_secs(1);
/// Logged inserts read per look (SQLite); more than this waiting (a bulk
/// import) means a reload instead.
const LOG_PAGE: i64 = 1_000;

/// A fixed-size Bloom filter; insertion is lock-free (atomic OR).
struct Bits {
    words: Vec<AtomicU64>,
    /// `words.len() * 64 - 1`: the length is a power of two.
    mask: u64,
    inserted: AtomicUsize,
}

impl Bits {
    fn for_keys(keys: usize) -> Self {
        let bits = (keys.max(MIN_KEYS) * BITS_PER_KEY).next_power_of_two();
        Bits {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
            inserted: AtomicUsize::new(0),
        }
    }

    /// Probe positions by double hashing over the fingerprint's two
    /// halves (already uniform: they are SHA-256 output).
    fn probes(&self, fingerprint: KeyFingerprint) -> impl Iterator<Item = u64> + '_ {
        let high = (fingerprint.0 >> 64) as u64;
        let step = fingerprint.0 as u64 | 1;
        (0..u64::from(PROBES)).map(move |n| high.wrapping_add(n.wrapping_mul(step)) & self.mask)
    }

    fn insert(&self, fingerprint: KeyFingerprint) {
        for bit in self.probes(fingerprint) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    fn may_contain(&self, fingerprint: KeyFingerprint) -> bool {
        self.probes(fingerprint).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }

    fn is_crowded(&self) -> bool {
        self.inserted.load(Ordering::Relaxed) > self.words.len() * 64 / GROW_AT_BITS_PER_KEY
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// SQLite's log of key inserts, read on a connection of the filter's own.
struct InsertLog {
    conn: DbConnection,
    seen: i64,
    /// When the last successful read began: everything committed before
    /// then is in the bits.
    read_at: Option<Instant>,
}

/// How long a read of SQLite's insert log is trusted: refusals within this
/// long of the last read use the bits alone, so a flood costs one read per
/// interval, not one per request. A key another process commits is
/// therefore refused for at most this long; the `api-key` command waits
/// [`LOG_SETTLE`] before it prints the key, so its keys never are.
const LOG_FRESH: Duration = Duration::from_millis(1);
/// See [`LOG_FRESH`].
pub const LOG_SETTLE: Duration = Duration::from_millis(3);

pub struct KeyFilter {
    /// Itself, for the loading thread.
    me: Weak<KeyFilter>,
    pool: DbPool,
    bits: RwLock<Option<Arc<Bits>>>,
    /// While a load runs: the keys created since it started, added to the
    /// new bits before they are used.
    recorded: Mutex<Option<Vec<KeyFingerprint>>>,
    /// Each load's number; a load that is no longer the newest is dropped.
    loads: AtomicU64,
    /// The bus's flag: false while this instance may be missing events.
    current: Arc<AtomicBool>,
    /// The bits lack keys (SQLite's log overflowed) until the load that
    /// was started then has finished.
    incomplete: AtomicBool,
    /// SQLite only.
    log: Option<Mutex<Option<InsertLog>>>,
    refused: AtomicU64,
    ready: tokio::sync::watch::Sender<bool>,
}

impl KeyFilter {
    /// An empty filter; [`KeyFilter::load`] fills it in the background.
    pub fn new(pool: DbPool, url: &DatabaseUrl, current: Arc<AtomicBool>) -> Arc<Self> {
        let log = matches!(url, DatabaseUrl::Sqlite(_)).then(|| {
            let conn = ConnectionManager::new(url.clone()).establish();
            if let Err(error) = &conn {
                tracing::warn!(%error, "key filter cannot open its SQLite connection");
            }
            Mutex::new(conn.ok().map(|conn| InsertLog {
                conn,
                seen: 0,
                read_at: None,
            }))
        });
        Arc::new_cyclic(|me| KeyFilter {
            me: me.clone(),
            pool,
            bits: RwLock::new(None),
            recorded: Mutex::new(None),
            loads: AtomicU64::new(0),
            current,
            incomplete: AtomicBool::new(false),
            log,
            refused: AtomicU64::new(0),
            ready: tokio::sync::watch::channel(false).0,
        })
    }

    /// True when the key with this digest is certainly not stored. False
    /// when it may be, and whenever the filter cannot tell (still loading,
    /// bus not current, SQLite log unreadable).
    pub fn rules_out(&self, digest: &TokenDigest) -> bool {
        if !self.current.load(Ordering::SeqCst) || self.incomplete.load(Ordering::SeqCst) {
            return false;
        }
        let bits = self.bits.read().unwrap_or_else(|p| p.into_inner());
        let Some(bits) = bits.as_ref() else {
            return false;
        };
        let fingerprint = digest.fingerprint();
        // Checked again after catching up with keys other processes wrote.
        if bits.may_contain(fingerprint)
            || !self.caught_up_with_log(bits)
            || bits.may_contain(fingerprint)
        {
            return false;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// On SQLite, adds the keys other processes logged since the last look;
    /// false if the log could not be read, or holds so much that a reload
    /// is quicker (then nothing is refused meanwhile).
    fn caught_up_with_log(&self, bits: &Bits) -> bool {
        let Some(log) = &self.log else { return true };
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        let Some(log) = log.as_mut() else {
            return false;
        };
        // A reload may have emptied the log while this thread waited.
        if self.incomplete.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if log
            .read_at
            .is_some_and(|at| now.duration_since(at) < LOG_FRESH)
        {
            return true;
        }
        match store::key_inserts_after(&mut log.conn, log.seen, LOG_PAGE) {
            Ok(rows) if rows.len() as i64 == LOG_PAGE => {
                self.load(bits.inserted.load(Ordering::Relaxed) + LOG_PAGE as usize);
                false
            }
            Ok(rows) => {
                for (seq, hash) in rows {
                    if let Some(fingerprint) = KeyFingerprint::from_hex(&hash) {
                        bits.insert(fingerprint);
                        self.record(fingerprint);
                    }
                    log.seen = seq;
                }
                log.read_at = Some(now);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "key filter cannot read the key insert log");
                false
            }
        }
    }

    fn insert(&self, fingerprint: KeyFingerprint) {
        let bits = self.bits.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(bits) = bits {
            bits.insert(fingerprint);
            if bits.is_crowded() && !self.is_loading() {
                self.load(bits.inserted.load(Ordering::Relaxed) * 2);
            }
        }
        self.record(fingerprint);
    }

    fn record(&self, fingerprint: KeyFingerprint) {
        if let Some(recorded) = self
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            recorded.push(fingerprint);
        }
    }

    fn is_loading(&self) -> bool {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Starts filling a new filter sized for `expected_keys` from the
    /// database on a thread of its own; the current bits (if any) answer
    /// until it is done.
    pub fn load(&self, expected_keys: usize) {
        let Some(filter) = self.me.upgrade() else {
            return;
        };
        let number = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
        *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
        // On SQLite the load empties the insert log, which the current bits
        // may not have read yet: they stop answering until the load is done.
        if self.log.is_some() {
            self.incomplete.store(true, Ordering::SeqCst);
            self.ready.send_replace(false);
        }
        let spawned = std::thread::Builder::new()
            .name("keygate-key-filter".into())
            .spawn(move || filter.fill(number, expected_keys));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start loading the key filter");
        }
    }

    fn fill(&self, number: u64, expected_keys: usize) {
        let bits = loop {
            match self.read_all(expected_keys) {
                Ok(bits) => break bits,
                Err(error) => {
                    tracing::warn!(%error, "key filter could not load; misses use the database");
                    if self.loads.load(Ordering::SeqCst) != number {
                        return;
                    }
                    std::thread::sleep(LOAD_RETRY);
                }
            }
        };
        let mut slot = self.bits.write().unwrap_or_else(|p| p.into_inner());
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if self.loads.load(Ordering::SeqCst) != number {
            return;
        }
        for fingerprint in recorded.take().unwrap_or_default() {
            bits.insert(fingerprint);
        }
        tracing::debug!(
            keys = bits.inserted.load(Ordering::Relaxed),
            bytes = bits.bytes(),
            "key filter loaded"
        );
        *slot = Some(Arc::new(bits));
        self.incomplete.store(false, Ordering::SeqCst);
        self.ready.send_replace(true);
    }

    /// Every stored key into new bits sized for `expected_keys` (SQLite: the
    /// insert log is emptied first, since the load covers it).
    fn read_all(&self, expected_keys: usize) -> Result<Bits, crate::error::AppError> {
        let stored = db::run_blocking(&self.pool, store::count_keys)?;
        // Room for a quarter more before the filter has to grow again.
        let bits = Bits::for_keys(expected_keys.max(stored as usize / 4 * 5));
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(log) = log.as_mut() {
                log.seen = store::key_inserts_reset(&mut log.conn)?;
                log.read_at = None;
            }
        }
        let mut after: Option<String> = None;
        loop {
            let from = after.take();
            let mut page = db::run_blocking(&self.pool, move |conn| {
                store::hashes_after(conn, from.as_deref(), LOAD_PAGE)
            })?;
            for hash in &page {
                if let Some(fingerprint) = KeyFingerprint::from_hex(hash) {
                    bits.insert(fingerprint);
                }
            }
            if (page.len() as i64) < LOAD_PAGE {
                return Ok(bits);
            }
            after = page.pop();
        }
    }

    /// Drops the bits (misses use the database) and reloads.
    fn reload(&self) {
        let keys = self
            .bits
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map_or(0, |bits| bits.inserted.load(Ordering::Relaxed));
        self.ready.send_replace(false);
        self.load(keys);
    }

    /// Unknown keys refused from memory since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Resolves once the filter is complete, i.e. refuses from memory (for
    /// tests).
    pub async fn loaded(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Bytes held by the bits (0 while loading).
    pub fn bytes(&self) -> usize {
        self.bits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |bits| bits.bytes())
    }
}

impl Subscriber for KeyFilter {
    fn on_event(&self, event: &Event) {
        match event {
            Event::KeyCreated(fingerprint) => self.insert(*fingerprint),
            Event::All => self.reload(),
            Event::KeyChanged(_)
            | Event::UserChanged(_)
            | Event::FlowsChanged(_)
            | Event::SecretsChanged(_)
            | Event::SecretRotated => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(n: u32) -> KeyFingerprint {
        TokenDigest::of(&format!("sk-{n}")).fingerprint()
    }

    #[test]
    fn inserted_keys_are_always_found() {
        let bits = Bits::for_keys(1000);
        for n in 0..50_000 {
            bits.insert(fingerprint(n));
        }
        assert!((0..50_000).all(|n| bits.may_contain(fingerprint(n))));
    }

    #[test]
    fn few_unknown_keys_pass_at_capacity() {
        let bits = Bits::for_keys(MIN_KEYS);
        for n in 0..MIN_KEYS as u32 {
            bits.insert(fingerprint(n));
        }
        let passed = (1_000_000..1_100_000)
            .filter(|n| bits.may_contain(fingerprint(*n)))
            .count();
        // 16 bits and 8 probes per key: about 0.06 %.
        assert!(passed < 300, "{passed} of 100000 unknown keys passed");
    }

    #[test]
    fn sized_in_powers_of_two_at_two_bytes_per_key() {
        assert_eq!(Bits::for_keys(1_000_000).bytes(), 2 * 1024 * 1024);
        assert_eq!(Bits::for_keys(0).bytes(), MIN_KEYS * 2);
    }
}
