//! The customer-facing HTTP service: it validates orders and enqueues them to
//! SQS, answering `202 Accepted` only once SQS has stored the message. It never
//! touches the database.
//!
//! # Layout
//! - [`routes`]: [`router`] over an [`AppState`]; [`extract`] reads and validates
//!   `POST /orders`'s body, [`catalogue`] prices it, [`auth`] checks the sign-in.
//! - [`queue`]: the [`OrderQueue`] seam and [`SqsQueue`], which batches sends.
//! - Protection: [`limits`] (load shedding, [`ClientCap`]), [`rate_limit`], with
//!   [`client_ip`] telling clients apart; [`server`] (accept loop, timeouts,
//!   graceful shutdown).
//! - Answers: [`problem`] (RFC 9457), [`openapi`], [`page`], [`readiness`],
//!   [`request_id`]; [`metrics`] on a listener of its own; [`config`], [`telemetry`].
//!
//! [`run`] wires these together for the binary; [`serve`] is what tests drive.

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
pub use rate_limit::RateLimit;
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
/// their SQS sends) finish. AWS settings come from the standard environment;
/// the endpoint is never derived from the queue URL.
pub async fn run(config: Config) -> Result<(), RunError> {
    run_with(config, SqsQueue::new).await
}

/// [`run`] with the queue `queue` builds (`scripts/bench producer`'s baseline).
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
        config.limits,
        std::future::pending(),
    ));
    tracing::info!(url = %format_args!("http://{}/metrics", config.metrics_addr), "serving metrics");
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

/// The state [`run`] serves over `queue`, with `config`'s limits.
pub fn configured_state<Q>(config: &Config, queue: Arc<Q>) -> AppState<Q> {
    AppState::new(queue, config.request_timeout())
        .with_limits(config.limits)
        .with_rate_limit(config.rate_limit.map(RateLimit::new))
        .with_client_cap(config.max_in_flight_per_client.map(ClientCap::new))
        .with_trusted_proxies(config.trusted_proxies.clone())
}

/// Serves [`router`] on `listener` until `shutdown` resolves and in-flight
/// requests are answered.
pub async fn serve<Q: OrderQueue>(
    listener: TcpListener,
    state: AppState<Q>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    server::serve_router(listener, router(state), limits, shutdown).await
}
