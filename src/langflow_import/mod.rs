//! `keygate import-langflow`: moves a Langflow 1.13 installation's users,
//! API keys, variables and flows into keygate, keeping every id and every
//! key, so scripts written for Langflow keep working against keygate.
//!
//! - **Users** keep their id and Langflow's bcrypt password hash; the
//!   first successful sign-in re-hashes with argon2id
//!   (`users::password::Verified`).
//! - **Keys** are copied by hash: Langflow's `api_key_hash` is the
//!   unsalted SHA-256 hex of the key, the same digest keygate stores. Keys
//!   without a hash yet are hashed from their stored text: in clear (keys
//!   from before Langflow 1.7) or Fernet-encrypted (needs
//!   `--langflow-secret-key`).
//! - **Variables**: `Generic` values are in clear in Langflow; `Credential`
//!   values are decrypted with Langflow's key and encrypted with keygate's.
//! - **Flows** (with `--langflow-url`) become keygate flows of the same id
//!   and endpoint name whose upstream is that Langflow server's flow, so
//!   `/api/v1/run/<id>` answers the same through keygate.
//!
//! The import reads everything, plans every row (import, already there,
//! skipped with a reason, or a conflict), and writes the plan in one
//! transaction. Rows that are already in keygate (same id) are left as they
//! are, so a second run changes nothing. A conflict (a username, key, name
//! or id held by something else in keygate) refuses the whole import unless
//! `--skip-conflicts` is given; accounts are never merged. Nothing it
//! prints holds a key, password, hash or secret.

pub mod fernet;
pub mod source;

use std::collections::{HashMap, HashSet};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::bus::{Bus, Event};
use crate::crypto::SecretBox;
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::flows::store::{self as flow_store, Flow, ACCESS_PRIVATE, ACCESS_PUBLIC};
use crate::flows::{CredentialRef, LangflowTarget, Upstream};
use crate::keys::store as key_store;
use crate::outbound::Outbound;
use crate::token::{KeyFingerprint, PlainKey, TokenDigest};
use crate::users::store::{self as user_store, User};
use crate::variables::store::{self as variable_store, Variable, CREDENTIAL, GENERIC};
use fernet::FernetKey;
use source::{LangflowData, LangflowFlow, LangflowKey, LangflowUser, LangflowVariable};

/// Langflow's secret keys shorter than this are turned into a Fernet key
/// by SHA-256; longer ones are the Fernet key itself (Langflow's
/// `MINIMUM_SECRET_KEY_LENGTH` and `ensure_fernet_key`).
const LANGFLOW_MIN_SECRET_LEN: usize = 32;
/// Shown instead of a display prefix for a key known only by its hash.
const UNKNOWN_PREFIX: &str = "sk-";

/// What the command line asked for.
pub struct Options {
    pub from: source::SourceUrl,
    pub langflow_secret_key: Option<SecretString>,
    pub langflow_url: Option<String>,
    pub dry_run: bool,
    pub skip_conflicts: bool,
}

/// The Fernet key Langflow derives from its `LANGFLOW_SECRET_KEY`.
pub fn langflow_fernet_key(secret: &str) -> Result<FernetKey, String> {
    if secret.is_empty() {
        return Err("--langflow-secret-key is empty".into());
    }
    if secret.chars().count() < LANGFLOW_MIN_SECRET_LEN {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        return Ok(FernetKey::from_bytes(digest));
    }
    FernetKey::from_base64(secret).ok_or_else(|| {
        "--langflow-secret-key: a key of 32 characters or more must be URL-safe base64 of 32 bytes, as Langflow requires".to_string()
    })
}

/// What happens to one Langflow row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Import,
    /// Already in keygate under the same id: left as it is.
    AlreadyThere,
    /// Not imported, for this reason (not an error).
    Skip(String),
    /// Held by something else in keygate: refuses the import unless
    /// conflicts are skipped.
    Conflict(String),
}

