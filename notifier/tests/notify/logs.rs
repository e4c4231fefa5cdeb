//! What the notifier logs: a first start says nothing an operator must look at.

use crate::helpers::WAIT;

#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_on_an_empty_namespace_logs_no_warning_or_error() {
    let backends = testkit::backends();
    let addr = testkit::services::free_addr();
    let log_path = std::env::temp_dir().join(format!("{}-first.log", backends.namespace.as_str()));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notifier"))
        .env("PIPELINE_NAMESPACE", backends.namespace.as_str())
        .env("INGEST_SHARDS", backends.ingest_shards.to_string())
        .env("NOTIFIER_ADDR", &addr)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(log.try_clone().expect("a file handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the notifier starts");
    // `/ready` is open: no key is made, so the notifier itself finds the namespace empty.
    testkit::until_ready(&reqwest::Client::new(), &format!("http://{addr}"), WAIT).await;
    testkit::services::sigterm(&mut child).await;
    let logs = std::fs::read_to_string(&log_path).expect("the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.contains("notifier stopped"), "{logs}");
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        .collect();
    assert!(loud.is_empty(), "a first start warned: {loud:#?}");
    testkit::cleanup(&backends).await.expect("clean-up");
}
