//! The `keygate` command line: `serve`, `migrate`, `api-key`, `superuser`,
//! `rotate-secret`, `import-langflow`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::audit::{Action, Entry, Origin};
use crate::bus::{Bus, Event};
use crate::config::{Config, LogFormat};
use crate::crypto::{self, SecretBox, SecretSource};
use crate::error::AppError;
use crate::keys::{store as key_store, token};
use crate::token::PlainKey;
use crate::users::{password, store as user_store};
use crate::{credentials, db, langflow_import, server, variables};

#[derive(Parser, Debug)]
#[command(
    name = "keygate",
    version,
    about = "Self-hosted API-key gateway for LLM-application platforms"
)]
pub struct Cli {
    /// Load KEYGATE_* settings from this .env file (variables already set win).
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (SQLite in the data directory unless KEYGATE_DATABASE_URL says otherwise).
    Serve {
        /// Address to listen on [env: KEYGATE_HOST, default 127.0.0.1].
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on [env: KEYGATE_PORT, default 7860].
        #[arg(long)]
        port: Option<u16>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an API key and print it once.
    ApiKey {
        /// Owner of the key [default: the superuser].
        #[arg(long)]
        user: Option<String>,
        /// Name of the key.
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a superuser (requires KEYGATE_ENABLE_SUPERUSER_CLI=true).
    Superuser {
        /// Username [default: KEYGATE_SUPERUSER].
        #[arg(long)]
        username: Option<String>,
        /// Password [default: KEYGATE_SUPERUSER_PASSWORD, else generated and printed once].
        #[arg(long)]
        password: Option<String>,
    },
    /// Re-encrypt every stored secret under a new secret key, in one
    /// transaction. Stop every keygate instance first; start them again with
    /// the new secret (a generated secret file is rewritten for you).
    RotateSecret {
        /// The new secret (at least 16 characters). Prefer the environment
        /// variable: a command line is visible to other local users.
        /// [env: KEYGATE_NEW_SECRET_KEY, also read from --env-file]
        #[arg(long)]
        new_secret: Option<String>,
    },
    /// Copy a Langflow 1.13 installation's users (with their passwords),
    /// API keys (which keep working unchanged), variables and flows into
    /// keygate. Safe to run again: what is already here is left alone.
    ImportLangflow {
        /// Langflow's database: its SQLite file, its LANGFLOW_DATABASE_URL
        /// (sqlite:///… or postgresql://…). Only read, never written.
        #[arg(long, value_name = "URL")]
        from: String,
        /// Langflow's LANGFLOW_SECRET_KEY, to import Credential variables and
        /// keys Langflow has not hashed yet. Prefer the environment variable:
        /// a command line is visible to other local users.
        /// [env: LANGFLOW_SECRET_KEY, also read from --env-file]
        #[arg(long, value_name = "KEY")]
        langflow_secret_key: Option<String>,
        /// The Langflow server's base URL (e.g. http://127.0.0.1:7860): each
        /// Langflow flow becomes a keygate flow of the same id whose runs go
        /// there. Without it, flows are not imported.
        #[arg(long, value_name = "URL")]
        langflow_url: Option<String>,
        /// Print what would be imported, and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import everything else when some rows conflict with what keygate
        /// already has (by default a conflict refuses the whole import).
        #[arg(long)]
        skip_conflicts: bool,
    },
}

/// Runs a parsed command line; the error is printed by `main`.
pub fn run(cli: Cli) -> Result<(), String> {
    if let Some(path) = &cli.env_file {
        dotenvy::from_path(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    }
    let mut config = Config::from_env()?;
    init_logging(config.log_format);
    match cli.command {
        Command::Serve { host, port } => {
            if let Some(host) = host {
                config.host = host;
            }
            if let Some(port) = port {
                config.port = port;
            }
            actix_web::rt::System::new().block_on(serve(config))
        }
        Command::Migrate => {
            db::connect_and_migrate(&config.database_url, 1, config.db_timeout)?;
            println!(
                "database is up to date ({})",
                config.database_url.backend_name()
            );
            Ok(())
        }
        Command::ApiKey { user, name } => {
            let key = create_key_for(config, user, name).map_err(|e| e.detail().to_string())?;
            println!("{}", key.expose());
            Ok(())
        }
        Command::Superuser { username, password } => create_superuser(config, username, password),
        Command::RotateSecret { new_secret } => {
            // Read after --env-file was loaded, so the file may carry it.
            let new_secret = new_secret
                .or_else(|| std::env::var("KEYGATE_NEW_SECRET_KEY").ok())
                .filter(|s| !s.trim().is_empty())
                .ok_or("pass --new-secret or set KEYGATE_NEW_SECRET_KEY")?;
            rotate_secret(config, &new_secret)
        }
        Command::ImportLangflow {
            from,
            langflow_secret_key,
            langflow_url,
            dry_run,
            skip_conflicts,
        } => {
            let langflow_secret_key = langflow_secret_key
                .or_else(|| std::env::var("LANGFLOW_SECRET_KEY").ok())
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .map(secrecy::SecretString::from);
            let options = langflow_import::Options {
                from: langflow_import::source::SourceUrl::parse(&from)?,
                langflow_secret_key,
                langflow_url,
                dry_run,
                skip_conflicts,
            };
            import_langflow(config, options)
        }
    }
}

/// Logging on standard error, filtered by `KEYGATE_LOG`, as text or (with
/// `KEYGATE_LOG_FORMAT=json`) one JSON object per line: `timestamp`,
/// `level`, `target`, `message` and the event's fields at the top level,
/// and, for lines written while a request is handled, its `request_id`
/// under `span`.
fn init_logging(format: LogFormat) {
    let filter = std::env::var("KEYGATE_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(crate::log_sink::BatchedWriter::stderr());
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

async fn serve(config: Config) -> Result<(), String> {
    let state = server::prepare(config)?;
    let backend = state.config.database_url.backend_name();
    let running = server::start(state).await?;
    running
        .stop_on_signals()
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    tracing::info!(addr = %running.addr, backend, "keygate is listening");
    running.wait().await
}

fn create_key_for(
    config: Config,
    user: Option<String>,
    name: Option<String>,
) -> Result<PlainKey, AppError> {
    let state = server::prepare_announcing(config, server::PasswordNotice::Stderr)
        .map_err(AppError::unavailable)?;
    let mut conn = state.pool.get()?;
    let owner = match &user {
        Some(username) => user_store::find_by_username(&mut conn, username)?
            .ok_or_else(|| AppError::not_found(format!("no user named {username:?}")))?,
        None => user_store::find_by_username(&mut conn, &state.config.superuser)?
            .filter(|u| u.is_superuser)
            .ok_or_else(|| {
                AppError::not_found("the configured superuser does not exist; pass --user")
            })?,
    };
    if !owner.is_active {
        return Err(AppError::bad_request(format!(
            "user {:?} is inactive",
            owner.username
        )));
    }
    let plain = PlainKey::generate()?;
    let digest = plain.digest();
    crate::audit::within(&mut conn, |conn| {
        let created = key_store::insert(
            conn,
            key_store::NewKey {
                user_id: &owner.id,
                name: name.as_deref(),
                key_hash: digest.to_hash().as_str(),
                display_prefix: &token::display_prefix(&plain),
                expires_at: None,
                flow_id: None,
                scopes: None,
                allowed_ips: None,
                rate_limit: None,
            },
        )?;
        let entry = Entry::new(Action::KeyCreate, &Origin::NONE).with("via", "command_line");
        let entries = created
            .iter()
            .map(|key| crate::keys::created_entry(entry.clone(), key))
            .collect();
        Ok((created, entries))
    })?;
    // Running instances' key filters hold the key before it is printed
    // (PostgreSQL; on SQLite the server reads the insert log).
    state
        .bus
        .publish_and_wait(Event::KeyCreated(digest.fingerprint()));
    state.bus.stop();
    // A running SQLite server trusts its last read of the insert log for a
    // moment: printed after that moment, the key works on its first use.
    if matches!(state.config.database_url, db::DatabaseUrl::Sqlite(_)) {
        std::thread::sleep(crate::keys::filter::LOG_SETTLE);
    }
    Ok(plain)
}

fn create_superuser(
    config: Config,
    username: Option<String>,
    password_arg: Option<String>,
) -> Result<(), String> {
    if !config.enable_superuser_cli {
        return Err("creating superusers from the command line is disabled; set KEYGATE_ENABLE_SUPERUSER_CLI=true".into());
    }
    let username = username.unwrap_or_else(|| config.superuser.clone());
    // No bootstrap here: the superuser this command creates is the first.
    let pool = db::connect_and_migrate(&config.database_url, 1, config.db_timeout)?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let configured = config
        .superuser_password
        .as_ref()
        .map(|p| secrecy::ExposeSecret::expose_secret(p).to_string());
    let (password_text, generated) = match password_arg.or(configured) {
        Some(p) => (p, false),
        None => (
            password::generate().map_err(|e| e.detail().to_string())?,
            true,
        ),
    };
    password::check_strength(&password_text).map_err(|e| e.detail().to_string())?;
    let password_hash = password::hash(&password_text).map_err(|e| e.detail().to_string())?;
    let user = crate::users::insert_audited(
        &mut conn,
        user_store::NewUser {
            username: username.clone(),
            password_hash,
            is_active: true,
            is_superuser: true,
        },
        "command_line",
    )
    .map_err(|e| format!("cannot create superuser {username:?}: {}", e.detail()))?;
    println!("created superuser {:?} ({})", user.username, user.id);
    if generated {
        println!("password (shown only now): {password_text}");
    }
    Ok(())
}

/// `import-langflow`: read Langflow, plan, print the plan, write it in one
/// transaction, then tell running servers (see `langflow_import`).
fn import_langflow(config: Config, options: langflow_import::Options) -> Result<(), String> {
    use langflow_import::{source, Inputs};
    let data = source::read(&options.from)?;
    println!(
        "Langflow {} database at {}: {} user(s), {} API key(s), {} variable(s), {} flow(s)",
        data.schema,
        options.from.describe(),
        data.users.len(),
        data.keys.len(),
        data.variables.len(),
        data.flows.len()
    );
    let fernet = options
        .langflow_secret_key
        .as_ref()
        .map(|k| langflow_import::langflow_fernet_key(secrecy::ExposeSecret::expose_secret(k)))
        .transpose()?;
    let outbound = crate::outbound::Outbound::from_config(&config)?;
    let langflow_url = options
        .langflow_url
        .as_deref()
        .map(|url| langflow_import::check_langflow_url(&outbound, url))
        .transpose()?;

    let (mut conn, secrets) = if options.dry_run {
        // Nothing is written: no migration, no canary; values the plan
        // encrypts are thrown away with this box.
        if let db::DatabaseUrl::Sqlite(path) = &config.database_url {
            if !path.exists() {
                return Err(format!(
                    "no keygate database at {} yet; run `keygate migrate` first (a dry run writes nothing)",
                    path.display()
                ));
            }
        }
        let mut conn = open_connection(&config)?;
        if !db::migrations_current(&mut conn)? {
            return Err(
                "keygate's database is not up to date; run `keygate migrate` first (a dry run writes nothing)"
                    .into(),
            );
        }
        let throwaway = crate::random::url_safe::<32>().map_err(|e| e.to_string())?;
        (conn, SecretBox::new(&throwaway)?)
    } else {
        drop(db::connect_and_migrate(
            &config.database_url,
            1,
            config.db_timeout,
        )?);
        let mut conn = open_connection(&config)?;
        let (secrets, _) = crypto::open(&config, &mut conn)?;
        (conn, secrets)
    };
    let plan = langflow_import::plan(
        &mut conn,
        &Inputs {
            data: &data,
            fernet: fernet.as_ref(),
            langflow_url: langflow_url.as_deref(),
            secrets: &secrets,
        },
    )
    .map_err(|e| format!("cannot plan the import: {}", e.detail()))?;
    for line in plan.report(options.dry_run) {
        println!("{line}");
    }
    let summary = plan.summary();
    let counts = format!(
        "{} to import, {} already in keygate, {} skipped, {} conflict(s)",
        summary.imported, summary.already_there, summary.skipped, summary.conflicts
    );
    if summary.conflicts > 0 && !options.skip_conflicts {
        return Err(format!(
            "{counts}: nothing was imported; resolve the conflicts above, or pass --skip-conflicts to import the rest"
        ));
    }
    if options.dry_run {
        println!("dry run: {counts}; nothing was written");
        return Ok(());
    }
    if summary.imported == 0 {
        println!("nothing to import: {counts}; nothing was changed");
        return Ok(());
    }
    langflow_import::apply(&mut conn, &plan)
        .map_err(|e| format!("the import failed and nothing was imported: {}", e.detail()))?;
    // Running servers learn of the new keys before this command ends.
    let events = langflow_import::events(&plan);
    match &config.database_url {
        db::DatabaseUrl::Postgres(url) => {
            let bus = Bus::postgres(url.clone(), config.notify_poll);
            langflow_import::announce(&bus, events);
            bus.stop();
        }
        // Running servers read the key insert log (see `api-key`).
        db::DatabaseUrl::Sqlite(_) => std::thread::sleep(crate::keys::filter::LOG_SETTLE),
    }
    println!("imported: {counts}");
    if plan.imports_flows() {
        println!(
            "runs of the imported flows send each owner's \"generic\" provider credential to Langflow as x-api-key: each owner stores the Langflow API key keygate should send (PUT /api/v1/providers/generic)"
        );
    }
    Ok(())
}

/// One plain connection to keygate's database (with its SQLite pragmas).
fn open_connection(config: &Config) -> Result<db::DbConnection, String> {
    db::ConnectionManager::new(config.database_url.clone())
        .establish()
        .map_err(|e| {
            format!(
                "cannot connect to the {} database: {e}",
                config.database_url.backend_name()
            )
        })
}

/// Counts of what `rotate-secret` re-encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    pub credentials: usize,
    pub variables: usize,
}

/// Re-encrypts every stored secret (provider credentials, Credential
/// variables, the canary) from `old` to `new` in one transaction: either
/// all of it is under the new secret afterwards, or nothing changed.
pub fn reencrypt_everything(
    conn: &mut db::DbConnection,
    old: &SecretBox,
    new: &SecretBox,
) -> Result<Rotated, AppError> {
    crate::audit::within_serializable(conn, |conn| {
        let rotated = Rotated {
            credentials: credentials::store::reencrypt_all(conn, old, new)?,
            variables: variables::store::reencrypt_all(conn, old, new)?,
        };
        crypto::replace_canary(conn, new)?;
        let entry = Entry::new(Action::SecretRotate, &Origin::NONE)
            .with("via", "command_line")
            .with("credentials", rotated.credentials)
            .with("variables", rotated.variables);
        Ok((rotated, vec![entry]))
    })
}

fn rotate_secret(config: Config, new_secret: &str) -> Result<(), String> {
    // A new secret is chosen now: unlike an existing one, it must be strong.
    if new_secret.trim().chars().count() < crypto::MIN_SECRET_LEN {
        return Err(format!(
            "--new-secret: the secret key must have at least {} characters",
            crypto::MIN_SECRET_LEN
        ));
    }
    let new_box = SecretBox::new(new_secret).map_err(|e| format!("--new-secret: {e}"))?;
    let pool = db::connect_and_migrate(&config.database_url, 1, config.db_timeout)?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let (old_box, source) = crypto::open(&config, &mut conn)?;
    let rotated = reencrypt_everything(&mut conn, &old_box, &new_box)
        .map_err(|e| format!("rotation failed, nothing was changed: {}", e.detail()))?;
    println!(
        "re-encrypted {} provider credential(s) and {} credential variable(s) under the new secret key",
        rotated.credentials, rotated.variables
    );
    // Running instances drop every decrypted secret they hold; on SQLite
    // there is no other instance to tell (the server restarts with the new
    // secret before it can read the re-encrypted rows).
    if let db::DatabaseUrl::Postgres(url) = &config.database_url {
        let bus = Bus::postgres(url.clone(), config.notify_poll);
        bus.publish(Event::SecretRotated);
        bus.stop();
    }
    match source {
        SecretSource::File(path) => {
            crypto::replace_secret_file(&path, new_secret.trim()).map_err(|e| {
                format!(
                    "the data is now encrypted with the new secret, but {} could not be \
                     rewritten ({e}): start keygate with KEYGATE_SECRET_KEY set to the new secret",
                    path.display()
                )
            })?;
            println!("rewrote {} with the new secret key", path.display());
        }
        SecretSource::Environment => {
            println!("start every keygate instance with KEYGATE_SECRET_KEY set to the new secret")
        }
    }
    Ok(())
}
