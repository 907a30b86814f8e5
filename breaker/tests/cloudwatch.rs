//! The breaker's figures with the real CloudWatch SDK client against a local
//! endpoint that answers `GetMetricData` as CloudWatch does in the protocol
//! this SDK speaks (Smithy RPC v2 CBOR:
//! `POST /service/GraniteServiceVersion20100801/operation/GetMetricData`), so
//! the client writes every request and parses every answer itself.
//! The fields are the API reference's:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html>.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use breaker::{Batches, CloudWatchFigures, Figures};
use ciborium::Value;

/// One metric query as the stand-in read it.
#[derive(Debug, Clone, PartialEq)]
struct Query {
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
    period: i64,
    stat: String,
}

struct CloudWatch {
    /// The sum each metric has in any window, by (namespace, name).
    sums: HashMap<(&'static str, &'static str), f64>,
    /// Each request: its window in epoch seconds, and its queries.
    requests: Mutex<Vec<(f64, f64, Vec<Query>)>>,
}

fn field<'a>(map: &'a Value, name: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(name))
        .map(|(_, v)| v)
}

fn text(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_text)
        .unwrap_or_default()
        .to_owned()
}

/// A timestamp as RPC v2 CBOR sends it: tag 1, epoch seconds.
fn epoch(value: Option<&Value>) -> f64 {
    match value {
        Some(Value::Tag(1, inner)) => match inner.as_ref() {
            Value::Float(f) => *f,
            Value::Integer(i) => i128::from(*i) as f64,
            other => panic!("a timestamp's seconds: {other:?}"),
        },
        other => panic!("a timestamp: {other:?}"),
    }
}

fn cbor(status: StatusCode, body: &Value) -> Response {
    let mut bytes = Vec::new();
    ciborium::into_writer(body, &mut bytes).expect("CBOR");
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", "application/cbor".parse().expect("header"));
    headers.insert("smithy-protocol", "rpc-v2-cbor".parse().expect("header"));
    headers.insert("x-amzn-requestid", "4c1e5a9e-1".parse().expect("header"));
    response
}

async fn get_metric_data(State(cw): State<Arc<CloudWatch>>, body: Bytes) -> Response {
    let request: Value = ciborium::from_reader(body.as_ref()).expect("a CBOR request");
    let (start, end) = (
        epoch(field(&request, "StartTime")),
        epoch(field(&request, "EndTime")),
    );
    let mut queries = Vec::new();
    let mut results = Vec::new();
    for query in field(&request, "MetricDataQueries")
        .and_then(Value::as_array)
        .expect("queries")
    {
        let stat = field(query, "MetricStat").expect("a metric stat");
        let metric = field(stat, "Metric").expect("a metric");
        let read = Query {
            namespace: text(field(metric, "Namespace")),
            name: text(field(metric, "MetricName")),
            dimensions: field(metric, "Dimensions")
                .and_then(Value::as_array)
                .map(|ds| {
                    ds.iter()
                        .map(|d| (text(field(d, "Name")), text(field(d, "Value"))))
                        .collect()
                })
                .unwrap_or_default(),
            period: field(stat, "Period")
                .and_then(Value::as_integer)
                .and_then(|p| i64::try_from(p).ok())
                .expect("a period"),
            stat: text(field(stat, "Stat")),
        };
        let sum = cw
            .sums
            .iter()
            .find(|((ns, name), _)| *ns == read.namespace && *name == read.name)
            .map(|(_, sum)| *sum);
        // CloudWatch returns no data point for a metric without data.
        let (timestamps, values) = match sum {
            Some(sum) => (
                vec![Value::Tag(1, Box::new(Value::Float(start)))],
                vec![Value::Float(sum)],
            ),
            None => (vec![], vec![]),
        };
        results.push(Value::Map(vec![
            (
                Value::Text("Id".into()),
                field(query, "Id").cloned().expect("an id"),
            ),
            (Value::Text("Label".into()), Value::Text(read.name.clone())),
            (Value::Text("Timestamps".into()), Value::Array(timestamps)),
            (Value::Text("Values".into()), Value::Array(values)),
            (
                Value::Text("StatusCode".into()),
                Value::Text("Complete".into()),
            ),
        ]));
        queries.push(read);
    }
    cw.requests
        .lock()
        .expect("lock")
        .push((start, end, queries));
    cbor(
        StatusCode::OK,
        &Value::Map(vec![
            (
                Value::Text("MetricDataResults".into()),
                Value::Array(results),
            ),
            (Value::Text("Messages".into()), Value::Array(vec![])),
        ]),
    )
}

