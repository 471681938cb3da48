//! All database access for API keys.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{
    api_keys, flows, key_inserts, key_usage_days, key_usage_hours, rate_limit_windows, users,
};
use crate::db::{self, DbConnection, DbError};
use crate::error::AppError;
use crate::identity::AuthUser;

type Result<T> = std::result::Result<T, AppError>;

/// A stored key as its owner may see it: never the hash, never the text.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub display_prefix: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub total_uses: i64,
    pub is_active: bool,
    pub expires_at: Option<NaiveDateTime>,
    /// The one flow this key may run, if it is bound to one.
    pub flow_id: Option<String>,
    /// Stored form of `identity::Scopes` (`None`: every scope).
    pub scopes: Option<String>,
    /// Comma-separated CIDR blocks (`None`: any address).
    pub allowed_ips: Option<String>,
    /// Requests per window (`None` with `rate_limit_seconds`: no limit).
    pub rate_limit_requests: Option<i64>,
    pub rate_limit_seconds: Option<i64>,
    /// The client address of the latest use (written with `last_used_at`).
    pub last_used_from: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct NewKeyRow<'a> {
    id: &'a str,
    user_id: &'a str,
    name: Option<&'a str>,
    key_hash: &'a str,
    display_prefix: &'a str,
    created_at: NaiveDateTime,
    total_uses: i64,
    is_active: bool,
    expires_at: Option<NaiveDateTime>,
    flow_id: Option<&'a str>,
    scopes: Option<&'a str>,
    allowed_ips: Option<&'a str>,
    rate_limit_requests: Option<i64>,
    rate_limit_seconds: Option<i64>,
}

pub struct NewKey<'a> {
    pub user_id: &'a str,
    pub name: Option<&'a str>,
    pub key_hash: &'a str,
    pub display_prefix: &'a str,
    pub expires_at: Option<NaiveDateTime>,
    /// Binds the key to one of the user's flows (checked by [`insert`]).
    pub flow_id: Option<&'a str>,
    pub scopes: Option<&'a str>,
    pub allowed_ips: Option<&'a str>,
    /// `(requests, per_seconds)`.
    pub rate_limit: Option<(i64, i64)>,
}

#[derive(Default, AsChangeset)]
#[diesel(table_name = api_keys)]
pub struct KeyChanges {
    pub name: Option<Option<String>>,
    pub is_active: Option<bool>,
    pub scopes: Option<Option<String>>,
    pub allowed_ips: Option<Option<String>>,
    pub rate_limit_requests: Option<Option<i64>>,
    pub rate_limit_seconds: Option<Option<i64>>,
}

impl KeyChanges {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.is_active.is_none()
            && self.scopes.is_none()
            && self.allowed_ips.is_none()
            && self.rate_limit_requests.is_none()
            && self.rate_limit_seconds.is_none()
    }
}

/// What verification needs to know about a key and its owner, in the
/// select order of [`find_by_hashes`].
#[derive(Debug, Clone, Queryable)]
pub struct KeyWithOwner {
    pub key_id: String,
    pub key_active: bool,
    pub expires_at: Option<NaiveDateTime>,
    pub flow_id: Option<String>,
    pub scopes: Option<String>,
    pub allowed_ips: Option<String>,
    pub rate_limit_requests: Option<i64>,
    pub rate_limit_seconds: Option<i64>,
    pub owner: AuthUser,
}

/// Inserts a key. A key bound to a flow is only inserted when that flow is
/// the user's (`Ok(None)` otherwise), checked in the same transaction; the
/// foreign key refuses a flow deleted meanwhile (also `Ok(None)`).
pub fn insert(conn: &mut DbConnection, new: NewKey<'_>) -> Result<Option<ApiKey>> {
    let inserted = db::transaction(conn, |conn| {
        if let Some(flow_id) = new.flow_id {
            let owned: i64 = flows::table
                .filter(flows::id.eq(flow_id))
                .filter(flows::user_id.eq(new.user_id))
                .count()
                .get_result(conn)?;
            if owned == 0 {
                return Ok(None);
            }
        }
        insert_row(conn, new).map(Some)
    });
    match inserted {
        Err(error) if DbError::classify(&error) == DbError::MissingParent => Ok(None),
        other => Ok(other?),
    }
}

