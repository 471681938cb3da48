//! All database access for sign-in sessions.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{sessions, users};
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::identity::AuthUser;

type Result<T> = std::result::Result<T, AppError>;

#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct NewSession<'a> {
    id: &'a str,
    user_id: &'a str,
    token_hash: &'a str,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
}

/// Stores a session and returns its id.
pub fn create(
    conn: &mut DbConnection,
    user_id: &str,
    token_hash: &str,
    now: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(sessions::table)
        .values(&NewSession {
            id: &id,
            user_id,
            token_hash,
            created_at: now,
            expires_at,
        })
        .execute(conn)?;
    Ok(id)
}

/// The session's id, end and user, when it exists, has not expired and
/// its user is active.
pub fn find_active(
    conn: &mut DbConnection,
    token_hash: &str,
    now: NaiveDateTime,
) -> Result<Option<(String, NaiveDateTime, AuthUser)>> {
    Ok(sessions::table
        .inner_join(users::table)
        .filter(sessions::token_hash.eq(token_hash))
        .filter(sessions::expires_at.gt(now))
        .filter(users::is_active.eq(true))
        .select((sessions::id, sessions::expires_at, db::auth_user_columns()))
        .first(conn)
        .optional()?)
}

pub fn delete_expired(conn: &mut DbConnection, now: NaiveDateTime) -> Result<usize> {
    Ok(diesel::delete(sessions::table.filter(sessions::expires_at.le(now))).execute(conn)?)
}

pub fn delete(conn: &mut DbConnection, session_id: &str) -> Result<usize> {
    Ok(diesel::delete(sessions::table.find(session_id)).execute(conn)?)
}

/// Ends every session of a user but `keep` (the one changing its password).
pub fn delete_for_user_except(
    conn: &mut DbConnection,
    user_id: &str,
    keep: Option<&str>,
) -> Result<usize> {
    let sessions_of_user = sessions::table.filter(sessions::user_id.eq(user_id));
    Ok(match keep {
        Some(keep) => {
            diesel::delete(sessions_of_user.filter(sessions::id.ne(keep))).execute(conn)?
        }
        None => diesel::delete(sessions_of_user).execute(conn)?,
    })
}
