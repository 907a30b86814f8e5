//! The database roles: the owner migrates, the consumer's writer role may
//! read and insert orders and conflicts and nothing else, the status
//! function's reader may only read them over a bounded number of connections,
//! and passwords are set from SCRAM verifiers as the provision task derives them.

use consumer_lambda::migrations::{
    DEFAULT_READER, DEFAULT_WRITER, READER_CONNECTION_LIMIT, Role, connect_and_prepare,
};
use consumer_lambda::{DatabaseConfig, Delivery, MessageId, OrderStore, PgStore};
use order_contract::fixtures;
use testkit::{PostgresServer, TestDatabase};
use tokio_postgres::error::SqlState;

fn delivery() -> Delivery {
    Delivery {
        message_id: MessageId::new("m-1").expect("an id"),
        placed: order_contract::OrderPlaced::new(fixtures::order(1, 1), chrono::Utc::now()),
        request_id: None,
    }
}

/// `db` owned by a login that is no superuser, as RDS's master user is not,
/// but may create roles; its name.
async fn owned_by_a_role_creator(db: &TestDatabase) -> String {
    let owner = format!("owner_{}", db.name);
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {owner} LOGIN CREATEROLE; ALTER DATABASE {} OWNER TO {owner}",
            db.name
        ))
        .await
        .expect("an owner");
    owner
}

/// Statements neither login may run.
const OWNERS_ONLY: &[&str] = &[
    "CREATE TABLE sneaky (x int)",
    "CREATE TEMP TABLE sneaky (x int)",
    "CREATE SCHEMA sneaky",
    "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE VIEW sneaky AS SELECT 1",
    "CREATE INDEX sneaky ON orders (stored_at)",
    "ALTER TABLE orders ADD COLUMN sneaky int",
    "ALTER TABLE order_conflicts DROP CONSTRAINT order_conflicts_pkey",
    "DROP TABLE orders",
    "DROP TABLE order_conflicts",
    "TRUNCATE orders",
    "UPDATE orders SET customer_id = 'x'",
    "DELETE FROM orders",
    "DELETE FROM order_conflicts",
    "SELECT * FROM schema_migrations",
    "DROP TABLE schema_migrations",
    "CREATE ROLE sneaky",
    "ALTER ROLE orders_writer CREATEDB",
];

async fn all_refused(client: &tokio_postgres::Client, statements: &[&str]) {
    for statement in statements {
        let err = client.batch_execute(statement).await.expect_err(statement);
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err:?}"
        );
    }
}

#[tokio::test]
async fn the_writer_role_may_read_and_insert_orders_and_nothing_else() {
    let db = TestDatabase::create().await;
    let owner = owned_by_a_role_creator(&db).await;
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a valid name");
    connect_and_prepare(
        DatabaseConfig::from_url(&db.url_as(&owner)).expect("url"),
        &[writer],
    )
    .await
    .expect("the owner migrates and grants");

    // What the consumer does works as the writer: insert, look up, keep a conflict.
    let store = PgStore::new(
        DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("url"),
        1,
    )
    .await
    .expect("a pool");
    let first = delivery();
    assert_eq!(store.insert(&[&first]).await.expect("stored").stored, 1);
    let mut conflicting = first.clone();
    // Another customer's order under the same id.
    let mut other = fixtures::order_request_with_id(first.placed.order.order_id(), 1, 1);
    other["customer_id"] = "someone-else".into();
    conflicting.placed.order = fixtures::order_from_request(&other);
    assert_eq!(
        store.insert(&[&conflicting]).await.expect("kept").conflicts,
        1
    );

    // Everything else is refused.
    let writer = testkit::connect(&db.url_as(DEFAULT_WRITER)).await;
    all_refused(&writer, OWNERS_ONLY).await;
}

#[tokio::test]
async fn the_reader_role_may_only_read_orders_and_conflicts_over_a_bounded_number_of_connections() {
    let db = TestDatabase::create().await;
    let owner = owned_by_a_role_creator(&db).await;
    let roles = [
        Role::writer(DEFAULT_WRITER, None).expect("a valid name"),
        Role::reader(DEFAULT_READER, None).expect("a valid name"),
    ];
    connect_and_prepare(
        DatabaseConfig::from_url(&db.url_as(&owner)).expect("url"),
        &roles,
    )
    .await
    .expect("the owner migrates and grants both");
    let store = PgStore::new(
        DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("url"),
        1,
    )
    .await
    .expect("a pool");
    store.insert(&[&delivery()]).await.expect("stored");

    let reader = testkit::connect(&db.url_as(DEFAULT_READER)).await;
    for read in [
        "SELECT count(*) FROM orders",
        "SELECT count(*) FROM order_conflicts",
    ] {
        reader.simple_query(read).await.expect(read);
    }
    let mut refused = OWNERS_ONLY.to_vec();
    refused.extend([
        "INSERT INTO orders SELECT * FROM orders",
        "INSERT INTO order_conflicts SELECT * FROM order_conflicts",
        "UPDATE order_conflicts SET body = '{}'",
    ]);
    all_refused(&reader, &refused).await;
    let limit: i32 = db
        .connect()
        .await
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&DEFAULT_READER],
        )
        .await
        .expect("the reader exists")
        .get(0);
    assert_eq!(
        limit,
        i32::try_from(READER_CONNECTION_LIMIT).expect("small")
    );
}

/// The verifier as `scripts/deploy` derives it from the writer's secret.
#[tokio::test]
async fn the_writer_logs_in_with_the_password_whose_verifier_the_provision_task_derived() {
    let role = "writer_with_password";
    let server = PostgresServer::start_with_password_for(role).await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    let password = "Zr8qWm2TfX0pLk5vHy7Bn3Jc";
    let verifier = consumer_lambda::provision::password_verifier(password);
    let writer = Role::writer(role, Some(&verifier)).expect("a verifier");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("url"), &[writer])
        .await
        .expect("prepared with the verifier");

    let with = |password: &str| {
        let url = db.url_as(&format!("{role}:{password}"));
        async move { tokio_postgres::connect(&url, tokio_postgres::NoTls).await }
    };
    let (client, connection) = with(password).await.expect("the password logs in");
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.expect("a session");
    let err = with("not-the-password")
        .await
        .err()
        .expect("another password does not");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
}
