//! Every service's HTTP API against its own OpenAPI document, driven by schemathesis with a key
//! holding every scope: no answer is a 5xx, and every status, header, content type and body is
//! one the document describes (schemathesis' checks, `ignored_auth` included: an operation must
//! refuse the request without the key; and invalid input must be refused). Left out:
//! `positive_data_acceptance`, which expects every request the schema allows to succeed, and
//! rules a schema cannot say are part of the API (an `occurred_at` at most 5 minutes ahead, a key
//! already used with another body, at least one of price and stock).

use std::process::Stdio;

use stack::Stack;

/// The checks schemathesis leaves out (see above).
const EXCLUDED: &str = "positive_data_acceptance";

#[tokio::test(flavor = "multi_thread")]
async fn every_api_answers_as_its_openapi_document_says() {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the contract test needs schemathesis: python3 -m pip install schemathesis"
    );
    let stack = Stack::start(None).await;
    let mut failed = Vec::new();
    for (service, addr) in [
        ("gateway", stack.gateway),
        ("processor", stack.processor),
        ("notifier", stack.notifier),
    ] {
        let output = tokio::process::Command::new("schemathesis")
            .args([
                "run",
                &format!("http://{addr}/openapi.json"),
                "--header",
                &format!("Authorization: Bearer {}", stack.key),
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED,
                "--max-examples",
                "25",
                "--workers",
                "2",
                "--seed",
                "1",
                "--no-color",
                "--generation-database",
                "none",
                "--report-dir",
                &std::env::temp_dir()
                    .join(format!("schemathesis-{service}"))
                    .to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("schemathesis runs");
        if !output.status.success() {
            eprintln!(
                "--- {service} ---\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            failed.push(service);
        }
    }
    stack.stop().await;
    assert!(
        failed.is_empty(),
        "schemathesis found answers the documents do not describe: {failed:?}"
    );
}

/// Runs `command` to its end and asserts that it succeeded; else fails with `failure` and what
/// the command printed.
async fn succeeds(command: &mut tokio::process::Command, failure: &str) {
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{:?} could not run: {e}", command.as_std()));
    assert!(
        output.status.success(),
        "{failure}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_document_is_valid_openapi_for_client_generators() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success())
        && std::process::Command::new("openapi-python-client")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the check needs openapi-spec-validator and openapi-python-client: python3 -m pip install \
         openapi-spec-validator openapi-python-client"
    );
    let dir = std::env::temp_dir().join(format!("openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    // Images are bytes to the generator, which knows no image/* types (its documented override).
    let config = dir.join("client.yaml");
    std::fs::write(
        &config,
        "content_type_overrides:\n  \"image/*\": application/octet-stream\n  \
         image/jpeg: application/octet-stream\n  image/png: application/octet-stream\n  \
         image/webp: application/octet-stream\n",
    )
    .expect("written");
    for (service, document) in [
        ("gateway", gateway::openapi::document()),
        ("processor", processor::openapi::document()),
        ("notifier", notifier::openapi::document()),
        ("imager", imager::openapi::document()),
    ] {
        let path = dir.join(format!("{service}.json"));
        std::fs::write(&path, serde_json::to_vec(&document).expect("JSON")).expect("written");
        succeeds(
            tokio::process::Command::new("python3")
                .args(["-m", "openapi_spec_validator"])
                .arg(&path),
            &format!("{service}: the validator refused the document"),
        )
        .await;
        // A client generated from it, without a warning, that Python imports.
        let package = format!("client_{service}");
        succeeds(
            tokio::process::Command::new("openapi-python-client")
                .args([
                    "generate",
                    "--meta",
                    "none",
                    "--fail-on-warning",
                    "--config",
                ])
                .arg(&config)
                .arg("--path")
                .arg(&path)
                .arg("--output-path")
                .arg(dir.join(&package)),
            &format!("{service}: the client generator refused the document"),
        )
        .await;
        succeeds(
            tokio::process::Command::new("python3")
                .arg("-c")
                .arg(format!(
                    "import sys; sys.path.insert(0, sys.argv[1]); import {package}.client, {package}.api"
                ))
                .arg(&dir),
            &format!("{service}: the generated client does not import"),
        )
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
