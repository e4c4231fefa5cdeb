//! `POST /events` bodies.

use serde_json::Value;
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use shared::model::{EventId, Price, ProductId, Stock};

use super::{FieldError, Fields, to_micros};

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
    /// What "the same body" means for idempotency (see [`Fields::fingerprint`]).
    pub fingerprint: String,
}

const FIELDS: [&str; 5] = ["product_id", "price", "stock", "event_id", "occurred_at"];

/// Parses and validates a `POST /events` body received at `now`.
pub fn parse_event(body: &[u8], now: OffsetDateTime) -> Result<EventRequest, FieldError> {
    let fields = Fields::parse(body, &FIELDS)?;
    let product_id = fields.required_text::<ProductId>("product_id")?;
    let price = fields.number::<Price>("price")?;
    let stock = fields.number::<Stock>("stock")?;
    if price.is_none() && stock.is_none() {
        return Err(FieldError::body(
            "at least one of price and stock is required",
        ));
    }
    let event_id = fields.text::<EventId>("event_id")?;
    let occurred_at = fields
        .get("occurred_at")
        .map(|v| occurred_at(v, now))
        .transpose()?;
    Ok(EventRequest {
        product_id,
        price,
        stock,
        event_id,
        occurred_at,
        fingerprint: fields.fingerprint(),
    })
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