/// The stand-in on a free port, and figures read through the real SDK client.
async fn cloudwatch(
    sums: &[((&'static str, &'static str), f64)],
) -> (Arc<CloudWatch>, CloudWatchFigures) {
    let shared = Arc::new(CloudWatch {
        sums: sums.iter().copied().collect(),
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route(
            "/service/GraniteServiceVersion20100801/operation/GetMetricData",
            post(get_metric_data),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_cloudwatch::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    let client = aws_sdk_cloudwatch::Client::from_conf(config);
    let figures = CloudWatchFigures::new(client, "orders-consumer", Some("live".into()));
    (shared, figures)
}

#[tokio::test]
async fn the_batches_are_the_consumers_counts_and_lambdas_errors_summed_over_the_window() {
    let (cw, figures) = cloudwatch(&[
        (("OrdersConsumer", "Records"), 50.0),
        (("OrdersConsumer", "Stored"), 3.0),
        (("OrdersConsumer", "Duplicates"), 1.0),
        (("OrdersConsumer", "DeadLettered"), 1.0),
        (("OrdersConsumer", "Postponed"), 2.0),
        (("OrdersConsumer", "Skewed"), 1.0),
        (("AWS/Lambda", "Errors"), 4.0),
        // Not a batch figure: never summed in.
        (("OrdersConsumer", "BreakerOpen"), 1.0),
    ])
    .await;
    let to = SystemTime::now();
    let from = to - Duration::from_secs(600);
    let batches = figures.batches(from, to).await.expect("figures");
    assert_eq!(
        batches,
        Batches {
            records: 50,
            finished: 5,
            deferred: 3,
            failed_invocations: 4,
        }
    );
    assert!(
        batches.failing(),
        "42 records and 4 invocations left to the redrive policy"
    );

    let requests = cw.requests.lock().expect("lock").clone();
    let [(start, end, queries)] = requests.as_slice() else {
        panic!("one request: {requests:?}")
    };
    assert!(
        (end - start - 600.0).abs() < 1.0,
        "the window: {start}..{end}"
    );
    let mut names: Vec<(&str, &str)> = queries
        .iter()
        .map(|q| (q.namespace.as_str(), q.name.as_str()))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ("AWS/Lambda", "Errors"),
            ("OrdersConsumer", "Conflicts"),
            ("OrdersConsumer", "DeadLettered"),
            ("OrdersConsumer", "Duplicates"),
            ("OrdersConsumer", "Postponed"),
            ("OrdersConsumer", "Records"),
            ("OrdersConsumer", "Requeued"),
            ("OrdersConsumer", "Skewed"),
            ("OrdersConsumer", "Stored"),
        ]
    );
    let named = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    for query in queries {
        let expected = if query.namespace == "AWS/Lambda" {
            // The alias the mapping invokes: a hook's invocations of a new
            // version are not the mapping's.
            named(&[
                ("FunctionName", "orders-consumer"),
                ("Resource", "orders-consumer:live"),
            ])
        } else {
            named(&[("FunctionName", "orders-consumer")])
        };
        assert_eq!(query.dimensions, expected, "{query:?}");
        assert_eq!(query.stat, "Sum");
        assert_eq!(query.period, 600, "one period over the window");
    }
}

#[tokio::test]
async fn the_trips_are_the_breakers_own_metric_and_an_empty_window_asks_nothing() {
    let (cw, figures) = cloudwatch(&[(("OrdersConsumer", "BreakerTripped"), 2.0)]).await;
    let to = SystemTime::now();
    let trips = figures
        .trips(to - Duration::from_secs(7 * 24 * 3600), to)
        .await
        .expect("trips");
    assert_eq!(trips, 2);
    assert_eq!(figures.trips(to, to).await.expect("nothing"), 0);
    let requests = cw.requests.lock().expect("lock").clone();
    let [(_, _, queries)] = requests.as_slice() else {
        panic!("one request: {requests:?}")
    };
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].period % 60, 0, "a multiple of 60 s");
    assert!(queries[0].period >= 7 * 24 * 3600);
}

#[tokio::test]
async fn a_consumer_without_batches_yet_has_empty_figures() {
    let (_, figures) = cloudwatch(&[]).await;
    let to = SystemTime::now();
    let batches = figures
        .batches(to - Duration::from_secs(60), to)
        .await
        .expect("figures");
    assert_eq!(batches, Batches::default());
    assert!(!batches.failing());
}
