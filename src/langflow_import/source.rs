//! Reading a Langflow database: its SQLite file (opened read-only) or its
//! PostgreSQL database, with diesel `table!` declarations of the Langflow
//! 1.13 tables keygate imports from. The two schemas Langflow creates
//! differ in their column types, so the tables are declared once per
//! backend (the same body, different types) and read by one
//! macro-written function per backend:
//!
//! | column | SQLite | PostgreSQL |
//! | --- | --- | --- |
//! | ids | `CHAR(32)` hex | `uuid` |
//! | times | `DATETIME` (naive UTC) | `timestamp with time zone` |
//! | `apikey.total_uses` | `INTEGER` (64-bit) | `integer` (32-bit) |
//! | `tags`, `default_fields` | `JSON` (text) | `json` (its text on the wire) |
//! | `flow.access_type` | `VARCHAR` | an enum (its label on the wire) |
//!
//! Every id comes out in keygate's form, a hyphenated lower-case UUID;
//! every time as naive UTC; every count as an `i64`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};

/// The Alembic revisions of the Langflow releases whose schema this import
/// knows (the rows of `alembic_version` each leaves behind). Langflow 1.13
/// leaves one row, its single head.
pub const KNOWN_SCHEMAS: &[(&str, &[&str])] = &[("1.13", LANGFLOW_1_13_HEADS)];

/// Langflow 1.13.0's Alembic heads.
const LANGFLOW_1_13_HEADS: &[&str] = &["e5a7c9b1d3f2"];

/// Where the Langflow database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    Sqlite(std::path::PathBuf),
    /// A `postgresql://` URL (a SQLAlchemy driver suffix removed).
    Postgres(String),
}

impl SourceUrl {
    /// Langflow's `LANGFLOW_DATABASE_URL` as it is written (SQLAlchemy:
    /// `sqlite:///relative.db`, `sqlite:////absolute.db`,
    /// `postgresql+psycopg://…`), a `postgres://` URL, or a path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("--from: the Langflow database URL is empty".into());
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            let base = scheme.split('+').next().unwrap_or(scheme);
            return match base.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => Ok(SourceUrl::Postgres(format!("postgresql://{rest}"))),
                // SQLAlchemy: three slashes then the path, so an absolute
                // path has four; what is left after "sqlite://" starts
                // with the third.
                "sqlite" => {
                    let path = rest.strip_prefix('/').unwrap_or(rest);
                    let path = path.split('?').next().unwrap_or(path);
                    if path.is_empty() {
                        return Err("--from: an in-memory SQLite database cannot be imported".into());
                    }
                    Ok(SourceUrl::Sqlite(path.into()))
                }
                other => Err(format!(
                    "--from: unsupported database scheme {other:?}; give Langflow's SQLite file or a postgresql:// URL"
                )),
            };
        }
        Ok(SourceUrl::Sqlite(text.into()))
    }

    /// For messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            SourceUrl::Sqlite(path) => path.display().to_string(),
            SourceUrl::Postgres(url) => crate::db::redact_url_password(url),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LangflowUser {
    pub id: String,
    pub username: String,
    /// The bcrypt hash Langflow stored.
    pub password_hash: String,
    pub is_active: bool,
    pub is_superuser: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone)]
pub struct LangflowKey {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub total_uses: i64,
    pub is_active: bool,
    pub expires_at: Option<NaiveDateTime>,
    /// The key as Langflow stores it: Fernet ciphertext, or (keys from
    /// before 1.7) the key itself. Never printed.
    pub stored_key: String,
    /// The SHA-256 hex of the key, when Langflow has computed it.
    pub key_hash: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LangflowVariable {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// `Credential` (Fernet-encrypted value), `Generic` (plain), or none.
    pub var_type: Option<String>,
    pub value: String,
    /// JSON array text.
    pub default_fields: Option<String>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone)]
pub struct LangflowFlow {
    pub id: String,
    pub user_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub endpoint_name: Option<String>,
    /// `PRIVATE` or `PUBLIC`.
    pub access_type: String,
    pub is_component: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
    pub webhook: Option<bool>,
    pub locked: Option<bool>,
    pub mcp_enabled: Option<bool>,
    /// JSON array text.
    pub tags: Option<String>,
    pub icon: Option<String>,
    pub icon_bg_color: Option<String>,
    pub gradient: Option<String>,
    pub folder_id: Option<String>,
}

/// Everything the import reads, in a stable order (by id).
#[derive(Debug, Clone, Default)]
pub struct LangflowData {
    pub schema: String,
    pub users: Vec<LangflowUser>,
    pub keys: Vec<LangflowKey>,
    pub variables: Vec<LangflowVariable>,
    pub flows: Vec<LangflowFlow>,
}

