//! Who is ordering: the customer the load balancer signed in.
//!
//! Behind a listener rule with an authenticate action, the ALB forwards every
//! request with `x-amzn-oidc-data`: the user's claims as a JWT it signed with
//! ES256 (ECDSA, P-256, SHA-256). Its three segments are base64url *with*
//! padding, which strict JWT libraries refuse, so it is read here. The checks
//! are the ones the ALB user guide lists under "User claims encoding and
//! signature verification"
//! (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-authenticate-users.html>):
//! the header's `alg` is `ES256`, its `signer` is this load balancer's ARN, it
//! has not expired (`exp`), and the signature verifies with the public key the
//! region's endpoint serves as PEM at `<endpoint>/<kid>`.
//!
//! The customer is the claims' `sub`, the identity provider's stable user id (a
//! Cognito user pool's `sub` is a UUID, which fits the contract's customer id
//! rule). A `sub` that does not fit that rule is refused with `403`: it is a
//! real sign-in, but not one an order can be stored under, and mapping it to
//! something else would hide that from the operator.
//!
//! With no signer configured (trial mode, no certificate) nobody can sign in:
//! orders carry their customer in the body, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, ParsedPublicKey,
};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use support::{Env, EnvError};

use crate::problem::Problem;
use crate::routes::RETRY_AFTER_SECS;

/// The header the load balancer puts the signed claims in.
pub const CLAIMS_HEADER: &str = "x-amzn-oidc-data";

/// How long one fetch of a public key may take.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A PEM public key is a few hundred bytes; anything larger is not one.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// Keys kept; the load balancer signs with few, so this only bounds a flood of made-up `kid`s.
const MAX_CACHED_KEYS: usize = 64;

/// base64url, padded as the ALB sends it or not.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Sign-in settings: `ALB_SIGNER_ARN` turns verification on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInConfig {
    /// The load balancer's ARN, which the token's `signer` must equal (`ALB_SIGNER_ARN`).
    pub signer: String,
    /// Where public keys are fetched by `kid` (`ALB_KEY_ENDPOINT`, default
    /// `https://public-keys.auth.elb.<region of the ARN>.amazonaws.com`).
    pub key_endpoint: String,
    /// Where sign-out sends the browser once the session cookies are expired:
    /// the identity provider's logout (`SIGN_OUT_URL`, default `/`).
    pub sign_out_url: String,
}

impl SignInConfig {
    /// `None` when `ALB_SIGNER_ARN` is unset (trial mode).
    pub fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Option<Self>, EnvError> {
        let Some(signer) = env.optional("ALB_SIGNER_ARN") else {
            return Ok(None);
        };
        let fields: Vec<&str> = signer.split(':').collect();
        let region = match fields.as_slice() {
            ["arn", _, "elasticloadbalancing", region, _, resource]
                if !region.is_empty() && resource.starts_with("loadbalancer/app/") =>
            {
                (*region).to_owned()
            }
            _ => {
                return Err(EnvError::Invalid {
                    name: "ALB_SIGNER_ARN",
                    value: signer,
                    expected: "the Application Load Balancer's ARN, \
                               arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>"
                        .into(),
                });
            }
        };
        let key_endpoint = env
            .optional("ALB_KEY_ENDPOINT")
            .unwrap_or_else(|| format!("https://public-keys.auth.elb.{region}.amazonaws.com"));
        Ok(Some(Self {
            signer,
            key_endpoint: key_endpoint.trim_end_matches('/').to_owned(),
            sign_out_url: env
                .optional("SIGN_OUT_URL")
                .unwrap_or_else(|| "/".to_owned()),
        }))
    }
}

/// Why a request carries no customer.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no {CLAIMS_HEADER} header")]
    Missing,
    #[error("{0}")]
    Invalid(String),
    #[error("the signed-in subject {0:?} is not a valid customer id")]
    NotACustomerId(String),
    #[error("the load balancer's public key {kid} could not be fetched: {reason}")]
    KeysUnavailable { kid: String, reason: String },
}

impl From<Refused> for Problem {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Missing | Refused::Invalid(_) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "You are not signed in (or your sign-in has expired): sign in on the shop's \
                 page, then send the request again.",
            ),
            Refused::NotACustomerId(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "Your account's user id cannot be used as a customer id (1 to 64 characters of \
                 A-Z, a-z, 0-9, '_' or '-'); ask the shop to set up your account.",
            ),
            Refused::KeysUnavailable { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Your sign-in cannot be checked right now; send the request again in \
                     {RETRY_AFTER_SECS} seconds."
                ),
            )
            .with_retry_after(RETRY_AFTER_SECS),
        }
    }
}

