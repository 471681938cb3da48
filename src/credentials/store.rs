//! All database access for provider credentials. Secrets arrive here
//! already encrypted (`secret_enc`); only [`reencrypt_all`] sees a
//! [`SecretBox`].

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::upsert::excluded;

use crate::crypto::{self, SecretBox};
use crate::db::schema::provider_credentials;
use crate::db::{self, DbConnection};
use crate::error::AppError;

type Result<T> = std::result::Result<T, AppError>;

/// A stored credential; `secret_enc` is the encrypted secret.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = provider_credentials)]
pub struct StoredCredential {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub host: Option<String>,
    pub public_key: Option<String>,
    pub secret_enc: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = provider_credentials)]
struct NewRow<'a> {
    id: &'a str,
    user_id: &'a str,
    provider: &'a str,
    host: Option<&'a str>,
    public_key: Option<&'a str>,
    secret_enc: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

pub struct Upsert<'a> {
    pub user_id: &'a str,
    pub provider: &'a str,
    pub host: Option<&'a str>,
    pub public_key: Option<&'a str>,
    pub secret_enc: &'a str,
}

/// Inserts or replaces the user's credential for a provider in one
/// statement (`ON CONFLICT (user_id, provider) DO UPDATE`) inside a
/// transaction, so concurrent saves leave exactly one row.
pub fn upsert(conn: &mut DbConnection, new: Upsert<'_>) -> Result<StoredCredential> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = db::now();
    let row = NewRow {
        id: &id,
        user_id: new.user_id,
        provider: new.provider,
        host: new.host,
        public_key: new.public_key,
        secret_enc: new.secret_enc,
        created_at: now,
        updated_at: now,
    };
    db::transaction(conn, |conn| {
        db::on_each_backend!(conn, |backend| diesel::insert_into(
            provider_credentials::table
        )
        .values(&row)
        .on_conflict((
            provider_credentials::user_id,
            provider_credentials::provider,
        ))
        .do_update()
        .set((
            provider_credentials::host.eq(excluded(provider_credentials::host)),
            provider_credentials::public_key.eq(excluded(provider_credentials::public_key)),
            provider_credentials::secret_enc.eq(excluded(provider_credentials::secret_enc)),
            provider_credentials::updated_at.eq(excluded(provider_credentials::updated_at)),
        ))
        .execute(backend))?;
        find_for_user(conn, new.user_id, new.provider)?
            .ok_or_else(|| AppError::internal("upserted credential not found"))
    })
}

db::owner_scoped!(
    provider_credentials: StoredCredential,
    by provider,
    listed by provider_credentials::provider.asc()
);

/// Re-encrypts every stored secret from `old` to `new`; call inside the
/// rotation's transaction. Returns the number of rows.
pub fn reencrypt_all(conn: &mut DbConnection, old: &SecretBox, new: &SecretBox) -> Result<usize> {
    crypto::reencrypt_column!(conn, old, new, provider_credentials.secret_enc)
}
