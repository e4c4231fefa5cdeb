//! The schema by owner: a service applies only the migrations of the tables it owns or reads,
//! and a database migrated before the migrations were grouped by owner upgrades in place.

use std::path::Path;

use shared::connect::postgres::{Tables, first_version_6_checksum, migrated};
use sqlx::{
    AssertSqlSafe, PgPool, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::PgPoolOptions,
};

use crate::helpers::announcements;

/// The tables in the namespace's schema.
async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("the catalog is readable")
}

/// Every migration's version, in order, read from the migration files of every group.
fn every_version() -> Vec<i64> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/migrations");
    let mut versions: Vec<i64> = std::fs::read_dir(root)
        .expect("the migrations")
        .flat_map(|group| std::fs::read_dir(group.expect("a group").path()).expect("a group"))
        .filter_map(|file| {
            let name = file.expect("a file").file_name();
            name.to_str()?.split('_').next()?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// Applied migration versions, in order.
async fn versions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("the history is readable")
}

#[tokio::test]
async fn a_service_applies_only_the_tables_it_owns_or_reads() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let migrate = |groups| migrated(&backends.database, &backends.namespace, groups, 1);
    let notifier = migrate(&[Tables::Keys, Tables::Notifier])
        .await
        .expect("the notifier's groups apply");
    let present = tables(&notifier).await;
    for owned in ["api_keys", "subscriptions", "notifications", "deliveries"] {
        assert!(
            present.contains(&owned.to_owned()),
            "{owned} in {present:?}"
        );
    }
    for foreign in [
        "products",
        "orders",
        "processed_events",
        "dead_letters",
        "product_details",
        "product_images",
    ] {
        assert!(
            !present.contains(&foreign.to_owned()),
            "{foreign} in {present:?}"
        );
    }
    assert_eq!(versions(&notifier).await, vec![5, 8, 11, 12, 18, 19]);
    notifier.close().await;

    // The processor's group, then the catalog's, added later to the same schema: the
    // processor's has none of the catalog's tables; then all are there, one history.
    let processor = migrate(&[Tables::Keys, Tables::Processor])
        .await
        .expect("the processor's groups apply beside the notifier's");
    assert!(
        !tables(&processor)
            .await
            .contains(&"product_details".to_owned())
    );
    processor.close().await;
    let processor = migrate(&[Tables::Keys, Tables::Processor, Tables::Catalog])
        .await
        .expect("the catalog's group applies after the processor's later versions");
    let present = tables(&processor).await;
    for table in [
        "products",
        "orders",
        "dead_letters",
        "deliveries",
        "retries",
        "product_details",
        "product_images",
    ] {
        assert!(
            present.contains(&table.to_owned()),
            "{table} in {present:?}"
        );
    }
    assert_eq!(versions(&processor).await, every_version());
    processor.close().await;
}

/// The migrations as one history, as every service applied them before they were grouped by
/// owner: the groups' files up to version 10, with version 6 as first written (the processor's
/// 6 and the notifier's 11 together) and recorded with the checksum it had then.
async fn ungrouped() -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/migrations");
    let mut all = Vec::new();
    for group in ["keys", "processor", "notifier"] {
        let migrator = Migrator::new(dir.join(group).as_path())
            .await
            .expect("the migrations resolve");
        all.extend(migrator.iter().cloned());
    }
    let notifier_part = all
        .iter()
        .find(|m| m.version == 11)
        .expect("version 11")
        .sql
        .clone();
    all.retain(|m| m.version <= 10);
    let sixth = all.iter_mut().find(|m| m.version == 6).expect("version 6");
    let first = format!("{}\n{}", notifier_part.as_str(), sixth.sql.as_str());
    *sixth = Migration::new(
        6,
        "traces and retries".into(),
        MigrationType::Simple,
        AssertSqlSafe(first).into_sql_str(),
        false,
    );
    sixth.checksum = first_version_6_checksum().into();
    Migrator::with_migrations(all)
}

