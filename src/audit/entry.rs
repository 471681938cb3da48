//! What an audit event says before it is written: the [`Action`], the
//! request's [`Origin`] and the [`Entry`] the domains fill in.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde_json::{Map, Value};

use crate::error::AppError;
use crate::identity::{Credential, Principal};
use crate::state::AppState;

/// The longest `user_agent` kept, in characters.
pub const MAX_USER_AGENT_LEN: usize = 256;

/// What happened. The names are the API's `action` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    LoginSuccess,
    LoginFailure,
    Logout,
    PasswordChange,
    KeyCreate,
    KeyUpdate,
    KeyRotate,
    KeyRevoke,
    KeyRevokeLeaked,
    CredentialSave,
    CredentialDelete,
    VariableCreate,
    VariableUpdate,
    VariableDelete,
    FlowCreate,
    FlowUpdate,
    FlowDelete,
    UserCreate,
    UserUpdate,
    UserDelete,
    SecretRotate,
}

impl Action {
    pub const ALL: [Action; 21] = [
        Action::LoginSuccess,
        Action::LoginFailure,
        Action::Logout,
        Action::PasswordChange,
        Action::KeyCreate,
        Action::KeyUpdate,
        Action::KeyRotate,
        Action::KeyRevoke,
        Action::KeyRevokeLeaked,
        Action::CredentialSave,
        Action::CredentialDelete,
        Action::VariableCreate,
        Action::VariableUpdate,
        Action::VariableDelete,
        Action::FlowCreate,
        Action::FlowUpdate,
        Action::FlowDelete,
        Action::UserCreate,
        Action::UserUpdate,
        Action::UserDelete,
        Action::SecretRotate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::LoginSuccess => "login.success",
            Action::LoginFailure => "login.failure",
            Action::Logout => "logout",
            Action::PasswordChange => "password.change",
            Action::KeyCreate => "key.create",
            Action::KeyUpdate => "key.update",
            Action::KeyRotate => "key.rotate",
            Action::KeyRevoke => "key.revoke",
            Action::KeyRevokeLeaked => "key.revoke_leaked",
            Action::CredentialSave => "credential.save",
            Action::CredentialDelete => "credential.delete",
            Action::VariableCreate => "variable.create",
            Action::VariableUpdate => "variable.update",
            Action::VariableDelete => "variable.delete",
            Action::FlowCreate => "flow.create",
            Action::FlowUpdate => "flow.update",
            Action::FlowDelete => "flow.delete",
            Action::UserCreate => "user.create",
            Action::UserUpdate => "user.update",
            Action::UserDelete => "user.delete",
            Action::SecretRotate => "secret.rotate",
        }
    }

    /// The part before the dot (`key` for `key.rotate`; `logout` is a
    /// class of its own).
    fn class(self) -> &'static str {
        let name = self.name();
        name.split_once('.').map_or(name, |(class, _)| class)
    }

    /// The names an `action=` filter selects: one action (`key.rotate`) or
    /// a class (`key.*`); `None` for anything else.
    pub fn matching(filter: &str) -> Option<Vec<&'static str>> {
        let names: Vec<&'static str> = match filter.strip_suffix(".*") {
            Some(class) => Action::ALL
                .into_iter()
                .filter(|a| a.class() == class)
                .map(Action::name)
                .collect(),
            None => Action::ALL
                .into_iter()
                .map(Action::name)
                .filter(|name| *name == filter)
                .collect(),
        };
        (!names.is_empty()).then_some(names)
    }
}

/// Where a request came from: the client's address (as `client_ip`
/// resolves it, through `KEYGATE_TRUSTED_PROXIES`) and its `User-Agent`,
/// cut to [`MAX_USER_AGENT_LEN`] characters. An extractor; the command
/// line uses [`Origin::NONE`].
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

impl Origin {
    /// No request: the command line.
    pub const NONE: Origin = Origin {
        address: None,
        user_agent: None,
    };

    pub fn of(req: &HttpRequest, trusted: &[crate::client_ip::Cidr]) -> Origin {
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .map(|value| clean_user_agent(&String::from_utf8_lossy(value.as_bytes())))
            .filter(|text| !text.is_empty());
        Origin {
            address: Some(crate::client_ip::client_ip(req, trusted).to_string()),
            user_agent,
        }
    }
}

impl FromRequest for Origin {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.app_data::<web::Data<AppState>>() {
            Some(state) => Ok(Origin::of(req, &state.config.trusted_proxies)),
            None => Err(AppError::internal("application state missing")),
        })
    }
}

