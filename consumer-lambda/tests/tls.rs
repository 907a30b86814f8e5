//! TLS to PostgreSQL with full verification, against a server whose certificate
//! comes from a test CA made here.

use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::{DatabaseConfig, Delivery, MessageId, OrderStore, PgStore};
use order_contract::OrderPlaced;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use testkit::{PostgresServer, TestDatabase};

/// A CA, and a server certificate it signed for `names`.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn pki(ca_name: &str, names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let server_key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let server = CertificateParams::new(names)
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    Pki {
        ca_pem: ca.pem(),
        server_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// A PEM file that disappears with the test.
struct Bundle(std::path::PathBuf);

impl Bundle {
    fn with(pem: &str) -> Self {
        let path = std::env::temp_dir()
            .join(testkit::unique_name("ca"))
            .with_extension("pem");
        std::fs::write(&path, pem).expect("write the bundle");
        Self(path)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn store_with_ca(url: &str, ca: &std::path::Path) -> PgStore {
    let mut config = DatabaseConfig::from_url(url).expect("valid URL");
    config.ca_bundle = Some(ca.to_path_buf());
    PgStore::new(config, 1)
        .await
        .expect("the bundle is readable")
}

fn an_order() -> Delivery {
    Delivery {
        message_id: MessageId::new("m-1").expect("an id"),
        placed: OrderPlaced::new(order_contract::fixtures::order(1, 1), chrono::Utc::now()),
        request_id: None,
    }
}

#[tokio::test]
async fn verification_passes_with_the_servers_ca_and_fails_with_another_or_a_wrong_name() {
    testkit::init_tracing();
    let good = pki("Test CA", &["localhost", "127.0.0.1"]);
    let server = PostgresServer::start_with_tls(&good.server_pem, &good.server_key_pem).await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("a URL"), &[writer])
        .await
        .expect("migrated");

    // The right CA: connected over TLS, stored (as the writer, as in AWS).
    let right_ca = Bundle::with(&good.ca_pem);
    let store = store_with_ca(&db.url_as(DEFAULT_WRITER), &right_ca.0).await;
    assert_eq!(
        store
            .insert(&[&an_order()])
            .await
            .expect("verified and stored")
            .stored,
        1
    );
    let client = db.connect().await;
    let tls_sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.application_name = 'orders-consumer'",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert_eq!(tls_sessions, 1, "the consumer's connection is encrypted");

    // Another CA: refused, nothing stored.
    let other = pki("Another CA", &["localhost", "127.0.0.1"]);
    let wrong_ca = Bundle::with(&other.ca_pem);
    let err = store_with_ca(&db.url, &wrong_ca.0)
        .await
        .insert(&[&an_order()])
        .await
        .expect_err("untrusted");
    let chain = format!("{:?}", err);
    assert!(
        chain.contains("InvalidCertificate(UnknownIssuer)"),
        "{chain}"
    );

    // The right CA but a certificate for another host name: refused too.
    let misnamed = pki("Test CA", &["db.example.internal"]);
    let server2 =
        PostgresServer::start_with_tls(&misnamed.server_pem, &misnamed.server_key_pem).await;
    let db2 = TestDatabase::create_on(&server2.admin_url()).await;
    let misnamed_ca = Bundle::with(&misnamed.ca_pem);
    let err = store_with_ca(&db2.url, &misnamed_ca.0)
        .await
        .insert(&[&an_order()])
        .await
        .expect_err("wrong name");
    let chain = format!("{:?}", err);
    assert!(
        chain.contains("InvalidCertificate(NotValidForName"),
        "{chain}"
    );
}

#[tokio::test]
async fn a_missing_or_empty_ca_bundle_is_reported_at_start_up_with_its_path() {
    let mut config = DatabaseConfig::from_url("postgres://x@127.0.0.1:1/x").expect("valid");
    config.ca_bundle = Some("/nonexistent/rds-ca.pem".into());
    let err = PgStore::new(config.clone(), 1)
        .await
        .err()
        .expect("unreadable");
    assert!(
        err.to_string().contains("/nonexistent/rds-ca.pem")
            && err.to_string().contains("DB_CA_BUNDLE"),
        "{err}"
    );
    let empty = Bundle::with("not a certificate\n");
    config.ca_bundle = Some(empty.0.clone());
    let err = PgStore::new(config, 1).await.err().expect("empty");
    assert!(err.to_string().contains("no usable certificate"), "{err}");
}