/// One row of the plan: what it is, for the report, and its outcome.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: &'static str,
    pub label: String,
    pub outcome: Outcome,
}

/// Rows to write, each already in keygate's form.
#[derive(Default)]
struct Writes {
    users: Vec<User>,
    keys: Vec<ImportKey>,
    variables: Vec<Variable>,
    flows: Vec<Flow>,
}

struct ImportKey {
    row: LangflowKey,
    hash: String,
    display_prefix: String,
}

/// The whole plan.
pub struct Plan {
    pub schema: String,
    pub steps: Vec<Step>,
    writes: Writes,
}

/// Counts by kind and outcome, for the summary and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub imported: usize,
    pub already_there: usize,
    pub skipped: usize,
    pub conflicts: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for step in &self.steps {
            match step.outcome {
                Outcome::Import => summary.imported += 1,
                Outcome::AlreadyThere => summary.already_there += 1,
                Outcome::Skip(_) => summary.skipped += 1,
                Outcome::Conflict(_) => summary.conflicts += 1,
            }
        }
        summary
    }

    /// Whether the plan writes flows.
    pub fn imports_flows(&self) -> bool {
        !self.writes.flows.is_empty()
    }

    /// The report, one line per row, then a summary line.
    pub fn report(&self, dry_run: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for step in &self.steps {
            let what = match &step.outcome {
                Outcome::Import if dry_run => "would import".to_string(),
                Outcome::Import => "import".to_string(),
                Outcome::AlreadyThere => "already in keygate, left as it is".to_string(),
                Outcome::Skip(reason) => format!("skipped: {reason}"),
                Outcome::Conflict(reason) => format!("CONFLICT: {reason}"),
            };
            lines.push(format!("{} {}: {what}", step.kind, step.label));
        }
        lines
    }
}

/// Everything the planner needs besides the keygate database.
pub struct Inputs<'a> {
    pub data: &'a LangflowData,
    pub fernet: Option<&'a FernetKey>,
    /// The validated Langflow base URL for flows, if flows are imported.
    pub langflow_url: Option<&'a str>,
    pub secrets: &'a SecretBox,
}

/// Plans every row against the keygate database (reads only).
pub fn plan(conn: &mut DbConnection, inputs: &Inputs<'_>) -> Result<Plan, AppError> {
    let mut planner = Planner {
        inputs,
        steps: Vec::new(),
        writes: Writes::default(),
        imported_users: HashMap::new(),
        planned_public_names: HashSet::new(),
    };
    for user in &inputs.data.users {
        planner.user(conn, user)?;
    }
    for key in &inputs.data.keys {
        planner.key(conn, key)?;
    }
    for variable in &inputs.data.variables {
        planner.variable(conn, variable)?;
    }
    match inputs.langflow_url {
        Some(url) => {
            for flow in &inputs.data.flows {
                planner.flow(conn, flow, url)?;
            }
        }
        None => {
            for flow in &inputs.data.flows {
                planner.step(
                    "flow",
                    flow_label(flow),
                    Outcome::Skip("pass --langflow-url to import flows".into()),
                );
            }
        }
    }
    Ok(Plan {
        schema: inputs.data.schema.clone(),
        steps: planner.steps,
        writes: planner.writes,
    })
}

/// Whether a Langflow user's rows go in: `true` when the user is (or is
/// being) in keygate under the same id.
type UserState = bool;

struct Planner<'a, 'b> {
    inputs: &'a Inputs<'b>,
    steps: Vec<Step>,
    writes: Writes,
    /// Langflow user id → whether their rows may be imported.
    imported_users: HashMap<String, UserState>,
    /// Endpoint names of public flows planned in this run.
    planned_public_names: HashSet<String>,
}

fn flow_label(flow: &LangflowFlow) -> String {
    match &flow.endpoint_name {
        Some(name) => format!("{:?} ({}, endpoint {name:?})", flow.name, flow.id),
        None => format!("{:?} ({})", flow.name, flow.id),
    }
}

