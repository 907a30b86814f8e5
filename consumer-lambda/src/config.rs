//! The consumer's settings, read once per execution environment.
//!
//! The database is `DATABASE_URL` locally, and in AWS `DB_HOST`, `DB_PORT`,
//! `DB_NAME`, `DB_USER` with `DB_AUTH=iam` (an RDS IAM token per connection,
//! so no secret sits in the environment). `DB_CA_BUNDLE` (PEM) turns on TLS
//! with full verification; IAM requires it.

use std::path::PathBuf;
use std::time::Duration;

use support::{Env, EnvError, FromEnv};

use crate::retry::{Backoff, MAX_SEND_DELAY, MaxReceiveCount, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no database configured: set DATABASE_URL (e.g. postgres://user@host:5432/orders), or DB_HOST, DB_NAME, DB_USER and DB_AUTH=iam"
    )]
    NoDatabase,
    #[error("DATABASE_URL is not a valid PostgreSQL connection string")]
    InvalidDatabaseUrl(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(
        "DB_AUTH=iam sends a token as the password: set DB_CA_BUNDLE to the RDS CA bundle so the connection is encrypted and verified"
    )]
    IamWithoutTls,
}

/// How the password is obtained: from the connection string, or as an RDS
/// IAM token signed for every new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbAuth {
    ConnectionString,
    Iam,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Host, port, database, user and timeouts; the password is added per connection.
    pub pg: tokio_postgres::Config,
    pub auth: DbAuth,
    /// CA bundle for TLS with full verification; `None` means no TLS (local only).
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    /// `QUEUE_URL`: where failed records are postponed and requeued.
    pub queue_url: String,
    /// `DLQ_URL`: where poison goes.
    pub dlq_url: String,
    /// `RETRY_BASE_SECONDS`, `RETRY_MULTIPLIER`, `RETRY_CAP_SECONDS`, and
    /// `MAX_RECEIVE_COUNT` (required: without it a long outage would send
    /// valid orders to the DLQ).
    pub retry: RetryPolicy,
}

impl FromEnv for Config {
    type Error = ConfigError;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::read(env)?;
        let defaults = Backoff::default();
        let seconds = |name, default: Duration, max: u64| {
            env.bounded(name, default.as_secs(), 1..=max, "whole seconds")
                .map(Duration::from_secs)
        };
        let backoff = Backoff::new(
            seconds("RETRY_BASE_SECONDS", defaults.base(), u64::from(u32::MAX))?,
            env.bounded(
                "RETRY_MULTIPLIER",
                defaults.multiplier(),
                1..=u32::MAX,
                "a whole number",
            )?,
            // A requeued copy cannot be delayed past SQS's longest send delay.
            seconds(
                "RETRY_CAP_SECONDS",
                defaults.cap(),
                MAX_SEND_DELAY.as_secs(),
            )?,
        )
        .unwrap_or_else(|| unreachable!("each bounded above"));
        let queue_url = env.required(
            "QUEUE_URL",
            "set it to the orders queue, whose failed records are postponed and requeued",
        )?;
        let dlq_url = env.required(
            "DLQ_URL",
            "set it to the orders queue's dead-letter queue, where records that can never be stored are sent",
        )?;
        let max_receive_count = env.required_bounded(
            "MAX_RECEIVE_COUNT",
            MaxReceiveCount::MIN..=MaxReceiveCount::MAX,
            "the queue's maxReceiveCount, a whole number",
            "set it to the queue's maxReceiveCount, so that valid records are requeued before they run out of receives",
        )?;
        Ok(Self {
            database,
            queue_url,
            dlq_url,
            retry: RetryPolicy {
                backoff,
                max_receive_count: MaxReceiveCount::new(max_receive_count)
                    .unwrap_or_else(|| unreachable!("bounded above")),
            },
        })
    }
}

/// The settings of the `migrate` task: the database as the tables' owner,
/// and the roles to grant.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub database: DatabaseConfig,
    /// `DB_WRITER_USER`: the consumer's `DB_USER`.
    pub writer: String,
    /// `DB_READER_USER`: the status function's `DB_USER`, when it has one.
    pub reader: Option<String>,
}

impl FromEnv for MigrateConfig {
    type Error = ConfigError;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig::read(env)?,
            writer: env.required("DB_WRITER_USER", "set it to the consumer's database user (its DB_USER), which the migration creates and grants")?,
            reader: env.optional("DB_READER_USER"),
        })
    }
}

