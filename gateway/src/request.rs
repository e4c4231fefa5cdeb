//! Parsing `POST /events` bodies: bytes in, a fully validated [`EventRequest`] or a
//! [`FieldError`] naming the first offending field out. Never panics, whatever the bytes.

use std::collections::HashSet;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use shared::model::{EventId, Price, ProductId, Stock};

/// How far in the future an `occurred_at` may be (clock skew between a client and us).
pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(5);

/// A valid product update request.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRequest {
    /// The product.
    pub product_id: ProductId,
    /// The new price, if set.
    pub price: Option<Price>,
    /// The new stock, if set.
    pub stock: Option<Stock>,
    /// The body's `event_id`, if given.
    pub event_id: Option<EventId>,
    /// The body's `occurred_at` (UTC, microseconds), if given.
    pub occurred_at: Option<OffsetDateTime>,
    /// SHA-256 of the body's canonical JSON (keys sorted, whitespace dropped): what "the same
    /// body" means for idempotency.
    pub fingerprint: String,
}

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

const FIELDS: [&str; 5] = ["product_id", "price", "stock", "event_id", "occurred_at"];

/// Parses and validates a `POST /events` body received at `now`.
pub fn parse_event(body: &[u8], now: OffsetDateTime) -> Result<EventRequest, FieldError> {
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
        if !FIELDS.contains(&key.as_str()) {
            return Err(FieldError::new(
                &shorten(key),
                format!(
                    "unknown field `{}`; expected one of product_id, price, stock, event_id, occurred_at",
                    shorten(key)
                ),
            ));
        }
    }
    let get = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };

    let product_id = match get("product_id") {
        None => return Err(FieldError::new("product_id", "product_id is required")),
        Some(Value::String(s)) => s
            .parse::<ProductId>()
            .map_err(|e| FieldError::new("product_id", format!("product_id {e}")))?,
        Some(_) => return Err(FieldError::new("product_id", "product_id must be a string")),
    };
    let price = get("price")
        .map(|v| {
            number(v, "price")?
                .parse::<Price>()
                .map_err(|e| FieldError::new("price", format!("price {e}")))
        })
        .transpose()?;
    let stock = get("stock")
        .map(|v| {
            number(v, "stock")?
                .parse::<Stock>()
                .map_err(|e| FieldError::new("stock", format!("stock {e}")))
        })
        .transpose()?;
    if price.is_none() && stock.is_none() {
        return Err(FieldError::body(
            "at least one of price and stock is required",
        ));
    }
    let event_id = get("event_id")
        .map(|v| match v {
            Value::String(s) => s
                .parse::<EventId>()
                .map_err(|e| FieldError::new("event_id", format!("event_id {e}"))),
            _ => Err(FieldError::new("event_id", "event_id must be a string")),
        })
        .transpose()?;
    let occurred_at = get("occurred_at")
        .map(|v| occurred_at(v, now))
        .transpose()?;

    let canonical: serde_json::Map<String, Value> = entries.into_iter().collect();
    let canonical = serde_json::to_vec(&canonical).expect("a JSON map always serialises");
    Ok(EventRequest {
        product_id,
        price,
        stock,
        event_id,
        occurred_at,
        fingerprint: hex(&Sha256::digest(&canonical)),
    })
}

fn number(value: &Value, field: &str) -> Result<String, FieldError> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(FieldError::new(field, format!("{field} must be a number"))),
    }
}