impl Planner<'_, '_> {
    fn step(&mut self, kind: &'static str, label: String, outcome: Outcome) {
        self.steps.push(Step {
            kind,
            label,
            outcome,
        });
    }

    fn username_of(&self, user_id: &str) -> String {
        self.inputs
            .data
            .users
            .iter()
            .find(|u| u.id == user_id)
            .map_or_else(|| user_id.to_string(), |u| u.username.clone())
    }

    /// `None` when the owner's rows may go in, else why not.
    fn owner_refusal(&self, user_id: &str) -> Option<String> {
        match self.imported_users.get(user_id) {
            Some(true) => None,
            Some(false) => Some(format!(
                "its owner {:?} is not imported",
                self.username_of(user_id)
            )),
            None => Some(format!(
                "its owner {user_id} is not in the Langflow database"
            )),
        }
    }

    fn user(&mut self, conn: &mut DbConnection, user: &LangflowUser) -> Result<(), AppError> {
        let label = format!("{:?} ({})", user.username, user.id);
        if user_store::find_by_id(conn, &user.id)?.is_some() {
            self.imported_users.insert(user.id.clone(), true);
            self.step("user", label, Outcome::AlreadyThere);
            return Ok(());
        }
        let outcome = match crate::users::check_username(&user.username) {
            Err(error) => Outcome::Conflict(format!(
                "the username is not one keygate accepts ({})",
                error.detail()
            )),
            Ok(username) if username != user.username => Outcome::Conflict(
                "the username has surrounding spaces, which keygate does not accept".into(),
            ),
            Ok(_) => match user_store::find_by_username(conn, &user.username)? {
                Some(other) => Outcome::Conflict(format!(
                    "keygate already has another account with this username (id {}); accounts are never merged: rename one of them and import again",
                    other.id
                )),
                None if !source_hash_is_bcrypt(&user.password_hash) => Outcome::Conflict(
                    "the stored password hash is not bcrypt, which is all Langflow writes".into(),
                ),
                None => Outcome::Import,
            },
        };
        let importing = outcome == Outcome::Import;
        self.imported_users.insert(user.id.clone(), importing);
        if importing {
            self.writes.users.push(User {
                id: user.id.clone(),
                username: user.username.clone(),
                password_hash: user.password_hash.clone(),
                is_active: user.is_active,
                is_superuser: user.is_superuser,
                created_at: db::truncate_to_micros(user.created_at),
                updated_at: db::truncate_to_micros(user.updated_at),
                last_login_at: user.last_login_at.map(db::truncate_to_micros),
            });
        }
        self.step("user", label, outcome);
        Ok(())
    }

