//! A bad configuration value stops start-up with one line naming the variable.

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
