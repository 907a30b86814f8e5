//! The breaker's AWS side with the real Lambda SDK client against a local
//! endpoint that answers as Lambda's API does (REST-JSON: `Invoke`,
//! `GetEventSourceMapping`, `UpdateEventSourceMapping`), so the client parses
//! every request it makes and every answer it gets.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use breaker::{Action, Health, LambdaMapping, LambdaProbe, Mapping, MappingState, PROBE_PAYLOAD};

fn unhealthy(health: Health) -> String {
    match health {
        Health::Unhealthy(reason) => reason,
        other => panic!("expected unhealthy, got {other:?}"),
    }
}

/// How the stand-in Lambda answers `Invoke`.
#[derive(Clone, Copy)]
enum Consumer {
    Healthy,
    CannotStore,
    /// The runtime exited during init: Lambda reports a function error.
    FailsToStart,
    /// The account's concurrency is exhausted.
    Throttled,
    /// The breaker's role may not invoke.
    Denied,
}

struct Lambda {
    consumer: Consumer,
    state: Mutex<String>,
    /// Each request, as "METHOD path body".
    requests: Mutex<Vec<String>>,
}

type Shared = Arc<Lambda>;

fn json(status: StatusCode, headers: &[(&'static str, &str)], body: String) -> Response {
    let mut response = (status, body).into_response();
    let map = response.headers_mut();
    map.insert("content-type", "application/json".parse().expect("header"));
    map.insert("x-amzn-requestid", "5e2f7d0c-1".parse().expect("header"));
    for (name, value) in headers {
        map.insert(*name, value.parse().expect("header"));
    }
    response
}

async fn invoke(
    State(lambda): State<Shared>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lambda.requests.lock().expect("lock").push(format!(
        "POST invoke {function} {} {}",
        headers
            .get("x-amz-invocation-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("RequestResponse"),
        String::from_utf8_lossy(&body)
    ));
    match lambda.consumer {
        Consumer::Healthy => json(StatusCode::OK, &[], r#"{"healthy":true}"#.into()),
        Consumer::CannotStore => json(
            StatusCode::OK,
            &[],
            r#"{"healthy":false,"reason":"SQLSTATE 28P01: password authentication failed"}"#.into(),
        ),
        Consumer::FailsToStart => json(
            StatusCode::OK,
            &[("x-amz-function-error", "Unhandled")],
            r#"{"errorType":"Runtime.ExitError","errorMessage":"RequestId: 1 Error: Runtime exited with error: exit status 1"}"#.into(),
        ),
        Consumer::Throttled => json(
            StatusCode::TOO_MANY_REQUESTS,
            &[("x-amzn-errortype", "TooManyRequestsException")],
            r#"{"Reason":"ConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#.into(),
        ),
        Consumer::Denied => json(
            StatusCode::FORBIDDEN,
            &[("x-amzn-errortype", "AccessDeniedException")],
            r#"{"Message":"User: arn:aws:sts::123456789012:assumed-role/breaker is not authorized to perform: lambda:InvokeFunction"}"#.into(),
        ),
    }
}

fn mapping_document(uuid: &str, state: &str) -> String {
    serde_json::json!({
        "UUID": uuid,
        "State": state,
        "BatchSize": 1000,
        "EventSourceArn": "arn:aws:sqs:eu-west-1:123456789012:orders-orders",
        "FunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer",
        "LastModified": 1_764_000_000.0,
        "StateTransitionReason": "USER_INITIATED"
    })
    .to_string()
}

async fn get_mapping(State(lambda): State<Shared>, Path(uuid): Path<String>) -> Response {
    lambda
        .requests
        .lock()
        .expect("lock")
        .push(format!("GET mapping {uuid}"));
    let state = lambda.state.lock().expect("lock").clone();
    json(StatusCode::OK, &[], mapping_document(&uuid, &state))
}

async fn update_mapping(
    State(lambda): State<Shared>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    lambda
        .requests
        .lock()
        .expect("lock")
        .push(format!("PUT mapping {uuid} {body}"));
    let enabled: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    // Lambda answers 202 with the transition under way.
    let (now, then) = match enabled["Enabled"].as_bool() {
        Some(true) => ("Enabling", "Enabled"),
        Some(false) => ("Disabling", "Disabled"),
        None => return json(StatusCode::BAD_REQUEST, &[], "{}".into()),
    };
    *lambda.state.lock().expect("lock") = then.to_owned();
    json(StatusCode::ACCEPTED, &[], mapping_document(&uuid, now))
}

const UUID: &str = "14e0db71-5d35-4eb5-b481-8945cf9d10c2";

/// The stand-in on a free port, and the real SDK client pointed at it.
async fn lambda(consumer: Consumer, state: &str) -> (Shared, aws_sdk_lambda::Client) {
    let shared = Arc::new(Lambda {
        consumer,
        state: Mutex::new(state.to_owned()),
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(get_mapping).put(update_mapping),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_lambda::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    (shared, aws_sdk_lambda::Client::from_conf(config))
}

async fn step_with(consumer: Consumer, state: &str) -> (breaker::Step, Vec<String>) {
    let (stand_in, client) = lambda(consumer, state).await;
    let step = breaker::step(
        &LambdaProbe::new(client.clone(), "orders-consumer"),
        &LambdaMapping::new(client, UUID),
        &breaker::NoFigures,
        breaker::TripPolicy::new(6),
    )
    .await
    .expect("a step");
    let requests = stand_in.requests.lock().expect("lock").clone();
    (step, requests)
}

#[tokio::test]
async fn the_probe_is_a_synchronous_invocation_of_the_consumer_with_the_probe_payload() {
    let (step, requests) = step_with(Consumer::Healthy, "Enabled").await;
    assert_eq!(step.health, Health::Healthy);
    assert_eq!(step.action, Action::Keep);
    assert_eq!(
        requests,
        [
            format!("POST invoke orders-consumer RequestResponse {PROBE_PAYLOAD}"),
            format!("GET mapping {UUID}"),
        ]
    );
}

#[tokio::test]
async fn a_consumer_that_cannot_store_has_its_mapping_paused_with_the_reason() {
    let (step, requests) = step_with(Consumer::CannotStore, "Enabled").await;
    assert_eq!(step.action, Action::Pause);
    assert!(unhealthy(step.health).contains("28P01"));
    assert_eq!(
        requests.last().map(String::as_str),
        Some(format!("PUT mapping {UUID} {{\"Enabled\":false}}").as_str())
    );
}

#[tokio::test]
async fn a_throttled_consumer_has_its_mapping_paused_so_throttles_spend_no_receives() {
    let (step, requests) = step_with(Consumer::Throttled, "Enabled").await;
    assert_eq!(step.action, Action::Pause);
    assert!(unhealthy(step.health).contains("throttles"));
    assert!(requests.last().is_some_and(|r| r.starts_with("PUT")));
}

#[tokio::test]
async fn a_consumer_whose_runtime_cannot_start_has_its_mapping_paused() {
    let (step, _) = step_with(Consumer::FailsToStart, "Enabled").await;
    assert_eq!(step.action, Action::Pause);
    assert!(unhealthy(step.health).contains("Runtime.ExitError"));
}

#[tokio::test]
async fn a_healthy_consumer_has_its_paused_mapping_resumed() {
    let (step, requests) = step_with(Consumer::Healthy, "Disabled").await;
    assert_eq!(step.action, Action::Resume);
    assert!(!step.open());
    assert_eq!(
        requests.last().map(String::as_str),
        Some(format!("PUT mapping {UUID} {{\"Enabled\":true}}").as_str())
    );
}

#[tokio::test]
async fn a_breaker_denied_the_invoke_leaves_the_mapping_as_it_is() {
    let (step, requests) = step_with(Consumer::Denied, "Enabled").await;
    assert!(
        matches!(step.health, Health::Unknown(ref r) if r.contains("AccessDenied")),
        "{:?}",
        step.health
    );
    assert_eq!(step.action, Action::Keep);
    assert!(
        requests.iter().all(|r| !r.starts_with("PUT")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_mapping_still_changing_is_read_as_such_and_left_alone() {
    let (step, requests) = step_with(Consumer::Healthy, "Disabling").await;
    assert_eq!(step.before, MappingState::Changing("Disabling".into()));
    assert_eq!(step.action, Action::Keep);
    assert!(requests.iter().all(|r| !r.starts_with("PUT")));
}

#[tokio::test]
async fn the_mapping_is_paused_or_resumed_since_its_last_modified_time() {
    let (_, client) = lambda(Consumer::Healthy, "Disabled").await;
    let status = LambdaMapping::new(client, UUID)
        .status()
        .await
        .expect("status");
    assert_eq!(status.state, MappingState::Disabled);
    assert_eq!(
        status.since,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000))
    );
}