fn insert_row(conn: &mut DbConnection, new: NewKey<'_>) -> diesel::QueryResult<ApiKey> {
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = db::now();
    diesel::insert_into(api_keys::table)
        .values(&NewKeyRow {
            id: &id,
            user_id: new.user_id,
            name: new.name,
            key_hash: new.key_hash,
            display_prefix: new.display_prefix,
            created_at,
            total_uses: 0,
            is_active: true,
            expires_at: new.expires_at,
            flow_id: new.flow_id,
            scopes: new.scopes,
            allowed_ips: new.allowed_ips,
            rate_limit_requests: new.rate_limit.map(|(requests, _)| requests),
            rate_limit_seconds: new.rate_limit.map(|(_, seconds)| seconds),
        })
        .execute(conn)?;
    Ok(ApiKey {
        id,
        user_id: new.user_id.to_string(),
        name: new.name.map(str::to_string),
        display_prefix: new.display_prefix.to_string(),
        created_at,
        last_used_at: None,
        total_uses: 0,
        is_active: true,
        expires_at: new.expires_at,
        flow_id: new.flow_id.map(str::to_string),
        scopes: new.scopes.map(str::to_string),
        allowed_ips: new.allowed_ips.map(str::to_string),
        rate_limit_requests: new.rate_limit.map(|(requests, _)| requests),
        rate_limit_seconds: new.rate_limit.map(|(_, seconds)| seconds),
        last_used_from: None,
    })
}

/// A key as another system stored it (an import): its own id, times and
/// counters, known only by its hash.
pub struct ImportedKey<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub name: Option<&'a str>,
    pub key_hash: &'a str,
    pub display_prefix: &'a str,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub total_uses: i64,
    pub is_active: bool,
    pub expires_at: Option<NaiveDateTime>,
}

/// Inserts an imported key (all scopes, any address, bound to no flow).
/// The insert trigger tells running servers' key filters, as for any key.
pub fn insert_imported(conn: &mut DbConnection, key: &ImportedKey<'_>) -> Result<()> {
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(key.id),
            api_keys::user_id.eq(key.user_id),
            api_keys::name.eq(key.name),
            api_keys::key_hash.eq(key.key_hash),
            api_keys::display_prefix.eq(key.display_prefix),
            api_keys::created_at.eq(key.created_at),
            api_keys::last_used_at.eq(key.last_used_at),
            api_keys::total_uses.eq(key.total_uses),
            api_keys::is_active.eq(key.is_active),
            api_keys::expires_at.eq(key.expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The stored hash of the key with this id, whoever owns it.
pub fn hash_of(conn: &mut DbConnection, id: &str) -> Result<Option<String>> {
    Ok(api_keys::table
        .find(id)
        .select(api_keys::key_hash)
        .first(conn)
        .optional()?)
}

/// The id of the key with this hash, whoever owns it.
pub fn id_by_hash(conn: &mut DbConnection, key_hash: &str) -> Result<Option<String>> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(key_hash))
        .select(api_keys::id)
        .first(conn)
        .optional()?)
}

/// What rotating a key did: the new key, and the old one's (possibly
/// earlier) expiry.
pub struct Rotated {
    pub new_key: ApiKey,
    pub old_key_expires_at: NaiveDateTime,
}

/// Why a key could not be rotated.
pub enum RotateRefusal {
    NotFound,
    /// Inactive or already expired: rotation must not bring it back.
    Unusable,
}

