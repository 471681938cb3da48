//! All database access for the audit log.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::entry::Entry;
use crate::db::schema::audit_events;
use crate::db::DbConnection;
use crate::error::AppError;

type Result<T> = std::result::Result<T, AppError>;

/// A stored event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct Event {
    pub id: String,
    pub at: NaiveDateTime,
    pub action: String,
    pub user_id: Option<String>,
    pub actor_user_id: Option<String>,
    pub actor_key_id: Option<String>,
    pub target_id: Option<String>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// A JSON object, as text.
    pub detail: String,
}

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewEvent<'a> {
    id: &'a str,
    at: NaiveDateTime,
    action: &'a str,
    user_id: Option<&'a str>,
    actor_user_id: Option<&'a str>,
    actor_key_id: Option<&'a str>,
    target_id: Option<&'a str>,
    address: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: &'a str,
}

pub fn insert(conn: &mut DbConnection, at: NaiveDateTime, entry: &Entry) -> Result<()> {
    let id = uuid::Uuid::new_v4().to_string();
    let detail = serde_json::Value::Object(entry.detail.clone()).to_string();
    diesel::insert_into(audit_events::table)
        .values(&NewEvent {
            id: &id,
            at,
            action: entry.action.name(),
            user_id: entry.user_id.as_deref(),
            actor_user_id: entry.actor_user_id.as_deref(),
            actor_key_id: entry.actor_key_id.as_deref(),
            target_id: entry.target_id.as_deref(),
            address: entry.origin.address.as_deref(),
            user_agent: entry.origin.user_agent.as_deref(),
            detail: &detail,
        })
        .execute(conn)?;
    Ok(())
}

/// Where a page starts: after this event (in the newest-first order), or
/// before this time.
#[derive(Debug, Clone)]
pub enum Cursor {
    Event(String),
    Time(NaiveDateTime),
}

/// What a page shows. `user_id: None` is every user's events (the
/// superuser's view).
#[derive(Debug, Clone)]
pub struct Filter {
    pub user_id: Option<String>,
    pub actions: Option<Vec<&'static str>>,
    pub key_id: Option<String>,
    pub before: Option<Cursor>,
    pub limit: i64,
}

/// One page, newest first: by time, then by id among events of the same
/// microsecond. An event cursor is looked up among the events the filter's
/// user may see; one that is not there (pruned, or never theirs) ends the
/// paging with an empty page.
pub fn list(conn: &mut DbConnection, filter: &Filter) -> Result<Vec<Event>> {
    let mut query = audit_events::table.into_boxed();
    if let Some(user_id) = &filter.user_id {
        query = query.filter(audit_events::user_id.eq(user_id));
    }
    if let Some(actions) = &filter.actions {
        query = query.filter(audit_events::action.eq_any(actions));
    }
    if let Some(key_id) = &filter.key_id {
        query = query.filter(
            audit_events::target_id
                .eq(key_id)
                .or(audit_events::actor_key_id.eq(key_id)),
        );
    }
    match &filter.before {
        None => {}
        Some(Cursor::Time(at)) => query = query.filter(audit_events::at.lt(*at)),
        Some(Cursor::Event(id)) => {
            let mut cursor = audit_events::table
                .find(id)
                .select(audit_events::at)
                .into_boxed();
            if let Some(user_id) = &filter.user_id {
                cursor = cursor.filter(audit_events::user_id.eq(user_id));
            }
            let Some(at) = cursor.first::<NaiveDateTime>(conn).optional()? else {
                return Ok(Vec::new());
            };
            query = query.filter(
                audit_events::at
                    .lt(at)
                    .or(audit_events::at.eq(at).and(audit_events::id.lt(id.clone()))),
            );
        }
    }
    Ok(query
        .order((audit_events::at.desc(), audit_events::id.desc()))
        .limit(filter.limit)
        .select(Event::as_select())
        .load(conn)?)
}

/// Deletes the events older than `cutoff`; how many went.
pub fn delete_older_than(conn: &mut DbConnection, cutoff: NaiveDateTime) -> Result<usize> {
    Ok(diesel::delete(audit_events::table.filter(audit_events::at.lt(cutoff))).execute(conn)?)
}
