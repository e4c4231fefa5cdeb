//! The namespace goes with its sandbox: dropped as a test ends or panics, or removed at once.

use futures_util::FutureExt;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::helpers::{Left, filled, left};

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_panics_on_a_worker_thread_leaves_nothing_of_its_namespace() {
    let (sandbox, backends) = filled().await;

    let task = tokio::spawn(async move {
        let _sandbox = sandbox;
        panic!("a failing test");
    });
    assert!(task.await.expect_err("the task panicked").is_panic());

    assert_eq!(left(&backends).await, Left::NOTHING);
}

#[tokio::test]
async fn a_test_that_panics_on_a_current_thread_runtime_leaves_nothing_of_its_namespace() {
    let (sandbox, backends) = filled().await;

    // The sandbox is dropped while the panic unwinds, on the runtime's only thread.
    let failing = std::panic::AssertUnwindSafe(async move {
        let _sandbox = sandbox;
        panic!("a failing test");
    });
    assert!(failing.catch_unwind().await.is_err());

    assert_eq!(left(&backends).await, Left::NOTHING);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_dropped_as_a_test_passes_leaves_nothing() {
    let (sandbox, backends) = filled().await;

    drop(sandbox);

    assert_eq!(left(&backends).await, Left::NOTHING);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_removed_at_once_says_so_and_leaves_nothing() {
    let (sandbox, backends) = filled().await;

    sandbox.remove().await.expect("removed");

    assert_eq!(left(&backends).await, Left::NOTHING);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_schema_stays_and_everything_else_goes() {
    let (mut sandbox, backends) = filled().await;

    sandbox.keep_schema();
    drop(sandbox);

    let kept = left(&backends).await;
    let mut pg = PgConnection::connect_with(&backends.database)
        .await
        .expect("PostgreSQL is reachable");
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA \"{}\" CASCADE",
        backends.namespace.as_str()
    )))
    .execute(&mut pg)
    .await
    .expect("the kept schema dropped");
    pg.close().await.expect("closed");
    assert_eq!(
        kept,
        Left {
            schema: true,
            ..Left::NOTHING
        }
    );
}