    /// The key's hash and display prefix, or why it cannot be had.
    fn key_material(&self, key: &LangflowKey) -> Result<(String, String), Outcome> {
        let from_text = |text: &str| -> Result<(String, String), Outcome> {
            if !PlainKey::is_well_formed(text) {
                return Err(Outcome::Skip(
                    "the key is not in the sk- shape keygate accepts, so it could never authenticate".into(),
                ));
            }
            let hash = TokenDigest::of(text).to_hash().as_str().to_string();
            let prefix: String = text
                .chars()
                .take(crate::keys::token::DISPLAY_PREFIX_LEN)
                .collect();
            Ok((hash, prefix))
        };
        let stored = key.stored_key.as_str();
        let looks_encrypted = stored.starts_with("gAAAAA");
        // The prefix, when the key can be read.
        let plaintext = if looks_encrypted {
            self.inputs
                .fernet
                .map(|fernet| fernet.decrypt(stored).map_err(|_| ()))
        } else {
            Some(Ok(SecretString::from(stored.to_string())))
        };
        match (&key.key_hash, plaintext) {
            (Some(hash), plaintext) => {
                let hash = hash.trim().to_ascii_lowercase();
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Outcome::Conflict(
                        "Langflow's api_key_hash is not a SHA-256 hex digest".into(),
                    ));
                }
                let prefix = match plaintext {
                    Some(Ok(text)) => {
                        let (computed, prefix) = from_text(text.expose_secret())?;
                        if computed != hash {
                            return Err(Outcome::Conflict(
                                "Langflow's api_key_hash does not match its stored key".into(),
                            ));
                        }
                        prefix
                    }
                    Some(Err(())) => {
                        return Err(Outcome::Conflict(
                            "the key cannot be decrypted with --langflow-secret-key (is it this Langflow's LANGFLOW_SECRET_KEY?)".into(),
                        ))
                    }
                    None => UNKNOWN_PREFIX.to_string(),
                };
                Ok((hash, prefix))
            }
            (None, Some(Ok(text))) => from_text(text.expose_secret()),
            (None, Some(Err(()))) => Err(Outcome::Conflict(
                "the key cannot be decrypted with --langflow-secret-key (is it this Langflow's LANGFLOW_SECRET_KEY?)".into(),
            )),
            (None, None) => Err(Outcome::Skip(
                "Langflow has not hashed this key yet and stores it encrypted: pass --langflow-secret-key".into(),
            )),
        }
    }

    fn key(&mut self, conn: &mut DbConnection, key: &LangflowKey) -> Result<(), AppError> {
        let label = match &key.name {
            Some(name) => format!(
                "{name:?} ({}) of {:?}",
                key.id,
                self.username_of(&key.user_id)
            ),
            None => format!("({}) of {:?}", key.id, self.username_of(&key.user_id)),
        };
        if let Some(reason) = self.owner_refusal(&key.user_id) {
            self.step("key", label, Outcome::Skip(reason));
            return Ok(());
        }
        let (hash, display_prefix) = match self.key_material(key) {
            Ok(material) => material,
            Err(outcome) => {
                self.step("key", label, outcome);
                return Ok(());
            }
        };
        let outcome = match (
            key_store::hash_of(conn, &key.id)?,
            key_store::id_by_hash(conn, &hash)?,
        ) {
            (Some(stored), _) if stored == hash => Outcome::AlreadyThere,
            (Some(_), _) => Outcome::Conflict("keygate has another key with this id".into()),
            (None, Some(other)) => Outcome::Conflict(format!(
                "the same key is already stored in keygate (key id {other})"
            )),
            (None, None) if self.writes.keys.iter().any(|k| k.hash == hash) => {
                Outcome::Conflict("Langflow stores the same key twice".into())
            }
            (None, None) => Outcome::Import,
        };
        if outcome == Outcome::Import {
            self.writes.keys.push(ImportKey {
                row: key.clone(),
                hash,
                display_prefix,
            });
        }
        self.step("key", label, outcome);
        Ok(())
    }

    fn variable(
        &mut self,
        conn: &mut DbConnection,
        variable: &LangflowVariable,
    ) -> Result<(), AppError> {
        let label = format!(
            "{:?} ({}) of {:?}",
            variable.name,
            variable.id,
            self.username_of(&variable.user_id)
        );
        if let Some(reason) = self.owner_refusal(&variable.user_id) {
            self.step("variable", label, Outcome::Skip(reason));
            return Ok(());
        }
        if variable_store::owner_of(conn, &variable.id)?.is_some() {
            self.step("variable", label, Outcome::AlreadyThere);
            return Ok(());
        }
        // Langflow encrypts Credential values only; an untyped value is
        // read as Langflow reads it (a Fernet token is encrypted).
        let is_credential = match variable.var_type.as_deref() {
            Some(CREDENTIAL) => true,
            Some(GENERIC) => false,
            Some(other) => {
                self.step(
                    "variable",
                    label,
                    Outcome::Skip(format!(
                        "its type {other:?} is neither Credential nor Generic"
                    )),
                );
                return Ok(());
            }
            None => variable.value.starts_with("gAAAAA"),
        };
        let value = if is_credential {
            let Some(fernet) = self.inputs.fernet else {
                self.step(
                    "variable",
                    label,
                    Outcome::Skip("a Credential variable: pass --langflow-secret-key".into()),
                );
                return Ok(());
            };
            let plain = if variable.value.starts_with("gAAAAA") {
                match fernet.decrypt(&variable.value) {
                    Ok(plain) => plain,
                    Err(_) => {
                        self.step(
                            "variable",
                            label,
                            Outcome::Conflict("the value cannot be decrypted with --langflow-secret-key (is it this Langflow's LANGFLOW_SECRET_KEY?)".into()),
                        );
                        return Ok(());
                    }
                }
            } else {
                SecretString::from(variable.value.clone())
            };
            self.inputs.secrets.encrypt(plain.expose_secret())?
        } else {
            variable.value.clone()
        };
        if variable.name.trim().is_empty()
            || variable.name.chars().count() > crate::variables::MAX_NAME_LEN
        {
            self.step(
                "variable",
                label,
                Outcome::Conflict("the name is not one keygate accepts".into()),
            );
            return Ok(());
        }
        let taken = variable_store::find_by_name(conn, &variable.user_id, &variable.name)?;
        let outcome = match taken {
            Some(other) => Outcome::Conflict(format!(
                "the owner already has a keygate variable of this name (id {})",
                other.id
            )),
            None => Outcome::Import,
        };
        if outcome == Outcome::Import {
            let created_at = variable
                .created_at
                .map(db::truncate_to_micros)
                .unwrap_or_else(db::now);
            self.writes.variables.push(Variable {
                id: variable.id.clone(),
                user_id: variable.user_id.clone(),
                name: variable.name.clone(),
                var_type: if is_credential { CREDENTIAL } else { GENERIC }.to_string(),
                value,
                default_fields: default_fields(variable.default_fields.as_deref()),
                created_at,
                updated_at: variable
                    .updated_at
                    .map(db::truncate_to_micros)
                    .unwrap_or(created_at),
            });
        }
        self.step("variable", label, outcome);
        Ok(())
    }

    fn flow(
        &mut self,
        conn: &mut DbConnection,
        flow: &LangflowFlow,
        langflow_url: &str,
    ) -> Result<(), AppError> {
        let label = flow_label(flow);
        if flow.is_component == Some(true) {
            self.step(
                "flow",
                label,
                Outcome::Skip("a component, not a flow that runs".into()),
            );
            return Ok(());
        }
        let Some(owner) = flow.user_id.clone() else {
            self.step(
                "flow",
                label,
                Outcome::Skip("it has no owner in Langflow".into()),
            );
            return Ok(());
        };
        if let Some(reason) = self.owner_refusal(&owner) {
            self.step("flow", label, Outcome::Skip(reason));
            return Ok(());
        }
        match flow_store::owner_of(conn, &flow.id)? {
            Some(holder) if holder == owner => {
                self.step("flow", label, Outcome::AlreadyThere);
                return Ok(());
            }
            Some(_) => {
                self.step(
                    "flow",
                    label,
                    Outcome::Conflict("keygate has another user's flow with this id".into()),
                );
                return Ok(());
            }
            None => {}
        }
        let built = match keygate_flow(flow, &owner, langflow_url) {
            Ok(built) => built,
            Err(error) => {
                self.step(
                    "flow",
                    label,
                    Outcome::Conflict(format!("keygate does not accept it: {}", error.detail())),
                );
                return Ok(());
            }
        };
        if let Some(name) = &built.endpoint_name {
            let identifier = flow_store::Identifier::EndpointName(name.clone());
            if flow_store::find_by_identifier_for_user(conn, &owner, &identifier)?.is_some() {
                self.step(
                    "flow",
                    label,
                    Outcome::Conflict(
                        "the owner already has a keygate flow with this endpoint name".into(),
                    ),
                );
                return Ok(());
            }
            if built.access == ACCESS_PUBLIC
                && (flow_store::public_endpoint_taken(conn, name, &built.id)?
                    || self.planned_public_names.contains(name))
            {
                self.step(
                    "flow",
                    label,
                    Outcome::Conflict(
                        "another public flow already has this endpoint name (keygate keeps them unique)".into(),
                    ),
                );
                return Ok(());
            }
            if built.access == ACCESS_PUBLIC {
                self.planned_public_names.insert(name.clone());
            }
        }
        self.writes.flows.push(built);
        self.step("flow", label, Outcome::Import);
        Ok(())
    }
}

