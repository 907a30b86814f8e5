//! A local stand-in for the Application Load Balancer of `infra/template.yaml`,
//! as `local-esm` is for the event source mapping: it plays the HTTPS
//! listener's rules ([`rules`]) and does what the ALB does with them.
//!
//! - **forward**: to the target group's local URL, appending the client's
//!   address to `X-Forwarded-For` and setting `X-Forwarded-Proto`/`-Port`, as
//!   the ALB does (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/x-forwarded-headers.html>),
//!   and dropping any `x-amzn-oidc-*` header the client sent.
//! - **authenticate**: a session in the ALB's cookie (`AWSELBAuthSessionCookie-0`)
//!   becomes a signed `x-amzn-oidc-data` (and `x-amzn-oidc-identity`) on the
//!   forwarded request ([`keys`]); without one, `deny` answers 401, `authenticate`
//!   sends the browser to the development sign-in page (the identity provider's
//!   stand-in: pick or type a customer, no password), `allow` forwards.
//! - the region's key endpoint: the public key as PEM at `/_local-alb/keys/<kid>`.
//! - **Lambda targets**: the request becomes the ALB's Lambda-target event
//!   (headers single- or multi-value as the target group's
//!   `lambda.multi_value_headers.enabled` says), the function runs in process
//!   ([`Lambda`]; [`status_function`] is the status handler), and its
//!   response becomes the HTTP answer; a panic or an answer over 1 MB is the
//!   ALB's `502`
//!   (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/lambda-functions.html>).
//!
//! The ALB has no sign-out action: the application expires the session cookie
//! and sends the browser to the identity provider's logout, which here is
//! `/_local-alb/logout`, back to the sign-in page.
//! Targets are looked up by target group ([`Target`]).

pub mod cli;
pub mod keys;
pub mod rules;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;

pub use keys::{Keys, LOCAL_SIGNER};
use rules::{Action, Listener, OnUnauthenticated};

/// Where the development sign-in page is (the identity provider's stand-in).
pub const SIGN_IN_PATH: &str = "/_local-alb/sign-in";
/// The identity provider's logout: back to the sign-in page.
pub const LOGOUT_PATH: &str = "/_local-alb/logout";
/// The region's key endpoint: `<this>/<kid>`.
pub const KEYS_PATH: &str = "/_local-alb/keys";
/// Where the ALB takes the identity provider's answer.
const IDP_RESPONSE_PATH: &str = "/oauth2/idpresponse";
/// Bodies are small here; the producer's own limit is 64 KiB. Also the
/// ALB's limit on a Lambda target's request body and response JSON.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where a target group's requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// An instance target group: an HTTP server.
    Http(String),
    /// A Lambda target group: a function run in process.
    Lambda(Lambda),
}

type Invoke = dyn Fn(AlbTargetGroupRequest) -> Pin<Box<dyn Future<Output = AlbTargetGroupResponse> + Send>>
    + Send
    + Sync;

/// A Lambda function as the load balancer invokes it: an event in, a response out.
#[derive(Clone)]
pub struct Lambda {
    function: Arc<Invoke>,
    /// The target group's `lambda.multi_value_headers.enabled`.
    pub multi_value_headers: bool,
}

impl Lambda {
    pub fn new<F, Fut>(multi_value_headers: bool, function: F) -> Self
    where
        F: Fn(AlbTargetGroupRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AlbTargetGroupResponse> + Send + 'static,
    {
        Self {
            function: Arc::new(move |event| Box::pin(function(event))),
            multi_value_headers,
        }
    }
}

impl std::fmt::Debug for Lambda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lambda")
            .field("multi_value_headers", &self.multi_value_headers)
            .finish_non_exhaustive()
    }
}

/// The status function behind each of `template`'s Lambda target groups,
/// reading `database` (the reader's URL, as in AWS).
pub async fn lambda_targets(
    template: &infra::Document,
    database: consumer_lambda::DatabaseConfig,
) -> Result<HashMap<String, Target>, consumer_lambda::database::ConnectError> {
    let pool = status::pool(database).await?;
    Ok(rules::lambda_target_groups(template)
        .into_iter()
        .map(|(group, multi_value_headers)| {
            let target = Target::Lambda(status_function(pool.clone(), multi_value_headers));
            (group, target)
        })
        .collect())
}

/// The status function on `pool`, trusting what local-alb signs.
pub fn status_function(pool: status::Pool, multi_value_headers: bool) -> Lambda {
    Lambda::new(multi_value_headers, move |event| {
        let pool = pool.clone();
        async move { status::handle(&pool, LOCAL_SIGNER, &event, now(), status::DEADLINE).await }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("the template forwards to {0}, and local-alb was given no target for it")]
    NoTarget(String),
    #[error(
        "the template's listener has no authenticate action, so local-alb cannot sign anyone in"
    )]
    NoSignIn,
}

#[derive(Debug)]
struct Alb {
    listener: Listener,
    targets: HashMap<String, Target>,
    keys: Keys,
    http: reqwest::Client,
}

