//! All database access for flows.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{flows, users};
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::keys::store as key_store;

type Result<T> = std::result::Result<T, AppError>;

pub const ACCESS_PRIVATE: &str = "private";
pub const ACCESS_PUBLIC: &str = "public";

fn endpoint_taken(endpoint_name: Option<&str>) -> String {
    format!(
        "You already have a flow with the endpoint name {:?}",
        endpoint_name.unwrap_or_default()
    )
}

/// The 409 of an update that gives a flow a taken endpoint name.
fn taken(changes: &FlowChanges) -> String {
    endpoint_taken(changes.endpoint_name.clone().flatten().as_deref())
}

/// A stored flow, as its owner sees it (and as it is inserted). `data` and
/// `upstream` are JSON text.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = flows)]
pub struct Flow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub description: Option<String>,
    pub endpoint_name: Option<String>,
    pub data: Option<String>,
    pub upstream: Option<String>,
    pub access: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    // Langflow's own flow fields, kept for its clients (see `langflow`).
    pub is_component: bool,
    pub folder_id: Option<String>,
    pub icon: Option<String>,
    pub icon_bg_color: Option<String>,
    pub gradient: Option<String>,
    /// A JSON array of strings.
    pub tags: Option<String>,
    pub locked: bool,
    pub mcp_enabled: bool,
    pub webhook: bool,
}

/// A partial update: `None` leaves a column alone, `Some(None)` clears it.
#[derive(Default, AsChangeset)]
#[diesel(table_name = flows)]
pub struct FlowChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub endpoint_name: Option<Option<String>>,
    pub data: Option<Option<String>>,
    pub upstream: Option<Option<String>>,
    pub access: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
    pub is_component: Option<bool>,
    pub folder_id: Option<Option<String>>,
    pub icon: Option<Option<String>>,
    pub icon_bg_color: Option<Option<String>>,
    pub gradient: Option<Option<String>>,
    pub tags: Option<Option<String>>,
    pub locked: Option<bool>,
    pub mcp_enabled: Option<bool>,
    pub webhook: Option<bool>,
}

pub fn insert(conn: &mut DbConnection, new: Flow) -> Result<Flow> {
    db::serializable_transaction(conn, |conn| {
        diesel::insert_into(flows::table)
            .values(&new)
            .execute(conn)
            .map_err(db::conflict_on_duplicate(endpoint_taken(
                new.endpoint_name.as_deref(),
            )))?;
        public_name_is_free(conn, &new)?;
        Ok(new)
    })
}

/// Inserts a flow as another system made it (an import), inside the
/// caller's transaction; the caller has checked its endpoint name.
pub fn insert_imported(conn: &mut DbConnection, flow: &Flow) -> Result<()> {
    diesel::insert_into(flows::table)
        .values(flow)
        .execute(conn)
        .map_err(db::conflict_on_duplicate(endpoint_taken(
            flow.endpoint_name.as_deref(),
        )))?;
    Ok(())
}

/// The owner of the flow with this id, whoever it is.
pub fn owner_of(conn: &mut DbConnection, id: &str) -> Result<Option<String>> {
    Ok(flows::table
        .find(id)
        .select(flows::user_id)
        .first(conn)
        .optional()?)
}

/// Whether a public flow other than `except_id` has this endpoint name.
pub fn public_endpoint_taken(conn: &mut DbConnection, name: &str, except_id: &str) -> Result<bool> {
    let holders: i64 = flows::table
        .filter(flows::access.eq(ACCESS_PUBLIC))
        .filter(flows::endpoint_name.eq(name))
        .filter(flows::id.ne(except_id))
        .count()
        .get_result(conn)?;
    Ok(holders > 0)
}

/// Inserts `new` under its own id, or, when the owner already has a flow
/// with that id, replaces all its fields but the creation time: `(flow,
/// created)`. `None` when the id belongs to another user's flow.
pub fn upsert(conn: &mut DbConnection, new: Flow) -> Result<Option<(Flow, bool)>> {
    db::serializable_transaction(conn, |conn| {
        let owner: Option<String> = flows::table
            .find(&new.id)
            .select(flows::user_id)
            .first(conn)
            .optional()?;
        match owner {
            None => {
                diesel::insert_into(flows::table)
                    .values(&new)
                    .execute(conn)
                    .map_err(db::conflict_on_duplicate(endpoint_taken(
                        new.endpoint_name.as_deref(),
                    )))?;
                public_name_is_free(conn, &new)?;
                Ok(Some((new, true)))
            }
            Some(owner) if owner != new.user_id => Ok(None),
            Some(_) => {
                let (user_id, id) = (new.user_id.clone(), new.id.clone());
                let changes = FlowChanges {
                    name: Some(new.name),
                    description: Some(new.description),
                    endpoint_name: Some(new.endpoint_name),
                    data: Some(new.data),
                    upstream: Some(new.upstream),
                    access: Some(new.access),
                    updated_at: Some(new.updated_at),
                    is_component: Some(new.is_component),
                    folder_id: Some(new.folder_id),
                    icon: Some(new.icon),
                    icon_bg_color: Some(new.icon_bg_color),
                    gradient: Some(new.gradient),
                    tags: Some(new.tags),
                    locked: Some(new.locked),
                    mcp_enabled: Some(new.mcp_enabled),
                    webhook: Some(new.webhook),
                };
                let flow = update_for_user(conn, &user_id, &id, changes)?;
                if let Some(flow) = &flow {
                    public_name_is_free(conn, flow)?;
                }
                Ok(flow.map(|flow| (flow, false)))
            }
        }
    })
}

