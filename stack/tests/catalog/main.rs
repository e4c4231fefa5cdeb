//! The catalog against the real services: creating an entry (its details stored, its price and
//! stock applied through the pipeline, `product.created` announced), idempotent retries and
//! conflicts, a product known from events gaining its details, changing details, the filtered
//! and paginated listing, and every bad input refused by name with nothing left behind.

use std::collections::HashSet;

use serde_json::{Value, json};
use stack::{Stack, WAIT};

/// `method path` on the gateway with the stack's key and `body` as JSON: status, headers, body.
async fn call(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = stack
        .client
        .request(method, format!("http://{}{path}", stack.gateway));
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or_default())
}

/// Creates the catalog entry `body`: status, headers, body.
async fn create(stack: &Stack, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    create_keyed(stack, body, None).await
}

/// Creates the catalog entry `body`, with `Idempotency-Key: key` when there is one: status,
/// headers, body.
async fn create_keyed(
    stack: &Stack,
    body: &Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    call(
        stack,
        reqwest::Method::POST,
        "/api/v1/products",
        Some(body),
        key,
    )
    .await
}

async fn get(stack: &Stack, path: &str) -> (u16, Value) {
    let (status, _, body) = call(stack, reqwest::Method::GET, path, None, None).await;
    (status, body)
}

/// The product once the pipeline has applied what the test expects of it.
async fn product_when(stack: &Stack, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    testkit::wait::eventually(&format!("product {id} as expected"), WAIT, || async {
        let (status, body) = get(stack, &format!("/api/v1/products/{id}")).await;
        (status == 200 && check(&body)).then_some(body)
    })
    .await
}

/// How many creations of `product` the inbox holds: how many were applied.
async fn creations(stack: &Stack, product: &str) -> i64 {
    let pool = testkit::postgres::pool(&stack.backends).await;
    let count = sqlx::query_scalar(
        "SELECT count(*) FROM processed_events WHERE product_id = $1 AND kind = 'product.create'",
    )
    .bind(product)
    .fetch_one(&pool)
    .await
    .expect("the inbox is readable");
    pool.close().await;
    count
}

