//! Database access shared by every domain: one connection type over both
//! backends, the pool, embedded migrations and the bridge from async handlers
//! to blocking diesel calls.
//!
//! The backend is chosen from the URL scheme here, not by diesel's derived
//! `establish` (which tries each backend in turn and hides the real error).

pub mod error;
pub mod schema;

pub use error::{conflict_on_duplicate, DbError};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::AppError;

/// One connection over either backend; queries written against it run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

pub type DbPool = r2d2::Pool<ConnectionManager>;

/// The user columns an authenticated principal carries, in the field order
/// of `identity::AuthUser`; every query that authenticates selects
/// [`auth_user_columns`].
pub type AuthUserColumns = (
    schema::users::id,
    schema::users::username,
    schema::users::is_superuser,
    schema::users::is_active,
    schema::users::created_at,
    schema::users::updated_at,
    schema::users::last_login_at,
);

/// Diesel's columns are unit values: the default is the one value.
pub fn auth_user_columns() -> AuthUserColumns {
    AuthUserColumns::default()
}

/// Runs one body on the concrete connection of either backend, for the
/// few queries diesel cannot build on the multi-backend connection (`ON
/// CONFLICT` upserts). The body is written once; it is compiled per backend.
macro_rules! on_each_backend {
    ($conn:expr, |$backend:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgresql($backend) => $body,
            $crate::db::DbConnection::Sqlite($backend) => $body,
        }
    };
}
pub(crate) use on_each_backend;

/// A pooled connection and what the pool needs to know about its health.
///
/// r2d2 can ping every connection on checkout, but on PostgreSQL that costs
/// a round trip per request (about 40% of lookup throughput). Instead a
/// connection is pinged only when it has not just been used successfully,
/// and one that failed as if the database were gone is discarded, so the
/// pool still recovers by itself after an outage. One such failure also
/// ends the trust in every other pooled connection (the outage generation):
/// an idle connection that was cut with the rest is pinged, not handed out.
pub struct PooledDb {
    conn: DbConnection,
    last_success: Option<Instant>,
    /// The pool's outage generation when `last_success` was recorded.
    trusted_generation: u64,
    outages: Arc<AtomicU64>,
    failed: bool,
}

impl PooledDb {
    fn record_success(&mut self) {
        self.last_success = Some(Instant::now());
        self.trusted_generation = self.outages.load(Ordering::Acquire);
    }

    fn is_trusted(&self) -> bool {
        self.trusted_generation == self.outages.load(Ordering::Acquire)
            && self
                .last_success
                .is_some_and(|at| at.elapsed() < TRUSTED_FOR)
    }
}

/// How long after a successful use a connection is trusted without a ping.
const TRUSTED_FOR: Duration = Duration::from_secs(2);

impl std::ops::Deref for PooledDb {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PooledDb {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.conn
    }
}

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Where the data lives, decided once from `KEYGATE_DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    /// PostgreSQL URLs may carry a password: never print them whole.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Postgres(url) => write!(f, "Postgres({})", redact_url_password(url)),
            DatabaseUrl::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

impl DatabaseUrl {
    /// Parses `postgres://…`, `postgresql://…`, `sqlite://PATH`, `sqlite:PATH`
    /// or a plain file path.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("the database URL is empty".into());
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(format!(
                "unsupported database URL {}: use postgres://… or sqlite://PATH",
                redact_url_password(url)
            ));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Postgres(_) => "postgresql",
            DatabaseUrl::Sqlite(_) => "sqlite",
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// r2d2 manager that opens the backend named by the URL, so a PostgreSQL
/// error (wrong password, server down) is reported as such.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: DatabaseUrl,
    /// Counts the outages seen on any connection of the pool.
    outages: Arc<AtomicU64>,
}

impl ConnectionManager {
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url,
            outages: Arc::default(),
        }
    }

    pub fn establish(&self) -> Result<DbConnection, diesel::ConnectionError> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                PgConnection::establish(url).map(DbConnection::Postgresql)
            }
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut conn = SqliteConnection::establish(&path)?;
                apply_sqlite_pragmas(&mut conn).map_err(|e| {
                    diesel::ConnectionError::BadConnection(format!("SQLite pragmas: {e}"))
                })?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = PooledDb;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<PooledDb, r2d2::Error> {
        let conn = self.establish().map_err(r2d2::Error::ConnectionError)?;
        let mut pooled = PooledDb {
            conn,
            last_success: None,
            trusted_generation: 0,
            outages: self.outages.clone(),
            failed: false,
        };
        pooled.record_success();
        Ok(pooled)
    }

    fn is_valid(&self, pooled: &mut PooledDb) -> Result<(), r2d2::Error> {
        if pooled.is_trusted() {
            return Ok(());
        }
        pooled.conn.ping().map_err(r2d2::Error::QueryError)?;
        pooled.record_success();
        Ok(())
    }

    fn has_broken(&self, pooled: &mut PooledDb) -> bool {
        pooled.failed || pooled.conn.is_broken()
    }
}