/// [`update_for_user`], refused (409) when it would give two public flows
/// one endpoint name.
pub fn update(
    conn: &mut DbConnection,
    user_id: &str,
    id: &str,
    changes: FlowChanges,
) -> Result<Option<Flow>> {
    db::serializable_transaction(conn, |conn| {
        let flow = update_for_user(conn, user_id, id, changes)?;
        if let Some(flow) = &flow {
            public_name_is_free(conn, flow)?;
        }
        Ok(flow)
    })
}

/// An endpoint name is unique among public flows, whoever owns them, so an
/// anonymous run by name has exactly one flow to go to and no other user
/// can squat or inherit the name. Checked after the write, inside its
/// (serializable) transaction.
fn public_name_is_free(conn: &mut DbConnection, flow: &Flow) -> Result<()> {
    let Some(name) = flow.endpoint_name.as_deref() else {
        return Ok(());
    };
    if flow.access != ACCESS_PUBLIC {
        return Ok(());
    }
    let holders: i64 = flows::table
        .filter(flows::access.eq(ACCESS_PUBLIC))
        .filter(flows::endpoint_name.eq(name))
        .count()
        .get_result(conn)?;
    if holders > 1 {
        return Err(AppError::conflict(format!(
            "Another public flow already has the endpoint name {name:?}"
        )));
    }
    Ok(())
}

/// Which of a user's flows a list shows (Langflow's list parameters).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only the flows in this folder.
    pub folder_id: Option<String>,
    /// Only the flows marked `is_component`.
    pub components_only: bool,
}

/// The user's flows matching `filter`, oldest first, and how many match in
/// all. `page` is `(offset, limit)`; `None` returns every match.
pub fn list_for_user(
    conn: &mut DbConnection,
    user_id: &str,
    filter: &ListFilter,
    page: Option<(i64, i64)>,
) -> Result<(Vec<Flow>, i64)> {
    let matching = || {
        let mut query = flows::table
            .filter(flows::user_id.eq(user_id.to_string()))
            .into_boxed();
        if let Some(folder) = &filter.folder_id {
            query = query.filter(flows::folder_id.eq(folder.clone()));
        }
        if filter.components_only {
            query = query.filter(flows::is_component.eq(true));
        }
        query
    };
    let query = matching()
        .order((flows::created_at.asc(), flows::id.asc()))
        .select(Flow::as_select());
    // The whole list is one query; only a page needs the count besides.
    match page {
        Some((offset, limit)) => {
            let total: i64 = matching().count().get_result(conn)?;
            Ok((query.offset(offset).limit(limit).load(conn)?, total))
        }
        None => {
            let items: Vec<Flow> = query.load(conn)?;
            let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
            Ok((items, total))
        }
    }
}

db::owner_scoped!(flows: Flow, by id, changed by FlowChanges, taken by taken);

/// One of the user's flows by id (a UUID) or endpoint name.
pub fn find_by_identifier_for_user(
    conn: &mut DbConnection,
    user_id: &str,
    identifier: &Identifier,
) -> Result<Option<Flow>> {
    let query = flows::table
        .filter(flows::user_id.eq(user_id))
        .select(Flow::as_select());
    Ok(match identifier {
        Identifier::Id(id) => query.filter(flows::id.eq(id)).first(conn).optional()?,
        Identifier::EndpointName(name) => query
            .filter(flows::endpoint_name.eq(name))
            .first(conn)
            .optional()?,
    })
}

/// The public flows of active users matching an id or endpoint name (an
/// endpoint name is only unique per user, so there may be several).
pub fn find_public(conn: &mut DbConnection, identifier: &Identifier) -> Result<Vec<Flow>> {
    let query = flows::table
        .inner_join(users::table)
        .filter(flows::access.eq(ACCESS_PUBLIC))
        .filter(users::is_active.eq(true))
        .select(Flow::as_select())
        .limit(2);
    Ok(match identifier {
        Identifier::Id(id) => query.filter(flows::id.eq(id)).load(conn)?,
        Identifier::EndpointName(name) => query.filter(flows::endpoint_name.eq(name)).load(conn)?,
    })
}

/// How a run names its flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Id(String),
    EndpointName(String),
}

impl Identifier {
    /// A UUID is an id (endpoint names may not be UUIDs); anything else is
    /// an endpoint name.
    pub fn parse(text: &str) -> Self {
        match uuid::Uuid::parse_str(text) {
            Ok(id) => Identifier::Id(id.to_string()),
            Err(_) => Identifier::EndpointName(text.to_string()),
        }
    }
}

/// Deletes one of the user's flows and the keys bound to it, in one
/// transaction. Returns the ids of the deleted keys (for the key cache), or
/// `None` when the flow is not theirs.
pub fn delete_for_user(
    conn: &mut DbConnection,
    user_id: &str,
    id: &str,
) -> Result<Option<Vec<String>>> {
    db::transaction(conn, |conn| {
        if find_for_user(conn, user_id, id)?.is_none() {
            return Ok(None);
        }
        let key_ids = key_store::bound_key_ids(conn, id)?;
        key_store::delete_bound_to_flow(conn, id)?;
        diesel::delete(flows::table.filter(flows::id.eq(id))).execute(conn)?;
        Ok(Some(key_ids))
    })
}