fn occurred_at(value: &Value, now: OffsetDateTime) -> Result<OffsetDateTime, FieldError> {
    let Value::String(text) = value else {
        return Err(FieldError::new(
            "occurred_at",
            "occurred_at must be an RFC 3339 string",
        ));
    };
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        FieldError::new(
            "occurred_at",
            "occurred_at must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
        )
    })?;
    if at > now + MAX_FUTURE_SKEW {
        return Err(FieldError::new(
            "occurred_at",
            "occurred_at must not be more than 5 minutes in the future",
        ));
    }
    Ok(to_micros(at))
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 12:00:00 UTC)
    }

    fn err(body: &str) -> FieldError {
        parse_event(body.as_bytes(), now()).expect_err("body must be refused")
    }

    #[test]
    fn a_full_body_parses() {
        let r = parse_event(
            br#"{"product_id":"abc123","price":49.99,"stock":100,"event_id":"e-1","occurred_at":"2026-06-01T11:00:00.1234567+02:00"}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(r.price.map(|p| p.to_string()), Some("49.99".into()));
        assert_eq!(r.stock.map(Stock::value), Some(100));
        assert_eq!(r.event_id.map(|e| e.to_string()), Some("e-1".into()));
        assert_eq!(
            r.occurred_at,
            Some(time::macros::datetime!(2026-06-01 09:00:00.123456 UTC))
        );
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace() {
        let a = parse_event(br#"{"product_id":"p","stock":1}"#, now()).expect("valid");
        let b = parse_event(br#"{ "stock": 1, "product_id": "p" }"#, now()).expect("valid");
        let c = parse_event(br#"{"product_id":"p","stock":2}"#, now()).expect("valid");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"price":1}"#, Some("product_id")),
            (r#"{"product_id":5,"price":1}"#, Some("product_id")),
            (r#"{"product_id":"a b","price":1}"#, Some("product_id")),
            (r#"{"product_id":"p","price":"x"}"#, Some("price")),
            (r#"{"product_id":"p","price":-1}"#, Some("price")),
            (r#"{"product_id":"p","price":1e400}"#, Some("price")),
            (r#"{"product_id":"p","price":1.23456}"#, Some("price")),
            (r#"{"product_id":"p","stock":1.5}"#, Some("stock")),
            (r#"{"product_id":"p","stock":-1}"#, Some("stock")),
            (r#"{"product_id":"p","stock":2147483648}"#, Some("stock")),
            (r#"{"product_id":"p"}"#, None),
            (
                r#"{"product_id":"p","stock":1,"colour":"red"}"#,
                Some("colour"),
            ),
            (r#"{"product_id":"p","stock":1,"stock":2}"#, Some("stock")),
            (
                r#"{"product_id":"p","stock":1,"event_id":""}"#,
                Some("event_id"),
            ),
            (
                r#"{"product_id":"p","stock":1,"occurred_at":"yesterday"}"#,
                Some("occurred_at"),
            ),
            (
                r#"{"product_id":"p","stock":1,"occurred_at":"2026-06-01T12:06:00Z"}"#,
                Some("occurred_at"),
            ),
            (r#"{"product_id":"p","stock":1"#, None),
            (r#"[1,2]"#, None),
        ];
        for (body, field) in cases {
            assert_eq!(err(body).field.as_deref(), field, "{body}");
        }
    }

    #[test]
    fn null_means_absent_and_negative_zero_is_refused() {
        let r = parse_event(br#"{"product_id":"p","price":0,"stock":null}"#, now()).expect("valid");
        assert_eq!(r.price.map(|p| p.to_string()), Some("0".into()));
        assert_eq!(r.stock, None);
        assert_eq!(
            err(r#"{"product_id":"p","price":-0}"#).field.as_deref(),
            Some("price")
        );
        assert_eq!(
            err(r#"{"product_id":"p","stock":-0}"#).field.as_deref(),
            Some("stock")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_event(&body, now());
        }

        #[test]
        fn arbitrary_json_objects_never_panic(
            keys in proptest::collection::vec("[a-z_]{1,12}", 0..6),
            values in proptest::collection::vec(proptest::prelude::any::<String>(), 0..6),
            number in "-?[0-9]{1,40}(\\.[0-9]{1,10})?([eE][-+]?[0-9]{1,4})?",
        ) {
            let mut body = String::from("{");
            for (i, k) in keys.iter().enumerate() {
                let v = match i % 3 {
                    0 => number.clone(),
                    1 => serde_json::to_string(values.get(i).map_or("", String::as_str)).expect("string"),
                    _ => "null".to_owned(),
                };
                body.push_str(&format!("{}\"{k}\":{v}", if i > 0 { "," } else { "" }));
            }
            body.push('}');
            let _ = parse_event(body.as_bytes(), now());
        }
    }
}
