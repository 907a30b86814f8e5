//! Tokens made here with real keys, checked against a key endpoint served here.

use super::*;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use serde_json::json;
use support::Env;
use support::claims::BASE64URL;
use tokio::net::TcpListener;

const SIGNER: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/shop/50dc6c495c0c9188";
const KID: &str = "5d5b3b6e-0c2f-4f53-8bb6-1f2d3c4b5a69";
const NOW: i64 = 1_800_000_000;

struct Alb {
    key: EcdsaKeyPair,
}

impl Alb {
    fn new() -> Self {
        let pkcs8 = new_signing_key().expect("a key");
        Self {
            key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).expect("valid"),
        }
    }

    /// Serves this key's PEM at `/<KID>`, and 404 for any other kid.
    async fn key_endpoint(&self) -> String {
        let pem = public_key_pem(&self.key).expect("PEM");
        let app = Router::new().route(
            "/{kid}",
            get(move |Path(kid): Path<String>| async move {
                if kid == KID {
                    (StatusCode::OK, pem)
                } else {
                    (StatusCode::NOT_FOUND, String::new())
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn token(&self, header: serde_json::Value, sub: &str) -> String {
        sign(
            &self.key,
            &header,
            &json!({"sub": sub, "exp": NOW + 60, "iss": "https://idp"}),
        )
        .expect("signed")
    }
}

fn header() -> serde_json::Value {
    json!({
        "alg": "ES256",
        "kid": KID,
        "signer": SIGNER,
        "iss": "https://idp",
        "client": "client-id",
        "exp": NOW + 60,
    })
}

fn verifier(key_endpoint: String) -> Verifier {
    Verifier::new(SignInConfig {
        signer: SIGNER.to_owned(),
        key_endpoint,
        sign_out_url: "https://idp.example/logout".to_owned(),
    })
    .expect("TLS roots")
}

async fn refused(verifier: &Verifier, token: &str) -> Refused {
    verifier
        .customer(token, NOW)
        .await
        .expect_err("the token must be refused")
}

#[tokio::test]
async fn a_token_signed_as_the_load_balancer_does_names_the_customer_by_its_sub() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    // The ALB pads every segment; this claims set makes both JSON segments padded.
    let token = alb.token(header(), "cust-42");
    let padded = token
        .split('.')
        .filter(|segment| segment.ends_with('='))
        .count();
    assert!(padded >= 2, "the ALB's padded form: {token}");
    assert_eq!(
        verifier.customer(&token, NOW).await.expect("valid"),
        "cust-42"
    );
    // Another customer under the same (now cached) key.
    let again = alb.token(header(), "cust-7");
    assert_eq!(
        verifier.customer(&again, NOW).await.expect("cached"),
        "cust-7"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    let mut header = header();
    header["exp"] = json!(NOW);
    let token = alb.token(header, "cust-42");
    assert!(matches!(refused(&verifier, &token).await, Refused::Invalid(why) if why == "expired"));
}

#[tokio::test]
async fn a_token_from_another_load_balancer_is_refused() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    let mut header = header();
    header["signer"] = json!(SIGNER.replace("/shop/", "/other/"));
    let token = alb.token(header, "cust-42");
    assert!(
        matches!(refused(&verifier, &token).await, Refused::Invalid(why) if why.starts_with("signed by"))
    );
}

#[tokio::test]
async fn tokens_of_another_algorithm_are_refused_none_and_hs256_alike() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    let segment = |value: serde_json::Value| BASE64URL.encode(value.to_string());
    let claims = segment(json!({"sub": "cust-42"}));

    let mut none = header();
    none["alg"] = json!("none");
    let unsigned = format!("{}.{claims}.", segment(none));

    // HS256 keyed with the public key's PEM: the classic algorithm confusion.
    let mut hs256 = header();
    hs256["alg"] = json!("HS256");
    let signed = format!("{}.{claims}", segment(hs256));
    let pem = public_key_pem(&alb.key).expect("PEM");
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, pem.as_bytes()),
        signed.as_bytes(),
    );
    let hmac_token = format!("{signed}.{}", BASE64URL.encode(tag.as_ref()));

    for token in [unsigned, hmac_token] {
        assert!(
            matches!(refused(&verifier, &token).await, Refused::Invalid(why) if why.starts_with("algorithm")),
            "{token}"
        );
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    // Same header, same kid, another key: only the signature tells.
    let forger = Alb::new();
    let token = forger.token(header(), "cust-42");
    assert!(
        matches!(refused(&verifier, &token).await, Refused::Invalid(why) if why == "bad signature")
    );

    // A valid token whose claims were swapped after signing.
    let good = alb.token(header(), "cust-42");
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = BASE64URL.encode(json!({"sub": "cust-1"}).to_string());
    let tampered = parts.join(".");
    assert!(
        matches!(refused(&verifier, &tampered).await, Refused::Invalid(why) if why == "bad signature")
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    let mut header = header();
    header["kid"] = json!("another-kid");
    let token = alb.token(header, "cust-42");
    let refused = refused(&verifier, &token).await;
    assert!(
        matches!(&refused, Refused::Invalid(why) if why.starts_with("unknown kid")),
        "{refused}"
    );
    assert_eq!(Problem::from(refused).body.status, 401);
}

#[tokio::test]
async fn a_key_endpoint_that_is_down_makes_sign_ins_uncheckable_not_invalid() {
    let alb = Alb::new();
    // A port nobody listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let down = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let verifier = verifier(down);
    let refused = refused(&verifier, &alb.token(header(), "cust-42")).await;
    assert!(
        matches!(refused, Refused::KeysUnavailable { .. }),
        "{refused}"
    );
    let problem = Problem::from(refused);
    assert_eq!(
        (problem.body.status, problem.body.retry_after_secs),
        (503, Some(RETRY_AFTER_SECS))
    );
}

#[tokio::test]
async fn a_subject_that_is_no_customer_id_is_forbidden_not_unauthenticated() {
    let alb = Alb::new();
    let verifier = verifier(alb.key_endpoint().await);
    let token = alb.token(header(), "auth0|5f7c8ec7c33c6c004bbafe82");
    let refused = refused(&verifier, &token).await;
    assert!(matches!(&refused, Refused::NotACustomerId(_)), "{refused}");
    assert_eq!(Problem::from(refused).body.status, 403);
}

#[test]
fn the_key_endpoint_defaults_to_the_signer_region_and_a_bad_arn_is_named() {
    let read = |vars: &[(&str, &str)]| {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SignInConfig::read(&Env::new(|name: &str| vars.get(name).cloned()))
    };
    assert_eq!(read(&[]).expect("trial mode"), None);
    let config = read(&[("ALB_SIGNER_ARN", SIGNER)])
        .expect("valid")
        .expect("on");
    assert_eq!(
        config.key_endpoint,
        "https://public-keys.auth.elb.eu-west-1.amazonaws.com"
    );
    let local = read(&[
        ("ALB_SIGNER_ARN", SIGNER),
        ("ALB_KEY_ENDPOINT", "http://127.0.0.1:1/keys/"),
    ])
    .expect("valid")
    .expect("on");
    assert_eq!(local.key_endpoint, "http://127.0.0.1:1/keys");
    let err = read(&[("ALB_SIGNER_ARN", "my-alb")]).expect_err("not an ARN");
    assert!(err.to_string().starts_with("ALB_SIGNER_ARN="), "{err}");
}

mod over_http {
    //! The router with sign-in on: what `POST /orders` and `GET /me` answer.

    use super::*;
    use crate::queue::{EnqueueError, OrderMessage, OrderQueue};
    use crate::routes::{AppState, router};
    use axum::body::Body;
    use tower::ServiceExt;

    /// Keeps the bodies it is sent.
    #[derive(Debug, Default)]
    struct Kept(Mutex<Vec<String>>);

    impl OrderQueue for Kept {
        async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
            let mut kept = self.0.lock().expect("lock");
            kept.push(message.body);
            Ok(format!("msg-{}", kept.len()))
        }

        async fn check(&self) -> Result<(), EnqueueError> {
            Ok(())
        }
    }

    async fn call(
        app: &axum::Router,
        request: axum::http::request::Builder,
        body: Body,
    ) -> (StatusCode, String, serde_json::Value) {
        let response = app
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).expect("JSON"),
        )
    }

    fn order(customer_id: Option<&str>) -> Body {
        let mut order =
            crate::catalogue::fixtures::priced(order_contract::fixtures::order_request(42, 1));
        match customer_id {
            Some(id) => order["customer_id"] = json!(id),
            None => {
                order.as_object_mut().expect("object").remove("customer_id");
            }
        }
        Body::from(order.to_string())
    }

    fn post(token: Option<&str>) -> axum::http::request::Builder {
        let request =
            axum::http::Request::post("/orders").header("content-type", "application/json");
        match token {
            Some(token) => request.header(CLAIMS_HEADER, token),
            None => request,
        }
    }

    /// Real time: these go through the middleware's clock.
    fn live_header() -> serde_json::Value {
        let mut header = header();
        header["exp"] = json!(chrono::Utc::now().timestamp() + 120);
        header
    }

    #[tokio::test]
    async fn orders_need_a_valid_sign_in_and_go_out_under_the_signed_in_customer() {
        let alb = Alb::new();
        let queue = Arc::new(Kept::default());
        let verifier = Arc::new(verifier(alb.key_endpoint().await));
        let app = router(
            AppState::new(Arc::clone(&queue), Duration::from_secs(10))
                .with_prices(crate::catalogue::fixtures::prices())
                .with_sign_in(Some(verifier)),
        );
        let cust_42 = alb.token(live_header(), "cust-42");
        let forged = Alb::new().token(live_header(), "cust-42");

        for token in [None, Some(forged.as_str())] {
            let (status, content_type, body) =
                call(&app, post(token), order(Some("cust-42"))).await;
            assert_eq!(
                (status, content_type.as_str()),
                (StatusCode::UNAUTHORIZED, "application/problem+json"),
                "{body}"
            );
        }
        let (status, _, body) = call(&app, post(Some(&cust_42)), order(Some("cust-7"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["field"], "customer_id");
        // Left out is not the same as empty: an empty one breaks the contract's rule.
        let (status, _, body) = call(&app, post(Some(&cust_42)), order(Some(""))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], "customer_id");
        assert!(
            queue.0.lock().expect("lock").is_empty(),
            "nothing refused is queued"
        );

        for customer_id in [None, Some("cust-42")] {
            let (status, _, body) = call(&app, post(Some(&cust_42)), order(customer_id)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
        let kept = queue.0.lock().expect("lock").clone();
        assert_eq!(kept.len(), 2);
        for body in kept {
            let message: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(message["customer_id"], "cust-42");
        }
    }

    #[tokio::test]
    async fn signed_in_customers_behind_one_address_have_limits_of_their_own() {
        use crate::limits::ClientCap;
        use crate::rate_limit::RateLimit;
        use governor::Quota;
        use std::num::NonZeroUsize;

        let alb = Alb::new();
        let queue = Arc::new(Kept::default());
        let one_an_hour = Quota::with_period(Duration::from_secs(3600)).expect("not zero");
        // Every request comes from the same address (no peer is recorded: a
        // carrier-grade NAT, say), from two customers.
        let app = router(
            AppState::new(Arc::clone(&queue), Duration::from_secs(10))
                .with_prices(crate::catalogue::fixtures::prices())
                .with_rate_limit(RateLimit::new(one_an_hour))
                .with_client_cap(ClientCap::new(NonZeroUsize::MIN))
                .with_sign_in(Some(Arc::new(verifier(alb.key_endpoint().await)))),
        );
        for customer in ["cust-42", "cust-7"] {
            let token = alb.token(live_header(), customer);
            let (status, _, body) = call(&app, post(Some(&token)), order(None)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{customer}: {body}");
        }
        let token = alb.token(live_header(), "cust-42");
        let (status, _, body) = call(&app, post(Some(&token)), order(None)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }

    #[tokio::test]
    async fn get_me_names_the_signed_in_customer_or_says_sign_in_is_off() {
        let alb = Alb::new();
        let queue = Arc::new(Kept::default());
        let trial = || AppState::new(Arc::clone(&queue), Duration::from_secs(10));
        let me = || axum::http::Request::get("/me");
        let (status, _, body) = call(&router(trial()), me(), Body::empty()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"sign_in": "off"})));

        let signed =
            router(trial().with_sign_in(Some(Arc::new(verifier(alb.key_endpoint().await)))));
        let (status, _, _) = call(&signed, me(), Body::empty()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let token = alb.token(live_header(), "cust-42");
        let (status, _, body) =
            call(&signed, me().header(CLAIMS_HEADER, token), Body::empty()).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::OK,
                json!({"sign_in": "on", "customer_id": "cust-42"})
            )
        );
    }

    #[tokio::test]
    async fn sign_out_expires_the_albs_session_cookies_and_goes_to_the_identity_providers_logout() {
        let alb = Alb::new();
        let state = AppState::new(Arc::new(Kept::default()), Duration::from_secs(10))
            .with_sign_in(Some(Arc::new(verifier(alb.key_endpoint().await))));
        let response = router(state)
            .oneshot(
                axum::http::Request::get("/sign-out")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert!(response.status().is_redirection(), "{}", response.status());
        assert_eq!(response.headers()["location"], "https://idp.example/logout");
        let cookies: Vec<&str> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with("AWSELBAuthSessionCookie-0=;") && c.contains("Max-Age=0")),
            "{cookies:?}"
        );
    }
}
