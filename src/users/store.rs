//! All database access for users.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::users;
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::identity::AuthUser;

type Result<T> = std::result::Result<T, AppError>;

const USERNAME_TAKEN: &str = "This username is unavailable";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub is_active: bool,
    pub is_superuser: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

impl From<User> for AuthUser {
    fn from(user: User) -> Self {
        AuthUser::from_row((
            user.id,
            user.username,
            user.is_superuser,
            user.is_active,
            user.created_at,
            user.updated_at,
            user.last_login_at,
        ))
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    id: &'a str,
    username: &'a str,
    password_hash: &'a str,
    is_active: bool,
    is_superuser: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub is_active: bool,
    pub is_superuser: bool,
}

/// What an update may change; `None` leaves a field as it is.
#[derive(Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn find_by_id(conn: &mut DbConnection, id: &str) -> Result<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()
        .map_err(AppError::from)
}

pub fn find_by_username(conn: &mut DbConnection, username: &str) -> Result<Option<User>> {
    users::table
        .filter(users::username.eq(username))
        .select(User::as_select())
        .first(conn)
        .optional()
        .map_err(AppError::from)
}

/// Inserts a user; a taken username is a 409.
pub fn insert(conn: &mut DbConnection, new: NewUser) -> Result<User> {
    let now = db::now();
    let id = uuid::Uuid::new_v4().to_string();
    let row = NewUserRow {
        id: &id,
        username: &new.username,
        password_hash: &new.password_hash,
        is_active: new.is_active,
        is_superuser: new.is_superuser,
        created_at: now,
        updated_at: now,
    };
    diesel::insert_into(users::table)
        .values(&row)
        .execute(conn)
        .map_err(db::conflict_on_duplicate(USERNAME_TAKEN))?;
    Ok(User {
        id,
        username: new.username,
        password_hash: new.password_hash,
        is_active: new.is_active,
        is_superuser: new.is_superuser,
        created_at: now,
        updated_at: now,
        last_login_at: None,
    })
}

/// Inserts a user as another system made it (an import): its own id,
/// password hash and times. A taken username is a 409.
pub fn insert_imported(conn: &mut DbConnection, user: &User) -> Result<()> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(&user.id),
            users::username.eq(&user.username),
            users::password_hash.eq(&user.password_hash),
            users::is_active.eq(user.is_active),
            users::is_superuser.eq(user.is_superuser),
            users::created_at.eq(user.created_at),
            users::updated_at.eq(user.updated_at),
            users::last_login_at.eq(user.last_login_at),
        ))
        .execute(conn)
        .map_err(db::conflict_on_duplicate(USERNAME_TAKEN))?;
    Ok(())
}

pub fn list(conn: &mut DbConnection, skip: i64, limit: i64) -> Result<(i64, Vec<User>)> {
    let total: i64 = users::table.count().get_result(conn)?;
    let page = users::table
        .order((users::created_at.asc(), users::id.asc()))
        .offset(skip)
        .limit(limit)
        .select(User::as_select())
        .load(conn)?;
    Ok((total, page))
}

pub fn any_superuser(conn: &mut DbConnection) -> Result<bool> {
    let count: i64 = users::table
        .filter(users::is_superuser.eq(true))
        .count()
        .get_result(conn)?;
    Ok(count > 0)
}

fn count_other_active_superusers(conn: &mut DbConnection, except_id: &str) -> Result<i64> {
    Ok(users::table
        .filter(users::is_superuser.eq(true))
        .filter(users::is_active.eq(true))
        .filter(users::id.ne(except_id))
        .count()
        .get_result(conn)?)
}

fn removes_active_superuser(user: &User, changes: Option<&UserChanges>) -> bool {
    if !(user.is_superuser && user.is_active) {
        return false;
    }
    match changes {
        None => true,
        Some(c) => c.is_superuser == Some(false) || c.is_active == Some(false),
    }
}

/// Applies `changes`, refusing to demote or deactivate the last active
/// superuser. Runs in one serializable transaction so two concurrent
/// demotions cannot both pass the check.
pub fn update(conn: &mut DbConnection, id: &str, mut changes: UserChanges) -> Result<User> {
    changes.updated_at = Some(db::now());
    db::serializable_transaction(conn, |conn| {
        let user = find_by_id(conn, id)?.ok_or_else(|| AppError::not_found("User not found"))?;
        if removes_active_superuser(&user, Some(&changes))
            && count_other_active_superusers(conn, id)? == 0
        {
            return Err(AppError::bad_request(
                "Cannot deactivate or demote the last active superuser",
            ));
        }
        diesel::update(users::table.find(id))
            .set(&changes)
            .execute(conn)
            .map_err(db::conflict_on_duplicate(USERNAME_TAKEN))?;
        find_by_id(conn, id)?.ok_or_else(|| AppError::not_found("User not found"))
    })
}

/// Deletes a user (their keys and sessions go with them by cascade),
/// refusing to delete the last active superuser; the user as it was.
pub fn delete(conn: &mut DbConnection, id: &str) -> Result<User> {
    db::serializable_transaction(conn, |conn| {
        let user = find_by_id(conn, id)?.ok_or_else(|| AppError::not_found("User not found"))?;
        if removes_active_superuser(&user, None) && count_other_active_superusers(conn, id)? == 0 {
            return Err(AppError::bad_request(
                "Cannot delete the last active superuser",
            ));
        }
        diesel::delete(users::table.find(id)).execute(conn)?;
        Ok(user)
    })
}

/// Replaces a user's password hash by another of the same password (an
/// imported bcrypt hash by argon2id), only while `old_hash` is still the
/// stored one. `updated_at` stays: nothing the user or a cache sees
/// changes. True when it was replaced.
pub fn upgrade_password_hash(
    conn: &mut DbConnection,
    id: &str,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool> {
    let replaced = diesel::update(
        users::table
            .find(id)
            .filter(users::password_hash.eq(old_hash)),
    )
    .set(users::password_hash.eq(new_hash))
    .execute(conn)?;
    Ok(replaced == 1)
}

pub fn record_login(conn: &mut DbConnection, id: &str) -> Result<()> {
    diesel::update(users::table.find(id))
        .set(users::last_login_at.eq(db::now()))
        .execute(conn)?;
    Ok(())
}
