//! Each service's PostgreSQL role (`gateway migrate`): it may do what its service does and
//! nothing else, a privilege given by hand is taken back at the next migrate, a service running
//! as its role waits for the migrations instead of making them, and a migrating user that may not
//! make roles still migrates and names the roles it could not make. (Every service running as its
//! role through whole flows: the stack tests, the fault runs and the compose test.)

use std::time::Duration;

use shared::{
    connect::postgres::{
        Database, Tables, migrate,
        roles::{self, Granted, Role},
    },
    service::Tasks,
};
use sqlx::{
    AssertSqlSafe, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use testkit::tls::{Certs, TlsPostgres};

/// A pool on the namespace's schema as `user`.
async fn as_user(options: &PgConnectOptions, schema: &str, user: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            options
                .clone()
                .username(user)
                .options([("search_path", schema)]),
        )
        .await
        .expect("the user logs in")
}

/// Asserts that `statement` fails with the SQLSTATE `expected`, or succeeds when it is `None`.
async fn assert_refusal(pool: &PgPool, statement: &str, expected: Option<&str>) {
    let refusal = match sqlx::raw_sql(AssertSqlSafe(statement.to_owned()))
        .execute(pool)
        .await
    {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => Some(e.code().unwrap_or_default().into_owned()),
        Err(e) => panic!("{statement}: {e}"),
    };
    assert_eq!(refusal.as_deref(), expected, "{statement}");
}

const DENIED: Option<&str> = Some("42501");

#[tokio::test]
async fn a_service_role_may_do_what_its_service_does_and_nothing_else() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let schema = backends.namespace.as_str();
    let (owner, granted) = migrate(&backends.database, &backends.namespace)
        .await
        .expect("migrated as the owner");
    assert!(
        granted
            .iter()
            .all(|g| matches!(g, Granted::Granted(_) | Granted::Made(_))),
        "{granted:?}"
    );
    for role in [Role::Gateway, Role::Imager, Role::Dashboard] {
        roles::login(
            &owner,
            role,
            &format!("roles_test_{}", role.service()),
            None,
        )
        .await
        .expect("a login user for the role");
    }
    let gateway = as_user(&backends.database, schema, "roles_test_gateway").await;
    for allowed in [
        "SELECT count(*) FROM products",
        "SELECT count(*) FROM orders",
        "SELECT count(*) FROM api_keys",
        "UPDATE api_keys SET last_used_at = last_used_at",
        "UPDATE product_details SET name = name",
        "DELETE FROM product_images",
    ] {
        assert_refusal(&gateway, allowed, None).await;
    }
    for refused in [
        "DELETE FROM products",
        "UPDATE orders SET qty = 1",
        "INSERT INTO api_keys (name, hash, scopes) VALUES ('x', 'x', '{}')",
        "DELETE FROM api_keys",
        "SELECT count(*) FROM dead_letters",
        "SELECT count(*) FROM subscriptions",
        "CREATE TABLE intruder (x int)",
        "DROP TABLE products",
    ] {
        assert_refusal(&gateway, refused, DENIED).await;
    }
    let imager = as_user(&backends.database, schema, "roles_test_imager").await;
    // The imager checks no keys.
    assert_refusal(&imager, "SELECT count(*) FROM api_keys", DENIED).await;
    let dashboard = as_user(&backends.database, schema, "roles_test_dashboard").await;
    assert_refusal(&dashboard, "SELECT count(*) FROM dead_letters", None).await;
    // The dashboard's repairs go through the processor.
    assert_refusal(&dashboard, "DELETE FROM dead_letters", DENIED).await;

    // A privilege given by hand is taken back by the next migrate.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "GRANT DELETE ON \"{schema}\".products TO pipeline_gateway"
    )))
    .execute(&owner)
    .await
    .expect("granted by hand");
    assert_refusal(&gateway, "DELETE FROM products", None).await;
    roles::grant(&owner, schema).await.expect("granted again");
    assert_refusal(&gateway, "DELETE FROM products", DENIED).await;
}

