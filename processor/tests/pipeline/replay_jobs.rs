//! Bulk operator actions stay bounded: a dry run counts in PostgreSQL and shows a sample; a
//! replay of many dead letters runs as a job over rows it claimed first, so replays clicked
//! twice, or at once, publish each dead letter once.

use serde_json::{Value, json};
use shared::topology::Topology;

use crate::helpers::{Pipeline, WAIT, spawn_pipeline, wait_inbox};

/// A pipeline with `n` dead letters, recorded as the intake would, each a valid update of its
/// own product.
async fn with_dead_letters(n: usize) -> Pipeline {
    let pipeline = spawn_pipeline().await;
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    for i in 0..n {
        let product = format!("bulk-{i}");
        let event = format!("bulk-evt-{i}");
        let shard = pipeline
            .topology
            .shard_for(&product.parse().expect("valid"));
        let payload = json!({
            "event_id": event, "product_id": product, "stock": i,
            "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z",
        });
        sqlx::query(
            "INSERT INTO dead_letters (id, event_id, product_id, reason, error, attempts, service,
                 routing_key, message_type, first_failed_at, payload)
             VALUES ($1, $2, $3, 'attempts_exhausted', 'serialization failure', 4, 'processor',
                     $4, 'product.update', now(), $5)",
        )
        .bind(format!("dl-{i:04}"))
        .bind(&event)
        .bind(&product)
        .bind(Topology::routing_key(shard))
        .bind(payload.to_string().into_bytes())
        .execute(&pool)
        .await
        .expect("insert");
    }
    pipeline
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_counts_and_shows_a_sample_and_changes_nothing() {
    let pipeline = with_dead_letters(150).await;
    let (status, dry) = pipeline.replay(json!({"all": true, "dry_run": true})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (dry["count"].as_i64(), dry["truncated"].as_bool()),
        (Some(150), Some(true))
    );
    assert_eq!(dry["results"].as_array().map(Vec::len), Some(100));
    assert_eq!(pipeline.purgeable("attempts_exhausted").await, 150);
    let (_, listed) = pipeline.processor_get("/dead-letters?limit=1000").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(150),
        "a dry run changes nothing"
    );
    assert_eq!(pipeline.inbox_count().await, 0);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_replay_runs_as_a_job_and_replays_clicked_together_publish_each_once() {
    let pipeline = with_dead_letters(150).await;
    let everything = json!({"all": true});
    let (first, second) = tokio::join!(
        pipeline.replay(everything.clone()),
        pipeline.replay(everything.clone()),
    );
    let claimed: i64 = [&first, &second]
        .iter()
        .map(|(_, body)| body["count"].as_i64().expect("a count"))
        .sum();
    assert_eq!(
        claimed, 150,
        "the two replays split the dead letters: {first:?} {second:?}"
    );
    let jobs: Vec<String> = [&first, &second]
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, body)| body["job_id"].as_str().expect("a job").to_owned())
        .collect();
    assert!(!jobs.is_empty(), "more than 100 at once run as a job");

    // Clicked again while the job runs (or after): nothing is left to publish.
    let (status, again) = pipeline.replay(everything).await;
    assert_eq!((status, again["count"].as_i64()), (200, Some(0)), "{again}");

    for job in &jobs {
        let progress: Value =
            testkit::wait::eventually("the replay job to finish", WAIT, || async {
                let (_, body) = pipeline
                    .processor_get(&format!("/dead-letters/replays/{job}"))
                    .await;
                (body["status"] == "finished").then_some(body)
            })
            .await;
        assert_eq!(progress["failed"], 0, "{progress}");
        assert_eq!(progress["replayed"], progress["claimed"], "{progress}");
    }
    wait_inbox(&pipeline, 150).await;
    let (_, listed) = pipeline.processor_get("/dead-letters").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "every dead letter was replayed and removed"
    );
    let (status, missing) = pipeline
        .processor_get("/dead-letters/replays/0190d0a4-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404, "{missing}");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_a_page_at_a_time_none_twice_none_missed() {
    let pipeline = with_dead_letters(150).await;
    // Half of them failed at the same instant: the id orders those.
    pipeline
        .execute(
            "UPDATE dead_letters SET first_failed_at = '2026-01-01T00:00:00Z' WHERE id < 'dl-0075'",
        )
        .await;
    let mut seen: Vec<String> = Vec::new();
    let mut path = "/dead-letters?limit=40".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = pipeline.processor_get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 40, "a page holds at most its limit");
        seen.extend(
            items
                .iter()
                .map(|d| d["id"].as_str().expect("id").to_owned()),
        );
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/dead-letters?limit=40&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..150).map(|i| format!("dl-{i:04}")).collect();
    assert_eq!((pages, seen), (4, expected), "oldest first, each once");
    pipeline.stop().await;
}
