//! Lambda targets through local-alb: the request becomes the ALB's event (in
//! the header form the target group says), the function's response becomes
//! the answer; the status function runs in process against a real database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use aws_lambda_events::encodings::Body;
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::{DatabaseConfig, Delivery, MessageId, OrderStore, PgStore};
use infra::Document;
use local_alb::rules::{Listener, lambda_target_groups};
use local_alb::{Keys, LOCAL_SIGNER, Lambda, Target};
use order_contract::OrderPlaced;
use order_contract::fixtures::{order_from_request, order_request_with_id};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

/// The listener rule and target group the template's status path has, with
/// multi-value headers on or off.
fn template(multi_value: bool) -> Document {
    Document::parse(&format!(
        r#"
Resources:
  HttpsListener:
    Type: AWS::ElasticLoadBalancingV2::Listener
    Properties:
      DefaultActions:
        - Type: authenticate-oidc
          Order: 1
          AuthenticateOidcConfig: {{OnUnauthenticatedRequest: deny}}
        - Type: forward
          Order: 2
          TargetGroupArn: !Ref ProducerTargetGroup
  StatusRule:
    Type: AWS::ElasticLoadBalancingV2::ListenerRule
    Properties:
      ListenerArn: !Ref HttpsListener
      Priority: 5
      Conditions:
        - Field: http-request-method
          HttpRequestMethodConfig: {{Values: [GET]}}
        - Field: path-pattern
          PathPatternConfig: {{Values: [/orders*]}}
      Actions:
        - Type: authenticate-oidc
          Order: 1
          AuthenticateOidcConfig: {{OnUnauthenticatedRequest: deny}}
        - Type: forward
          Order: 2
          TargetGroupArn: !Ref StatusTargetGroup
  StatusTargetGroup:
    Type: AWS::ElasticLoadBalancingV2::TargetGroup
    Properties:
      TargetType: lambda
      TargetGroupAttributes:
        - Key: lambda.multi_value_headers.enabled
          Value: "{multi_value}"
"#
    ))
    .expect("a template")
}

struct Alb {
    addr: SocketAddr,
    keys: Keys,
    listener: Listener,
}

impl Alb {
    fn cookie(&self, customer: &str) -> String {
        local_alb::session_cookie(&self.keys, &self.listener, customer).expect("a session")
    }
}

/// local-alb playing [`template`], with `status` behind its Lambda target group.
async fn alb(multi_value: bool, status: impl Fn(bool) -> Lambda) -> Alb {
    testkit::init_tracing();
    let document = template(multi_value);
    let listener = Listener::from_document(&document).expect("rules");
    let groups = lambda_target_groups(&document);
    assert_eq!(groups, vec![("StatusTargetGroup".to_owned(), multi_value)]);
    let key = std::env::temp_dir()
        .join(testkit::unique_name("local-alb"))
        .join("signing-key.p8");
    let targets = HashMap::from([
        (
            "ProducerTargetGroup".to_owned(),
            Target::Http("http://127.0.0.1:9".to_owned()),
        ),
        (
            "StatusTargetGroup".to_owned(),
            Target::Lambda(status(multi_value)),
        ),
    ]);
    let router = local_alb::router(
        listener.clone(),
        targets,
        Keys::load_or_create(&key, LOCAL_SIGNER).expect("key"),
    )
    .expect("router");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("address");
    tokio::spawn(local_alb::serve(tcp, router, std::future::pending()));
    Alb {
        addr,
        keys: Keys::load_or_create(&key, LOCAL_SIGNER).expect("the same key"),
        listener,
    }
}

/// Keeps the events it is invoked with and answers with a header of each form.
fn recorder(seen: Arc<Mutex<Vec<Value>>>) -> impl Fn(bool) -> Lambda {
    move |multi_value| {
        let seen = Arc::clone(&seen);
        Lambda::new(multi_value, move |event: AlbTargetGroupRequest| {
            seen.lock()
                .expect("lock")
                .push(serde_json::to_value(&event).expect("JSON"));
            async move {
                let mut answer = AlbTargetGroupResponse::default();
                answer.status_code = 200;
                answer
                    .headers
                    .insert("x-form", "single".parse().expect("value"));
                answer
                    .multi_value_headers
                    .insert("x-form", "multi".parse().expect("value"));
                answer.body = Some(Body::Text("hello".to_owned()));
                answer
            }
        })
    }
}

