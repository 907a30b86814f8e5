//! The order-status function: the Lambda target the load balancer invokes for
//! `GET /orders` (the signed-in customer's recent orders, newest first) and
//! `GET /orders/{order_id}`, read from PostgreSQL.
//!
//! # Answers
//! - `200` `{"status": "stored", …}`: when, the lines and the total as stored;
//! - `200` `{"status": "kept_aside", …}`: the id was already used for a
//!   different order, so this one is in `order_conflicts`, with what to do;
//! - `404` problem+json: no such order of this customer's is stored, yet.
//!   Another customer's order is answered with the same bytes;
//! - `503` problem+json with `Retry-After`: the database cannot be reached
//!   within [`DEADLINE`] (RDS Proxy's own borrow timeout is 10 s);
//! - `401` problem+json: the event carries no valid claims.
//!
//! # Trust
//! The function sits in the VPC with no route out, so it cannot fetch the
//! load balancer's public keys as the producer does. It reads the customer
//! from the `x-amzn-oidc-data` the load balancer put in the event, checks the
//! token's `alg`, `signer` (this load balancer's ARN, `ALB_SIGNER_ARN`) and
//! `exp`, and never answers without them (`support::claims::unverified_customer`).
//! The signature rests on the invocation path: the function's resource policy
//! admits only the load balancer's target group, and the listener rule
//! authenticates before it forwards; a caller that may invoke the function
//! directly could forge claims, so no one else may.
//!
//! # Bounded
//! At most [`MAX_CONNECTIONS`] connections per execution environment, each
//! read given up after [`DEADLINE`]; reads are single-row lookups and one
//! bounded list on indexes ([`orders`]), so they hold no lock the consumer's
//! inserts wait for.
//!
//! # Layout
//! - [`handle`]: one request in, one answer out; its dependencies are arguments.
//! - [`orders`]: the two reads and their answers.
//! - [`run`]: the Lambda runtime's wiring, with an EMF line per answer ([`answer_emf`]).

pub mod orders;

use std::time::{Duration, SystemTime};

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, StatusCode, header};
use consumer_lambda::DatabaseConfig;
pub use consumer_lambda::database::Pool;
use consumer_lambda::database::{ConnectError, Connector};
use serde::Serialize;
use support::FromEnv;
use support::claims::{CLAIMS_HEADER, Refused, SignInConfig, unverified_customer};
use support::problem::{PROBLEM_JSON, Problem};
use tracing::Instrument;
use uuid::Uuid;

use crate::orders::ReadError;

/// How long a request may wait for the database before it is answered `503`:
/// a customer should not wait for RDS Proxy's 10 s borrow timeout.
pub const DEADLINE: Duration = Duration::from_secs(3);
/// Connections per execution environment: the load balancer invokes one
/// request at a time per environment, so one is used and a second replaces a
/// broken one without waiting.
pub const MAX_CONNECTIONS: usize = 2;
/// How many orders `GET /orders` lists.
pub const MAX_LISTED: i64 = 20;
/// What `Retry-After` says while the database cannot be reached.
pub const RETRY_AFTER_SECS: u64 = 5;
/// Kept back from Lambda's own deadline, to answer before it.
const LAMBDA_MARGIN: Duration = Duration::from_millis(500);

/// A pool of at most [`MAX_CONNECTIONS`] to `database`, as the consumer
/// connects (TLS and RDS IAM tokens when configured); connects nothing yet.
pub async fn pool(mut database: DatabaseConfig) -> Result<Pool, ConnectError> {
    database.pg.application_name("orders-status");
    Ok(Connector::new(database).await?.into_pool(MAX_CONNECTIONS))
}

