//! The consumer's settings, read once per execution environment.

/// Why the consumer cannot start; each says what to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "DATABASE_URL is not set: set it to the orders database, e.g. postgres://user@host:5432/orders"
    )]
    MissingDatabaseUrl,
    #[error("DATABASE_URL is not a valid PostgreSQL connection string")]
    InvalidDatabaseUrl(#[source] tokio_postgres::Error),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database: tokio_postgres::Config,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = std::env::var("DATABASE_URL").map_err(|_| ConfigError::MissingDatabaseUrl)?;
        Self::from_database_url(&url)
    }

    pub fn from_database_url(url: &str) -> Result<Self, ConfigError> {
        let mut database: tokio_postgres::Config =
            url.parse().map_err(ConfigError::InvalidDatabaseUrl)?;
        if database.get_application_name().is_none() {
            database.application_name("orders-consumer");
        }
        if database.get_connect_timeout().is_none() {
            database.connect_timeout(std::time::Duration::from_secs(5));
        }
        Ok(Self { database })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_a_connect_timeout_and_an_application_name() {
        let config =
            Config::from_database_url("postgres://app@127.0.0.1:5432/orders").expect("valid");
        assert_eq!(
            config.database.get_application_name(),
            Some("orders-consumer")
        );
        assert!(config.database.get_connect_timeout().is_some());
    }

    #[test]
    fn a_malformed_url_is_refused_with_the_variable_named() {
        let err =
            Config::from_database_url("postgres://app@host:notaport/db").expect_err("bad port");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }
}