/// A Langflow hash keygate can verify at sign-in.
fn source_hash_is_bcrypt(hash: &str) -> bool {
    crate::users::password::is_legacy(hash)
}

/// Langflow's `default_fields` (a JSON array, or NULL) as keygate stores
/// it (a JSON array of strings).
fn default_fields(text: Option<&str>) -> String {
    text.and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .and_then(|fields| serde_json::to_string(&fields).ok())
        .unwrap_or_else(|| "[]".into())
}

/// The upstream of an imported flow: that Langflow server's flow of the
/// same id, with the owner's `generic` provider credential sent as
/// Langflow's `x-api-key`.
pub fn langflow_upstream(langflow_url: &str, flow_id: &str) -> Result<Upstream, AppError> {
    Upstream {
        url: None,
        method: None,
        langflow: Some(LangflowTarget {
            url: langflow_url.to_string(),
            flow_id: flow_id.to_string(),
        }),
        credential: Some(CredentialRef {
            provider: Some("generic".into()),
            variable: None,
            inject: None,
            header: None,
        }),
    }
    .validated()
}

/// The keygate flow a Langflow flow becomes (its graph stays in Langflow).
fn keygate_flow(flow: &LangflowFlow, owner: &str, langflow_url: &str) -> Result<Flow, AppError> {
    let upstream = langflow_upstream(langflow_url, &flow.id)?;
    let upstream = serde_json::to_string(&upstream)
        .map_err(|e| AppError::internal(format_args!("upstream JSON: {e}")))?;
    let name = crate::validate::required_text(
        "name",
        Some(flow.name.clone()),
        crate::flows::MAX_NAME_LEN,
    )?;
    let description = crate::validate::optional_text(
        "description",
        flow.description.clone(),
        crate::flows::MAX_DESCRIPTION_LEN,
    )?;
    let tags = crate::flows::langflow::tags_from_column(flow.tags.as_deref())
        .ok()
        .flatten();
    let updated_at = flow
        .updated_at
        .map(db::truncate_to_micros)
        .unwrap_or_else(db::now);
    Ok(Flow {
        id: flow.id.clone(),
        user_id: owner.to_string(),
        name,
        description,
        endpoint_name: crate::flows::check_endpoint_name(flow.endpoint_name.clone())?,
        data: None,
        upstream: Some(upstream),
        access: match flow.access_type.to_ascii_uppercase().as_str() {
            "PUBLIC" => ACCESS_PUBLIC,
            _ => ACCESS_PRIVATE,
        }
        .to_string(),
        created_at: updated_at,
        updated_at,
        is_component: false,
        folder_id: crate::flows::langflow::check_folder_id(flow.folder_id.clone())?,
        icon: crate::flows::langflow::check_icon(flow.icon.clone())?,
        icon_bg_color: crate::flows::langflow::check_icon_bg_color(flow.icon_bg_color.clone())?,
        gradient: crate::flows::langflow::check_gradient(flow.gradient.clone())?,
        tags: crate::flows::langflow::tags_column(tags)?,
        locked: flow.locked.unwrap_or(false),
        mcp_enabled: flow.mcp_enabled.unwrap_or(false),
        webhook: flow.webhook.unwrap_or(false),
    })
}

