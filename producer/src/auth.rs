//! Who is ordering: the customer the load balancer signed in.
//!
//! Behind a listener rule with an authenticate action, the ALB forwards every
//! request with `x-amzn-oidc-data`: the user's claims as a JWT it signed with
//! ES256. [`support::claims`] reads and checks it but for the signature; the
//! [`Verifier`] here also verifies the signature with the public key the
//! region's endpoint serves as PEM at `<endpoint>/<kid>`.
//!
//! With no signer configured (trial mode, no certificate) nobody can sign in:
//! orders carry their customer in the body, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
pub use support::claims::{
    CLAIMS_HEADER, Refused, SignInConfig, new_signing_key, public_key_pem, sign,
    unverified_customer, verified_claims,
};
use support::claims::{checked_header, customer_in};

use crate::problem::Problem;
use crate::routes::RETRY_AFTER_SECS;

/// How long one fetch of a public key may take.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A PEM public key is a few hundred bytes; anything larger is not one.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// Keys kept; the load balancer signs with few, so this only bounds a flood of made-up `kid`s.
const MAX_CACHED_KEYS: usize = 64;

impl From<Refused> for Problem {
    fn from(refused: Refused) -> Self {
        refused.into_problem(RETRY_AFTER_SECS).into()
    }
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
