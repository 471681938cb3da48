//! All database access for global variables. Credential values arrive
//! here already encrypted; only [`reencrypt_all`] sees a [`SecretBox`].

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::crypto::{self, SecretBox};
use crate::db::schema::variables;
use crate::db::{self, DbConnection};
use crate::error::AppError;

type Result<T> = std::result::Result<T, AppError>;

fn name_taken(name: &str) -> String {
    format!("A variable named {name:?} already exists")
}

/// The 409 of an update that renames a variable to a taken name.
fn taken(changes: &VariableChanges) -> String {
    changes.name.as_deref().map(name_taken).unwrap_or_default()
}

/// Stored `var_type` of an encrypted variable.
pub const CREDENTIAL: &str = "Credential";
/// Stored `var_type` of a plain variable.
pub const GENERIC: &str = "Generic";

/// A stored variable; for a Credential, `value` is encrypted.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = variables)]
pub struct Variable {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub var_type: String,
    pub value: String,
    /// A JSON array of strings.
    pub default_fields: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = variables)]
struct NewRow<'a> {
    id: &'a str,
    user_id: &'a str,
    name: &'a str,
    var_type: &'a str,
    value: &'a str,
    default_fields: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

pub struct NewVariable<'a> {
    pub user_id: &'a str,
    pub name: &'a str,
    pub var_type: &'a str,
    /// Already encrypted for a Credential.
    pub value: &'a str,
    pub default_fields: &'a str,
}

#[derive(Default, AsChangeset)]
#[diesel(table_name = variables)]
pub struct VariableChanges {
    pub name: Option<String>,
    pub var_type: Option<String>,
    pub value: Option<String>,
    pub default_fields: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Inserts a variable; a taken name is a 409.
pub fn insert(conn: &mut DbConnection, new: NewVariable<'_>) -> Result<Variable> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = db::now();
    diesel::insert_into(variables::table)
        .values(&NewRow {
            id: &id,
            user_id: new.user_id,
            name: new.name,
            var_type: new.var_type,
            value: new.value,
            default_fields: new.default_fields,
            created_at: now,
            updated_at: now,
        })
        .execute(conn)
        .map_err(db::conflict_on_duplicate(name_taken(new.name)))?;
    Ok(Variable {
        id,
        user_id: new.user_id.to_string(),
        name: new.name.to_string(),
        var_type: new.var_type.to_string(),
        value: new.value.to_string(),
        default_fields: new.default_fields.to_string(),
        created_at: now,
        updated_at: now,
    })
}

/// Inserts a variable as another system made it (an import): its own id
/// and times; a Credential's value already encrypted. A taken name is a 409.
pub fn insert_imported(conn: &mut DbConnection, variable: &Variable) -> Result<()> {
    diesel::insert_into(variables::table)
        .values((
            variables::id.eq(&variable.id),
            variables::user_id.eq(&variable.user_id),
            variables::name.eq(&variable.name),
            variables::var_type.eq(&variable.var_type),
            variables::value.eq(&variable.value),
            variables::default_fields.eq(&variable.default_fields),
            variables::created_at.eq(variable.created_at),
            variables::updated_at.eq(variable.updated_at),
        ))
        .execute(conn)
        .map_err(db::conflict_on_duplicate(name_taken(&variable.name)))?;
    Ok(())
}

/// The owner of the variable with this id, whoever it is.
pub fn owner_of(conn: &mut DbConnection, id: &str) -> Result<Option<String>> {
    Ok(variables::table
        .find(id)
        .select(variables::user_id)
        .first(conn)
        .optional()?)
}

db::owner_scoped!(
    variables: Variable,
    by id,
    listed by (variables::name.asc(), variables::id.asc()),
    changed by VariableChanges,
    taken by taken
);

/// The user's variable by name (for the gateway's use).
pub fn find_by_name(
    conn: &mut DbConnection,
    user_id: &str,
    name: &str,
) -> Result<Option<Variable>> {
    variables::table
        .filter(variables::name.eq(name))
        .filter(variables::user_id.eq(user_id))
        .select(Variable::as_select())
        .first(conn)
        .optional()
        .map_err(AppError::from)
}

/// Re-encrypts every Credential value from `old` to `new`; call inside the
/// rotation's transaction. Returns the number of rows.
pub fn reencrypt_all(conn: &mut DbConnection, old: &SecretBox, new: &SecretBox) -> Result<usize> {
    crypto::reencrypt_column!(
        conn,
        old,
        new,
        variables.value where variables::var_type.eq(CREDENTIAL)
    )
}
