//! The fields of Langflow's own flow model (`FlowCreate`, `FlowUpdate`,
//! `FlowRead` in Langflow 1.13), so Langflow's clients can create, update
//! and read flows through keygate unchanged. The ones a client reads back
//! are checked as Langflow checks them and stored; the ones that mean
//! nothing here (`updated_at` and `user_id` given by the client, `fs_path`,
//! `action_name`, `action_description`) are accepted and ignored.

use crate::error::AppError;
use crate::flows::store::{ACCESS_PRIVATE, ACCESS_PUBLIC};

pub const MAX_ICON_LEN: usize = 255;
pub const MAX_GRADIENT_LEN: usize = 255;
pub const MAX_TAGS: usize = 100;
pub const MAX_TAG_LEN: usize = 255;

/// Langflow's `access_type` for keygate's `access`.
pub fn access_type(access: &str) -> &'static str {
    if access == ACCESS_PUBLIC {
        "PUBLIC"
    } else {
        "PRIVATE"
    }
}

/// keygate's `access` for Langflow's `access_type` (`PRIVATE` or `PUBLIC`,
/// in any case).
pub fn access_from_type(access_type: &str) -> Result<&'static str, AppError> {
    match access_type.trim().to_ascii_uppercase().as_str() {
        "PRIVATE" => Ok(ACCESS_PRIVATE),
        "PUBLIC" => Ok(ACCESS_PUBLIC),
        _ => Err(AppError::unprocessable(
            "access_type must be \"PRIVATE\" or \"PUBLIC\"",
        )),
    }
}

/// `access` and `access_type` name one setting; given both, they must agree.
pub fn merge_access(
    access: Option<String>,
    access_type: Option<String>,
    check_access: impl Fn(&str) -> Result<String, AppError>,
) -> Result<Option<String>, AppError> {
    let access = access.as_deref().map(check_access).transpose()?;
    let from_type = access_type
        .as_deref()
        .map(access_from_type)
        .transpose()?
        .map(str::to_string);
    match (access, from_type) {
        (Some(a), Some(b)) if a != b => Err(AppError::unprocessable(
            "access and access_type disagree; give one of them",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// A folder id is a UUID (Langflow's folders); stored in canonical form.
pub fn check_folder_id(folder_id: Option<String>) -> Result<Option<String>, AppError> {
    folder_id
        .map(|id| {
            uuid::Uuid::parse_str(id.trim())
                .map(|id| id.to_string())
                .map_err(|_| AppError::unprocessable("folder_id must be a UUID"))
        })
        .transpose()
}

fn bounded(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, AppError> {
    match value {
        Some(v) if v.chars().count() > max => Err(AppError::unprocessable(format!(
            "{field} must be at most {max} characters"
        ))),
        other => Ok(other),
    }
}

pub fn check_icon(icon: Option<String>) -> Result<Option<String>, AppError> {
    bounded("icon", icon, MAX_ICON_LEN)
}

pub fn check_gradient(gradient: Option<String>) -> Result<Option<String>, AppError> {
    bounded("gradient", gradient, MAX_GRADIENT_LEN)
}

/// Langflow's rule: `#` and six more characters (`#FF0000`).
pub fn check_icon_bg_color(color: Option<String>) -> Result<Option<String>, AppError> {
    match color {
        Some(c) if !c.is_empty() && (!c.starts_with('#') || c.chars().count() != 7) => Err(
            AppError::unprocessable("icon_bg_color must be a colour like \"#FF0000\""),
        ),
        other => Ok(other),
    }
}

/// `tags` as given: a list of strings or `null`, with an error that names
/// the field.
pub fn deserialize_tags<'de, D>(deserializer: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    Option::<serde_json::Value>::deserialize(deserializer)?
        .map(serde_json::from_value::<Vec<String>>)
        .transpose()
        .map_err(|_| serde::de::Error::custom("tags must be a list of strings"))
}

/// `tags` in an update: absent, `null` (cleared) or a list of strings.
pub fn deserialize_tag_change<'de, D>(
    deserializer: D,
) -> Result<Option<Option<Vec<String>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserialize_tags(deserializer).map(Some)
}

/// Tags are stored as a JSON array of strings.
pub fn tags_column(tags: Option<Vec<String>>) -> Result<Option<String>, AppError> {
    let Some(tags) = tags else {
        return Ok(None);
    };
    if tags.len() > MAX_TAGS || tags.iter().any(|t| t.chars().count() > MAX_TAG_LEN) {
        return Err(AppError::unprocessable(format!(
            "tags must be at most {MAX_TAGS} strings of at most {MAX_TAG_LEN} characters"
        )));
    }
    serde_json::to_string(&tags)
        .map(Some)
        .map_err(AppError::internal)
}

/// Reads the stored tags column.
pub fn tags_from_column(text: Option<&str>) -> Result<Option<Vec<String>>, AppError> {
    text.map(|t| {
        serde_json::from_str(t)
            .map_err(|e| AppError::internal(format_args!("stored flow tags unreadable: {e}")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str) -> Result<String, AppError> {
        Ok(a.to_string())
    }

    #[test]
    fn access_type_maps_to_access() {
        assert_eq!(access_type(ACCESS_PUBLIC), "PUBLIC");
        assert_eq!(access_type(ACCESS_PRIVATE), "PRIVATE");
        assert_eq!(
            merge_access(None, Some("public".into()), check).unwrap(),
            Some(ACCESS_PUBLIC.into())
        );
        assert_eq!(
            merge_access(Some("public".into()), Some("PUBLIC".into()), check).unwrap(),
            Some(ACCESS_PUBLIC.into())
        );
        assert!(merge_access(Some("private".into()), Some("PUBLIC".into()), check).is_err());
        assert!(merge_access(None, Some("SHARED".into()), check).is_err());
        assert_eq!(merge_access(None, None, check).unwrap(), None);
    }

    #[test]
    fn fields_are_checked_as_langflow_does() {
        assert!(check_icon_bg_color(Some("#FF0000".into())).is_ok());
        assert!(check_icon_bg_color(Some("FF0000".into())).is_err());
        assert!(check_icon_bg_color(Some("#FF00".into())).is_err());
        assert!(check_folder_id(Some("not-a-uuid".into())).is_err());
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            check_folder_id(Some(id.to_uppercase())).unwrap(),
            Some(id.clone())
        );
        let stored = tags_column(Some(vec!["a".into(), "b".into()])).unwrap();
        assert_eq!(
            tags_from_column(stored.as_deref()).unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert!(tags_column(Some(vec!["x".repeat(MAX_TAG_LEN + 1)])).is_err());
    }
}