/// Writes the plan in one transaction (all of it or nothing). Conflicts
/// must have been dealt with by the caller.
pub fn apply(conn: &mut DbConnection, plan: &Plan) -> Result<(), AppError> {
    db::serializable_transaction(conn, |conn| {
        for user in &plan.writes.users {
            user_store::insert_imported(conn, user)?;
        }
        for key in &plan.writes.keys {
            key_store::insert_imported(
                conn,
                &key_store::ImportedKey {
                    id: &key.row.id,
                    user_id: &key.row.user_id,
                    name: key.row.name.as_deref(),
                    key_hash: &key.hash,
                    display_prefix: &key.display_prefix,
                    created_at: db::truncate_to_micros(key.row.created_at),
                    last_used_at: key.row.last_used_at.map(db::truncate_to_micros),
                    total_uses: key.row.total_uses,
                    is_active: key.row.is_active,
                    expires_at: key.row.expires_at.map(db::truncate_to_micros),
                },
            )?;
        }
        for variable in &plan.writes.variables {
            variable_store::insert_imported(conn, variable)?;
        }
        for flow in &plan.writes.flows {
            flow_store::insert_imported(conn, flow)?;
        }
        Ok(())
    })
}

/// What running instances must hear after the import committed.
pub fn events(plan: &Plan) -> Vec<Event> {
    let mut events = Vec::new();
    let mut owners: Vec<&str> = Vec::new();
    for user in &plan.writes.users {
        events.push(Event::UserChanged(user.id.clone()));
    }
    for variable in &plan.writes.variables {
        if !owners.contains(&variable.user_id.as_str()) {
            owners.push(&variable.user_id);
            events.push(Event::SecretsChanged(variable.user_id.clone()));
        }
    }
    owners.clear();
    for flow in &plan.writes.flows {
        if !owners.contains(&flow.user_id.as_str()) {
            owners.push(&flow.user_id);
            events.push(Event::FlowsChanged(flow.user_id.clone()));
        }
    }
    for key in &plan.writes.keys {
        if let Some(fingerprint) = KeyFingerprint::from_hex(&key.hash) {
            events.push(Event::KeyCreated(fingerprint));
        }
    }
    events
}

