//! The customer-facing HTTP service: it validates orders and enqueues them to
//! SQS, answering `202 Accepted` only once SQS has stored the message. It never
//! touches the database; the consumer Lambda drains the queue.
//!
//! # Layout
//! - [`config`]: [`Config`], read once from the environment at start-up.
//! - [`catalogue`]: [`catalogue::Prices`], the shop's catalogue (a file, re-read when it
//!   changes) and the pricing of every order by it (422, 409).
//! - [`routes`]: [`router`] (`POST /orders`, `GET /healthz`, `GET /readyz`, `GET /openapi.json`,
//!   and [`page`]'s routes) over an [`AppState`]; `POST /orders`'s handler, `place_order`.
//! - [`limits`]: [`Limits`], the caps on work in progress and the client timeouts; load shedding;
//!   [`ClientCap`], each client's requests in progress (429).
//! - [`server`]: the HTTP/1 accept loop (header-read timeout, connection cap, graceful shutdown).
//! - [`rate_limit`]: [`RateLimit`], a token bucket per client (429).
//! - [`auth`]: who is ordering: the load balancer's signed `x-amzn-oidc-data`, verified (`401`/`403`).
//! - [`client_ip`]: [`TrustedProxies`], who the client is (the TCP peer, or `X-Forwarded-For` behind trusted proxies).
//! - [`extract`]: [`extract::ValidOrder`], the typed extractor of `POST /orders` (415, 408, 413, 400, 422).
//! - [`metrics`]: [`metrics::Metrics`], served as OpenMetrics text on `METRICS_ADDR` (its own listener).
//! - [`openapi`]: `GET /openapi.json`, OpenAPI 3.1 generated with utoipa.
//! - [`problem`]: [`Problem`], every error answer as `application/problem+json` (RFC 9457).
//! - [`queue`]: the [`OrderQueue`] seam and [`SqsQueue`], which coalesces concurrent
//!   sends into `SendMessageBatch` calls with a bounded wait (the private `queue::batcher`)
//!   and makes its SQS calls in one place (the private `queue::sqs`).
//! - [`readiness`]: `/readyz`'s check, cached so that it costs SQS at most one call per few seconds.
//! - [`request_id`]: the `X-Request-Id` kept or generated, echoed, logged and sent as a message attribute.
//! - [`telemetry`]: log set-up (`RUST_LOG`, `LOG_FORMAT=json`).
//! - [`page`]: the customer's order page at `GET /`, embedded in the binary.
//!
//! [`run`] wires these together for the binary and stops on `support`'s
//! shutdown signal; [`serve`] is the part tests drive, with a listener and a
//! shutdown trigger of their own.

pub mod auth;
pub mod catalogue;
pub mod client_ip;
pub mod config;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod queue;
pub mod rate_limit;
pub mod readiness;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod telemetry;

pub use client_ip::TrustedProxies;
pub use config::{Config, ConfigError};
pub use limits::{ClientCap, Limits};
pub use metrics::Metrics;
pub use problem::Problem;
pub use queue::{EnqueueError, OrderMessage, OrderQueue, SqsOptions, SqsQueue};
pub use rate_limit::{RateLimit, RateQuota};
pub use routes::{AppState, router};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use tokio::net::TcpListener;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "no AWS region is configured: set AWS_REGION (on EC2 the instance metadata provides it)"
    )]
    NoRegion,
    #[error(
        "could not listen on {addr}: is another process using it? (set BIND_ADDR or METRICS_ADDR to change it)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    SignIn(#[from] auth::NoTlsRoots),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Runs the service until SIGTERM or Ctrl-C, then lets in-flight requests (and
/// their SQS sends) finish before returning.
///
/// Region, credentials and endpoint come from the standard AWS environment
/// (`AWS_REGION`, `AWS_ENDPOINT_URL`, the instance role, …); the endpoint is
/// never derived from the queue URL.
pub async fn run(config: Config) -> Result<(), RunError> {
    run_with(config, SqsQueue::new).await
}

