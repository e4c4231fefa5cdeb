//! Signing in: an `ops` key opens a session (an HttpOnly, SameSite=Strict, Secure cookie held
//! only by the dashboard); without one, or with a key lacking `ops`, every API answer is 401 or
//! 403; a state-changing request carried by the cookie must come from the dashboard's origin;
//! signing out ends the session.

use serde_json::json;
use shared::auth::Scope;

use crate::helpers::Stack;

fn cookie_of(response: &reqwest::Response) -> String {
    let set = response.headers()["set-cookie"].to_str().expect("ASCII");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(set.starts_with("__Host-pipeline_session="), "{set}");
    assert!(!set.contains("Domain"), "{set}");
    set.split(';').next().expect("name=value").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ops_key_opens_a_session_and_cross_origin_changes_are_refused() {
    let stack = Stack::start(None).await;
    let browser = reqwest::Client::new();
    let same_origin =
        |request: reqwest::RequestBuilder| request.header("sec-fetch-site", "same-origin");

    // Signed out: the page loads, the data does not. No other site may frame it.
    let page = browser.get(stack.url("/")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(
        page.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
    for path in [
        "/api/v1/snapshot",
        "/api/v1/stream",
        "/api/v1/dead-letters",
        "/api/v1/summary",
    ] {
        let response = browser.get(stack.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 401, "{path}");
    }

    // A key without ops is refused; so is a sign-in from another origin.
    let reader = testkit::keys::api_key(
        &stack.backends.namespace,
        [Scope::ProductsRead].into_iter().collect(),
    )
    .await;
    let sign_in = |body: serde_json::Value| {
        same_origin(browser.post(stack.url("/session")))
            .json(&body)
            .send()
    };
    let refused = sign_in(json!({ "key": reader })).await.expect("sent");
    assert_eq!(refused.status(), 403);
    let forged = browser
        .post(stack.url("/session"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({ "key": stack.key }))
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 403);
    let bad = sign_in(json!({ "key": stack.key, "remember": true }))
        .await
        .expect("sent");
    assert_eq!(bad.status(), 400);

    let signed_in = sign_in(json!({ "key": stack.key })).await.expect("sent");
    assert_eq!(signed_in.status(), 200);
    let cookie = cookie_of(&signed_in);
    assert!(!cookie.contains(&stack.key), "the cookie is not the key");
    let read_with_cookie = || {
        browser
            .get(stack.url("/api/v1/dead-letters"))
            .header("cookie", &cookie)
            .send()
    };
    let read = read_with_cookie().await.expect("sent");
    assert_eq!(read.status(), 200, "the session reads");

    // A state change carried by the cookie: only from the dashboard's own origin.
    let purge = json!({ "all": true, "dry_run": true });
    let purge_with_cookie = || {
        browser
            .post(stack.url("/api/v1/dead-letters/purge"))
            .header("cookie", &cookie)
            .json(&purge)
    };
    // With Secure cookies the dashboard is served over HTTPS: the same host over HTTP is another
    // origin.
    let plain_origin = format!("http://{}", stack.dashboard);
    for (header, value) in [
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://127.0.0.1:1"),
        ("origin", plain_origin.as_str()),
    ] {
        let response = purge_with_cookie()
            .header(header, value)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 403, "{header}: {value}");
    }
    let without_origin = purge_with_cookie().send().await.expect("sent");
    assert_eq!(without_origin.status(), 403, "no origin at all");
    let own = purge_with_cookie()
        .header("origin", format!("https://{}", stack.dashboard))
        .send()
        .await
        .expect("sent");
    assert_eq!(own.status(), 200, "from the dashboard's own origin");
    // A script with the key itself needs no cookie and no origin.
    let (status, _) = stack.get("/api/v1/dead-letters").await;
    assert_eq!(status, 200);

    let signed_out = same_origin(browser.delete(stack.url("/session")))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("sent");
    assert_eq!(signed_out.status(), 204);
    let after = read_with_cookie().await.expect("sent");
    assert_eq!(after.status(), 401, "the session is over");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_streams_are_capped_and_dirty_parameters_are_400() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let client = testkit::keys::authorized_client(&backends.namespace).await;
    let mut config = testkit::test_config!(dashboard::Config, backends.clone());
    config.max_streams = 1;
    let app = dashboard::Application::build(config)
        .await
        .expect("dashboard builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let stream = || client.get(format!("{base}/api/v1/stream")).send();

    let first = stream().await.expect("sent");
    assert_eq!(first.status(), 200);
    let second = stream().await.expect("sent");
    assert_eq!(second.status(), 503, "one live page at most");
    assert!(second.headers().contains_key("retry-after"));
    drop(first);
    testkit::wait::eventually(
        "the closed stream's slot to be free",
        crate::helpers::WAIT,
        || async { (stream().await.ok()?.status() == 200).then_some(()) },
    )
    .await;

    for (path, field) in [
        ("/api/v1/events/a%00b", "id"),
        ("/api/v1/summary?sku=%07", "sku"),
    ] {
        let (status, body) = testkit::http::get_json(&client, &format!("{base}{path}")).await;
        testkit::http::assert_names_field(status, &body, field, path);
    }
    let _ = stop.send(());
    task.await.expect("task").expect("stops cleanly");
}