/// Rotates one of the user's keys in one transaction: a new key with the
/// old one's name, scopes, addresses, rate limit, flow binding and expiry,
/// and the old
/// one set to expire at `old_expires_by` (or its own earlier expiry).
/// `check` sees the old key first and may refuse (escalation).
pub fn rotate(
    conn: &mut DbConnection,
    user_id: &str,
    id: &str,
    new: (&str, &str),
    old_expires_by: NaiveDateTime,
    check: impl Fn(&ApiKey) -> Result<()>,
) -> Result<std::result::Result<Rotated, RotateRefusal>> {
    let (key_hash, display_prefix) = new;
    db::transaction(conn, |conn| {
        let Some(old) = find_for_user(conn, user_id, id)? else {
            return Ok(Err(RotateRefusal::NotFound));
        };
        let now = db::now();
        if !old.is_active || old.expires_at.is_some_and(|at| at <= now) {
            return Ok(Err(RotateRefusal::Unusable));
        }
        check(&old)?;
        let old_key_expires_at = old
            .expires_at
            .map_or(old_expires_by, |at| at.min(old_expires_by));
        diesel::update(owned(user_id, id))
            .set(api_keys::expires_at.eq(Some(old_key_expires_at)))
            .execute(conn)?;
        let new_key = insert_row(
            conn,
            NewKey {
                user_id,
                name: old.name.as_deref(),
                key_hash,
                display_prefix,
                expires_at: old.expires_at,
                flow_id: old.flow_id.as_deref(),
                scopes: old.scopes.as_deref(),
                allowed_ips: old.allowed_ips.as_deref(),
                rate_limit: old.rate_limit_requests.zip(old.rate_limit_seconds),
            },
        )?;
        Ok(Ok(Rotated {
            new_key,
            old_key_expires_at,
        }))
    })
}

db::owner_scoped!(
    api_keys: ApiKey,
    by id,
    listed by (api_keys::created_at.asc(), api_keys::id.asc())
);

/// Deletes every key of the user; the ids of those deleted, for the bus.
pub fn delete_all_for_user(conn: &mut DbConnection, user_id: &str) -> Result<Vec<String>> {
    db::transaction(conn, |conn| {
        let ids: Vec<String> = api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .select(api_keys::id)
            .load(conn)?;
        if !ids.is_empty() {
            diesel::delete(api_keys::table.filter(api_keys::id.eq_any(&ids))).execute(conn)?;
        }
        Ok(ids)
    })
}

/// Deletes a key whoever owns it (a superuser's incident response); its
/// owner's id, `None` when there is no such key.
pub fn delete_any(conn: &mut DbConnection, id: &str) -> Result<Option<String>> {
    db::transaction(conn, |conn| {
        let owner: Option<String> = api_keys::table
            .find(id)
            .select(api_keys::user_id)
            .first(conn)
            .optional()?;
        if owner.is_some() {
            diesel::delete(api_keys::table.find(id)).execute(conn)?;
        }
        Ok(owner)
    })
}

/// Updates one of the user's keys; `None` when it is not theirs.
pub fn update_for_user(
    conn: &mut DbConnection,
    user_id: &str,
    id: &str,
    changes: &KeyChanges,
) -> Result<Option<ApiKey>> {
    db::transaction(conn, |conn| {
        if !changes.is_empty() {
            diesel::update(owned(user_id, id))
                .set(changes)
                .execute(conn)?;
        }
        find_for_user(conn, user_id, id)
    })
}

/// The keys (with owners) among `key_hashes`, each with its hash: one
/// query for a whole batch of verification misses.
pub fn find_by_hashes(
    conn: &mut DbConnection,
    key_hashes: &[String],
) -> Result<Vec<(String, KeyWithOwner)>> {
    Ok(api_keys::table
        .inner_join(users::table)
        .filter(api_keys::key_hash.eq_any(key_hashes))
        .select((
            api_keys::key_hash,
            (
                api_keys::id,
                api_keys::is_active,
                api_keys::expires_at,
                api_keys::flow_id,
                api_keys::scopes,
                api_keys::allowed_ips,
                api_keys::rate_limit_requests,
                api_keys::rate_limit_seconds,
                db::auth_user_columns(),
            ),
        ))
        .load(conn)?)
}

