//! The README's walkthrough, run as a newcomer runs it, against the five services:
//! `scripts/readme-walkthrough.py` takes every command of its `## Walkthrough` section (the
//! addresses pointed at these services), and compares each output the README shows with what
//! the services answer, the webhook receiver's included.

use std::path::Path;

use stack::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_answers_as_the_readme_shows() {
    let stack = Stack::start(None).await;
    // The README's key is the development key, named dev (orders show it as `placed_by`).
    let key =
        testkit::keys::api_key_at(&stack.backends, "dev", shared::auth::Scopes::all(), None).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = tokio::process::Command::new("python3")
        .arg(root.join("scripts/readme-walkthrough.py"))
        .args(["--gateway", &stack.gateway.to_string()])
        .args(["--processor", &stack.processor.to_string()])
        .args(["--notifier", &stack.notifier.to_string()])
        .args(["--namespace", stack.backends.namespace.as_str()])
        .env("PIPELINE_API_KEY", &key)
        .current_dir(&root)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("the walkthrough ends in time")
        .expect("python3 runs");
    let shown = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        output.status.success(),
        "the README and the services disagree:\n{}\n{}",
        shown(&output.stdout),
        shown(&output.stderr)
    );
    stack.stop().await;
}
