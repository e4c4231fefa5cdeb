//! API keys at the gateway: 401 without a valid key, 403 without the scope, 429 over the key's
//! rate, revocation taking effect within 30 s, the `keys` command, and no key in any log.

use std::{process::Stdio, time::Duration};

use shared::auth::{Scope, Scopes};
use testkit::keys::client_with_key;

use crate::helpers::{TestApp, json, spawn_app};

const EVENT: &str = r#"{"product_id": "auth-1", "stock": 1}"#;
const ORDER: &str = r#"{"id": "auth-o1", "sku": "auth-1", "qty": 1}"#;

/// Every data route of the gateway, with a body where it takes one.
fn routes() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    let mut routes = Vec::new();
    for prefix in ["", "/api/v1"] {
        let path = |p: &str| -> &'static str { Box::leak(format!("{prefix}{p}").into_boxed_str()) };
        routes.push(("POST", path("/events"), Some(EVENT)));
        routes.push(("GET", path("/products/auth-1"), None));
        routes.push(("POST", path("/orders"), Some(ORDER)));
        routes.push(("GET", path("/orders/auth-o1"), None));
    }
    routes
}

/// Calls `route` of `app` with `client`.
async fn call(
    client: &reqwest::Client,
    app: &TestApp,
    route: (&str, &str, Option<&str>),
) -> reqwest::Response {
    call_at(client, &app.url(""), route).await
}