/// WAL for concurrent readers, a busy timeout instead of instant "database
/// is locked" errors, and enforced foreign keys (cascading deletes). Set on
/// every new connection, since SQLite keeps these per connection.
fn apply_sqlite_pragmas(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
}

/// Runs the embedded migrations of the connection's backend.
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, String> {
    let applied = match conn {
        DbConnection::Postgresql(conn) => conn.run_pending_migrations(POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(conn) => conn.run_pending_migrations(SQLITE_MIGRATIONS),
    }
    .map_err(|e| format!("database migration failed: {e}"))?;
    Ok(applied.len())
}

/// Readiness: whether every embedded migration of the backend is applied.
pub fn migrations_current(conn: &mut DbConnection) -> Result<bool, String> {
    let pending = match conn {
        DbConnection::Postgresql(conn) => conn.has_pending_migration(POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(conn) => conn.has_pending_migration(SQLITE_MIGRATIONS),
    }
    .map_err(|e| format!("cannot read the applied migrations: {e}"))?;
    Ok(!pending)
}

/// Creates a directory keygate keeps private data in (the data directory),
/// readable by the owner only (`0700`). An existing directory is left as
/// it is (the operator may share it on purpose), with a warning when
/// other users can read it.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %dir.display(),
                    "the data directory is open to other users; chmod 700 it"
                );
            }
        }
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The SQLite database and its `-wal` and `-shm` files hold every key hash
/// and encrypted secret: owner-only (`0600`), also when an older keygate
/// or a wider umask created them. SQLite gives the `-wal` and `-shm` it
/// creates later the database file's mode.
fn make_database_files_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut paths = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            paths.push(name.into());
        }
        for file in paths {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            if meta.permissions().mode() & 0o077 != 0 {
                let tightened =
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
                if let Err(error) = tightened {
                    tracing::warn!(path = %file.display(), %error, "cannot make the database file private");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Opens one connection, migrates, then builds the pool.
pub fn connect_and_migrate(
    url: &DatabaseUrl,
    pool_size: u32,
    timeout: Duration,
) -> Result<DbPool, String> {
    connect_and_migrate_measured(url, pool_size, timeout, None)
}

/// Measures the pool for the metrics: how long each checkout waited, and
/// the checkouts that timed out.
#[derive(Debug)]
pub struct PoolMeasures {
    pub wait: crate::metrics::Histogram,
    pub timeouts: prometheus_client::metrics::counter::Counter,
}

impl r2d2::HandleEvent for PoolMeasures {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        self.wait.observe(event.duration());
    }

    fn handle_timeout(&self, _: r2d2::event::TimeoutEvent) {
        self.timeouts.inc();
    }
}

/// [`connect_and_migrate`], with the pool's checkouts measured.
pub fn connect_and_migrate_measured(
    url: &DatabaseUrl,
    pool_size: u32,
    timeout: Duration,
    measures: Option<PoolMeasures>,
) -> Result<DbPool, String> {
    if let DatabaseUrl::Sqlite(path) = url {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|e| {
                format!("cannot create database directory {}: {e}", parent.display())
            })?;
        }
    }
    let manager = ConnectionManager::new(url.clone());
    let mut conn = manager
        .establish()
        .map_err(|e| format!("cannot connect to the {} database: {e}", url.backend_name()))?;
    if let DatabaseUrl::Sqlite(path) = url {
        make_database_files_private(path);
    }
    let applied = run_migrations(&mut conn)?;
    if applied > 0 {
        tracing::info!(
            applied,
            backend = url.backend_name(),
            "database migrations applied"
        );
    }
    drop(conn);
    let mut builder = r2d2::Pool::builder()
        .max_size(pool_size)
        .min_idle(Some(1))
        .connection_timeout(timeout);
    if let Some(measures) = measures {
        builder = builder.event_handler(Box::new(measures));
    }
    builder.build(manager).map_err(|e| {
        format!(
            "cannot open the {} connection pool: {e}",
            url.backend_name()
        )
    })
}