#[tokio::test]
async fn a_service_running_as_its_role_waits_for_the_migrations_and_starts_on_them() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    // The roles and the login user exist (from any namespace); this namespace has no schema yet.
    let elsewhere = testkit::sandbox::Sandbox::new();
    let (other, _) = migrate(&backends.database, &elsewhere.backends().namespace)
        .await
        .expect("another namespace migrated");
    roles::login(&other, Role::Gateway, "roles_test_gateway", None)
        .await
        .expect("a login user");
    other.close().await;
    let tasks = Tasks::new();
    let database = Database::start(
        backends.database.clone().username("roles_test_gateway"),
        &backends.namespace,
        &[Tables::Keys, Tables::Processor],
        2,
        &tasks,
    );
    // It may not make the schema: it keeps trying, and is not ready.
    let waited = tokio::time::timeout(Duration::from_secs(3), database.migrated()).await;
    assert!(
        waited.is_err(),
        "a role that may not change the schema migrated it"
    );
    assert!(!database.is_up().await);
    let (owner, _) = migrate(&backends.database, &backends.namespace)
        .await
        .expect("migrated as the owner");
    tokio::time::timeout(Duration::from_secs(30), database.migrated())
        .await
        .expect("the service starts once the migrations are applied");
    assert!(database.is_up().await);
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(database.pool())
        .await
        .expect("the gateway's role reads products");
    assert_eq!(products, 0);
    tasks
        .stop("the test's database", Duration::from_secs(5))
        .await;
    owner.close().await;
}

#[tokio::test]
async fn an_owner_without_createrole_migrates_and_names_the_roles_it_cannot_make_and_with_it_makes_them()
 {
    // A server of its own (no roles made yet), taking passwords (scram-sha-256) from every user
    // but `postgres`.
    let certs = Certs::generate().expect("certificates");
    let server = TlsPostgres::start(&certs).expect("a PostgreSQL of its own");
    let admin: PgConnectOptions = server
        .url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            certs.ca.display()
        ))
        .parse()
        .expect("a URL");
    let mut connection = PgConnection::connect_with(&admin.clone().database("postgres"))
        .await
        .expect("the superuser logs in");
    // (Apart: several statements at once run in one transaction, which CREATE DATABASE refuses.)
    for statement in [
        "CREATE ROLE app_owner LOGIN NOCREATEROLE PASSWORD 'owner-password'",
        "CREATE DATABASE pipeline OWNER app_owner",
    ] {
        sqlx::raw_sql(statement)
            .execute(&mut connection)
            .await
            .expect("an owner and its database");
    }
    connection.close().await.expect("closed");
    let owner = admin
        .clone()
        .username("app_owner")
        .password("owner-password");
    let namespace = testkit::sandbox::namespace();

    let (_, granted) = migrate(&owner, &namespace)
        .await
        .expect("the owner migrates without CREATEROLE");
    assert_eq!(
        granted,
        Role::ALL.map(Granted::Missing).to_vec(),
        "every role named as missing"
    );

    // Each step: a statement run by an administrator, then the owner's next migrate, which
    // grants the gateway's role.
    let superuser = as_user(&admin, namespace.as_str(), "postgres").await;
    let migrate_after = async |statement: &'static str| {
        sqlx::raw_sql(statement)
            .execute(&superuser)
            .await
            .expect(statement);
        let (pool, granted) = migrate(&owner, &namespace).await.expect("migrated again");
        assert_eq!(granted[0], Granted::Granted(Role::Gateway), "{granted:?}");
        (pool, granted)
    };

    // Made by an administrator, the gateway's role is granted at the next migrate.
    let (_, granted) = migrate_after("CREATE ROLE pipeline_gateway NOLOGIN").await;
    assert!(
        granted[1..]
            .iter()
            .all(|g| matches!(g, Granted::Missing(_)))
    );

    // Given CREATEROLE, the owner makes the others, and the services' users.
    let (pool, granted) = migrate_after("ALTER ROLE app_owner CREATEROLE").await;
    assert!(granted[1..].iter().all(|g| matches!(g, Granted::Made(_))));
    roles::login(&pool, Role::Gateway, "gateway", Some("first-password"))
        .await
        .expect("the gateway's user made");
    // Made again with another password: how a password is changed.
    roles::login(&pool, Role::Gateway, "gateway", Some("gateway-password"))
        .await
        .expect("the gateway's password changed");

    // It logs in with its password (the server checks the SCRAM verifier `login` sent), and
    // with no other.
    let gateway = admin.clone().username("gateway");
    for wrong in ["not-it", "first-password"] {
        match PgConnection::connect_with(&gateway.clone().password(wrong)).await {
            Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("28P01")),
            other => panic!("a wrong password: {other:?}"),
        }
    }
    let pool = as_user(
        &gateway.password("gateway-password"),
        namespace.as_str(),
        "gateway",
    )
    .await;
    assert_refusal(&pool, "SELECT count(*) FROM products", None).await;
    assert_refusal(&pool, "DELETE FROM products", DENIED).await;
}