/// Calls `route` of the gateway at `base` (`http://host:port`) with `client`.
async fn call_at(
    client: &reqwest::Client,
    base: &str,
    (method, path, body): (&str, &str, Option<&str>),
) -> reqwest::Response {
    let mut request = client.request(method.parse().expect("a method"), format!("{base}{path}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    request.send().await.expect("sent")
}

async fn key(app: &TestApp, scopes: &[Scope]) -> String {
    testkit::keys::api_key(&app.backends.namespace, scopes.iter().copied().collect()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_data_route_is_401_without_a_valid_key_and_nothing_is_published() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    let forged = client_with_key("ppk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let with_header = |value: String| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", value.parse().expect("valid"));
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    };
    // A forged key is an invalid token; each mistake in the header is named.
    let refused = [
        (forged, "invalid_token", "unknown or revoked"),
        (
            with_header(format!("Basic {}", app.key)),
            "invalid_request",
            "Bearer <key>",
        ),
        (
            with_header(app.key.clone()),
            "invalid_request",
            "Bearer <key>",
        ),
        (
            with_header("Bearer ".to_owned()),
            "invalid_request",
            "no key after Bearer",
        ),
        (
            with_header("Bearer hunter2".to_owned()),
            "invalid_request",
            "start with ppk_",
        ),
    ];
    for route in routes() {
        let response = call(&anonymous, &app, route).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"pipeline\"",
            "{route:?}"
        );
        assert!(json(response, 401).await["error"].is_string());
        for (client, challenge, says) in &refused {
            let response = call(client, &app, route).await;
            assert!(
                response.headers()["www-authenticate"]
                    .to_str()
                    .is_ok_and(|v| v.contains(challenge)),
                "{route:?} {challenge}"
            );
            let body = json(response, 401).await;
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains(says)),
                "{route:?} {says}: {body}"
            );
        }
    }
    for open in ["/health", "/ready", "/metrics", "/openapi.json", "/docs"] {
        let response = anonymous.get(app.url(open)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{open}");
    }
    assert_eq!(app.queued().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_without_the_scope_is_403_naming_the_scope() {
    let app = spawn_app().await;
    let reader = client_with_key(&key(&app, &[Scope::ProductsRead]).await);
    for (route, scope) in routes().into_iter().zip(
        [
            Some("events:write"),
            None,
            Some("orders:write"),
            Some("orders:read"),
        ]
        .into_iter()
        .cycle(),
    ) {
        let response = call(&reader, &app, route).await;
        match scope {
            Some(scope) => assert_eq!(json(response, 403).await["scope"], scope, "{route:?}"),
            // Allowed: the product is unknown.
            None => assert_eq!(response.status(), 404, "{route:?}"),
        }
    }
    let writer = client_with_key(&key(&app, &[Scope::EventsWrite]).await);
    json(call(&writer, &app, routes()[0]).await, 202).await;
    assert_eq!(app.queued().await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_ratelimit_headers_on_every_answer() {
    let app = spawn_app().await;
    let limited = testkit::keys::named_api_key(
        &app.backends.namespace,
        "slow-partner",
        Scopes::all(),
        Some(2),
    )
    .await;
    let client = client_with_key(&limited);
    let mut statuses = Vec::new();
    let mut refused = None;
    let mut left = Vec::new();
    for _ in 0..10 {
        let response = client
            .get(app.url("/products/rate-1"))
            .send()
            .await
            .expect("sent");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            refused = Some(response);
        } else {
            // Every answer within the rate says the quota and what is left of it.
            let headers = response.headers();
            assert_eq!(
                headers["ratelimit-policy"], "\"key\";q=2;w=1",
                "{headers:?}"
            );
            left.push(headers["ratelimit"].to_str().expect("ASCII").to_owned());
        }
    }
    assert!(statuses.contains(&404), "within its rate: {statuses:?}");
    assert_eq!(
        left.first().map(String::as_str),
        Some("\"key\";r=1;t=1"),
        "{left:?}"
    );
    let refused = refused.expect("some requests over the rate");
    let headers = refused.headers().clone();
    assert!(
        headers["retry-after"]
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1),
        "{headers:?}"
    );
    assert_eq!(headers["ratelimit-policy"], "\"key\";q=2;w=1");
    assert!(
        headers["ratelimit"]
            .to_str()
            .is_ok_and(|v| v.starts_with("\"key\";r=0;t=")),
        "{headers:?}"
    );
    assert!(json(refused, 429).await["error"].is_string());
    // A rated key's request it may not make counts too, and its 403 says what is left.
    let reader = testkit::keys::named_api_key(
        &app.backends.namespace,
        "slow-reader",
        [Scope::ProductsRead].into_iter().collect(),
        Some(5),
    )
    .await;
    let forbidden = call(&client_with_key(&reader), &app, routes()[0]).await;
    let headers = forbidden.headers().clone();
    assert_eq!(
        headers["ratelimit-policy"], "\"key\";q=5;w=1",
        "{headers:?}"
    );
    assert_eq!(headers["ratelimit"], "\"key\";r=4;t=1", "{headers:?}");
    assert_eq!(json(forbidden, 403).await["scope"], "events:write");
    // Another key is not slowed down by this one.
    let other = app.get("/products/rate-1").await;
    assert_eq!(other.status(), 404);
    let metrics = testkit::metrics::scrape(&app.client, &app.url("")).await;
    assert!(
        metrics.contains("pipeline_rate_limited_total{key=\"slow-partner\"}"),
        "{metrics}"
    );
    app.stop().await;
}

/// Runs `gateway keys ...` against the app's namespace, with the variables of `env` set too.
async fn gateway_keys(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("keys")
        .args(args)
        .env("PIPELINE_NAMESPACE", app.backends.namespace.as_str())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the gateway binary runs")
}

/// Runs `gateway keys ...` against the app's namespace, logging everything.
async fn keys_command(app: &TestApp, args: &[&str]) -> std::process::Output {
    gateway_keys(app, args, &[("RUST_LOG", "trace")]).await
}

/// The count of `query` (`SELECT count(*) ...` with `$1` bound to `value`) in the app's
/// database.
async fn count(app: &TestApp, query: &'static str, value: &str) -> i64 {
    let pool = testkit::postgres::pool(&app.backends).await;
    sqlx::query_scalar(query)
        .bind(value)
        .fetch_one(&pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keys_command_creates_lists_and_revokes_and_a_revoked_key_stops_within_30_s() {
    let app = spawn_app().await;
    let created = keys_command(
        &app,
        &[
            "create",
            "--name",
            "ci",
            "--scopes",
            "events:write",
            "--rate",
            "50",
        ],
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).expect("UTF-8");
    let key = stdout.trim_end_matches('\n');
    assert!(
        key.starts_with("ppk_") && !key.contains('\n'),
        "only the key on stdout: {stdout:?}"
    );
    assert!(
        !String::from_utf8_lossy(&created.stderr).contains(key),
        "the key is not echoed elsewhere"
    );
    let ci = client_with_key(key);
    json(call(&ci, &app, routes()[0]).await, 202).await;
    json(call(&ci, &app, routes()[3]).await, 403).await;

    let again = keys_command(&app, &["create", "--name", "ci", "--scopes", "ops"]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    for bad in [
        &["create", "--name", "x", "--scopes", "admin"][..],
        &["create", "--scopes", "ops"],
        &["delete", "ci"],
    ] {
        let refused = keys_command(&app, bad).await;
        assert!(!refused.status.success(), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("usage"),
            "{bad:?}"
        );
    }

    let listed = keys_command(&app, &["list"]).await;
    let table = String::from_utf8(listed.stdout).expect("UTF-8");
    let row = table
        .lines()
        .find(|l| l.starts_with("ci "))
        .unwrap_or_else(|| panic!("ci is listed: {table}"));
    assert!(
        row.contains("events:write") && row.contains("50/s"),
        "{row}"
    );
    assert!(!table.contains("ppk_"), "no key is ever listed: {table}");

    let revoked = keys_command(&app, &["revoke", "ci"]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    testkit::wait::eventually(
        "the revoked key to be refused",
        Duration::from_secs(30),
        || async { (call(&ci, &app, routes()[0]).await.status() == 401).then_some(()) },
    )
    .await;
    let listed = keys_command(&app, &["list"]).await;
    let table = String::from_utf8(listed.stdout).expect("UTF-8");
    let row = table
        .lines()
        .find(|l| l.starts_with("ci "))
        .expect("listed");
    assert_eq!(
        row.split_whitespace().count(),
        6,
        "name, scopes, rate, created, last used, revoked: {row}"
    );
    let again = keys_command(&app, &["revoke", "ci"]).await;
    assert!(!again.status.success(), "nothing left to revoke");

    let leaked = count(
        &app,
        "SELECT count(*) FROM api_keys WHERE position($1 in row_to_json(api_keys)::text) > 0",
        key,
    )
    .await;
    assert_eq!(leaked, 0, "only the key's hash is stored");
    app.stop().await;
}

/// Runs `gateway keys import` for `name` with every scope, the key in `FIRST_API_KEY`.
async fn import_key(app: &TestApp, name: &str, key: &str, replace: bool) -> std::process::Output {
    let mut args = vec![
        "import",
        "--name",
        name,
        "--scopes",
        "*",
        "--from-env",
        "FIRST_API_KEY",
    ];
    if replace {
        args.push("--replace");
    }
    gateway_keys(app, &args, &[("FIRST_API_KEY", key)]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_first_key_works_is_never_printed_and_rotates_by_importing_another() {
    let app = spawn_app().await;
    // A key that is not in the pipeline's format (a weak password, say) is refused.
    let weak = import_key(&app, "admin", "password123", true).await;
    assert!(!weak.status.success());
    let said = String::from_utf8_lossy(&weak.stderr);
    assert!(
        said.contains("FIRST_API_KEY") && said.contains("ppk_"),
        "{said}"
    );
    assert!(
        !said.contains("password123"),
        "the refused value is not echoed: {said}"
    );

    let first = shared::auth::keys::generate();
    let imported = import_key(&app, "admin", &first, true).await;
    assert!(imported.status.success(), "{imported:?}");
    assert!(imported.stdout.is_empty(), "nothing on stdout");
    assert!(!String::from_utf8_lossy(&imported.stderr).contains(&first));
    let admin = client_with_key(&first);
    json(call(&admin, &app, routes()[0]).await, 202).await;

    // Importing it again changes nothing (a job that runs twice).
    let again = import_key(&app, "admin", &first, true).await;
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    let rows = count(
        &app,
        "SELECT count(*) FROM api_keys WHERE name = $1",
        "admin",
    )
    .await;
    assert_eq!(rows, 1);

    // Another key under the same name without --replace is refused; with it, the first key is
    // revoked and the second works.
    let second = shared::auth::keys::generate();
    let refused = import_key(&app, "admin", &second, false).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("exists"));
    let rotated = import_key(&app, "admin", &second, true).await;
    assert!(rotated.status.success(), "{rotated:?}");
    assert!(String::from_utf8_lossy(&rotated.stderr).contains("revoked"));
    json(
        call(&client_with_key(&second), &app, routes()[0]).await,
        202,
    )
    .await;
    testkit::wait::eventually(
        "the rotated-out key to be refused",
        Duration::from_secs(30),
        || async { (call(&admin, &app, routes()[0]).await.status() == 401).then_some(()) },
    )
    .await;

    // A revoked key imported again stays revoked.
    let back = import_key(&app, "admin", &first, true).await;
    assert!(back.status.success(), "{back:?}");
    assert!(String::from_utf8_lossy(&back.stderr).contains("stays revoked"));
    assert_eq!(call(&admin, &app, routes()[0]).await.status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_never_appear_in_the_logs() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let key = testkit::keys::api_key(&backends.namespace, Scopes::all()).await;
    let wrong = "ppk_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let addr = testkit::ports::free_addr();
    let log_path = std::env::temp_dir().join(format!("{}.log", backends.namespace.as_str()));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("PIPELINE_NAMESPACE", backends.namespace.as_str())
        .env("INGEST_SHARDS", backends.ingest_shards.to_string())
        .env("GATEWAY_ADDR", &addr)
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .stdout(log.try_clone().expect("a file handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway starts");
    let base = format!("http://{addr}");
    let client = client_with_key(&key);
    testkit::wait::until_ready(&client, &base, Duration::from_secs(30)).await;
    let accepted = call_at(&client, &base, routes()[0]).await;
    assert_eq!(accepted.status(), 202);
    let refused = call_at(&client_with_key(wrong), &base, routes()[1]).await;
    assert_eq!(refused.status(), 401);
    testkit::services::sigterm(&mut gateway).await;
    let logs = std::fs::read_to_string(&log_path).expect("the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(
        logs.contains("gateway listening"),
        "the logs were captured: {logs}"
    );
    assert!(!logs.contains(&key), "a valid key was logged");
    assert!(!logs.contains(wrong), "a refused key was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_key_used_by_many_requests_at_once_is_looked_up_once_and_every_one_is_answered() {
    let app = spawn_app().await;
    // More requests at once than a source's lookup budget, from one source, with a key the
    // gateway has not read yet: a client starting its workers.
    let fresh = key(&app, &[Scope::EventsWrite]).await;
    let client = testkit::keys::client_with_key(&fresh);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..48 {
        let client = client.clone();
        let url = app.url("/events");
        sends.spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("burst-{i}"))
                .body(format!(r#"{{"product_id": "burst-{i}", "stock": 1}}"#))
                .send()
                .await
                .expect("sent")
                .status()
        });
    }
    let statuses = sends.join_all().await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_keys_from_one_source_do_not_lock_out_new_keys_from_another() {
    let app = spawn_app().await;
    // One source floods made-up keys: each needs a lookup, and its budget runs out.
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 1]))
        .build()
        .expect("client");
    for i in 0..300 {
        let made_up = format!("ppk_{i:043}");
        let response = flooder
            .post(app.url("/events"))
            .bearer_auth(made_up)
            .header("content-type", "application/json")
            .body(EVENT)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401);
    }
    // A key made a moment ago (not yet in memory) still works from anywhere else at once.
    let fresh = key(&app, &[Scope::EventsWrite]).await;
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .default_headers(testkit::keys::header(&fresh))
        .build()
        .expect("client");
    json(call(&elsewhere, &app, routes()[0]).await, 202).await;
    app.stop().await;
}
