//! `POST /products` and `PATCH /products/{id}` bodies: a catalog entry's details (and, on
//! creation, its first price and stock).

use serde_json::Value;

use shared::model::{Price, ProductId, Stock};

use super::{FieldError, Fields};

/// Longest name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 5_000;
/// Longest category, in characters.
pub const MAX_CATEGORY: usize = 100;
/// Most tags on one product.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG: usize = 50;

/// A catalog entry's details, each checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// 1–200 characters, not only spaces.
    pub name: String,
    /// Up to 5,000 characters.
    pub description: Option<String>,
    /// 1–100 letters, digits, `-`, `_`, `/` and spaces.
    pub category: String,
    /// Up to 20 distinct tags of 1–50 characters.
    pub tags: Vec<String>,
}

/// A valid `POST /products` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProductRequest {
    /// The product's id, if the client chose one.
    pub product_id: Option<ProductId>,
    /// Its details.
    pub details: Details,
    /// Its first price.
    pub price: Price,
    /// Its first stock.
    pub stock: Stock,
    /// What "the same body" means for idempotency.
    pub fingerprint: String,
}

/// A valid `PATCH /products/{id}` body: the details it changes (`description: null` clears it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DetailsPatch {
    /// The new name.
    pub name: Option<String>,
    /// The new description: `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// The new category.
    pub category: Option<String>,
    /// The new tags (replacing the old ones).
    pub tags: Option<Vec<String>>,
}

const NEW_FIELDS: [&str; 7] = [
    "product_id",
    "name",
    "description",
    "category",
    "price",
    "stock",
    "tags",
];
const PATCH_FIELDS: [&str; 4] = ["name", "description", "category", "tags"];

/// Parses and validates a `POST /products` body.
pub fn parse_new_product(body: &[u8]) -> Result<NewProductRequest, FieldError> {
    let fields = Fields::parse(body, &NEW_FIELDS)?;
    let product_id = fields.text::<ProductId>("product_id")?;
    let name = required(&fields, "name", name)?;
    let description = fields.get("description").map(description).transpose()?;
    let category = required(&fields, "category", category)?;
    let tags = fields
        .get("tags")
        .map(tags)
        .transpose()?
        .unwrap_or_default();
    let price = fields
        .number::<Price>("price")?
        .ok_or_else(|| FieldError::new("price", "price is required"))?;
    let stock = fields
        .number::<Stock>("stock")?
        .ok_or_else(|| FieldError::new("stock", "stock is required"))?;
    Ok(NewProductRequest {
        product_id,
        details: Details {
            name,
            description,
            category,
            tags,
        },
        price,
        stock,
        fingerprint: fields.fingerprint(),
    })
}

/// Parses and validates a `PATCH /products/{id}` body; price and stock are refused by name
/// (they change by events, in their order).
pub fn parse_patch(body: &[u8]) -> Result<DetailsPatch, FieldError> {
    for field in ["price", "stock"] {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body)
            && map.contains_key(field)
        {
            return Err(FieldError::new(
                field,
                format!("{field} changes by events (POST /events), not by PATCH"),
            ));
        }
    }
    let fields = Fields::parse(body, &PATCH_FIELDS)?;
    let patch = DetailsPatch {
        name: fields.get("name").map(name).transpose()?,
        description: if fields.present("description") {
            Some(fields.get("description").map(description).transpose()?)
        } else {
            None
        },
        category: fields.get("category").map(category).transpose()?,
        tags: fields.get("tags").map(tags).transpose()?,
    };
    if patch.name.is_none() && fields.present("name") {
        return Err(FieldError::new("name", "name cannot be null"));
    }
    if patch.category.is_none() && fields.present("category") {
        return Err(FieldError::new("category", "category cannot be null"));
    }
    if patch == DetailsPatch::default() {
        return Err(FieldError::body(
            "the body must change at least one of name, description, category and tags",
        ));
    }
    Ok(patch)
}

fn required<T>(
    fields: &Fields,
    field: &str,
    check: fn(&Value) -> Result<T, FieldError>,
) -> Result<T, FieldError> {
    fields
        .get(field)
        .map(check)
        .transpose()?
        .ok_or_else(|| FieldError::new(field, format!("{field} is required")))
}

