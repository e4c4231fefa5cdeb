//! The page in a real headless Chromium (Debian's package), driven by playwright-core from
//! `tests/browser/dashboard.mjs`: the operator signs in, the page goes live, its numbers move as
//! events are sent, a purge forged by another origin with the operator's session is refused,
//! and a dead letter replayed from the page is applied. `SCREENSHOTS=<dir>` keeps PNGs of the
//! main views.

use std::path::{Path, PathBuf};

use crate::helpers::{Stack, WAIT};

fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    assert!(
        path.exists(),
        "the browser test needs Chromium at {} (apt-get install chromium, or set CHROMIUM)",
        path.display()
    );
    path
}

fn script_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "the browser test needs playwright-core: npm ci --prefix {}",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_goes_live_and_a_dead_letter_replayed_from_it_is_applied() {
    let (browser, dir) = (chromium(), script_dir());
    let stack = Stack::start(None).await;
    let (receiver, _) = stack.subscriber(&["product.updated"]).await;
    stack
        .plant_dead_letter("browser-dead", "browser-dead-evt")
        .await;
    // A second one, left alone: the page lists them one per page, following the cursor.
    stack
        .plant_dead_letter("browser-other", "browser-other-evt")
        .await;
    testkit::wait::eventually("the dead letters to be recorded", WAIT, || async {
        let (_, body) = stack.get("/api/v1/dead-letters").await;
        (body["items"].as_array()?.len() == 2).then_some(())
    })
    .await;

    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("DASHBOARD_URL", stack.url("/"))
        .env("GATEWAY_URL", format!("http://{}", stack.gateway))
        .env("API_KEY", &stack.key)
        .env("DEAD_PRODUCT", "browser-dead")
        .env("CHROMIUM", &browser)
        .kill_on_drop(true);
    if let Ok(dir) = std::env::var("SCREENSHOTS") {
        command.env("SCREENSHOTS", dir);
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(180), command.status())
        .await
        .expect("the browser run ends in time")
        .expect("node runs");
    assert!(status.success(), "the browser run failed: {status}");

    let (_, event) = stack.get("/api/v1/events/browser-dead-evt").await;
    assert_eq!(event["status"], "applied", "{event}");
    // The replayed event's change reached the subscriber (the receiver may also get others).
    let notified = testkit::wait::eventually("the replayed change notified", WAIT, || async {
        receiver.received().into_iter().find(|webhook| {
            serde_json::from_slice::<serde_json::Value>(&webhook.body).is_ok_and(|body| {
                body["type"] == "product.updated"
                    && body["data"]["product_id"] == "browser-dead"
                    && body["data"]["source_event_id"] == "browser-dead-evt"
            })
        })
    })
    .await;
    assert_eq!(notified.answered, 200);
    let (_, dead) = stack.get("/api/v1/dead-letters").await;
    let left: Vec<&serde_json::Value> = dead["items"]
        .as_array()
        .map(|items| items.iter().map(|d| &d["product_id"]).collect())
        .unwrap_or_default();
    assert_eq!(
        left,
        ["browser-other"],
        "replayed, so removed; the other stays"
    );
    let metrics = testkit::metrics::scrape(&stack.client, &stack.url("")).await;
    let refused = testkit::metrics::counter(&metrics, "pipeline_auth_denied_total", "cross_site");
    assert!(
        refused >= 2.0,
        "the forged form and script reached the dashboard and were refused: {refused}"
    );
    stack.stop().await;
}