/// The settings of the `provision` task.
#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    /// `MIGRATE_FUNCTION`: the migrate function's name or ARN.
    pub migrate_function: String,
    /// `WRITER_SECRET_ARN`: the writer's secret, `{"username", "password"}`.
    pub writer_secret_arn: String,
    /// `READER_SECRET_ARN`: the reader's, when the stack has a reader.
    pub reader_secret_arn: Option<String>,
}

impl FromEnv for ProvisionConfig {
    type Error = ConfigError;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
        Ok(Self {
            migrate_function: env.required(
                "MIGRATE_FUNCTION",
                "set it to the migrate function, which applies the schema in the VPC",
            )?,
            writer_secret_arn: env.required(
                "WRITER_SECRET_ARN",
                "set it to the ARN of the writer's secret, whose password the writer role is given",
            )?,
            reader_secret_arn: env.optional("READER_SECRET_ARN"),
        })
    }
}

impl FromEnv for DatabaseConfig {
    type Error = ConfigError;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
        let mut database = match env.optional("DATABASE_URL") {
            Some(url) => DatabaseConfig::from_url(&url)?,
            None => DatabaseConfig::from_parts(env)?,
        };
        database.ca_bundle = env.optional("DB_CA_BUNDLE").map(PathBuf::from);
        if database.auth == DbAuth::Iam && database.ca_bundle.is_none() {
            return Err(ConfigError::IamWithoutTls);
        }
        Ok(database)
    }
}

