//! Configuration, read once from the environment at start-up (AWS settings
//! are the SDK's own).

use std::net::SocketAddr;
use std::time::Duration;

use std::num::{NonZeroU32, NonZeroUsize};

use governor::Quota;
use support::{Env, EnvError, FromEnv};

use crate::client_ip::{InvalidProxy, TrustedProxies};
use crate::limits::Limits;
use crate::metrics::DEFAULT_METRICS_ADDR;

/// Orders per second a client may sustain when `RATE_LIMIT_PER_SECOND` is unset.
pub const DEFAULT_RATE_PER_SECOND: u32 = 20;

/// Far more than a person sends at once, far fewer than the in-flight cap.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT: usize = 32;

const MAX_RATE_LIMIT_BURST: NonZeroU32 = NonZeroU32::new(1_000_000).expect("not zero");

/// The EC2 service unit sets `0.0.0.0:8080`.
pub const DEFAULT_BIND_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_SQS_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond this clients time out first.
pub const MAX_SQS_TIMEOUT: Duration = Duration::from_secs(60);
/// What a request may take beyond its body and SQS timeouts (waiting for a batch).
const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// The producer's settings, each named by its variable in [`Config::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub queue_url: String,
    pub bind_addr: SocketAddr,
    /// A listener of its own, which the load balancer does not forward to.
    pub metrics_addr: SocketAddr,
    /// How long a send to SQS may take, retries included, before a 503.
    pub sqs_timeout: Duration,
    pub limits: Limits,
    /// `None`: off (`RATE_LIMIT_PER_SECOND=0`).
    pub rate_limit: Option<Quota>,
    /// `POST /orders` in progress per client, bodies still arriving included.
    pub max_in_flight_per_client: Option<NonZeroUsize>,
    /// Peers whose `X-Forwarded-For` is believed (the load balancer's subnets).
    pub trusted_proxies: TrustedProxies,
    pub catalogue_path: std::path::PathBuf,
    /// `None` is trial mode.
    pub sign_in: Option<crate::auth::SignInConfig>,
}

/// A setting that is missing or unusable, worded as what to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(
        "QUEUE_URL={0:?} is not a queue URL: set it to the http(s) URL of the orders queue, \
         e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
    )]
    InvalidQueueUrl(String),
    #[error("TRUSTED_PROXIES: {0}")]
    InvalidTrustedProxy(#[from] InvalidProxy),
}

impl FromEnv for Config {
    type Error = ConfigError;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
        let queue_url = env.required(
            "QUEUE_URL",
            "set it to the URL of the orders queue, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
        )?;
        let catalogue_path = env
            .required(
                "CATALOGUE_PATH",
                "set it to the shop's catalogue file, e.g. producer/catalogue.json",
            )?
            .into();
        let looks_like_url = ["https://", "http://"]
            .iter()
            .any(|scheme| queue_url.len() > scheme.len() && queue_url.starts_with(scheme));
        if !looks_like_url || queue_url.contains(char::is_whitespace) {
            return Err(ConfigError::InvalidQueueUrl(queue_url));
        }
        let address = |name, default: SocketAddr, example: &str| -> Result<SocketAddr, EnvError> {
            let expected = format!("an IP address and port such as {example}");
            Ok(env.parsed(name, &expected)?.unwrap_or(default))
        };
        let bind_addr = address("BIND_ADDR", DEFAULT_BIND_ADDR, "0.0.0.0:8080")?;
        let metrics_addr = address("METRICS_ADDR", DEFAULT_METRICS_ADDR, "127.0.0.1:9464")?;

        let millis = |name, default: Duration, max: Duration| {
            env.bounded(
                name,
                default.as_millis() as u64,
                1..=max.as_millis() as u64,
                "whole milliseconds",
            )
            .map(Duration::from_millis)
        };
        let sqs_timeout = millis("SQS_TIMEOUT_MS", DEFAULT_SQS_TIMEOUT, MAX_SQS_TIMEOUT)?;
        let count = |name, default: usize, min: usize| {
            env.bounded(name, default, min..=1_000_000, "a whole number")
        };
        let defaults = Limits::default();
        let longest = Duration::from_secs(600);
        let limits = Limits {
            max_in_flight: count("MAX_IN_FLIGHT", defaults.max_in_flight, 1)?,
            max_waiting: count("MAX_WAITING", defaults.max_waiting, 1)?,
            max_connections: count("MAX_CONNECTIONS", defaults.max_connections, 1)?,
            header_read_timeout: millis(
                "HEADER_READ_TIMEOUT_MS",
                defaults.header_read_timeout,
                longest,
            )?,
            body_read_timeout: millis("BODY_READ_TIMEOUT_MS", defaults.body_read_timeout, longest)?,
        };