/// The answer to one request of the load balancer's, for the customer its
/// claims name (checked against `signer` at `now`, seconds since the epoch),
/// read through `pool` within `deadline`.
pub async fn handle(
    pool: &Pool,
    signer: &str,
    request: &AlbTargetGroupRequest,
    now: i64,
    deadline: Duration,
) -> AlbTargetGroupResponse {
    let headers = if request.multi_value_headers.is_empty() {
        &request.headers
    } else {
        &request.multi_value_headers
    };
    let span = tracing::info_span!(
        "request",
        trace_id = headers
            .get("x-amzn-trace-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        path = request.path.as_deref().unwrap_or_default(),
        customer = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let (status, content_type, body, retry_after) =
        answer(pool, signer, request, headers, now, deadline)
            .instrument(span.clone())
            .await;
    span.record("status", status);
    span.in_scope(|| tracing::info!("answered"));
    response(
        status,
        content_type,
        body,
        retry_after,
        !request.multi_value_headers.is_empty(),
    )
}

type Answer = (u16, &'static str, String, Option<u64>);

async fn answer(
    pool: &Pool,
    signer: &str,
    request: &AlbTargetGroupRequest,
    headers: &HeaderMap,
    now: i64,
    deadline: Duration,
) -> Answer {
    let customer = headers
        .get(CLAIMS_HEADER)
        .ok_or(Refused::Missing)
        .and_then(|token| {
            token
                .to_str()
                .map_err(|_| Refused::Invalid("not ASCII".to_owned()))
        })
        .and_then(|token| unverified_customer(token, signer, now));
    let customer = match customer {
        Ok(customer) => customer,
        Err(refused) => {
            tracing::info!(reason = %refused, "request without valid claims");
            return problem(refused.into_problem(RETRY_AFTER_SECS));
        }
    };
    tracing::Span::current().record("customer", customer.as_str());
    let path = request.path.as_deref().unwrap_or_default();
    let read = match (request.http_method.as_str(), path.strip_prefix("/orders")) {
        ("GET", Some("")) => Read::Recent,
        ("GET", Some(rest)) => match rest.strip_prefix('/').map(Uuid::try_parse) {
            Some(Ok(order_id)) => Read::One(order_id),
            // No order has an id that is not a UUID: as missing as any other.
            Some(Err(_)) => return problem(not_stored()),
            None => return problem(no_such_page()),
        },
        _ => return problem(no_such_page()),
    };
    match tokio::time::timeout(deadline, read.run(pool, &customer)).await {
        Ok(Ok(Some(body))) => (200, "application/json", body, None),
        Ok(Ok(None)) => problem(not_stored()),
        Ok(Err(err)) => {
            tracing::warn!(error = %support::error_chain(&err), "the database cannot be read");
            problem(catching_up())
        }
        Err(_) => {
            tracing::warn!(?deadline, "no answer from the database within the deadline");
            problem(catching_up())
        }
    }
}

enum Read {
    One(Uuid),
    Recent,
}

impl Read {
    /// The answer's JSON, or `None` for an order this customer has not stored.
    async fn run(&self, pool: &Pool, customer: &str) -> Result<Option<String>, ReadError> {
        let client = pool.get().await.map_err(ReadError::Connect)?;
        Ok(match self {
            Read::One(order_id) => orders::one(&client, customer, *order_id)
                .await?
                .map(|order| to_json(&order)),
            Read::Recent => Some(to_json(&orders::Recent {
                orders: orders::recent(&client, customer, MAX_LISTED).await?,
            })),
        })
    }
}

fn to_json(value: &impl Serialize) -> String {
    // Strings, numbers and JSON values always serialize.
    serde_json::to_string(value).unwrap_or_else(|err| unreachable!("{err}"))
}

fn problem(problem: Problem) -> Answer {
    (
        problem.status,
        PROBLEM_JSON,
        to_json(&problem),
        problem.retry_after_secs,
    )
}

/// The same for a missing order and another customer's: nothing tells them apart.
fn not_stored() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "No order with this number is stored yet. If you placed it just now, it is on its \
         way: look again in a few seconds.",
    )
}

fn no_such_page() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "There is nothing here: GET /orders lists your orders, GET /orders/{order_id} shows one.",
    )
}

fn catching_up() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The shop's system is catching up and cannot show your orders right now. An order \
             that was accepted is safe in the queue and will be stored; look again in \
             {RETRY_AFTER_SECS} seconds."
        ),
    )
    .with_retry_after(RETRY_AFTER_SECS)
}

/// The load balancer's Lambda response: headers in the form the target group
/// sends them (multi-value when `lambda.multi_value_headers.enabled`, which
/// the response must then use too), a text body, no caching of private data
/// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/lambda-functions.html#respond-to-load-balancer>,
/// `#multi-value-headers`). The JSON stays far below the response limit of
/// 1 MB: at most [`MAX_LISTED`] orders of at most 64 KiB requests each.
fn response(
    status: u16,
    content_type: &'static str,
    body: String,
    retry_after: Option<u64>,
    multi_value: bool,
) -> AlbTargetGroupResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or_default();
    let mut answer = AlbTargetGroupResponse::default();
    answer.status_code = i64::from(status);
    answer.status_description = Some(format!("{status} {reason}"));
    if multi_value {
        answer.multi_value_headers = headers;
    } else {
        answer.headers = headers;
    }
    answer.body = Some(Body::Text(body));
    answer
}

/// The CloudWatch namespace of the status function's metrics.
pub const NAMESPACE: &str = "OrderStatus";
/// The metric counted once per answer, by `Status`.
pub const ANSWERS: &str = "Answers";

/// One answer as a CloudWatch Embedded Metric Format line: `Answers`,
/// dimensioned by function and HTTP status.
pub fn answer_emf(function_name: &str, status: i64, timestamp_ms: u128) -> String {
    serde_json::json!({
        "FunctionName": function_name,
        "Status": status.to_string(),
        ANSWERS: 1,
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName", "Status"]],
                "Metrics": [{"Name": ANSWERS, "Unit": "Count"}],
            }],
        },
    })
    .to_string()
}

/// Why the function cannot start; each says what to set.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] consumer_lambda::config::ConfigError),
    #[error(transparent)]
    Env(#[from] support::EnvError),
    #[error(
        "ALB_SIGNER_ARN is not set: set it to the load balancer's ARN, whose claims alone are answered"
    )]
    NoSigner,
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Reads the settings (`DATABASE_URL` or the consumer's `DB_*`, and
/// `ALB_SIGNER_ARN`), builds the pool once, and serves invocations.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    let env = support::process_env();
    let database = DatabaseConfig::read(&env).map_err(StartError::from)?;
    let signer = SignInConfig::read(&env)
        .map_err(StartError::from)?
        .ok_or(StartError::NoSigner)?
        .signer;
    let pool = pool(database).await.map_err(StartError::from)?;
    let (pool, signer) = (&pool, signer.as_str());
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<AlbTargetGroupRequest>| async move {
            let now = SystemTime::now();
            let left = event
                .context
                .deadline()
                .duration_since(now)
                .unwrap_or_default()
                .saturating_sub(LAMBDA_MARGIN);
            let since_epoch = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            // Boxed: the read's future is too deep for the runtime's own to lay out inline.
            let answer = Box::pin(handle(
                pool,
                signer,
                &event.payload,
                i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
                DEADLINE.min(left),
            ))
            .await;
            println!(
                "{}",
                answer_emf(
                    &event.context.env_config.function_name,
                    answer.status_code,
                    since_epoch.as_millis()
                )
            );
            Ok::<_, lambda_runtime::Error>(answer)
        },
    ))
    .await
}