fn shoe(id: &str) -> Value {
    json!({
        "product_id": id, "name": "Trail shoe", "description": "Light, with a deep grip.",
        "category": "shoes/trail", "price": 89.5, "stock": 12, "tags": ["running", "grip"]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_product_is_stored_applied_announced_and_idempotent() {
    let stack = Stack::start(None).await;
    let broker = testkit::broker::Broker::connect(&stack.backends).await;
    let mut created = broker
        .listen(&stack.topology.events_exchange(), "product.created")
        .await;

    let (status, headers, body) =
        create_keyed(&stack, &shoe("shoe-1"), Some("create-shoe-1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["location"], "/products/shoe-1");
    assert_eq!(body["name"], "Trail shoe");
    assert_eq!(body["tags"], json!(["running", "grip"]));
    assert_eq!(
        (body["price"].clone(), body["stock"].clone()),
        (json!(89.5), json!(12))
    );
    assert!(body["created_at"].is_string(), "{body}");

    // The price and stock arrive through the pipeline, like any event.
    let stored = product_when(&stack, "shoe-1", |p| p["stock"] == 12).await;
    assert_eq!(stored["price"], 89.5);
    assert_eq!(stored["category"], "shoes/trail");
    assert_eq!(stored["created_at"], body["created_at"]);

    let event = testkit::broker::Broker::next_json(&mut created, WAIT).await;
    assert_eq!(event["type"], "product.created");
    assert_eq!(event["data"]["product_id"], "shoe-1");
    assert_eq!(event["data"]["new"], json!({"price": 89.5, "stock": 12}));

    // The same key and body: the first answer again. Another body: 422.
    let (status, headers, again) =
        create_keyed(&stack, &shoe("shoe-1"), Some("create-shoe-1")).await;
    assert_eq!((status, &again), (201, &body));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["location"], "/products/shoe-1");
    let mut other = shoe("shoe-1");
    other["name"] = json!("Road shoe");
    let (status, _, _) = create_keyed(&stack, &other, Some("create-shoe-1")).await;
    assert_eq!(status, 422);
    // Without a key: the same body goes on (a retry), another is 409 and changes nothing.
    let (status, _, retried) = create(&stack, &shoe("shoe-1")).await;
    assert_eq!((status, &retried["created_at"]), (201, &body["created_at"]));
    let (status, _, conflict) = create(&stack, &other).await;
    assert_eq!(status, 409, "{conflict}");
    assert!(
        conflict["error"].as_str().unwrap_or("").contains("PATCH"),
        "{conflict}"
    );
    assert_eq!(
        get(&stack, "/api/v1/products/shoe-1").await.1["name"],
        "Trail shoe"
    );

    // Created once, announced once: the retries made no second creation. An update of the same
    // product travels its shard after them, so once it is applied every creation sent before it
    // has been seen; one was applied, and an announcement comes only from an applied change.
    stack
        .send("/events", r#"{"product_id": "shoe-1", "stock": 13}"#)
        .await;
    product_when(&stack, "shoe-1", |p| p["stock"] == 13).await;
    assert_eq!(
        creations(&stack, "shoe-1").await,
        1,
        "the creation applied more than once"
    );

    // Without a product id, one is made.
    let mut bare = shoe("x");
    bare.as_object_mut().expect("object").remove("product_id");
    let (status, headers, made) = create(&stack, &bare).await;
    assert_eq!(status, 201, "{made}");
    let id = made["product_id"].as_str().expect("an id");
    assert_eq!(headers["location"], format!("/products/{id}").as_str());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_known_from_events_gains_details_and_the_later_writer_wins() {
    let stack = Stack::start(None).await;
    // A price set two minutes ahead of now: later than the creation, so it stays.
    let ahead = time::OffsetDateTime::now_utc() + time::Duration::minutes(2);
    let ahead = ahead
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    stack
        .send(
            "/api/v1/events",
            &json!({"product_id": "mug-1", "price": 7, "occurred_at": ahead}).to_string(),
        )
        .await;
    product_when(&stack, "mug-1", |p| p["price"] == 7).await;
    let before = get(&stack, "/api/v1/products/mug-1").await.1;
    assert_eq!(before["name"], Value::Null);
    assert_eq!(before["tags"], json!([]));

    let mug = json!({"product_id": "mug-1", "name": "Mug", "category": "kitchen", "price": 9, "stock": 3});
    let (status, _, _) = create(&stack, &mug).await;
    assert_eq!(status, 201);
    // The details show at once; the creation's stock applies, its older price does not.
    let after = product_when(&stack, "mug-1", |p| p["stock"] == 3).await;
    assert_eq!(
        (after["name"].clone(), after["price"].clone()),
        (json!("Mug"), json!(7))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_only_key_cannot_reprice_a_product_known_from_events() {
    use shared::auth::{Scope, Scopes};
    let stack = Stack::start(None).await;
    stack
        .send(
            "/api/v1/events",
            &json!({"product_id": "lamp-9", "price": 49.99, "stock": 100}).to_string(),
        )
        .await;
    product_when(&stack, "lamp-9", |p| p["stock"] == 100).await;
    let catalog_only = testkit::keys::client_with_key(
        &testkit::keys::api_key_at(
            &stack.backends,
            "catalog-only",
            Scopes::from_iter([Scope::CatalogWrite, Scope::ProductsRead]),
            None,
        )
        .await,
    );
    let create_with = |client: reqwest::Client, body: Value, key: &'static str| async move {
        let response = client
            .post(format!("http://{}/api/v1/products", stack.gateway))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .expect("sent");
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or_default(),
        )
    };
    let lamp = json!({"product_id": "lamp-9", "name": "Lamp", "category": "lighting", "price": 0.01, "stock": 0});
    let (status, body) = create_with(catalog_only.clone(), lamp.clone(), "lamp-9-create").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["scope"], "events:write", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("lamp-9")),
        "{body}"
    );
    // Nothing changed, nothing was stored, and the key is free for a retry.
    let (_, after) = get(&stack, "/api/v1/products/lamp-9").await;
    assert_eq!(
        (
            after["price"].clone(),
            after["stock"].clone(),
            after["name"].clone()
        ),
        (json!(49.99), json!(100), Value::Null)
    );

    // A new product is the catalog key's to create, price and stock included.
    let (status, body) = create_with(
        catalog_only.clone(),
        json!({"product_id": "lamp-10", "name": "Lamp", "category": "lighting", "price": 12, "stock": 3}),
        "lamp-10-create",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // A key that may send events may also create the entry of a priced product.
    let (status, body) = create_with(stack.client.clone(), lamp, "lamp-9-create").await;
    assert_eq!(status, 201, "{body}");
    product_when(&stack, "lamp-9", |p| p["stock"] == 0).await;
    // Applied in order on the product's shard: had the refused creation been published, it
    // would be in the inbox by now beside the allowed one.
    assert_eq!(
        creations(&stack, "lamp-9").await,
        1,
        "only the allowed creation was published"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn details_change_by_patch_and_the_next_read_shows_it() {
    let stack = Stack::start(None).await;
    let (status, _, _) = create(&stack, &shoe("shoe-2")).await;
    assert_eq!(status, 201);
    // Read once applied, so the entry is cached; the change must replace it.
    let applied = product_when(&stack, "shoe-2", |p| p["stock"] == 12).await;
    assert_eq!(applied["name"], "Trail shoe");
    let patch = |body: Value| {
        let stack = &stack;
        async move {
            call(
                stack,
                reqwest::Method::PATCH,
                "/api/v1/products/shoe-2",
                Some(&body),
                None,
            )
            .await
        }
    };
    let (status, _, changed) =
        patch(json!({"name": "Trail shoe II", "description": null, "tags": ["waterproof"]})).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "Trail shoe II");
    let read = get(&stack, "/api/v1/products/shoe-2").await.1;
    assert_eq!(read["name"], "Trail shoe II");
    assert_eq!(read["description"], Value::Null);
    assert_eq!(read["tags"], json!(["waterproof"]));
    assert_eq!(read["category"], "shoes/trail");

    for (body, field) in [
        (json!({"price": 1}), "price"),
        (json!({"stock": 1, "name": "n"}), "stock"),
        (json!({"category": "a;b"}), "category"),
        (json!({"name": null}), "name"),
        (json!({"tags": ["a", "a"]}), "tags[1]"),
    ] {
        let (status, _, error) = patch(body.clone()).await;
        testkit::http::assert_names_field(status, &error, field, &body.to_string());
    }
    assert_eq!(get(&stack, "/api/v1/products/shoe-2").await.1, read);
    let (status, _, _) = call(
        &stack,
        reqwest::Method::PATCH,
        "/api/v1/products/nobody",
        Some(&json!({"name": "n"})),
        None,
    )
    .await;
    assert_eq!(status, 404);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_creations_are_refused_by_name_and_leave_nothing_behind() {
    let stack = Stack::start(None).await;
    let cases = [
        (
            json!({"product_id": "bad-1", "category": "c", "price": 1, "stock": 1}),
            "name",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "price": 1, "stock": 1}),
            "category",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "category": "c", "stock": 1}),
            "price",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "category": "c", "price": 1}),
            "stock",
        ),
        (
            json!({"product_id": "bad 1", "name": "n", "category": "c", "price": 1, "stock": 1}),
            "product_id",
        ),
        (
            json!({"product_id": "bad-1", "name": "x".repeat(201), "category": "c", "price": 1, "stock": 1}),
            "name",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "category": "c!", "price": 1, "stock": 1}),
            "category",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "category": "c", "price": 1, "stock": 1, "tags": vec!["t"; 21]}),
            "tags",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "category": "c", "price": -1, "stock": 1}),
            "price",
        ),
        (
            json!({"product_id": "bad-1", "name": "n", "category": "c", "price": 1, "stock": 1, "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (status, _, error) = create(&stack, &body).await;
        testkit::http::assert_names_field(status, &error, field, &body.to_string());
    }
    assert_eq!(get(&stack, "/api/v1/products/bad-1").await.0, 404);
    let (_, page) = get(&stack, "/api/v1/products").await;
    assert_eq!(page["items"], json!([]));

    // The scope: a key that may read products may not create them.
    let reader = testkit::keys::api_key(
        &stack.backends.namespace,
        shared::auth::Scopes::parse_list("products:read").expect("a scope"),
    )
    .await;
    let response = testkit::keys::client_with_key(&reader)
        .post(format!("http://{}/api/v1/products", stack.gateway))
        .json(&shoe("shoe-3"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    assert_eq!(get(&stack, "/api/v1/products/shoe-3").await.0, 404);
    stack.stop().await;
}

/// Every page of `query` at `limit`, following the cursors.
async fn all_pages(stack: &Stack, query: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/products?limit={limit}&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = get(stack, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit as usize);
        ids.extend(
            items
                .iter()
                .map(|p| p["product_id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listing_filters_sorts_and_pages_without_repeats_or_gaps() {
    let stack = Stack::start(None).await;
    let products = [
        (
            "p-a",
            "Anorak",
            "Warm waterproof jacket",
            "outdoor",
            120,
            5,
            vec!["winter"],
        ),
        (
            "p-b",
            "Boots",
            "Waterproof leather boots",
            "outdoor",
            150,
            0,
            vec!["winter", "leather"],
        ),
        ("p-c", "Cap", "Cotton cap", "outdoor", 15, 40, vec![]),
        ("p-d", "Desk", "Oak desk", "home", 300, 2, vec!["wood"]),
        ("p-e", "Easel", "Pine easel", "home", 45, 0, vec!["wood"]),
        ("p-f", "Fan", "Quiet desk fan", "home", 45, 9, vec![]),
        (
            "p-g",
            "Gloves",
            "Leather gloves",
            "outdoor",
            30,
            11,
            vec!["winter", "leather"],
        ),
    ];
    for (id, name, description, category, price, stock, tags) in &products {
        let body = json!({"product_id": id, "name": name, "description": description,
            "category": category, "price": price, "stock": stock, "tags": tags});
        assert_eq!(create(&stack, &body).await.0, 201);
    }
    // Applied (a read shows a new product's creation at once; the listing reads what is applied).
    let pool = testkit::postgres::pool(&stack.backends).await;
    testkit::wait::eventually("every creation applied", WAIT, || async {
        let applied: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM processed_events WHERE kind = 'product.create'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (applied == 7).then_some(())
    })
    .await;
    let ids = |query: &str| {
        let stack = &stack;
        let query = query.to_owned();
        async move { all_pages(stack, &query, 100).await }
    };
    assert_eq!(
        ids("").await,
        ["p-a", "p-b", "p-c", "p-d", "p-e", "p-f", "p-g"]
    );
    assert_eq!(ids("category=home").await, ["p-d", "p-e", "p-f"]);
    assert_eq!(ids("tag=leather").await, ["p-b", "p-g"]);
    assert_eq!(ids("q=waterproof").await, ["p-a", "p-b"]);
    assert_eq!(ids("q=desk&category=home").await, ["p-d", "p-f"]);
    assert_eq!(
        ids("min_price=45&max_price=120").await,
        ["p-a", "p-e", "p-f"]
    );
    assert_eq!(ids("in_stock=false").await, ["p-b", "p-e"]);
    assert_eq!(ids("in_stock=true&tag=winter").await, ["p-a", "p-g"]);
    assert_eq!(
        ids("sort=-price").await,
        ["p-d", "p-b", "p-a", "p-f", "p-e", "p-g", "p-c"]
    );
    assert_eq!(
        ids("sort=price").await,
        ["p-c", "p-g", "p-e", "p-f", "p-a", "p-b", "p-d"]
    );
    assert_eq!(
        ids("sort=-name").await,
        ["p-g", "p-f", "p-e", "p-d", "p-c", "p-b", "p-a"]
    );

    // Every order paged two by two is the order in one page: no repeats, no gaps.
    for sort in [
        "name",
        "-name",
        "price",
        "-price",
        "created_at",
        "-created_at",
        "updated_at",
        "-updated_at",
    ] {
        let whole = all_pages(&stack, &format!("sort={sort}"), 100).await;
        let paged = all_pages(&stack, &format!("sort={sort}"), 2).await;
        assert_eq!(paged, whole, "sort={sort}");
        assert_eq!(
            whole.iter().collect::<HashSet<_>>().len(),
            products.len(),
            "sort={sort}"
        );
    }

    let (_, first) = get(&stack, "/api/v1/products?limit=2&sort=price").await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    for (query, field) in [
        ("sort=colour".to_owned(), "sort"),
        ("limit=101".to_owned(), "limit"),
        ("limit=0".to_owned(), "limit"),
        ("cursor=garbage".to_owned(), "cursor"),
        (format!("sort=name&cursor={cursor}"), "cursor"),
        ("min_price=x".to_owned(), "min_price"),
        ("max_price=-1".to_owned(), "max_price"),
        ("min_price=10&max_price=5".to_owned(), "min_price"),
        ("in_stock=maybe".to_owned(), "in_stock"),
        ("category=".to_owned(), "category"),
        ("colour=red".to_owned(), "colour"),
    ] {
        let (status, error) = get(&stack, &format!("/api/v1/products?{query}")).await;
        testkit::http::assert_names_field(status, &error, field, &query);
    }
    stack.stop().await;
}
