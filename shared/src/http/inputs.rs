//! Path segments and query parameters are checked before any handler sees them: once
//! percent-decoded, each must be valid UTF-8 without control characters (NUL, newlines, ...).
//! Anything else is a 400 naming the path parameter (by the route's `{name}`) or the query
//! parameter, never a 5xx from a database that refuses the bytes further in.

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::{IntoResponse, Response},
};
use percent_encoding::percent_decode_str;

/// A path segment or query parameter that is not clean text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    /// The path parameter or query parameter at fault (`path` for a literal segment).
    pub field: String,
}

impl IntoResponse for BadInput {
    fn into_response(self) -> Response {
        crate::api::bad(
            &self.field,
            format!(
                "{} must be valid UTF-8 text without control characters",
                self.field
            ),
        )
        .into_response()
    }
}

/// Middleware: refuses a request whose path or query holds something other than clean text.
pub async fn check(request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    match inspect(request.uri().path(), request.uri().query(), template) {
        Ok(()) => next.run(request).await,
        Err(bad) => bad.into_response(),
    }
}

/// Checks a path (against its route `template`, to name the parameter) and a query string.
pub fn inspect(path: &str, query: Option<&str>, template: Option<&str>) -> Result<(), BadInput> {
    let names: Vec<&str> = template.map_or_else(Vec::new, |t| t.split('/').collect());
    for (i, segment) in path.split('/').enumerate() {
        if !is_clean(segment, false) {
            let field = names
                .get(i)
                .and_then(|n| n.strip_prefix('{')?.strip_suffix('}'))
                .map_or("path", |n| n.trim_start_matches('*'));
            return Err(BadInput {
                field: field.to_owned(),
            });
        }
    }
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !is_clean(key, true) {
            return Err(BadInput {
                field: "query".to_owned(),
            });
        }
        if !is_clean(value, true) {
            let name = decode(key, true).unwrap_or_default();
            return Err(BadInput {
                field: name.chars().take(64).collect(),
            });
        }
    }
    Ok(())
}

fn decode(raw: &str, plus_is_space: bool) -> Option<String> {
    let raw = if plus_is_space {
        raw.replace('+', " ")
    } else {
        raw.to_owned()
    };
    percent_decode_str(&raw)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

fn is_clean(raw: &str, plus_is_space: bool) -> bool {
    decode(raw, plus_is_space).is_some_and(|text| !text.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(path: &str, query: Option<&str>, template: Option<&str>) -> Option<String> {
        inspect(path, query, template).err().map(|b| b.field)
    }

    #[test]
    fn clean_text_passes_including_encoded_unicode_and_spaces() {
        assert_eq!(
            field("/products/a-1", Some("q=caf%C3%A9+noir&x="), None),
            None
        );
        assert_eq!(field("/dead-letters/a%20b", None, None), None);
    }

    #[test]
    fn control_characters_and_bad_utf8_are_named() {
        let template = Some("/dead-letters/{id}");
        assert_eq!(
            field("/dead-letters/a%00b", None, template).as_deref(),
            Some("id")
        );
        assert_eq!(
            field("/dead-letters/%FF", None, template).as_deref(),
            Some("id")
        );
        assert_eq!(field("/x%0A/y", None, None).as_deref(), Some("path"));
        assert_eq!(
            field("/dead-letters", Some("reason=%00"), None).as_deref(),
            Some("reason")
        );
        assert_eq!(
            field("/deliveries", Some("limit=1&status=a%0Db"), None).as_deref(),
            Some("status")
        );
        assert_eq!(
            field("/deliveries", Some("%FF=1"), None).as_deref(),
            Some("query")
        );
        assert_eq!(
            field("/files/a%07", None, Some("/files/{*rest}")).as_deref(),
            Some("rest")
        );
    }
}
