//! The whole pipeline over TLS to every backend, as on managed services: PostgreSQL with
//! `sslmode=verify-full`, `rediss://` and `amqps://`, against servers of the test's own that take
//! nothing but TLS, certified by a private authority the services are given. An order placed at
//! the gateway is applied by the processor and read back through the cache: every hop verified.

use stack::{Options, Stack, WAIT};
use testkit::tls::TlsBackends;

#[tokio::test(flavor = "multi_thread")]
async fn events_and_orders_travel_the_pipeline_over_tls_to_every_backend() {
    let servers = TlsBackends::start("stack-tls")
        .await
        .expect("PostgreSQL, Redis and RabbitMQ with TLS start");
    let stack = Stack::start_with(Options {
        backends: Some(servers.backends.clone()),
        ..Options::default()
    })
    .await;
    stack
        .send(
            "/events",
            r#"{"product_id": "tls-lamp", "price": 19.5, "stock": 5}"#,
        )
        .await;
    stack
        .send(
            "/orders",
            r#"{"id": "tls-o1", "sku": "tls-lamp", "qty": 2}"#,
        )
        .await;
    let product = testkit::wait::eventually("the order applied over TLS", WAIT, || async {
        let (status, body) = testkit::http::get_json(
            &stack.client,
            &format!("http://{}/products/tls-lamp", stack.gateway),
        )
        .await;
        (status == 200 && body["stock"] == 3).then_some(body)
    })
    .await;
    assert_eq!(product["price"], 19.5, "{product}");
    let (status, order) = testkit::http::get_json(
        &stack.client,
        &format!("http://{}/orders/tls-o1", stack.gateway),
    )
    .await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "created", "{order}");
    stack.stop().await;
    servers.stop().await;
}