/// A pool on the sandbox's schema, created empty.
async fn empty_schema(backends: &shared::config::Backends) -> PgPool {
    let schema = backends.namespace.as_str().to_owned();
    let bootstrap = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(backends.database.clone())
        .await
        .expect("PostgreSQL is reachable");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&bootstrap)
        .await
        .expect("the schema is created");
    bootstrap.close().await;
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            backends
                .database
                .clone()
                .options([("search_path", schema.as_str())]),
        )
        .await
        .expect("PostgreSQL is reachable")
}

/// Every group's migrations up to `version`, as one history: what a build of then applied
/// (version 6 recorded with the checksum the processor's group gives it).
async fn up_to(version: i64) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/migrations");
    let mut all = Vec::new();
    for group in std::fs::read_dir(dir).expect("the migrations") {
        let migrator = Migrator::new(group.expect("a group").path().as_path())
            .await
            .expect("the migrations resolve");
        all.extend(migrator.iter().filter(|m| m.version <= version).cloned());
    }
    all.sort_by_key(|m| m.version);
    for migration in &mut all {
        if migration.version == 6 {
            migration.checksum = first_version_6_checksum().into();
        }
    }
    Migrator::with_migrations(all)
}

/// The sandbox's schema as a build that applied `history` left it, with `rows` inserted,
/// upgraded by every group as this build migrates it.
async fn upgraded_from(
    backends: &shared::config::Backends,
    history: Migrator,
    rows: &[&'static str],
) -> PgPool {
    let old = empty_schema(backends).await;
    history.run(&old).await.expect("the old history applies");
    for row in rows {
        sqlx::query(*row)
            .execute(&old)
            .await
            .unwrap_or_else(|e| panic!("{row}: {e}"));
    }
    old.close().await;
    migrated(&backends.database, &backends.namespace, &Tables::ALL, 1)
        .await
        .expect("every group accepts the old history")
}

#[tokio::test]
async fn the_outbox_left_by_an_earlier_build_moves_to_its_sources_inbox_rows() {
    let sandbox = testkit::sandbox::Sandbox::new();
    // A source applied, its two events not yet confirmed when its processor died; another's
    // confirmed and forgotten.
    let upgraded = upgraded_from(
        &sandbox.backends(),
        up_to(22).await,
        &[
            "INSERT INTO processed_events (event_id, kind, owner, product_id, occurred_at,
                                           received_at)
             VALUES ('e1', 'product.update', 'shop', 'p1', now(), now()),
                    ('e2', 'product.update', 'shop', 'p1', now(), now())",
            r#"INSERT INTO outbox (event_id, source_kind, source_owner, source_event_id,
                                 routing_key, payload)
             VALUES ('msg_1', 'product.update', 'shop', 'e1', 'product.updated', '{"n": 1}'),
                    ('msg_2', 'product.update', 'shop', 'e1', 'stock.low', '{"n": 2}')"#,
        ],
    )
    .await;
    let kept = announcements(&upgraded).await;
    assert_eq!(
        kept,
        [
            (
                "e1".to_owned(),
                Some(vec![r#"{"n": 1}"#.to_owned(), r#"{"n": 2}"#.to_owned()])
            ),
            ("e2".to_owned(), None),
        ]
    );
    assert!(!tables(&upgraded).await.contains(&"outbox".to_owned()));
    upgraded.close().await;
}

#[tokio::test]
async fn a_database_migrated_before_grouping_upgrades_in_place() {
    let sandbox = testkit::sandbox::Sandbox::new();
    // The schema as an earlier build left it, with a row in a table of each owner.
    let upgraded = upgraded_from(
        &sandbox.backends(),
        ungrouped().await,
        &[
            "INSERT INTO products (product_id, price) VALUES ('sku-1', 10)",
            "INSERT INTO notifications (event_id, event_type, body, traceparent)
             VALUES ('msg_1', 'product.changed', '{}', '00-1-2-01')",
        ],
    )
    .await;
    assert_eq!(versions(&upgraded).await, every_version());
    let kept: (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM products),
                (SELECT traceparent FROM notifications WHERE event_id = 'msg_1')",
    )
    .fetch_one(&upgraded)
    .await
    .expect("the data is still there");
    assert_eq!(kept, (1, "00-1-2-01".to_owned()));
    upgraded.close().await;
}
