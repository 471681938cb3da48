//! Key verification: from a key's hash to its owner. Every protected
//! request passes through [`KeyVerifier::verify`]; the `forget_*` hooks are
//! called by every write that could make a key unusable, before the API
//! answers, so a cache in front of the database never outlives a change.

use chrono::NaiveDateTime;

use crate::auth::AuthUser;
use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::keys::store;
use crate::keys::token::KeyHash;

#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: String,
    pub owner: AuthUser,
    /// The one flow this key may run, if it is bound to one.
    pub flow_id: Option<String>,
    key_active: bool,
    owner_active: bool,
    expires_at: Option<NaiveDateTime>,
}

impl VerifiedKey {
    pub fn is_usable_at(&self, now: NaiveDateTime) -> bool {
        self.key_active && self.owner_active && self.expires_at.is_none_or(|at| at > now)
    }
}

impl From<store::KeyWithOwner> for VerifiedKey {
    fn from(row: store::KeyWithOwner) -> Self {
        VerifiedKey {
            key_id: row.key_id,
            owner: row.owner,
            flow_id: row.flow_id,
            key_active: row.key_active,
            owner_active: row.owner_active,
            expires_at: row.expires_at,
        }
    }
}

pub struct KeyVerifier {
    pool: DbPool,
}

impl KeyVerifier {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// The key with this hash and its owner, usable or not; `None` when no
    /// such key exists.
    pub async fn verify(&self, hash: KeyHash) -> Result<Option<VerifiedKey>, AppError> {
        db::run(&self.pool, move |conn| {
            store::find_by_hash(conn, hash.as_str())
                .map(|row| row.map(VerifiedKey::from))
                .map_err(AppError::from)
        })
        .await
    }

    /// A key was revoked, deactivated or changed.
    pub fn forget_key(&self, _key_id: &str) {}

    /// A user was deleted, deactivated or had their rights changed.
    pub fn forget_user(&self, _user_id: &str) {}

    /// A key was created (a cache of unknown hashes must not hide it).
    pub fn key_created(&self) {}
}