impl DatabaseConfig {
    /// From a connection string, as used locally.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let pg: tokio_postgres::Config = url.parse().map_err(ConfigError::InvalidDatabaseUrl)?;
        Ok(Self::with_defaults(pg, DbAuth::ConnectionString))
    }

    fn from_parts(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
        let host = env.optional("DB_HOST").ok_or(ConfigError::NoDatabase)?;
        let required = |name| env.required(name, "it is required with DB_HOST");
        let port = env.bounded("DB_PORT", 5432, 1..=u16::MAX, "a port number")?;
        let auth = required("DB_AUTH")?;
        if auth != "iam" {
            return Err(EnvError::Invalid {
                name: "DB_AUTH",
                value: auth,
                expected: "\"iam\" (passwords are never read from the environment; use DATABASE_URL locally)".into(),
            }
            .into());
        }
        let mut pg = tokio_postgres::Config::new();
        pg.host(&host)
            .port(port)
            .dbname(&required("DB_NAME")?)
            .user(&required("DB_USER")?);
        Ok(Self::with_defaults(pg, DbAuth::Iam))
    }

    fn with_defaults(mut pg: tokio_postgres::Config, auth: DbAuth) -> Self {
        if pg.get_application_name().is_none() {
            pg.application_name("orders-consumer");
        }
        if pg.get_connect_timeout().is_none() {
            // A batch fails fast while the database is unreachable, instead of
            // hanging until the function times out.
            pg.connect_timeout(Duration::from_secs(5));
        }
        // A peer that vanished (a failover) is noticed within seconds, not
        // when the kernel gives up; the handler's deadline covers a stalled one.
        pg.tcp_user_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        Self {
            pg,
            auth,
            ca_bundle: None,
        }
    }

    /// Host and port the connection goes to.
    pub fn endpoint(&self) -> (String, u16) {
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        (host, self.pg.get_ports().first().copied().unwrap_or(5432))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The settings given, over a queue and its maxReceiveCount.
    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all: HashMap<String, String> = [
            ("QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/orders"),
            (
                "DLQ_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/orders-dlq",
            ),
            ("MAX_RECEIVE_COUNT", "6"),
        ]
        .iter()
        .chain(vars)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.retain(|_, v| !v.is_empty());
        Config::from_lookup(|name| all.get(name).cloned())
    }

    #[test]
    fn the_queues_and_the_max_receive_count_are_required_and_named_when_missing() {
        for name in ["QUEUE_URL", "DLQ_URL", "MAX_RECEIVE_COUNT"] {
            let err = config(&[
                ("DATABASE_URL", "postgres://app@127.0.0.1/orders"),
                (name, ""),
            ])
            .expect_err("required");
            assert!(
                matches!(err, ConfigError::Env(EnvError::Required { .. })),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("{name} is not set: set it to")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_url_gets_a_connect_timeout_and_an_application_name() {
        let config =
            config(&[("DATABASE_URL", "postgres://app@127.0.0.1:5432/orders")]).expect("valid");
        assert_eq!(
            config.database.pg.get_application_name(),
            Some("orders-consumer")
        );
        assert!(config.database.pg.get_connect_timeout().is_some());
        assert_eq!(
            config.database.pg.get_tcp_user_timeout(),
            Some(&Duration::from_secs(10))
        );
        assert!(config.database.pg.get_keepalives());
        assert_eq!(config.database.auth, DbAuth::ConnectionString);
        assert!(config.database.ca_bundle.is_none());
    }

    #[test]
    fn a_malformed_url_is_refused_with_the_variable_named() {
        let err =
            config(&[("DATABASE_URL", "postgres://app@host:notaport/db")]).expect_err("bad port");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn nothing_configured_says_what_to_set() {
        let err = config(&[]).expect_err("nothing set");
        assert!(
            err.to_string().contains("DATABASE_URL") && err.to_string().contains("DB_HOST"),
            "{err}"
        );
    }

    #[test]
    fn the_aws_settings_use_iam_auth_over_verified_tls() {
        let config = config(&[
            ("DB_HOST", "proxy.example.internal"),
            ("DB_NAME", "orders"),
            ("DB_USER", "orders_consumer"),
            ("DB_AUTH", "iam"),
            ("DB_CA_BUNDLE", "/opt/rds-ca/global-bundle.pem"),
            ("QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/orders"),
        ])
        .expect("valid");
        assert_eq!(config.database.auth, DbAuth::Iam);
        assert_eq!(
            config.database.endpoint(),
            ("proxy.example.internal".to_owned(), 5432)
        );
        assert_eq!(config.database.pg.get_user(), Some("orders_consumer"));
        assert!(config.database.pg.get_password().is_none());
        assert_eq!(
            config.database.ca_bundle,
            Some(PathBuf::from("/opt/rds-ca/global-bundle.pem"))
        );
        assert_eq!(
            config.queue_url,
            "https://sqs.eu-west-1.amazonaws.com/1/orders"
        );
    }

    #[test]
    fn iam_auth_without_a_ca_bundle_is_refused() {
        let err = config(&[
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
            ("DB_USER", "u"),
            ("DB_AUTH", "iam"),
        ])
        .expect_err("no TLS");
        assert!(matches!(err, ConfigError::IamWithoutTls), "{err}");
    }

    #[test]
    fn a_password_mode_other_than_iam_is_refused() {
        let err = config(&[
            ("DB_HOST", "h"),
            ("DB_NAME", "d"),
            ("DB_USER", "u"),
            ("DB_AUTH", "password"),
        ])
        .expect_err("no passwords from the environment");
        assert!(err.to_string().contains("DB_AUTH"), "{err}");
    }

    #[test]
    fn the_backoff_can_be_scaled_down_for_tests() {
        let config = config(&[
            ("DATABASE_URL", "postgres://app@127.0.0.1/orders"),
            ("RETRY_BASE_SECONDS", "1"),
            ("RETRY_MULTIPLIER", "2"),
        ])
        .expect("valid");
        assert_eq!(config.retry.backoff.base(), Duration::from_secs(1));
        assert_eq!(config.retry.backoff.multiplier(), 2);
        let err = config_err("RETRY_MULTIPLIER", "x");
        assert!(err.contains("RETRY_MULTIPLIER"), "{err}");
    }

    #[test]
    fn the_backoff_is_capped_at_a_minute_unless_told_otherwise() {
        let default =
            config(&[("DATABASE_URL", "postgres://app@127.0.0.1/orders")]).expect("valid");
        assert_eq!(default.retry.backoff.cap(), Duration::from_secs(60));
        let scaled = config(&[
            ("DATABASE_URL", "postgres://app@127.0.0.1/orders"),
            ("RETRY_CAP_SECONDS", "5"),
        ])
        .expect("valid");
        assert_eq!(scaled.retry.backoff.cap(), Duration::from_secs(5));
    }

    #[test]
    fn a_backoff_outside_the_promised_bounds_is_refused_by_name() {
        for (name, value) in [
            ("RETRY_BASE_SECONDS", "0"),
            ("RETRY_MULTIPLIER", "0"),
            ("RETRY_CAP_SECONDS", "0"),
            ("RETRY_CAP_SECONDS", "901"),
        ] {
            let err = config_err(name, value);
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn the_max_receive_count_turns_requeueing_on_and_must_leave_room_for_a_retry() {
        let config = config(&[
            ("DATABASE_URL", "postgres://app@127.0.0.1/orders"),
            ("MAX_RECEIVE_COUNT", "5"),
        ])
        .expect("valid");
        assert_eq!(config.retry.max_receive_count.get(), 5);
        let err = config_err("MAX_RECEIVE_COUNT", "1");
        assert!(err.contains("2 to 1000"), "{err}");
    }

    fn config_err(name: &str, value: &str) -> String {
        config(&[
            ("DATABASE_URL", "postgres://app@127.0.0.1/orders"),
            (name, value),
        ])
        .expect_err("invalid")
        .to_string()
    }
}