#[tokio::test]
async fn the_request_becomes_the_alb_s_event_in_the_target_group_s_header_form() {
    for multi_value in [false, true] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let alb = alb(multi_value, recorder(Arc::clone(&seen))).await;
        let answer = reqwest::Client::new()
            .get(format!("http://{}/orders?a=1&a=2", alb.addr))
            .header("cookie", alb.cookie("cust-42"))
            .header("x-amzn-oidc-data", "forged")
            .header("accept", "text/plain")
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET /orders");

        assert_eq!(answer.status(), StatusCode::OK);
        let form = if multi_value { "multi" } else { "single" };
        assert_eq!(
            answer.headers()["x-form"],
            form,
            "the form the target group uses"
        );
        assert_eq!(answer.text().await.expect("body"), "hello");
        let event = seen.lock().expect("lock").pop().expect("invoked");
        assert_eq!(event["httpMethod"], "GET");
        assert_eq!(event["path"], "/orders");
        let (headers, query) = if multi_value {
            (
                &event["multiValueHeaders"],
                &event["multiValueQueryStringParameters"],
            )
        } else {
            (&event["headers"], &event["queryStringParameters"])
        };
        let claims = if multi_value {
            headers["x-amzn-oidc-data"][0].as_str()
        } else {
            headers["x-amzn-oidc-data"].as_str()
        };
        assert!(
            claims.is_some_and(|claims| claims != "forged" && claims.split('.').count() == 3),
            "{headers}"
        );
        if multi_value {
            assert_eq!(headers["accept"], json!(["text/plain", "application/json"]));
            assert_eq!(query["a"], json!(["1", "2"]));
        } else {
            assert_eq!(headers["accept"], "application/json", "the last value");
            assert_eq!(query["a"], "2");
        }
    }
}

#[tokio::test]
async fn a_failing_function_is_the_alb_s_502_and_no_session_its_401() {
    let alb = alb(false, |multi_value| {
        Lambda::new(multi_value, |_event| async {
            panic!("the function failed")
        })
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/orders", alb.addr);
    let unsigned = client.get(&url).send().await.expect("GET");
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let failed = client
        .get(&url)
        .header("cookie", alb.cookie("cust-42"))
        .send()
        .await
        .expect("GET");
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn the_status_function_answers_a_signed_in_customer_through_local_alb() {
    let db = testkit::TestDatabase::create().await;
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a valid name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("URL"), &[writer])
        .await
        .expect("migrated");
    let store = PgStore::new(
        DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("URL"),
        1,
    )
    .await
    .expect("store");
    let order_id = Uuid::new_v4();
    let mut request = order_request_with_id(order_id, 1, 1);
    request["customer_id"] = json!("cust-42");
    let delivery = Delivery {
        message_id: MessageId::new("msg-1").expect("an id"),
        placed: OrderPlaced::new(order_from_request(&request), chrono::Utc::now()),
        request_id: None,
    };
    store.insert(&[&delivery]).await.expect("stored");
    let pool = status::pool(DatabaseConfig::from_url(&db.url).expect("URL"))
        .await
        .expect("pool");

    for multi_value in [false, true] {
        let alb = alb(multi_value, |multi_value| {
            local_alb::status_function(pool.clone(), multi_value)
        })
        .await;
        let client = reqwest::Client::new();
        let get = |customer: &'static str| {
            client
                .get(format!("http://{}/orders/{order_id}", alb.addr))
                .header("cookie", alb.cookie(customer))
                .send()
        };
        let mine = get("cust-42").await.expect("GET");
        assert_eq!(mine.status(), StatusCode::OK);
        assert_eq!(mine.headers()["content-type"], "application/json");
        let order: Value = mine.json().await.expect("JSON");
        assert_eq!(order["status"], "stored");
        let theirs = get("cust-7").await.expect("GET");
        assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
        assert_eq!(theirs.headers()["content-type"], "application/problem+json");
    }
}
