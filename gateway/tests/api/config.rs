//! A bad configuration value stops start-up with one line naming the variable; `--help` and
//! `--version` answer without serving.

use std::process::Command;

#[test]
fn each_invalid_variable_stops_start_up_with_one_line_naming_it() {
    let cases = [
        ("GATEWAY_ADDR", "not-an-address"),
        ("INGEST_SHARDS", "four"),
        ("INGEST_SHARDS", "0"),
        ("PIPELINE_NAMESPACE", "Bad-Name"),
        ("AMQP_URL", "http://127.0.0.1:5672"),
        ("REDIS_URL", "not a url"),
        ("DATABASE_URL", "nowhere"),
        ("IDEMPOTENCY_RETENTION_SECS", "-1"),
        ("IDEMPOTENCY_LEASE_SECS", "1"),
        ("PUBLISH_CHANNELS", "0"),
    ];
    for (variable, value) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env(variable, value)
            .env("RUST_BACKTRACE", "0")
            .env(
                "GATEWAY_ADDR",
                if variable == "GATEWAY_ADDR" {
                    value
                } else {
                    "127.0.0.1:0"
                },
            )
            .output()
            .expect("the gateway binary runs");
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{variable}={value}: {stderr}");
        assert!(lines[0].contains(variable), "{variable}={value}: {stderr}");
        if variable == "DATABASE_URL" || variable == "AMQP_URL" {
            assert!(
                !lines[0].contains(value),
                "a URL may hold a secret: {stderr}"
            );
        }
    }
}

/// The binary run with `args` where serving would fail at once: an unusable address and broker.
fn without_serving(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env("GATEWAY_ADDR", "not-an-address")
        .env("AMQP_URL", "amqp://127.0.0.1:1/%2f")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the gateway binary runs")
}

#[test]
fn help_and_version_answer_without_serving_and_an_unknown_flag_is_refused() {
    let help = without_serving(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.starts_with(&format!("gateway {} (revision ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains(shared::config::settings::help("gateway").trim_end()));
    assert!(text.contains("gateway keys ..."), "{text}");
    assert!(help.stderr.is_empty(), "nothing logged: {help:?}");

    let version = without_serving(&["--version"]);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim_end(),
        shared::cli::version("gateway")
    );

    let keys = without_serving(&["keys", "--help"]);
    assert!(keys.status.success(), "{keys:?}");
    assert!(String::from_utf8_lossy(&keys.stdout).contains("gateway keys import --name NAME"));

    let unknown = without_serving(&["--frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("unknown command \"--frobnicate\""),
        "{stderr}"
    );
    assert!(stderr.contains("gateway --help"), "{stderr}");
}
