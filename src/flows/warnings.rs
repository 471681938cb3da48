//! What a saved flow still lacks: the create and update answers carry a
//! `warnings` list naming a provider credential or a Credential variable
//! the flow injects but its owner has not stored. Saving is not refused
//! (the secret may be stored next); runs answer 422 until it is.

use serde::Serialize;

use super::store::Flow;
use super::upstream::{SecretSource, Upstream};
use crate::credentials::store as credential_store;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;
use crate::variables::store as variable_store;

#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Warning {
    /// `credential_missing`, `variable_missing` or `variable_not_credential`.
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    pub detail: String,
}

/// The warnings for a flow as stored (after the create or update).
pub async fn for_flow(state: &AppState, flow: &Flow) -> Result<Vec<Warning>, AppError> {
    let Some(upstream) = Upstream::from_column(flow.upstream.as_deref())? else {
        return Ok(Vec::new());
    };
    let Some(credential) = upstream.credential else {
        return Ok(Vec::new());
    };
    let owner = flow.user_id.clone();
    let warning = match credential.source()? {
        SecretSource::Provider(provider) => {
            let lookup = provider.clone();
            let stored = db::run(&state.pool, move |conn| {
                credential_store::find_for_user(conn, &owner, &lookup)
            })
            .await?;
            stored.is_none().then(|| Warning {
                code: "credential_missing",
                detail: format!(
                    "You have no {provider} provider credential stored; runs of this flow fail until you save one"
                ),
                provider: Some(provider),
                variable: None,
            })
        }
        SecretSource::Variable(name) => {
            let lookup = name.clone();
            let stored = db::run(&state.pool, move |conn| {
                variable_store::find_by_name(conn, &owner, &lookup)
            })
            .await?;
            match stored {
                None => Some(Warning {
                    code: "variable_missing",
                    detail: format!(
                        "You have no variable named {name:?}; runs of this flow fail until you add it as a Credential variable"
                    ),
                    provider: None,
                    variable: Some(name),
                }),
                Some(v) if v.var_type != variable_store::CREDENTIAL => Some(Warning {
                    code: "variable_not_credential",
                    detail: format!(
                        "The variable {name:?} is a {} variable; runs of this flow fail until it is a Credential variable",
                        v.var_type
                    ),
                    provider: None,
                    variable: Some(name),
                }),
                Some(_) => None,
            }
        }
    };
    Ok(warning.into_iter().collect())
}