        let per_second = env.bounded(
            "RATE_LIMIT_PER_SECOND",
            DEFAULT_RATE_PER_SECOND,
            0..=1_000_000,
            "a whole number",
        )?;
        // Twice the rate unless told otherwise.
        let quota = |per_second: NonZeroU32| {
            let burst = per_second.saturating_add(per_second.get());
            let bounds = NonZeroU32::MIN..=MAX_RATE_LIMIT_BURST;
            let burst = env.bounded("RATE_LIMIT_BURST", burst, bounds, "a whole number");
            burst.map(|burst| Quota::per_second(per_second).allow_burst(burst))
        };
        let rate_limit = NonZeroU32::new(per_second).map(quota).transpose()?;
        let max_in_flight_per_client = NonZeroUsize::new(count(
            "MAX_IN_FLIGHT_PER_CLIENT",
            DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
            0,
        )?);
        let proxies = env.optional("TRUSTED_PROXIES").unwrap_or_default();

        Ok(Self {
            catalogue_path,
            queue_url,
            bind_addr,
            metrics_addr,
            sqs_timeout,
            limits,
            rate_limit,
            max_in_flight_per_client,
            trusted_proxies: TrustedProxies::parse(&proxies)?,
            sign_in: crate::auth::SignInConfig::read(env)?,
        })
    }
}