/// Runs blocking database work off the async workers (`web::block`, never
/// `block_in_place`, which panics on actix's current-thread runtimes).
/// `work` may fail with anything that maps into [`AppError`] (a diesel
/// error, a store's own `AppError`); a connection that saw the database
/// vanish is not returned to service. A busy SQLite keeps its connection.
pub async fn run<T, E, F>(pool: &DbPool, work: F) -> Result<T, AppError>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    E: Into<AppError>,
    T: Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || run_blocking(&pool, work))
        .await
        .map_err(|_| AppError::internal("database task was cancelled"))?
}

/// [`run`] on the calling thread, for threads of keygate's own that may
/// block (the key lookup workers).
pub fn run_blocking<T, E, F>(pool: &DbPool, work: F) -> Result<T, AppError>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: Into<AppError>,
{
    let mut pooled = pool.get().map_err(AppError::from)?;
    let result = work(&mut pooled.conn).map_err(Into::into);
    match &result {
        Err(e) if e.is_database_outage() => {
            pooled.failed = true;
            pooled.last_success = None;
            pooled.outages.fetch_add(1, Ordering::AcqRel);
        }
        _ => pooled.record_success(),
    }
    result
}

/// Runs `work` in a write transaction. On SQLite it is `BEGIN IMMEDIATE`:
/// the write lock is taken first, so a concurrent writer waits (the busy
/// timeout) instead of failing with "database is locked" when a read turns
/// into a write. On PostgreSQL it is an ordinary transaction. Inside
/// another transaction it nests as a savepoint on both backends.
pub fn transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let began_immediate = match conn {
        DbConnection::Sqlite(sqlite) => {
            match AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE") {
                Ok(()) => true,
                Err(diesel::result::Error::AlreadyInTransaction) => false,
                Err(error) => return Err(error.into()),
            }
        }
        DbConnection::Postgresql(_) => false,
    };
    if !began_immediate {
        <DbConnection as Connection>::TransactionManager::begin_transaction(conn)?;
    }
    match work(conn) {
        Ok(value) => {
            <DbConnection as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(error) => {
            match <DbConnection as Connection>::TransactionManager::rollback_transaction(conn) {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
                Err(rollback) => Err(rollback.into()),
            }
        }
    }
}

/// [`transaction`] at PostgreSQL's SERIALIZABLE level (SQLite's write
/// transactions already are), for check-then-write rules such as "keep one
/// active superuser" that two concurrent requests must not both pass.
/// Inside another transaction it is a savepoint at the outer level
/// (PostgreSQL sets the level only when a transaction begins), so work
/// that wraps such a rule with more writes (an audit entry) opens the outer
/// transaction with this function too.
pub fn serializable_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::TransactionManager;
    let nested =
        <DbConnection as Connection>::TransactionManager::transaction_manager_status_mut(conn)
            .transaction_depth()?
            .is_some();
    transaction(conn, |conn| {
        if let (DbConnection::Postgresql(_), false) = (&*conn, nested) {
            use diesel::RunQueryDsl;
            diesel::sql_query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(conn)?;
        }
        work(conn)
    })
}

/// Current time as stored: UTC, truncated to microseconds so values compare
/// equal after a round trip through PostgreSQL.
pub fn now() -> chrono::NaiveDateTime {
    truncate_to_micros(chrono::Utc::now().naive_utc())
}

pub fn truncate_to_micros(t: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
    use chrono::Timelike;
    let nanos = t.nanosecond() / 1_000 * 1_000;
    t.with_nanosecond(nanos).unwrap_or(t)
}

