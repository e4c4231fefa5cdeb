//! Parsing request bodies: bytes in, a fully validated request or a [`FieldError`] naming the
//! first offending field out. Never panics, whatever the bytes.
//!
//! [`Fields`] reads a JSON object strictly (repeated and unknown fields are refused by name);
//! [`event`], [`order`] and [`product`] apply each endpoint's rules on top.

pub mod event;
pub mod order;
pub mod product;

use std::{collections::HashSet, fmt::Display, str::FromStr};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use event::{EventRequest, MAX_FUTURE_SKEW, parse_event};
pub use order::{OrderRequest, parse_order};
pub use product::{Details, DetailsPatch, NewProductRequest, parse_new_product, parse_patch};

/// Why a body was refused; `field` is `None` when the body as a whole is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field.
    pub field: Option<String>,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn body(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

impl From<FieldError> for shared::api::ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadRequest {
            message: e.message,
            field: e.field,
        }
    }
}

/// A JSON object body whose fields are all known and each present once.
pub struct Fields {
    entries: Vec<(String, Value)>,
}

impl Fields {
    /// Reads `body` as a JSON object whose fields are among `allowed`.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, FieldError> {
        let Object(entries) = serde_json::from_slice(body)
            .map_err(|e| FieldError::body(format!("the body is not valid JSON: {e}")))?;
        let mut seen = HashSet::new();
        for (key, _) in &entries {
            if !seen.insert(key.as_str()) {
                return Err(FieldError::new(
                    key,
                    format!("field `{}` appears more than once", shorten(key)),
                ));
            }
            if !allowed.contains(&key.as_str()) {
                return Err(FieldError::new(
                    &shorten(key),
                    format!(
                        "unknown field `{}`; expected one of {}",
                        shorten(key),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Self { entries })
    }

    /// Whether the body names the field at all (`null` included).
    pub fn present(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == name)
    }

    /// The field's value; `null` counts as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    /// A string field parsed into `T`, if present.
    pub fn text<T: FromStr<Err: Display>>(&self, name: &str) -> Result<Option<T>, FieldError> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        self.parsed(name, "a string", text)
    }

    /// A required string field parsed into `T`.
    pub fn required_text<T: FromStr<Err: Display>>(&self, name: &str) -> Result<T, FieldError> {
        self.text(name)?
            .ok_or_else(|| FieldError::new(name, format!("{name} is required")))
    }

    /// A number field parsed (from its exact text) into `T`, if present.
    pub fn number<T: FromStr<Err: Display>>(&self, name: &str) -> Result<Option<T>, FieldError> {
        let digits = |v: &Value| v.as_number().map(ToString::to_string);
        self.parsed(name, "a number", digits)
    }

    /// The field `name`, if present, as the text `read` finds in it (else it is not `kind`),
    /// parsed into `T`.
    fn parsed<T: FromStr<Err: Display>>(
        &self,
        name: &str,
        kind: &str,
        read: impl Fn(&Value) -> Option<String>,
    ) -> Result<Option<T>, FieldError> {
        self.get(name)
            .map(|v| {
                let text = read(v)
                    .ok_or_else(|| FieldError::new(name, format!("{name} must be {kind}")))?;
                text.parse::<T>()
                    .map_err(|e| FieldError::new(name, format!("{name} {e}")))
            })
            .transpose()
    }

    /// SHA-256 of the body's canonical JSON (keys sorted, whitespace dropped): what "the same
    /// body" means for idempotency.
    pub fn fingerprint(&self) -> String {
        let canonical: serde_json::Map<String, Value> = self.entries.iter().cloned().collect();
        let canonical = serde_json::to_vec(&canonical).expect("a JSON map always serialises");
        Sha256::digest(&canonical)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// UTC, truncated to the microsecond precision PostgreSQL stores, so the order the processor
/// compares is the order the client sent.
pub fn to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .expect("a truncated nanosecond is still in range")
}

fn shorten(key: &str) -> String {
    key.chars().take(64).collect()
}

/// A JSON object kept as its entries in order, duplicates included (serde_json's own map would
/// silently keep the last of a repeated key).
struct Object(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Object(entries))
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}