/// [`run`] with the queue `queue` builds from the SQS configuration, the queue
/// URL and the options (`scripts/bench producer` runs its baseline this way).
pub async fn run_with<Q: OrderQueue>(
    config: Config,
    queue: impl FnOnce(aws_sdk_sqs::Config, String, SqsOptions) -> Q,
) -> Result<(), RunError> {
    let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
    if aws.region().is_none() {
        return Err(RunError::NoRegion);
    }
    let metrics = Metrics::new();
    let catalogue = catalogue::Watcher::start(config.catalogue_path.clone(), metrics.clone());
    let prices = catalogue.prices();
    // Ends with the process.
    tokio::spawn(catalogue.run(catalogue::CHECK_EVERY));
    let queue = Arc::new(queue(
        aws_sdk_sqs::Config::from(&aws),
        config.queue_url.clone(),
        SqsOptions {
            timeout: config.sqs_timeout,
            max_waiting: config.limits.max_waiting,
            metrics: metrics.clone(),
        },
    ));
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })
    };
    let listener = bind(config.bind_addr).await?;
    let metrics_listener = bind(config.metrics_addr).await?;
    // Scrapes need no graceful shutdown: the task ends with the process.
    let metrics_server = tokio::spawn(server::serve_router(
        metrics_listener,
        metrics::metrics_router(metrics.clone()),
        config.limits.server_settings(),
        std::future::pending(),
    ));
    tracing::info!(url = %metrics::describe(config.metrics_addr), "serving metrics");
    tracing::info!(
        addr = %config.bind_addr,
        queue_url = %config.queue_url,
        sqs_timeout_ms = config.sqs_timeout.as_millis(),
        limits = ?config.limits,
        max_in_flight_per_client = config.max_in_flight_per_client.map_or(0, |max| max.get()),
        "accepting orders"
    );
    if config.trusted_proxies.is_empty() {
        tracing::info!(
            "TRUSTED_PROXIES is empty: X-Forwarded-For is ignored and clients are rate limited \
             by their TCP peer address (behind a load balancer, set it to the balancer's subnets)"
        );
    }
    let verifier = match config.sign_in.clone() {
        Some(sign_in) => {
            tracing::info!(signer = %sign_in.signer, key_endpoint = %sign_in.key_endpoint, "orders need a sign-in");
            Some(Arc::new(auth::Verifier::new(sign_in)?))
        }
        None => {
            tracing::info!(
                "ALB_SIGNER_ARN is unset: trial mode, nobody can sign in and orders name their customer"
            );
            None
        }
    };
    let state = configured_state(&config, Arc::clone(&queue))
        .with_metrics(metrics)
        .with_prices(prices)
        .with_sign_in(verifier);
    // Ctrl-C, or SIGTERM from `systemctl stop`.
    let stop = support::shutdown_signal();
    let shutdown = async move {
        let signal = stop.await;
        tracing::info!("{signal} received: finishing in-flight requests");
    };
    let served = serve(listener, state, shutdown).await;
    metrics_server.abort();
    served.map_err(RunError::Serve)?;
    // Every request has been answered, so the router and its clones are gone.
    if let Some(queue) = Arc::into_inner(queue) {
        queue.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The state [`run`] serves over `queue`: `config`'s limits, rate limit and
/// per-client cap (tests serve it to drive the service as deployed).
pub fn configured_state<Q>(config: &Config, queue: Arc<Q>) -> AppState<Q> {
    let rate_limit = config
        .rate_limit
        .map(|quota| RateLimit::new(quota, config.trusted_proxies.clone()));
    let client_cap = config
        .max_in_flight_per_client
        .map(|max| ClientCap::new(max, config.trusted_proxies.clone()));
    AppState::new(queue, config.request_timeout())
        .with_limits(config.limits)
        .with_rate_limit(rate_limit)
        .with_client_cap(client_cap)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops
/// accepting connections and waits for in-flight requests to be answered.
pub async fn serve<Q: OrderQueue>(
    listener: TcpListener,
    state: AppState<Q>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.limits().server_settings();
    server::serve_router(listener, router(state), settings, shutdown).await
}