/// Tells running instances: every event but the last at once, the last
/// waited for, so when this returns every live instance has applied all
/// of them (each instance applies notifications in order).
pub fn announce(bus: &Bus, events: Vec<Event>) {
    let mut events = events.into_iter().peekable();
    while let Some(event) = events.next() {
        if events.peek().is_some() {
            bus.publish(event);
        } else {
            bus.publish_and_wait(event);
        }
    }
}

/// Checks the `--langflow-url` for flows: a Langflow base URL keygate may
/// send runs to (the upstream rules of saved flows, the SSRF rule
/// included).
pub fn check_langflow_url(outbound: &Outbound, url: &str) -> Result<String, String> {
    let upstream = langflow_upstream(url.trim(), "00000000-0000-4000-8000-000000000000")
        .map_err(|e| format!("--langflow-url: {}", e.detail()))?;
    let base = upstream
        .langflow
        .map(|l| l.url)
        .ok_or("--langflow-url: not a Langflow URL")?;
    outbound.check_url(&base).map_err(|e| {
        format!(
            "--langflow-url: {} (a Langflow on this host or a private network needs KEYGATE_ALLOW_PRIVATE_UPSTREAMS=true)",
            e.detail()
        )
    })?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn langflow_secret_keys_become_fernet_keys_as_in_langflow() {
        // A 43-character URL-safe key (Langflow's generated form) is the
        // Fernet key itself; a short one is hashed; a long non-key refused.
        assert!(langflow_fernet_key("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSiP6uKeI4").is_ok());
        assert!(langflow_fernet_key("short secret").is_ok());
        assert!(langflow_fernet_key(&"x".repeat(40)).is_err());
        assert!(langflow_fernet_key("").is_err());
    }

    #[test]
    fn default_fields_are_a_json_array() {
        assert_eq!(default_fields(None), "[]");
        assert_eq!(default_fields(Some("null")), "[]");
        assert_eq!(default_fields(Some(r#"["a","b"]"#)), r#"["a","b"]"#);
    }
}
