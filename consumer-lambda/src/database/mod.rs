//! Connections to PostgreSQL: made lazily, with TLS and an IAM token when
//! configured, and replaced when they break.

pub mod iam;
pub mod tls;

use std::ops::{Deref, DerefMut};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::task::AbortOnDropHandle;

use crate::config::{DatabaseConfig, DbAuth};

pub type Pool = deadpool::managed::Pool<Connector>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Token(#[from] iam::TokenError),
    #[error(
        "no AWS credentials provider for the RDS IAM token (in Lambda the execution role is one)"
    )]
    NoCredentialsProvider,
    #[error("no AWS region for the RDS IAM token: set AWS_REGION (Lambda sets it)")]
    NoRegion,
    #[error(
        "could not get AWS credentials for the RDS IAM token (in Lambda they come from the execution role)"
    )]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("could not connect to PostgreSQL at {endpoint}")]
    Postgres {
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Makes connections as configured, for the pool.
pub struct Connector {
    config: DatabaseConfig,
    tls: Option<MakeRustlsConnect>,
    /// For IAM auth: the credentials a token is signed with, and the region.
    iam: Option<(SharedCredentialsProvider, String)>,
}

impl Connector {
    /// Reads the CA bundle and, for IAM auth, the AWS credentials chain; connects nothing yet.
    pub async fn new(mut config: DatabaseConfig) -> Result<Self, ConnectError> {
        let tls = match &config.ca_bundle {
            Some(path) => {
                // Without `require`, tokio-postgres would fall back to plain text.
                config.pg.ssl_mode(SslMode::Require);
                Some(tls::connector(path)?)
            }
            None => None,
        };
        let iam = match config.auth {
            DbAuth::ConnectionString => None,
            DbAuth::Iam => {
                let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let credentials = aws
                    .credentials_provider()
                    .ok_or(ConnectError::NoCredentialsProvider)?;
                let region = aws.region().ok_or(ConnectError::NoRegion)?.to_string();
                Some((credentials, region))
            }
        };
        Ok(Self { config, tls, iam })
    }

    /// A pool of at most `size` connections with bounded waits, so a batch
    /// fails fast while the database is unreachable.
    pub fn into_pool(self, size: usize) -> Pool {
        Pool::builder(self)
            .max_size(size)
            .runtime(deadpool::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            // Only fails when timeouts are set without a runtime, and one is set above.
            .unwrap_or_else(|err| unreachable!("{err}"))
    }

    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let mut pg = self.config.pg.clone();
        let (host, port) = self.config.endpoint();
        if let Some((credentials, region)) = &self.iam {
            let credentials = credentials
                .provide_credentials()
                .await
                .map_err(ConnectError::Credentials)?;
            let user = pg.get_user().unwrap_or_default().to_owned();
            pg.password(iam::auth_token(
                &host,
                port,
                &user,
                region,
                &credentials,
                SystemTime::now(),
            )?);
        }
        let postgres_error = |source| ConnectError::Postgres {
            endpoint: format!("{host}:{port}"),
            source,
        };
        let (client, driver) = match &self.tls {
            Some(tls) => {
                let (client, connection) = pg.connect(tls.clone()).await.map_err(postgres_error)?;
                (client, tokio::spawn(drive(connection)))
            }
            None => {
                let (client, connection) = pg.connect(NoTls).await.map_err(postgres_error)?;
                (client, tokio::spawn(drive(connection)))
            }
        };
        tracing::info!(endpoint = %format!("{host}:{port}"), tls = self.tls.is_some(), iam = self.iam.is_some(), "connected to PostgreSQL");
        Ok(Connection {
            client,
            _driver: AbortOnDropHandle::new(driver),
        })
    }
}

/// A client and the task that drives its socket. Dropping it closes the
/// socket at once, even mid-statement.
pub struct Connection {
    client: Client,
    _driver: AbortOnDropHandle<()>,
}

impl Deref for Connection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(err) = connection.await {
        tracing::warn!(error = %err, "the database connection broke; the next batch reconnects");
    }
}

impl deadpool::managed::Manager for Connector {
    type Type = Connection;
    type Error = ConnectError;

    async fn create(&self) -> Result<Connection, ConnectError> {
        self.connect().await
    }

    async fn recycle(&self, client: &mut Connection, _: &Metrics) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        Ok(())
    }
}