/// How many keys are stored (to size the key filter).
pub fn count_keys(conn: &mut DbConnection) -> Result<i64> {
    Ok(api_keys::table.count().get_result(conn)?)
}

/// Up to `limit` stored key hashes after `after`, in order: the key filter
/// loads every key this way, a page at a time (a million keys never sit in
/// memory as text at once).
pub fn hashes_after(
    conn: &mut DbConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    let mut query = api_keys::table
        .select(api_keys::key_hash)
        .order(api_keys::key_hash)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(api_keys::key_hash.gt(after));
    }
    Ok(query.load(conn)?)
}

/// Up to `limit` of the key inserts SQLite logged after `seq` (see the
/// `key_filter` migration), oldest first.
pub fn key_inserts_after(
    conn: &mut DbConnection,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    Ok(key_inserts::table
        .filter(key_inserts::seq.gt(seq))
        .order(key_inserts::seq)
        .limit(limit)
        .load(conn)?)
}

/// The newest logged key insert, and forgets the older ones: called when
/// the key filter (re)loads every key, which covers them.
pub fn key_inserts_reset(conn: &mut DbConnection) -> Result<i64> {
    let newest: Option<i64> = key_inserts::table
        .select(diesel::dsl::max(key_inserts::seq))
        .first(conn)?;
    let newest = newest.unwrap_or(0);
    diesel::delete(key_inserts::table.filter(key_inserts::seq.le(newest))).execute(conn)?;
    Ok(newest)
}

/// How long the flow's bound keys guard it: a public flow with a bound
/// key that could authenticate (active, not expired) requires a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKeyGuard {
    None,
    /// Until the last of the bound keys expires.
    Until(NaiveDateTime),
    Forever,
}

pub fn bound_key_guard(
    conn: &mut DbConnection,
    flow_id: &str,
    now: NaiveDateTime,
) -> Result<BoundKeyGuard> {
    let expiries: Vec<Option<NaiveDateTime>> = api_keys::table
        .filter(api_keys::flow_id.eq(flow_id))
        .filter(api_keys::is_active.eq(true))
        .filter(
            api_keys::expires_at
                .is_null()
                .or(api_keys::expires_at.gt(now)),
        )
        .select(api_keys::expires_at)
        .load(conn)?;
    Ok(expiries
        .into_iter()
        .fold(BoundKeyGuard::None, |guard, expiry| match (guard, expiry) {
            (BoundKeyGuard::Forever, _) | (_, None) => BoundKeyGuard::Forever,
            (BoundKeyGuard::Until(until), Some(at)) => BoundKeyGuard::Until(until.max(at)),
            (BoundKeyGuard::None, Some(at)) => BoundKeyGuard::Until(at),
        }))
}

/// The ids of the keys bound to a flow (to drop them from caches when the
/// flow goes).
pub fn bound_key_ids(conn: &mut DbConnection, flow_id: &str) -> Result<Vec<String>> {
    api_keys::table
        .filter(api_keys::flow_id.eq(flow_id))
        .select(api_keys::id)
        .load(conn)
        .map_err(AppError::from)
}

/// Deletes the keys bound to a flow; part of deleting the flow.
pub fn delete_bound_to_flow(conn: &mut DbConnection, flow_id: &str) -> Result<usize> {
    Ok(diesel::delete(api_keys::table.filter(api_keys::flow_id.eq(flow_id))).execute(conn)?)
}

/// One hour's or one day's counts of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: NaiveDateTime,
    pub requests: i64,
    pub refused: i64,
}

/// What one flush adds for one key.
#[derive(Debug, Clone)]
pub struct UsageDelta {
    pub key_id: String,
    pub uses: i64,
    pub last_used_at: NaiveDateTime,
    pub last_used_from: Option<String>,
    /// By hour (each bucket's `start` an hour's).
    pub hours: Vec<Bucket>,
}