/// The load balancer for `listener`, forwarding to `targets` and signing with `keys`.
pub fn router(
    listener: Listener,
    targets: HashMap<String, Target>,
    keys: Keys,
) -> Result<Router, SetupError> {
    if let Some(missing) = listener
        .target_groups()
        .find(|group| !targets.contains_key(*group))
    {
        return Err(SetupError::NoTarget(missing.to_owned()));
    }
    if listener.authenticate().is_none() {
        return Err(SetupError::NoSignIn);
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let alb = Arc::new(Alb {
        listener,
        targets,
        keys,
        http,
    });
    Ok(Router::new()
        .route(SIGN_IN_PATH, get(sign_in_page))
        .route(IDP_RESPONSE_PATH, post(signed_in))
        .route(LOGOUT_PATH, get(|| async { Redirect::to(SIGN_IN_PATH) }))
        .route(&format!("{KEYS_PATH}/{{kid}}"), get(public_key))
        .fallback(play_rules)
        .with_state(alb))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The value of `Set-Cookie`/`Cookie` for `customer`'s session.
pub fn session_cookie(keys: &Keys, listener: &Listener, customer: &str) -> Option<String> {
    let auth = listener.authenticate()?;
    let expires = now() + i64::try_from(auth.session_timeout.as_secs()).ok()?;
    Some(format!(
        "{}-0={}",
        auth.cookie_name,
        keys.session(customer, expires)?
    ))
}

async fn play_rules(
    State(alb): State<Arc<Alb>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let rule = alb
        .listener
        .rule_for(request.method().as_str(), request.uri().path());
    let mut customer = None;
    for action in &rule.actions {
        match action {
            Action::Authenticate(auth) => {
                customer = session(request.headers(), &format!("{}-0", auth.cookie_name))
                    .and_then(|cookie| alb.keys.customer_of_session(cookie, now()));
                if customer.is_some() {
                    continue;
                }
                match auth.on_unauthenticated {
                    // The ALB's own 401 has no body worth reading.
                    OnUnauthenticated::Deny => return StatusCode::UNAUTHORIZED.into_response(),
                    OnUnauthenticated::Allow => {}
                    OnUnauthenticated::Authenticate => {
                        let back = request
                            .uri()
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_owned();
                        let back = percent_encoding::utf8_percent_encode(
                            &back,
                            percent_encoding::NON_ALPHANUMERIC,
                        );
                        return Redirect::to(&format!("{SIGN_IN_PATH}?redirect={back}"))
                            .into_response();
                    }
                }
            }
            Action::Forward(group) => {
                let (parts, body) = request.into_parts();
                let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
                    return StatusCode::PAYLOAD_TOO_LARGE.into_response();
                };
                let Some(headers) = forwarded_headers(&alb, &parts, peer, customer.as_deref())
                else {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                return match alb.targets.get(group) {
                    Some(Target::Http(url)) => forward(&alb, url, &parts, headers, body).await,
                    Some(Target::Lambda(lambda)) => {
                        invoke(lambda, group, &parts, headers, &body).await
                    }
                    None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                };
            }
        }
    }
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

/// The value of the cookie `name` in the request's `Cookie` headers.
fn session<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The request's headers as the ALB passes them on: without hop-by-hop ones
/// or client-sent claims, with `X-Forwarded-*` and, once signed in, the
/// claims (`None` when they cannot be signed).
fn forwarded_headers(
    alb: &Alb,
    parts: &Parts,
    peer: SocketAddr,
    customer: Option<&str>,
) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && !name.as_str().starts_with("x-amzn-oidc-") {
            headers.append(name, value.clone());
        }
    }
    // Appended to what the client sent: the rightmost entry is the one the load balancer saw.
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-proto", "http");
    set("x-forwarded-port", &peer.port().to_string());
    if let Some(customer) = customer {
        match alb.keys.claims(customer, now()) {
            Some(claims) => set(producer::auth::CLAIMS_HEADER, &claims),
            None => return None,
        }
        set("x-amzn-oidc-identity", customer);
    }
    Some(headers)
}

async fn forward(
    alb: &Alb,
    target: &str,
    parts: &Parts,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let url = format!(
        "{}{}",
        target.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let sent = alb
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(answer) = sent else {
        tracing::warn!(%url, "the target did not answer");
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            headers.append(name, value.clone());
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Invokes `lambda` as the ALB does: the request as its event, the response
/// read back from the form the target group uses (a function that answers
/// in the other form loses its headers, as it would behind the ALB).
async fn invoke(
    lambda: &Lambda,
    group: &str,
    parts: &Parts,
    headers: HeaderMap,
    body: &[u8],
) -> Response {
    let mut headers = headers;
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    let event = lambda_event(lambda.multi_value_headers, group, parts, &headers, body);
    let Ok(event) = serde_json::from_value::<AlbTargetGroupRequest>(event) else {
        tracing::warn!("the request does not make a Lambda event");
        return StatusCode::BAD_REQUEST.into_response();
    };
    // A function that fails is the ALB's 502.
    let Ok(answer) = tokio::spawn((lambda.function)(event)).await else {
        tracing::warn!(group, "the Lambda function failed");
        return StatusCode::BAD_GATEWAY.into_response();
    };
    lambda_response(answer, lambda.multi_value_headers)
}

fn lambda_event(
    multi_value: bool,
    group: &str,
    parts: &Parts,
    headers: &HeaderMap,
    body: &[u8],
) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    // The ALB passes query parameters as sent, URL-encoded.
    let query: Vec<(&str, &str)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    let mut header_values: Vec<(&str, &str)> = Vec::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            header_values.push((name.as_str(), value));
        }
    }
    // Without multi-value headers the ALB passes the last value of a repeated name.
    let group_by = |pairs: &[(&str, &str)]| -> Value {
        let mut map = Map::new();
        for (name, value) in pairs {
            if multi_value {
                let values = map.entry(*name).or_insert_with(|| json!([]));
                if let Some(values) = values.as_array_mut() {
                    values.push(json!(value));
                }
            } else {
                map.insert((*name).to_owned(), json!(value));
            }
        }
        Value::Object(map)
    };
    let (body, is_base64_encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (BASE64.encode(body), true),
    };
    let (headers_key, query_key) = if multi_value {
        ("multiValueHeaders", "multiValueQueryStringParameters")
    } else {
        ("headers", "queryStringParameters")
    };
    json!({
        "requestContext": {"elb": {"targetGroupArn": format!(
            "arn:aws:elasticloadbalancing:local:000000000000:targetgroup/{group}/0000000000000000"
        )}},
        "httpMethod": parts.method.as_str(),
        "path": parts.uri.path(),
        query_key: group_by(&query),
        headers_key: group_by(&header_values),
        "body": body,
        "isBase64Encoded": is_base64_encoded,
    })
}

fn lambda_response(answer: AlbTargetGroupResponse, multi_value: bool) -> Response {
    let Some(status) = u16::try_from(answer.status_code)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
    else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let body = match answer.body {
        None | Some(LambdaBody::Empty) => Vec::new(),
        Some(LambdaBody::Text(text)) if answer.is_base64_encoded => {
            match BASE64.decode(text.as_bytes()) {
                Ok(bytes) => bytes,
                Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        Some(LambdaBody::Text(text)) => text.into_bytes(),
        Some(LambdaBody::Binary(bytes)) => bytes,
        Some(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    if body.len() > MAX_BODY_BYTES {
        tracing::warn!(
            bytes = body.len(),
            "the Lambda function's response is over 1 MB"
        );
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let mut headers = HeaderMap::new();
    let sent = if multi_value {
        &answer.multi_value_headers
    } else {
        &answer.headers
    };
    for (name, value) in sent {
        if !hop_by_hop(name) {
            headers.append(name, value.clone());
        }
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[derive(Debug, Deserialize)]
struct Back {
    redirect: Option<String>,
}

/// Only a path on this host: the sign-in page is no open redirect.
fn local_path(redirect: Option<&str>) -> &str {
    redirect
        .filter(|r| r.starts_with('/') && !r.starts_with("//"))
        .unwrap_or("/")
}

async fn sign_in_page(Query(back): Query<Back>) -> Html<String> {
    let back = local_path(back.redirect.as_deref());
    let escaped = back
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in (local-alb)</title></head>
<body>
<h1>Sign in</h1>
<p>The local load balancer's development sign-in: no password. In AWS this is the identity provider's page.</p>
<form method="post" action="{IDP_RESPONSE_PATH}">
<input type="hidden" name="redirect" value="{escaped}">
<label for="customer">Customer</label>
<input id="customer" name="customer" list="customers" value="cust-42" required pattern="[A-Za-z0-9_\-]{{1,64}}">
<datalist id="customers"><option value="cust-42"><option value="cust-7"><option value="cust-1001"></datalist>
<button type="submit">Sign in</button>
</form>
</body></html>
"#
    ))
}

#[derive(Debug, Deserialize)]
struct SignIn {
    customer: String,
    redirect: Option<String>,
}

/// The identity provider's answer: a session for the customer, and back.
async fn signed_in(State(alb): State<Arc<Alb>>, Form(form): Form<SignIn>) -> Response {
    if order_contract::order::check_customer_id(&form.customer).is_err() {
        return (
            StatusCode::BAD_REQUEST,
            "A customer id is 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'; go back and pick another.",
        )
            .into_response();
    }
    let Some(cookie) = session_cookie(&alb.keys, &alb.listener, &form.customer) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = Redirect::to(local_path(form.redirect.as_deref())).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("{cookie}; Path=/; HttpOnly; SameSite=Lax")) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The region's key endpoint: the PEM of `kid`, 404 for any other.
async fn public_key(
    State(alb): State<Arc<Alb>>,
    axum::extract::Path(kid): axum::extract::Path<String>,
) -> Response {
    if kid == alb.keys.kid {
        alb.keys.pem.clone().into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