/// Characters after `sk-` that make a key-shaped run worth hiding.
const MIN_KEY_TAIL: usize = 8;

/// A `User-Agent` as stored: control characters dropped, anything shaped
/// like a key (`sk-` and at least 8 key characters) replaced by
/// `sk-REDACTED` (a script that put its key in the wrong header must not
/// find it in the log), cut to [`MAX_USER_AGENT_LEN`] characters.
fn clean_user_agent(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().filter(|c| !c.is_control()).collect();
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_key = chars[i..].starts_with(&['s', 'k', '-'])
            && (i == 0 || !chars[i - 1].is_ascii_alphanumeric());
        if starts_key {
            let tail = chars[i + 3..]
                .iter()
                .take_while(|c| is_key_char(**c))
                .count();
            if tail >= MIN_KEY_TAIL {
                out.push_str("sk-REDACTED");
                i += 3 + tail;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out.chars().take(MAX_USER_AGENT_LEN).collect()
}

/// A time as `detail` shows it: RFC 3339 in UTC with a `Z`, as the API
/// writes times everywhere.
pub fn timestamp(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One audit event before it is written.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: Action,
    /// Whose event it is: the owner of what changed (`None`: nobody's,
    /// e.g. a sign-in under an unknown name, a secret rotation).
    pub user_id: Option<String>,
    /// Who did it, when a signed-in user or a key did.
    pub actor_user_id: Option<String>,
    /// The key the request was made with, if it was made with one.
    pub actor_key_id: Option<String>,
    pub target_id: Option<String>,
    pub origin: Origin,
    pub detail: Map<String, Value>,
}

impl Entry {
    pub fn new(action: Action, origin: &Origin) -> Entry {
        Entry {
            action,
            user_id: None,
            actor_user_id: None,
            actor_key_id: None,
            target_id: None,
            origin: origin.clone(),
            detail: Map::new(),
        }
    }

    /// Done by `principal`, about their own account unless [`Entry::owner`]
    /// says otherwise.
    pub fn by(mut self, principal: &Principal) -> Entry {
        self.user_id = Some(principal.user.id.clone());
        self.actor_user_id = Some(principal.user.id.clone());
        self.actor_key_id = match &principal.credential {
            Credential::ApiKey { key_id, .. } => Some(key_id.clone()),
            Credential::Session { .. } => None,
        };
        self
    }

    /// Done by `principal` when there is one (public sign-up has none).
    pub fn by_any(self, principal: Option<&Principal>) -> Entry {
        match principal {
            Some(principal) => self.by(principal),
            None => self,
        }
    }

    /// Whose event it is.
    pub fn owner(mut self, user_id: impl Into<String>) -> Entry {
        self.user_id = Some(user_id.into());
        self
    }

    /// Done by this user, when no principal is at hand (a sign-in).
    pub fn actor(mut self, user_id: impl Into<String>) -> Entry {
        self.actor_user_id = Some(user_id.into());
        self
    }

    /// The same entry as another action (a write that turned out to be a
    /// replacement rather than a creation).
    pub fn retitled(mut self, action: Action) -> Entry {
        self.action = action;
        self
    }

    pub fn target(mut self, id: impl Into<String>) -> Entry {
        self.target_id = Some(id.into());
        self
    }

    /// One field of `detail`: ids, names, flags and counts, never a
    /// secret value.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Entry {
        self.detail.insert(name.to_string(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_filters() {
        assert_eq!(Action::matching("key.rotate"), Some(vec!["key.rotate"]));
        assert_eq!(
            Action::matching("variable.*"),
            Some(vec![
                "variable.create",
                "variable.update",
                "variable.delete"
            ])
        );
        assert_eq!(Action::matching("logout.*"), Some(vec!["logout"]));
        assert_eq!(Action::matching("logout"), Some(vec!["logout"]));
        assert_eq!(Action::matching("key"), None);
        assert_eq!(Action::matching("nothing.*"), None);
        assert_eq!(Action::matching("*"), None);
    }

    #[test]
    fn user_agents_are_cleaned() {
        let key = "sk-abcdefghijabcdefghijabcdefghijabcdefghij123";
        assert_eq!(
            clean_user_agent(&format!("curl/8.0 {key} x")),
            "curl/8.0 sk-REDACTED x"
        );
        assert_eq!(clean_user_agent("task-sk-list"), "task-sk-list");
        assert_eq!(clean_user_agent("a\u{7}b\nc"), "abc");
        let long = "é".repeat(MAX_USER_AGENT_LEN + 10);
        assert_eq!(clean_user_agent(&long).chars().count(), MAX_USER_AGENT_LEN);
    }
}