/// The Langflow tables, declared once for both backends; `LangflowId`,
/// `LangflowTime` and `LangflowCount` are the column types of the module
/// `$tables` where this is expanded.
macro_rules! langflow_tables {
    ($tables:ident) => {
        diesel::table! {
            alembic_version (version_num) {
                version_num -> Text,
            }
        }
        diesel::table! {
            use diesel::sql_types::*;
            use crate::langflow_import::source::$tables::{LangflowCount, LangflowId, LangflowTime};
            #[sql_name = "user"]
            lf_user (id) {
                id -> LangflowId,
                username -> Text,
                password -> Text,
                is_active -> Bool,
                is_superuser -> Bool,
                create_at -> LangflowTime,
                updated_at -> LangflowTime,
                last_login_at -> Nullable<LangflowTime>,
            }
        }
        diesel::table! {
            use diesel::sql_types::*;
            use crate::langflow_import::source::$tables::{LangflowCount, LangflowId, LangflowTime};
            apikey (id) {
                id -> LangflowId,
                name -> Nullable<Text>,
                created_at -> LangflowTime,
                last_used_at -> Nullable<LangflowTime>,
                total_uses -> LangflowCount,
                is_active -> Bool,
                expires_at -> Nullable<LangflowTime>,
                api_key -> Text,
                api_key_hash -> Nullable<Text>,
                user_id -> LangflowId,
            }
        }
        diesel::table! {
            use diesel::sql_types::*;
            use crate::langflow_import::source::$tables::{LangflowCount, LangflowId, LangflowTime};
            variable (id) {
                id -> LangflowId,
                name -> Text,
                value -> Text,
                #[sql_name = "type"]
                var_type -> Nullable<Text>,
                default_fields -> Nullable<Text>,
                created_at -> Nullable<LangflowTime>,
                updated_at -> Nullable<LangflowTime>,
                user_id -> LangflowId,
            }
        }
        diesel::table! {
            use diesel::sql_types::*;
            use crate::langflow_import::source::$tables::{LangflowCount, LangflowId, LangflowTime};
            flow (id) {
                id -> LangflowId,
                name -> Text,
                description -> Nullable<Text>,
                endpoint_name -> Nullable<Text>,
                access_type -> Text,
                is_component -> Nullable<Bool>,
                updated_at -> Nullable<LangflowTime>,
                webhook -> Nullable<Bool>,
                locked -> Nullable<Bool>,
                mcp_enabled -> Nullable<Bool>,
                tags -> Nullable<Text>,
                icon -> Nullable<Text>,
                icon_bg_color -> Nullable<Text>,
                gradient -> Nullable<Text>,
                folder_id -> Nullable<LangflowId>,
                user_id -> Nullable<LangflowId>,
            }
        }
    };
}

mod sqlite_tables {
    /// `CHAR(32)` hex on SQLite.
    pub type LangflowId = diesel::sql_types::Text;
    /// SQLite's `DATETIME` text, naive UTC.
    pub type LangflowTime = diesel::sql_types::Timestamp;
    /// SQLite's integers are 64-bit.
    pub type LangflowCount = diesel::sql_types::BigInt;
    langflow_tables!(sqlite_tables);
}

mod pg_tables {
    pub type LangflowId = diesel::sql_types::Uuid;
    /// `timestamp with time zone`, read as naive UTC.
    pub type LangflowTime = diesel::sql_types::Timestamptz;
    /// Langflow's `integer` column: 32 bits on PostgreSQL.
    pub type LangflowCount = diesel::sql_types::Integer;
    langflow_tables!(pg_tables);
}

/// An id as Langflow's driver hands it over, in keygate's form.
trait IntoId {
    fn into_id(self) -> Result<String, String>;
}

impl IntoId for String {
    fn into_id(self) -> Result<String, String> {
        uuid::Uuid::parse_str(&self)
            .map(|id| id.hyphenated().to_string())
            .map_err(|_| format!("the Langflow database holds an id that is not a UUID: {self:?}"))
    }
}

impl IntoId for uuid::Uuid {
    fn into_id(self) -> Result<String, String> {
        Ok(self.hyphenated().to_string())
    }
}

fn optional_id<I: IntoId>(id: Option<I>) -> Result<Option<String>, String> {
    id.map(IntoId::into_id).transpose()
}

fn read_error(what: &str) -> impl Fn(diesel::result::Error) -> String + '_ {
    move |e| format!("cannot read Langflow's {what} table: {e}")
}