/// The token's header, as the ALB writes it.
#[derive(Debug, Deserialize)]
struct TokenHeader {
    alg: String,
    kid: String,
    signer: String,
    /// Seconds since the epoch.
    exp: i64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Checks `x-amzn-oidc-data` and keeps the public keys it fetched.
#[derive(Debug)]
pub struct Verifier {
    config: SignInConfig,
    keys: Mutex<HashMap<String, Arc<ParsedPublicKey>>>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// The machine has no TLS root certificates to reach the key endpoint with.
#[derive(Debug, thiserror::Error)]
#[error("no TLS root certificates to fetch the load balancer's public keys with: {0}")]
pub struct NoTlsRoots(String);

impl Verifier {
    pub fn new(config: SignInConfig) -> Result<Self, NoTlsRoots> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|err| NoTlsRoots(err.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            config,
            keys: Mutex::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The customer signed in by `token`, checked at `now` (seconds since the epoch).
    pub async fn customer(&self, token: &str, now: i64) -> Result<String, Refused> {
        let header = checked_header(token, &self.config.signer, now)?;
        let key = self.key(&header.kid).await?;
        let claims = verified_claims(token, &key)
            .ok_or_else(|| Refused::Invalid("bad signature".to_owned()))?;
        customer_in(claims)
    }

    /// The public key `kid`, from the cache or the key endpoint. A key the
    /// endpoint does not have (4xx) makes the token invalid; an endpoint that
    /// cannot answer makes sign-ins uncheckable for now.
    async fn key(&self, kid: &str) -> Result<Arc<ParsedPublicKey>, Refused> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        // A `kid` goes into a URL path: only the characters of an id.
        if kid.is_empty()
            || kid.len() > 128
            || !kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Refused::Invalid(format!("malformed kid {kid:?}")));
        }
        let unavailable = |reason: String| Refused::KeysUnavailable {
            kid: kid.to_owned(),
            reason,
        };
        let url = format!("{}/{kid}", self.config.key_endpoint);
        let request = hyper::Request::get(&url)
            .body(Empty::new())
            .map_err(|err| unavailable(err.to_string()))?;
        let response = tokio::time::timeout(KEY_FETCH_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unavailable(format!("no answer from {url} within {KEY_FETCH_TIMEOUT:?}")))?
            .map_err(|err| unavailable(format!("{url}: {err}")))?;
        let status = response.status();
        if status.is_client_error() {
            return Err(Refused::Invalid(format!("unknown kid {kid:?} ({status})")));
        }
        if !status.is_success() {
            return Err(unavailable(format!("{url} answered {status}")));
        }
        let pem = Limited::new(response.into_body(), MAX_KEY_BYTES)
            .collect()
            .await
            .map_err(|err| unavailable(format!("{url}: {err}")))?
            .to_bytes();
        let key = SubjectPublicKeyInfoDer::from_pem_slice(&pem)
            .ok()
            .and_then(|der| ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, der.as_ref()).ok())
            .ok_or_else(|| unavailable(format!("{url} did not answer a P-256 public key (PEM)")))?;
        let key = Arc::new(key);
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(kid.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    fn cached(&self, kid: &str) -> Option<Arc<ParsedPublicKey>> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.get(kid).cloned()
    }
}

/// The header of `token` if it is the ALB's and still good at `now`: `alg`
/// ES256, `signer` this load balancer, `exp` after `now`. All but the signature.
fn checked_header(token: &str, signer: &str, now: i64) -> Result<TokenHeader, Refused> {
    let invalid = |why: &str| Refused::Invalid(why.to_owned());
    let header: TokenHeader = token
        .split('.')
        .next()
        .and_then(decode_json)
        .ok_or_else(|| invalid("unreadable header"))?;
    if header.alg != "ES256" {
        return Err(Refused::Invalid(format!(
            "algorithm {:?}, not ES256",
            header.alg
        )));
    }
    if header.signer != signer {
        return Err(Refused::Invalid(format!("signed by {:?}", header.signer)));
    }
    if header.exp <= now {
        return Err(invalid("expired"));
    }
    Ok(header)
}