/// Adds batched usage in one transaction: the totals, the latest use
/// (`last_used_at` only moves forward, so instances flushing out of order
/// never set it back; `last_used_from` moves with it) and the hourly and
/// daily buckets. Keys deleted meanwhile are skipped. `prune`: delete hour
/// buckets before the first time and day buckets before the second.
pub fn add_usage(
    conn: &mut DbConnection,
    batch: &[UsageDelta],
    prune: Option<(NaiveDateTime, NaiveDateTime)>,
) -> Result<()> {
    db::transaction(conn, |conn| {
        let ids: Vec<&str> = batch.iter().map(|d| d.key_id.as_str()).collect();
        let existing: std::collections::HashSet<String> = api_keys::table
            .filter(api_keys::id.eq_any(&ids))
            .select(api_keys::id)
            .load::<String>(conn)?
            .into_iter()
            .collect();
        for delta in batch.iter().filter(|d| existing.contains(&d.key_id)) {
            let key_id = &delta.key_id;
            diesel::update(api_keys::table.find(key_id))
                .set(api_keys::total_uses.eq(api_keys::total_uses + delta.uses))
                .execute(conn)?;
            diesel::update(
                api_keys::table.find(key_id).filter(
                    api_keys::last_used_at
                        .is_null()
                        .or(api_keys::last_used_at.lt(delta.last_used_at)),
                ),
            )
            .set((
                api_keys::last_used_at.eq(delta.last_used_at),
                api_keys::last_used_from.eq(&delta.last_used_from),
            ))
            .execute(conn)?;
            for hour in &delta.hours {
                add_bucket(conn, key_id, *hour, false)?;
                let day = Bucket {
                    start: hour.start.date().and_time(chrono::NaiveTime::MIN),
                    ..*hour
                };
                add_bucket(conn, key_id, day, true)?;
            }
        }
        if let Some((hours_before, days_before)) = prune {
            diesel::delete(key_usage_hours::table.filter(key_usage_hours::hour.lt(hours_before)))
                .execute(conn)?;
            diesel::delete(key_usage_days::table.filter(key_usage_days::day.lt(days_before)))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// Adds one bucket's counts to the hour's (or the day's) row.
fn add_bucket(
    conn: &mut DbConnection,
    key_id: &str,
    bucket: Bucket,
    daily: bool,
) -> diesel::QueryResult<usize> {
    use diesel::upsert::excluded;
    if daily {
        use key_usage_days as t;
        let row = (
            t::key_id.eq(key_id),
            t::day.eq(bucket.start),
            t::requests.eq(bucket.requests),
            t::refused.eq(bucket.refused),
        );
        db::on_each_backend!(conn, |backend| diesel::insert_into(t::table)
            .values(row)
            .on_conflict((t::key_id, t::day))
            .do_update()
            .set((
                t::requests.eq(t::requests + excluded(t::requests)),
                t::refused.eq(t::refused + excluded(t::refused)),
            ))
            .execute(backend))
    } else {
        use key_usage_hours as t;
        let row = (
            t::key_id.eq(key_id),
            t::hour.eq(bucket.start),
            t::requests.eq(bucket.requests),
            t::refused.eq(bucket.refused),
        );
        db::on_each_backend!(conn, |backend| diesel::insert_into(t::table)
            .values(row)
            .on_conflict((t::key_id, t::hour))
            .do_update()
            .set((
                t::requests.eq(t::requests + excluded(t::requests)),
                t::refused.eq(t::refused + excluded(t::refused)),
            ))
            .execute(backend))
    }
}

/// A key's stored buckets: hours from `hours_from` and days from
/// `days_from`, each oldest first.
pub fn usage_since(
    conn: &mut DbConnection,
    key_id: &str,
    hours_from: NaiveDateTime,
    days_from: NaiveDateTime,
) -> Result<(Vec<Bucket>, Vec<Bucket>)> {
    let hours = key_usage_hours::table
        .filter(key_usage_hours::key_id.eq(key_id))
        .filter(key_usage_hours::hour.ge(hours_from))
        .order(key_usage_hours::hour)
        .select((
            key_usage_hours::hour,
            key_usage_hours::requests,
            key_usage_hours::refused,
        ))
        .load::<(NaiveDateTime, i64, i64)>(conn)?;
    let days = key_usage_days::table
        .filter(key_usage_days::key_id.eq(key_id))
        .filter(key_usage_days::day.ge(days_from))
        .order(key_usage_days::day)
        .select((
            key_usage_days::day,
            key_usage_days::requests,
            key_usage_days::refused,
        ))
        .load::<(NaiveDateTime, i64, i64)>(conn)?;
    let bucket = |(start, requests, refused)| Bucket {
        start,
        requests,
        refused,
    };
    Ok((
        hours.into_iter().map(bucket).collect(),
        days.into_iter().map(bucket).collect(),
    ))
}

/// A key whoever owns it (a superuser reading any key's usage).
pub fn find_any(conn: &mut DbConnection, id: &str) -> Result<Option<ApiKey>> {
    Ok(api_keys::table
        .find(id)
        .select(ApiKey::as_select())
        .first(conn)
        .optional()?)
}

/// Deletes the keys among `key_hashes`, whoever owns them (a leaked-key
/// report); each deleted key's id and owner.
pub fn delete_by_hashes(
    conn: &mut DbConnection,
    key_hashes: &[String],
) -> Result<Vec<(String, String)>> {
    db::transaction(conn, |conn| {
        let found: Vec<(String, String)> = api_keys::table
            .filter(api_keys::key_hash.eq_any(key_hashes))
            .select((api_keys::id, api_keys::user_id))
            .load(conn)?;
        if !found.is_empty() {
            let ids: Vec<&String> = found.iter().map(|(id, _)| id).collect();
            diesel::delete(api_keys::table.filter(api_keys::id.eq_any(ids))).execute(conn)?;
        }
        Ok(found)
    })
}

/// One key's requests in one rate-limit window, from one instance's sync.
#[derive(Debug, Clone)]
pub struct WindowDelta {
    pub key_id: String,
    pub window_seconds: i64,
    pub window_start: i64,
    pub delta: i64,
}

/// Adds each delta to its window's shared count and reads the totals
/// back, in the order given, in one transaction; deletes the windows that
/// ended before `prune_before` (Unix seconds) when given.
pub fn add_window_counts(
    conn: &mut DbConnection,
    deltas: &[WindowDelta],
    prune_before: Option<i64>,
) -> Result<Vec<i64>> {
    use diesel::upsert::excluded;
    db::transaction(conn, |conn| {
        let mut totals = Vec::with_capacity(deltas.len());
        for delta in deltas {
            let row = (
                rate_limit_windows::key_id.eq(&delta.key_id),
                rate_limit_windows::window_seconds.eq(delta.window_seconds),
                rate_limit_windows::window_start.eq(delta.window_start),
                rate_limit_windows::window_end.eq(delta.window_start + delta.window_seconds),
                rate_limit_windows::count.eq(delta.delta),
            );
            db::on_each_backend!(conn, |backend| diesel::insert_into(
                rate_limit_windows::table
            )
            .values(row)
            .on_conflict((
                rate_limit_windows::key_id,
                rate_limit_windows::window_seconds,
                rate_limit_windows::window_start,
            ))
            .do_update()
            .set(
                rate_limit_windows::count
                    .eq(rate_limit_windows::count + excluded(rate_limit_windows::count)),
            )
            .execute(backend))?;
            let total: i64 = rate_limit_windows::table
                .find((&delta.key_id, delta.window_seconds, delta.window_start))
                .select(rate_limit_windows::count)
                .first(conn)?;
            totals.push(total);
        }
        if let Some(before) = prune_before {
            diesel::delete(
                rate_limit_windows::table.filter(rate_limit_windows::window_end.lt(before)),
            )
            .execute(conn)?;
        }
        Ok(totals)
    })
}