/// One reader per backend, written once: `$tables` is the module of table
/// declarations, `$id` the Rust type of an id there, `$count` that of a
/// count.
macro_rules! reader {
    ($name:ident, $conn:ty, $tables:ident, $id:ty, $count:ty) => {
        fn $name(conn: &mut $conn) -> Result<LangflowData, String> {
            use $tables::{alembic_version, apikey, flow, lf_user, variable};
            let versions: Vec<String> = alembic_version::table
                .select(alembic_version::version_num)
                .order(alembic_version::version_num)
                .load(conn)
                .map_err(|e| {
                    format!(
                        "this does not look like a Langflow database (no readable alembic_version table: {e})"
                    )
                })?;
            let schema = known_schema(&versions)?;

            let users = lf_user::table
                .select((
                    lf_user::id,
                    lf_user::username,
                    lf_user::password,
                    lf_user::is_active,
                    lf_user::is_superuser,
                    lf_user::create_at,
                    lf_user::updated_at,
                    lf_user::last_login_at,
                ))
                .load::<($id, String, String, bool, bool, NaiveDateTime, NaiveDateTime, Option<NaiveDateTime>)>(conn)
                .map_err(read_error("user"))?
                .into_iter()
                .map(|(id, username, password_hash, is_active, is_superuser, created_at, updated_at, last_login_at)| {
                    Ok(LangflowUser {
                        id: id.into_id()?,
                        username,
                        password_hash,
                        is_active,
                        is_superuser,
                        created_at,
                        updated_at,
                        last_login_at,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;

            type KeyRow = ($id, Option<String>, NaiveDateTime, Option<NaiveDateTime>, $count, bool, Option<NaiveDateTime>, String, Option<String>, $id);
            let keys = apikey::table
                .select((
                    apikey::id,
                    apikey::name,
                    apikey::created_at,
                    apikey::last_used_at,
                    apikey::total_uses,
                    apikey::is_active,
                    apikey::expires_at,
                    apikey::api_key,
                    apikey::api_key_hash,
                    apikey::user_id,
                ))
                .load::<KeyRow>(conn)
                .map_err(read_error("apikey"))?
                .into_iter()
                .map(|(id, name, created_at, last_used_at, total_uses, is_active, expires_at, stored_key, key_hash, user_id)| {
                    Ok(LangflowKey {
                        id: id.into_id()?,
                        user_id: user_id.into_id()?,
                        name,
                        created_at,
                        last_used_at,
                        total_uses: i64::from(total_uses),
                        is_active,
                        expires_at,
                        stored_key,
                        key_hash,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;

            type VariableRow = ($id, String, String, Option<String>, Option<String>, Option<NaiveDateTime>, Option<NaiveDateTime>, $id);
            let variables = variable::table
                .select((
                    variable::id,
                    variable::name,
                    variable::value,
                    variable::var_type,
                    variable::default_fields,
                    variable::created_at,
                    variable::updated_at,
                    variable::user_id,
                ))
                .load::<VariableRow>(conn)
                .map_err(read_error("variable"))?
                .into_iter()
                .map(|(id, name, value, var_type, default_fields, created_at, updated_at, user_id)| {
                    Ok(LangflowVariable {
                        id: id.into_id()?,
                        user_id: user_id.into_id()?,
                        name,
                        var_type,
                        value,
                        default_fields,
                        created_at,
                        updated_at,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;

            let flows = flow::table
                .select((
                    (
                        flow::id,
                        flow::name,
                        flow::description,
                        flow::endpoint_name,
                        flow::access_type,
                        flow::is_component,
                        flow::updated_at,
                        flow::webhook,
                    ),
                    (
                        flow::locked,
                        flow::mcp_enabled,
                        flow::tags,
                        flow::icon,
                        flow::icon_bg_color,
                        flow::gradient,
                        flow::folder_id,
                        flow::user_id,
                    ),
                ))
                .load::<(
                    ($id, String, Option<String>, Option<String>, String, Option<bool>, Option<NaiveDateTime>, Option<bool>),
                    (Option<bool>, Option<bool>, Option<String>, Option<String>, Option<String>, Option<String>, Option<$id>, Option<$id>),
                )>(conn)
                .map_err(read_error("flow"))?
                .into_iter()
                .map(|((id, name, description, endpoint_name, access_type, is_component, updated_at, webhook), (locked, mcp_enabled, tags, icon, icon_bg_color, gradient, folder_id, user_id))| {
                    Ok(LangflowFlow {
                        id: id.into_id()?,
                        user_id: optional_id(user_id)?,
                        name,
                        description,
                        endpoint_name,
                        access_type,
                        is_component,
                        updated_at,
                        webhook,
                        locked,
                        mcp_enabled,
                        tags,
                        icon,
                        icon_bg_color,
                        gradient,
                        folder_id: optional_id(folder_id)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;

            let mut data = LangflowData {
                schema,
                users,
                keys,
                variables,
                flows,
            };
            data.users.sort_by(|a, b| a.id.cmp(&b.id));
            data.keys.sort_by(|a, b| a.id.cmp(&b.id));
            data.variables.sort_by(|a, b| a.id.cmp(&b.id));
            data.flows.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(data)
        }
    };
}

reader!(read_sqlite, SqliteConnection, sqlite_tables, String, i64);
reader!(read_pg, PgConnection, pg_tables, uuid::Uuid, i32);

/// The release whose schema `versions` (the rows of `alembic_version`)
/// are, or a clear refusal naming the known ones.
pub fn known_schema(versions: &[String]) -> Result<String, String> {
    let mut found: Vec<&str> = versions.iter().map(String::as_str).collect();
    found.sort_unstable();
    for (release, heads) in KNOWN_SCHEMAS {
        let mut expected = heads.to_vec();
        expected.sort_unstable();
        if found == expected {
            return Ok((*release).to_string());
        }
    }
    let known: Vec<String> = KNOWN_SCHEMAS
        .iter()
        .map(|(release, heads)| format!("Langflow {release} ({})", heads.join(", ")))
        .collect();
    Err(format!(
        "unknown Langflow schema version {}: this import knows {}; upgrade or downgrade Langflow to a known release (let it migrate its database) and import again",
        if found.is_empty() {
            "(none recorded)".to_string()
        } else {
            found.join(", ")
        },
        known.join("; ")
    ))
}

/// Reads everything the import needs. A SQLite file is opened read-only
/// (nothing of Langflow's is ever written); a missing file is an error,
/// never a new empty database.
pub fn read(url: &SourceUrl) -> Result<LangflowData, String> {
    match url {
        SourceUrl::Sqlite(path) => {
            if !path.is_file() {
                return Err(format!(
                    "--from: no Langflow database file at {}",
                    path.display()
                ));
            }
            let absolute = std::fs::canonicalize(path)
                .map_err(|e| format!("--from: cannot open {}: {e}", path.display()))?;
            let uri = format!("file:{}?mode=ro", absolute.display());
            let mut conn = SqliteConnection::establish(&uri)
                .map_err(|e| format!("--from: cannot open {}: {e}", path.display()))?;
            read_sqlite(&mut conn)
        }
        SourceUrl::Postgres(url) => {
            let mut conn = PgConnection::establish(url).map_err(|e| {
                format!(
                    "--from: cannot connect to {}: {e}",
                    crate::db::redact_url_password(url)
                )
            })?;
            // Read in one snapshot, and never write.
            conn.build_transaction()
                .read_only()
                .repeatable_read()
                .run(|conn| read_pg(conn).map_err(ReadError::Langflow))
                .map_err(|e| match e {
                    ReadError::Langflow(message) => message,
                    ReadError::Database(e) => format!("--from: {e}"),
                })
        }
    }
}

/// A failure inside the PostgreSQL read transaction.
enum ReadError {
    Langflow(String),
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for ReadError {
    fn from(e: diesel::result::Error) -> Self {
        ReadError::Database(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn langflow_urls_are_understood() {
        assert_eq!(
            SourceUrl::parse("sqlite:////var/lib/langflow/langflow.db").unwrap(),
            SourceUrl::Sqlite("/var/lib/langflow/langflow.db".into())
        );
        assert_eq!(
            SourceUrl::parse("sqlite:///./langflow.db").unwrap(),
            SourceUrl::Sqlite("./langflow.db".into())
        );
        assert_eq!(
            SourceUrl::parse("langflow.db").unwrap(),
            SourceUrl::Sqlite("langflow.db".into())
        );
        assert_eq!(
            SourceUrl::parse("postgresql+psycopg://lf:pw@127.0.0.1/langflow").unwrap(),
            SourceUrl::Postgres("postgresql://lf:pw@127.0.0.1/langflow".into())
        );
        assert!(SourceUrl::parse("mysql://x").is_err());
        assert!(SourceUrl::parse("sqlite://").is_err());
        assert!(!SourceUrl::parse("postgres://lf:hunter2@h/db")
            .unwrap()
            .describe()
            .contains("hunter2"));
    }

    #[test]
    fn unknown_schemas_are_refused_by_name() {
        let heads: Vec<String> = LANGFLOW_1_13_HEADS.iter().map(|s| s.to_string()).collect();
        assert_eq!(known_schema(&heads).unwrap(), "1.13");
        let error = known_schema(&["0123abcd".to_string()]).unwrap_err();
        assert!(
            error.contains("0123abcd") && error.contains("Langflow 1.13"),
            "{error}"
        );
    }
}