/// The customer the claims' `sub` names.
fn customer_in(claims: serde_json::Value) -> Result<String, Refused> {
    let claims: Claims =
        serde_json::from_value(claims).map_err(|_| Refused::Invalid("no sub claim".to_owned()))?;
    match order_contract::order::check_customer_id(&claims.sub) {
        Ok(()) => Ok(claims.sub),
        Err(_) => Err(Refused::NotACustomerId(claims.sub)),
    }
}

/// The customer `token` names, checked as [`Verifier::customer`] checks it
/// but for the signature: for a target that cannot fetch the public keys and
/// that only this load balancer can invoke (a Lambda target), where the
/// invocation path vouches for the token.
pub fn unverified_customer(token: &str, signer: &str, now: i64) -> Result<String, Refused> {
    checked_header(token, signer, now)?;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(decode_json)
        .ok_or_else(|| Refused::Invalid("unreadable claims".to_owned()))?;
    customer_in(claims)
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    serde_json::from_slice(&BASE64URL.decode(segment).ok()?).ok()
}

/// The claims of a three-segment token whose ES256 signature `key` verifies,
/// over the first two segments exactly as sent (padding included).
pub fn verified_claims(token: &str, key: &ParsedPublicKey) -> Option<serde_json::Value> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (_header, claims) = signed.split_once('.')?;
    if claims.contains('.') {
        return None;
    }
    key.verify_sig(signed.as_bytes(), &BASE64URL.decode(signature).ok()?)
        .ok()?;
    decode_json(claims)
}

/// Signs `header` and `claims` as the ALB does: ES256, each segment base64url
/// with padding. For `local-alb` and tests; the producer only verifies.
pub fn sign(
    key: &EcdsaKeyPair,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, aws_lc_rs::error::Unspecified> {
    let signed = format!(
        "{}.{}",
        BASE64URL.encode(header.to_string()),
        BASE64URL.encode(claims.to_string())
    );
    let signature = key.sign(&SystemRandom::new(), signed.as_bytes())?;
    Ok(format!("{signed}.{}", BASE64URL.encode(signature.as_ref())))
}

/// A new P-256 key for signing, as PKCS#8 (what `local-alb` keeps on disk).
pub fn new_signing_key() -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map(|document| document.as_ref().to_vec())
}

/// `key`'s public half as the region's key endpoint serves it: PEM
/// (`-----BEGIN PUBLIC KEY-----`, the DER SubjectPublicKeyInfo).
pub fn public_key_pem(key: &EcdsaKeyPair) -> Result<String, aws_lc_rs::error::Unspecified> {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    let der: PublicKeyX509Der<'_> = key.public_key().as_der()?;
    let base64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = base64
        .as_bytes()
        .chunks(64)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .collect();
    Ok(format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    ))
}

/// `GET /sign-out`. The ALB has no sign-out action: the application expires
/// its session cookies (`AWSELBAuthSessionCookie-0`, `-1`, … as it shards a
/// large session) and sends the browser to the identity provider's logout, or
/// the ALB would sign the customer straight back in
/// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-authenticate-users.html>, "Authentication logout").
pub fn sign_out(verifier: Option<&Verifier>) -> Response {
    let to = verifier.map_or("/", |v| v.config.sign_out_url.as_str());
    let mut response = axum::response::Redirect::to(to).into_response();
    for shard in 0..4 {
        let expired = format!(
            "AWSELBAuthSessionCookie-{shard}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&expired) {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, value);
        }
    }
    response
}

/// The signed-in customer of a request, or `None` when sign-in is off (trial mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn(pub Option<String>);

/// Middleware: with a verifier, refuses a request without a valid sign-in and
/// records the customer; without one, records that sign-in is off.
pub async fn sign_in(
    State(verifier): State<Option<Arc<Verifier>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let customer = match &verifier {
        None => None,
        Some(verifier) => match customer_of(verifier, request.headers()).await {
            Ok(customer) => Some(customer),
            Err(refused) => {
                tracing::info!(reason = %refused, "request without a valid sign-in");
                return Problem::from(refused).into_response();
            }
        },
    };
    request.extensions_mut().insert(SignedIn(customer));
    next.run(request).await
}

async fn customer_of(verifier: &Verifier, headers: &HeaderMap) -> Result<String, Refused> {
    let token = headers
        .get(CLAIMS_HEADER)
        .ok_or(Refused::Missing)?
        .to_str()
        .map_err(|_| Refused::Invalid("not ASCII".to_owned()))?;
    verifier
        .customer(token, chrono::Utc::now().timestamp())
        .await
}

#[cfg(test)]
mod tests;