impl Config {
    /// The longest a request may take: a backstop behind the body and SQS timeouts.
    pub fn request_timeout(&self) -> Duration {
        self.limits.body_read_timeout + self.sqs_timeout + REQUEST_TIMEOUT_MARGIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const QUEUE_URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders";

    /// `vars`, with a catalogue path unless they set one (empty: unset).
    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = [("CATALOGUE_PATH", "/etc/catalogue.json")]
            .iter()
            .chain(vars)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn only_the_queue_url_is_required() {
        let config = config(&[("QUEUE_URL", QUEUE_URL)]).expect("valid");
        assert_eq!(config.queue_url, QUEUE_URL);
        assert_eq!(config.bind_addr, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(
            config.metrics_addr,
            "127.0.0.1:9464".parse().expect("address"),
            "metrics on loopback, apart from the port the load balancer reaches"
        );
        assert_eq!(config.sqs_timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_catalogue_path_is_required() {
        let set = config(&[("QUEUE_URL", QUEUE_URL)]).expect("valid");
        assert_eq!(
            set.catalogue_path,
            std::path::Path::new("/etc/catalogue.json")
        );
        let err = config(&[("QUEUE_URL", QUEUE_URL), ("CATALOGUE_PATH", "")]).expect_err("unset");
        assert!(
            err.to_string().starts_with("CATALOGUE_PATH is not set"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_queue_url_says_what_to_set() {
        let err = config(&[]).expect_err("missing");
        assert!(err.to_string().starts_with("QUEUE_URL is not set"), "{err}");
        let err = config(&[("QUEUE_URL", " ")]).expect_err("empty");
        assert!(
            matches!(err, ConfigError::Env(EnvError::Required { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_queue_name_is_not_a_queue_url() {
        let err = config(&[("QUEUE_URL", "orders")]).expect_err("not a URL");
        assert!(err.to_string().contains("QUEUE_URL=\"orders\""), "{err}");
    }

    #[test]
    fn the_bind_address_and_timeout_can_be_set() {
        let config = config(&[
            ("QUEUE_URL", QUEUE_URL),
            ("BIND_ADDR", "0.0.0.0:9000"),
            ("SQS_TIMEOUT_MS", "1500"),
        ])
        .expect("valid");
        assert_eq!(config.bind_addr, "0.0.0.0:9000".parse().expect("address"));
        assert_eq!(config.sqs_timeout, Duration::from_millis(1500));
        assert_eq!(config.request_timeout(), Duration::from_millis(11_500));
    }

    #[test]
    fn the_caps_and_client_timeouts_default_to_the_limits_defaults() {
        let config = config(&[("QUEUE_URL", QUEUE_URL)]).expect("valid");
        assert_eq!(config.limits, Limits::default());
        assert!(
            config.limits.header_read_timeout > Duration::from_secs(60),
            "longer than the load balancer's idle timeout"
        );
    }

    #[test]
    fn clients_are_rate_limited_by_default_and_no_proxy_is_trusted() {
        let config = config(&[("QUEUE_URL", QUEUE_URL)]).expect("valid");
        let quota = config.rate_limit.expect("on by default");
        assert_eq!(quota.replenish_interval(), Duration::from_millis(50));
        assert_eq!(quota.burst_size().get(), 40);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(
            config.max_in_flight_per_client,
            NonZeroUsize::new(DEFAULT_MAX_IN_FLIGHT_PER_CLIENT),
            "capped by default"
        );
    }

    #[test]
    fn the_rate_limit_and_the_client_cap_can_be_set_or_turned_off_and_proxies_trusted() {
        let set = config(&[
            ("QUEUE_URL", QUEUE_URL),
            ("RATE_LIMIT_PER_SECOND", "5"),
            ("RATE_LIMIT_BURST", "7"),
            ("MAX_IN_FLIGHT_PER_CLIENT", "5"),
            ("TRUSTED_PROXIES", "10.0.0.0/24, 10.0.1.0/24"),
        ])
        .expect("valid");
        assert_eq!(set.max_in_flight_per_client, NonZeroUsize::new(5));
        let quota = set.rate_limit.expect("on");
        assert_eq!(quota.replenish_interval(), Duration::from_millis(200));
        assert_eq!(quota.burst_size().get(), 7);
        assert_eq!(
            set.trusted_proxies,
            TrustedProxies::parse("10.0.0.0/24,10.0.1.0/24").expect("valid")
        );

        let off = config(&[
            ("QUEUE_URL", QUEUE_URL),
            ("RATE_LIMIT_PER_SECOND", "0"),
            ("MAX_IN_FLIGHT_PER_CLIENT", "0"),
        ])
        .expect("valid");
        assert_eq!(off.rate_limit, None);
        assert_eq!(off.max_in_flight_per_client, None);

        let err = config(&[("QUEUE_URL", QUEUE_URL), ("TRUSTED_PROXIES", "the-alb")])
            .expect_err("not a CIDR");
        assert!(err.to_string().starts_with("TRUSTED_PROXIES:"), "{err}");
    }

    #[test]
    fn the_caps_and_client_timeouts_can_be_set_within_bounds() {
        let set = config(&[
            ("QUEUE_URL", QUEUE_URL),
            ("MAX_IN_FLIGHT", "10"),
            ("MAX_WAITING", "20"),
            ("MAX_CONNECTIONS", "30"),
            ("HEADER_READ_TIMEOUT_MS", "1000"),
            ("BODY_READ_TIMEOUT_MS", "2000"),
        ])
        .expect("valid");
        assert_eq!(
            set.limits,
            Limits {
                max_in_flight: 10,
                max_waiting: 20,
                max_connections: 30,
                header_read_timeout: Duration::from_secs(1),
                body_read_timeout: Duration::from_secs(2),
            }
        );
        for (name, value) in [("MAX_IN_FLIGHT", "0"), ("BODY_READ_TIMEOUT_MS", "soon")] {
            let err = config(&[("QUEUE_URL", QUEUE_URL), (name, value)]).expect_err("bad");
            assert!(err.to_string().starts_with(&format!("{name}=")), "{err}");
        }
    }

    #[test]
    fn bad_optional_settings_are_named() {
        let err =
            config(&[("QUEUE_URL", QUEUE_URL), ("BIND_ADDR", "localhost")]).expect_err("no port");
        assert!(
            err.to_string().starts_with("BIND_ADDR=\"localhost\""),
            "{err}"
        );
        for value in ["0", "-1", "5s", "60001"] {
            let err = config(&[("QUEUE_URL", QUEUE_URL), ("SQS_TIMEOUT_MS", value)])
                .expect_err("bad timeout");
            assert!(err.to_string().starts_with("SQS_TIMEOUT_MS="), "{err}");
        }
    }
}
