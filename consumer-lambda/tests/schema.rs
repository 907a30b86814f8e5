//! The schema the migrations make, read back from `pg_catalog` on a real
//! PostgreSQL: the names the store judges refusals by are exactly the ones
//! the migrations create, and every migration expands before it contracts,
//! so that the release before it still writes against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use consumer_lambda::migrations::{LATEST_VERSION, migrate};
use consumer_lambda::store::{COLUMNS, CONSTRAINTS};
use testkit::TestDatabase;
use tokio_postgres::Client;

/// The migrations' files, in the order they apply (the binary embeds the same files).
fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    files
}

fn migrations() -> Vec<PathBuf> {
    sql_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    sql_files(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/migrations")
            .join(kind),
    )
}

/// A column as the catalog has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Column {
    not_null: bool,
    has_default: bool,
}

/// The tables, columns and constraints of the `public` schema.
#[derive(Debug, Default)]
struct Schema {
    tables: BTreeSet<String>,
    columns: BTreeMap<(String, String), Column>,
    /// The columns each constraint is on.
    constraints: BTreeMap<(String, String), Vec<String>>,
}

async fn read_schema(client: &Client) -> Schema {
    let mut schema = Schema::default();
    for row in client
        .query(
            "SELECT c.relname::text, a.attname::text, a.attnotnull, a.atthasdef
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'
               AND a.attnum > 0 AND NOT a.attisdropped",
            &[],
        )
        .await
        .expect("columns")
    {
        schema.tables.insert(row.get(0));
        schema.columns.insert(
            (row.get(0), row.get(1)),
            Column {
                not_null: row.get(2),
                has_default: row.get(3),
            },
        );
    }
    for row in client
        .query(
            "SELECT c.relname::text, con.conname::text,
                    ARRAY(SELECT a.attname::text FROM pg_attribute a
                          WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey))
             FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public'",
            &[],
        )
        .await
        .expect("constraints")
    {
        schema
            .constraints
            .insert((row.get(0), row.get(1)), row.get(2));
    }
    schema
}

/// What a migration did that the release before it cannot live with: a
/// `NOT NULL` column without a default on an existing table, `NOT NULL` on a
/// column it writes, or a constraint on a column it writes.
fn contractions(before: &Schema, after: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    for ((table, name), column) in &after.columns {
        let key = (table.clone(), name.clone());
        match before.columns.get(&key) {
            None if before.tables.contains(table) && column.not_null && !column.has_default => {
                found.push(format!(
                    "adds {table}.{name} NOT NULL without a default to an existing table"
                ))
            }
            Some(old) if !old.not_null && column.not_null => found.push(format!(
                "sets {table}.{name} NOT NULL, a column the release before writes"
            )),
            _ => {}
        }
    }
    for ((table, name), columns) in &after.constraints {
        let written: Vec<&String> = columns
            .iter()
            .filter(|column| {
                before
                    .columns
                    .contains_key(&(table.clone(), (*column).clone()))
            })
            .collect();
        if !before
            .constraints
            .contains_key(&(table.clone(), name.clone()))
            && !written.is_empty()
        {
            found.push(format!(
                "adds constraint {name} on {table} {written:?}, which the release before writes"
            ));
        }
    }
    found
}

/// Applies `sql` as the tables' owner, and says what it contracted too early.
async fn apply(client: &Client, path: &Path) -> Vec<String> {
    let before = read_schema(client).await;
    let sql = std::fs::read_to_string(path).expect("a migration");
    client
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    contractions(&before, &read_schema(client).await)
}

#[tokio::test]
async fn every_migration_expands_before_it_contracts() {
    let files = migrations();
    assert_eq!(
        files.len(),
        usize::try_from(LATEST_VERSION).expect("positive"),
        "the files are the migrations the binary embeds"
    );
    let db = TestDatabase::create().await;
    let client = db.connect().await;
    for migration in files {
        let found = apply(&client, &migration).await;
        assert!(found.is_empty(), "{}: {found:?}", migration.display());
    }
}

#[tokio::test]
async fn a_migration_that_contracts_too_early_is_rejected_and_an_expanding_one_is_not() {
    let bad = fixtures("contract-too-early");
    assert!(bad.len() >= 4, "{bad:?}");
    for fixture in bad.iter().chain(&fixtures("expand")) {
        let db = TestDatabase::create().await;
        let client = db.connect().await;
        for migration in migrations() {
            apply(&client, &migration).await;
        }
        let found = apply(&client, fixture).await;
        let expected_bad = fixture
            .parent()
            .is_some_and(|dir| dir.ends_with("contract-too-early"));
        assert_eq!(
            !found.is_empty(),
            expected_bad,
            "{}: {found:?}",
            fixture.display()
        );
    }
}

#[tokio::test]
async fn the_names_the_store_knows_are_the_ones_the_migrations_create() {
    let db = TestDatabase::create().await;
    let mut client = db.connect().await;
    migrate(&mut client).await.expect("migrated");
    let schema = read_schema(&client).await;
    let written = ["orders", "order_conflicts"];
    let of_the_written = |names: Vec<(String, String)>| -> BTreeSet<(String, String)> {
        names
            .into_iter()
            .filter(|(table, _)| written.contains(&table.as_str()))
            .collect()
    };
    let known = |names: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        names
            .iter()
            .map(|(table, name)| ((*table).to_owned(), (*name).to_owned()))
            .collect()
    };
    assert_eq!(
        of_the_written(schema.constraints.into_keys().collect()),
        known(CONSTRAINTS),
        "store::fault::CONSTRAINTS"
    );
    assert_eq!(
        of_the_written(schema.columns.into_keys().collect()),
        known(COLUMNS),
        "store::fault::COLUMNS"
    );
}
