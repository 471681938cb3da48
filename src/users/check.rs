//! Checking a person's password, throttled: shared by sign-in and by a
//! password change, whose `current_password` is a sign-in in all but name
//! (a wrong one counts as a failed sign-in, so a stolen session cannot be
//! used to guess the password either).

use actix_web::HttpRequest;

use super::password::{HashQueue, Verified};
use super::store;
use super::throttle::SigninThrottle;
use crate::audit;
use crate::error::AppError;
use crate::state::AppState;
use crate::{client_ip, db};

/// What the hashing thread and the throttle need to check a password.
pub struct PasswordCheck<'a> {
    pub state: &'a AppState,
    pub throttle: &'a SigninThrottle,
    pub hashing: &'a HashQueue,
}

impl PasswordCheck<'_> {
    /// The user `username` names if `password` is theirs, `None` for an
    /// unknown username or a wrong password (each costs one hash and one
    /// counted failure, and is audited as `failure`, a `login.failure`
    /// entry the caller has begun, with the `reason` and, for a known
    /// username, the user; the text typed as a username is never stored,
    /// since it may be a password pasted into the wrong field). Refused
    /// with 429 while the username or the address `req` came from is
    /// backing off: then neither the database nor the hashing thread is
    /// asked, and nothing is written. A full hashing queue (503) or a
    /// database failure is not counted.
    pub async fn user(
        &self,
        req: &HttpRequest,
        username: String,
        password: String,
        failure: audit::Entry,
    ) -> Result<Option<store::User>, AppError> {
        let attempt = self.throttle.begin(
            &username,
            Some(client_ip::client_ip(
                req,
                &self.state.config.trusted_proxies,
            )),
        )?;
        match self.unthrottled(username, password).await {
            Err(error) => {
                self.throttle.not_checked(attempt);
                Err(error)
            }
            Ok((Some(user), true)) => {
                self.throttle.succeeded(attempt);
                Ok(Some(user))
            }
            Ok((found, _)) => {
                let failure = match found {
                    Some(user) => failure.owner(user.id).with("reason", "wrong_password"),
                    None => failure.with("reason", "unknown_user"),
                };
                db::run(&self.state.pool, move |conn| {
                    audit::record(conn, &[failure])
                })
                .await?;
                Ok(None)
            }
        }
    }

    /// The password is checked between two short database calls, so a
    /// flood of sign-ins waits in the hashing queue without holding
    /// connections; a full queue is refused before the database is asked.
    /// The user the name belongs to, if any, and whether the password is
    /// theirs.
    async fn unthrottled(
        &self,
        username: String,
        password: String,
    ) -> Result<(Option<store::User>, bool), AppError> {
        let place = self.hashing.enter()?;
        let user = db::run(&self.state.pool, move |conn| {
            store::find_by_username(conn, &username)
        })
        .await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        match (place.verify_and_upgrade(password, stored).await?, user) {
            (Verified::Wrong, user) => Ok((user, false)),
            (_, None) => Ok((None, false)),
            (Verified::Right, Some(user)) => Ok((Some(user), true)),
            (Verified::RightUpgraded(new_hash), Some(mut user)) => {
                // A bcrypt hash imported from Langflow: replaced now that
                // the password is known, unless it changed meanwhile.
                let (id, old_hash) = (user.id.clone(), user.password_hash.clone());
                let replacement = new_hash.clone();
                let upgraded = db::run(&self.state.pool, move |conn| {
                    store::upgrade_password_hash(conn, &id, &old_hash, &replacement)
                })
                .await?;
                if upgraded {
                    user.password_hash = new_hash;
                }
                Ok((Some(user), true))
            }
        }
    }
}
