//! `POST /orders` bodies.

use shared::model::{Email, OrderId, ProductId, Quantity};

use super::{FieldError, Fields};

/// A valid order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    /// The client's order id (also its idempotency key).
    pub id: OrderId,
    /// The product ordered.
    pub sku: ProductId,
    /// Units ordered.
    pub qty: Quantity,
    /// Where to reach the customer, if given.
    pub email: Option<Email>,
    /// What "the same body" means for idempotency (see [`Fields::fingerprint`]).
    pub fingerprint: String,
}

const FIELDS: [&str; 4] = ["id", "sku", "qty", "email"];

/// Parses and validates a `POST /orders` body.
pub fn parse_order(body: &[u8]) -> Result<OrderRequest, FieldError> {
    let fields = Fields::parse(body, &FIELDS)?;
    Ok(OrderRequest {
        id: fields.required_text("id")?,
        sku: fields.required_text("sku")?,
        qty: fields
            .number("qty")?
            .ok_or_else(|| FieldError::new("qty", "qty is required"))?,
        email: fields.text("email")?,
        fingerprint: fields.fingerprint(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_order_parses() {
        let order = parse_order(
            br#"{"id": "order123", "sku": "mag-safe-phone-case", "qty": 2, "email": "a@b.co"}"#,
        )
        .expect("valid");
        assert_eq!(order.qty.value(), 2);
        assert_eq!(order.email.map(|e| e.to_string()), Some("a@b.co".into()));
    }

    #[test]
    fn each_bad_field_is_named() {
        for (body, field) in [
            (r#"{"sku": "s", "qty": 1}"#, "id"),
            (r#"{"id": "o 1", "sku": "s", "qty": 1}"#, "id"),
            (r#"{"id": "o1", "qty": 1}"#, "sku"),
            (r#"{"id": "o1", "sku": "s/1", "qty": 1}"#, "sku"),
            (r#"{"id": "o1", "sku": "s"}"#, "qty"),
            (r#"{"id": "o1", "sku": "s", "qty": 0}"#, "qty"),
            (r#"{"id": "o1", "sku": "s", "qty": 1.5}"#, "qty"),
            (r#"{"id": "o1", "sku": "s", "qty": "2"}"#, "qty"),
            (
                r#"{"id": "o1", "sku": "s", "qty": 1, "email": "nope"}"#,
                "email",
            ),
            (
                r#"{"id": "o1", "sku": "s", "qty": 1, "coupon": "x"}"#,
                "coupon",
            ),
        ] {
            let error = parse_order(body.as_bytes()).expect_err("refused");
            assert_eq!(error.field.as_deref(), Some(field), "{body}");
        }
    }
}