/// `value` as a string of `min..=max` characters.
fn text(value: &Value, field: &str, min: usize, max: usize) -> Result<String, FieldError> {
    let Value::String(text) = value else {
        return Err(FieldError::new(field, format!("{field} must be a string")));
    };
    let length = text.chars().count();
    if length < min || length > max {
        return Err(FieldError::new(
            field,
            format!("{field} must be {min} to {max} characters long (it is {length})"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(text.clone())
}

fn name(value: &Value) -> Result<String, FieldError> {
    let name = text(value, "name", 1, MAX_NAME)?;
    if name.trim().is_empty() {
        return Err(FieldError::new("name", "name must not be blank"));
    }
    Ok(name)
}

fn description(value: &Value) -> Result<String, FieldError> {
    // Line breaks are fine in a description; other control characters are not.
    let Value::String(raw) = value else {
        return Err(FieldError::new(
            "description",
            "description must be a string",
        ));
    };
    let flat: String = raw
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    text(&Value::String(flat), "description", 0, MAX_DESCRIPTION)?;
    Ok(raw.clone())
}

fn category(value: &Value) -> Result<String, FieldError> {
    let category = text(value, "category", 1, MAX_CATEGORY)?;
    if !category
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | ' '))
    {
        return Err(FieldError::new(
            "category",
            "category may contain only letters, digits, '-', '_', '/' and spaces",
        ));
    }
    if category.trim().is_empty() {
        return Err(FieldError::new("category", "category must not be blank"));
    }
    Ok(category)
}

fn tags(value: &Value) -> Result<Vec<String>, FieldError> {
    let Value::Array(items) = value else {
        return Err(FieldError::new("tags", "tags must be an array of strings"));
    };
    if items.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!(
                "tags may hold at most {MAX_TAGS} tags (it holds {})",
                items.len()
            ),
        ));
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let tag = text(item, &format!("tags[{i}]"), 1, MAX_TAG)?;
        if tags.contains(&tag) {
            return Err(FieldError::new(
                &format!("tags[{i}]"),
                format!("tags[{i}] repeats the tag {tag:?}"),
            ));
        }
        tags.push(tag);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> Option<String> {
        parse_new_product(body.as_bytes())
            .expect_err("body must be refused")
            .field
    }

    #[test]
    fn a_full_body_parses_and_the_id_is_optional() {
        let r = parse_new_product(
            br#"{"product_id":"sku-1","name":"Trail shoe","description":"Light.\nFast.","category":"shoes/trail","price":89.5,"stock":12,"tags":["run","grip"]}"#,
        )
        .expect("valid");
        assert_eq!(r.product_id.map(|p| p.to_string()), Some("sku-1".into()));
        assert_eq!(r.details.tags, ["run", "grip"]);
        assert_eq!(r.price.to_string(), "89.5");
        let bare = parse_new_product(br#"{"name":"n","category":"c","price":1,"stock":0}"#)
            .expect("valid");
        assert_eq!(bare.product_id, None);
        assert!(bare.details.tags.is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let long = |n: usize| "x".repeat(n);
        let base =
            |extra: &str| format!(r#"{{"name":"n","category":"c","price":1,"stock":1{extra}}}"#);
        let cases = [
            (r#"{"category":"c","price":1,"stock":1}"#.to_owned(), "name"),
            (r#"{"name":"n","price":1,"stock":1}"#.to_owned(), "category"),
            (
                r#"{"name":"n","category":"c","stock":1}"#.to_owned(),
                "price",
            ),
            (
                r#"{"name":"n","category":"c","price":1}"#.to_owned(),
                "stock",
            ),
            (base(r#","product_id":"a b""#), "product_id"),
            (
                format!(
                    r#"{{"name":"{}","category":"c","price":1,"stock":1}}"#,
                    long(201)
                ),
                "name",
            ),
            (
                r#"{"name":"  ","category":"c","price":1,"stock":1}"#.to_owned(),
                "name",
            ),
            (
                r#"{"name":"a\u0007","category":"c","price":1,"stock":1}"#.to_owned(),
                "name",
            ),
            (
                base(&format!(r#","description":"{}""#, long(5001))),
                "description",
            ),
            (
                format!(
                    r#"{{"name":"n","category":"{}","price":1,"stock":1}}"#,
                    long(101)
                ),
                "category",
            ),
            (
                r#"{"name":"n","category":"a;b","price":1,"stock":1}"#.to_owned(),
                "category",
            ),
            (base(r#","tags":"x""#), "tags"),
            (
                base(&format!(r#","tags":[{}]"#, vec![r#""t""#; 21].join(","))),
                "tags",
            ),
            (base(&format!(r#","tags":["{}"]"#, long(51))), "tags[0]"),
            (base(r#","tags":["a",""]"#), "tags[1]"),
            (base(r#","tags":["a","a"]"#), "tags[1]"),
            (base(r#","tags":["a",3]"#), "tags[1]"),
            (base(r#","price":-1"#), "price"),
            (base(r#","colour":"red""#), "colour"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(&body).as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn the_limits_themselves_are_accepted() {
        let body = format!(
            r#"{{"name":"{}","description":"{}","category":"{}","price":0,"stock":0,"tags":[{}]}}"#,
            "é".repeat(MAX_NAME),
            "d".repeat(MAX_DESCRIPTION),
            "Ü".repeat(MAX_CATEGORY),
            (0..MAX_TAGS)
                .map(|i| format!("\"{i:0>50}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        parse_new_product(body.as_bytes()).expect("the limits are inclusive");
    }

    #[test]
    fn a_patch_changes_only_details_and_null_clears_the_description() {
        let patch = parse_patch(br#"{"description":null,"tags":[]}"#).expect("valid");
        assert_eq!(patch.description, Some(None));
        assert_eq!(patch.tags, Some(vec![]));
        assert_eq!(patch.name, None);
        let err = |body: &str| parse_patch(body.as_bytes()).expect_err("refused").field;
        assert_eq!(err(r#"{"price":2}"#).as_deref(), Some("price"));
        assert_eq!(err(r#"{"stock":2,"name":"n"}"#).as_deref(), Some("stock"));
        assert_eq!(err(r#"{"name":null}"#).as_deref(), Some("name"));
        assert_eq!(err(r#"{"category":"a;b"}"#).as_deref(), Some("category"));
        assert_eq!(err(r#"{}"#), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_new_product(&body);
            let _ = parse_patch(&body);
        }
    }
}
