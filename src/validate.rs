//! Checks shared by every domain's handlers: bounded texts, the
//! three-state fields of a PATCH, and JSON bodies read the way Langflow's
//! routes read them.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::AppError;

/// A required text field: present, not blank (trimmed), at most `max`
/// characters, no control characters.
pub fn required_text(field: &str, value: Option<String>, max: usize) -> Result<String, AppError> {
    let value = value.map(|v| v.trim().to_string()).unwrap_or_default();
    if value.is_empty() {
        return Err(AppError::unprocessable(format!(
            "{field} is required and must not be empty"
        )));
    }
    if value.chars().count() > max {
        return Err(AppError::unprocessable(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(AppError::unprocessable(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value)
}

/// An optional text field: absent or blank is `None`, anything else must
/// pass [`required_text`].
pub fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, AppError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(_) => required_text(field, value, max).map(Some),
    }
}

/// For a PATCH field that may be absent (`None`: leave it), `null`
/// (`Some(None)`: clear it) or a value: `#[serde(default, deserialize_with
/// = "validate::double_option")]`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A JSON body read as Langflow's routes read it: whatever the content
/// type, and an empty body counts as `{}`. Bad JSON is the same 422 as the
/// JSON extractor's; the body limit is the app's `PayloadConfig`.
pub struct LenientJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for LenientJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = body.await?;
            let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                &body
            };
            serde_json::from_slice(text)
                .map(LenientJson)
                .map_err(|e| AppError::invalid_json(e).into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_trimmed_and_bounded() {
        assert_eq!(required_text("name", Some(" a ".into()), 3).unwrap(), "a");
        assert!(required_text("name", Some("  ".into()), 3).is_err());
        assert!(required_text("name", None, 3).is_err());
        assert!(required_text("name", Some("abcd".into()), 3).is_err());
        assert!(required_text("name", Some("a\u{7}".into()), 3).is_err());
        assert_eq!(optional_text("name", Some(" ".into()), 3).unwrap(), None);
        assert_eq!(optional_text("name", None, 3).unwrap(), None);
    }

    #[test]
    fn double_option_tells_absent_from_null() {
        #[derive(Deserialize)]
        struct Patch {
            #[serde(default, deserialize_with = "double_option")]
            name: Option<Option<String>>,
        }
        let absent: Patch = serde_json::from_str("{}").unwrap();
        let null: Patch = serde_json::from_str(r#"{"name": null}"#).unwrap();
        let value: Patch = serde_json::from_str(r#"{"name": "x"}"#).unwrap();
        assert_eq!(absent.name, None);
        assert_eq!(null.name, Some(None));
        assert_eq!(value.name, Some(Some("x".into())));
    }
}