/// The owner-scoped queries of a table whose rows each belong to one user
/// (its `user_id`) and are named by a column unique per user (`$key`: an
/// id, or a credential's provider), written once for every such store:
///
/// - `owned(user_id, key)`: the user's row named `key` and nobody else's,
///   the filter every owner-scoped read and write of the store starts from;
/// - `find_for_user(conn, user_id, key)`: that row, `None` when it is not
///   the user's.
///
/// With `listed by ORDER`, also `list_for_user(conn, user_id)` (the user's
/// rows in that order) and `delete_for_user(conn, user_id, key)` (false
/// when the row is not the user's). With `changed by CHANGES, taken by
/// TAKEN`, also `update_for_user(conn, user_id, key, changes)`: the changes
/// stamped with `updated_at` and the row read back, in one transaction;
/// `None` when it is not the user's, 409 `TAKEN(&changes)` when a unique
/// constraint refuses them. A store whose list, delete or update does more
/// (a flow's delete takes its bound keys along) writes its own on `owned`.
macro_rules! owner_scoped {
    (
        $table:ident: $row:ty,
        by $key:ident
        $(, listed by $order:expr)?
        $(, changed by $changes:ty, taken by $taken:path)?
    ) => {
        /// The user's row named `key`, nobody else's.
        fn owned<'a>(
            user_id: &'a str,
            key: &'a str,
        ) -> diesel::dsl::Filter<
            diesel::dsl::Filter<$table::table, diesel::dsl::Eq<$table::user_id, &'a str>>,
            diesel::dsl::Eq<$table::$key, &'a str>,
        > {
            use diesel::prelude::*;
            $table::table
                .filter($table::user_id.eq(user_id))
                .filter($table::$key.eq(key))
        }

        /// The user's row named `key`; `None` when it is not theirs.
        pub fn find_for_user(
            conn: &mut $crate::db::DbConnection,
            user_id: &str,
            key: &str,
        ) -> ::std::result::Result<Option<$row>, $crate::error::AppError> {
            use diesel::prelude::*;
            Ok(owned(user_id, key)
                .select(<$row>::as_select())
                .first(conn)
                .optional()?)
        }

        $(
            /// The user's rows, in the store's listing order.
            pub fn list_for_user(
                conn: &mut $crate::db::DbConnection,
                user_id: &str,
            ) -> ::std::result::Result<Vec<$row>, $crate::error::AppError> {
                use diesel::prelude::*;
                Ok($table::table
                    .filter($table::user_id.eq(user_id))
                    .order($order)
                    .select(<$row>::as_select())
                    .load(conn)?)
            }

            /// Deletes the user's row named `key`; false when it is not theirs.
            pub fn delete_for_user(
                conn: &mut $crate::db::DbConnection,
                user_id: &str,
                key: &str,
            ) -> ::std::result::Result<bool, $crate::error::AppError> {
                use diesel::prelude::*;
                Ok(diesel::delete(owned(user_id, key)).execute(conn)? > 0)
            }
        )?

        $(
            /// Updates the user's row named `key`; `None` when it is not theirs.
            pub fn update_for_user(
                conn: &mut $crate::db::DbConnection,
                user_id: &str,
                key: &str,
                mut changes: $changes,
            ) -> ::std::result::Result<Option<$row>, $crate::error::AppError> {
                use diesel::prelude::*;
                changes.updated_at = Some($crate::db::now());
                let taken = $taken(&changes);
                $crate::db::transaction(conn, |conn| {
                    let updated = diesel::update(owned(user_id, key))
                        .set(&changes)
                        .execute(conn)
                        .map_err($crate::db::conflict_on_duplicate(taken))?;
                    if updated == 0 {
                        return Ok(None);
                    }
                    find_for_user(conn, user_id, key)
                })
            }
        )?
    };
}
pub(crate) use owner_scoped;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_by_scheme() {
        assert_eq!(
            DatabaseUrl::parse("postgres://u:p@h/db").unwrap(),
            DatabaseUrl::Postgres("postgres://u:p@h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/k.db").unwrap(),
            DatabaseUrl::Sqlite("data/k.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("/tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(DatabaseUrl::parse("").is_err());
        assert!(DatabaseUrl::parse("mysql://x").is_err());
    }

    #[test]
    fn write_transactions_nest_on_sqlite() {
        use diesel::RunQueryDsl;
        let mut conn = DbConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        diesel::sql_query("CREATE TABLE t (n INTEGER)")
            .execute(&mut conn)
            .unwrap();
        let inner: diesel::QueryResult<()> = transaction(&mut conn, |conn| {
            diesel::sql_query("INSERT INTO t VALUES (1)").execute(conn)?;
            let failed: diesel::QueryResult<()> = transaction(conn, |conn| {
                diesel::sql_query("INSERT INTO t VALUES (2)").execute(conn)?;
                Err(diesel::result::Error::RollbackTransaction)
            });
            assert!(failed.is_err());
            transaction(conn, |conn| {
                diesel::sql_query("INSERT INTO t VALUES (3)").execute(conn)?;
                Ok(())
            })
        });
        inner.unwrap();
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let count: Count = diesel::sql_query("SELECT COUNT(*) AS n FROM t")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(
            count.n, 2,
            "the failed savepoint is rolled back, the rest kept"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url_password("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url_password("postgres://h/db"), "postgres://h/db");
        assert!(!format!(
            "{:?}",
            DatabaseUrl::parse("postgres://u:secret@h/d").unwrap()
        )
        .contains("secret"));
    }
}
