//! The load balancer's signed claims (`x-amzn-oidc-data`), checked as the ALB
//! user guide says ("User claims encoding and signature verification",
//! <https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-authenticate-users.html>):
//! `alg` ES256, `signer` this load balancer, `exp` not passed, and the
//! signature. Its segments are base64url *with* padding, which strict JWT
//! libraries refuse. The customer is the claims' `sub`; one that breaks the
//! customer id rule is a `403`. The status function, which cannot reach the
//! key endpoint, rests on its invocation path instead ([`unverified_customer`]).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, ParsedPublicKey};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::StatusCode;
use serde::Deserialize;

use crate::problem::Problem;
use crate::{Env, EnvError};

pub const CLAIMS_HEADER: &str = "x-amzn-oidc-data";

/// base64url, padded as the ALB sends it or not.
pub const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Sign-in settings: `ALB_SIGNER_ARN` turns verification on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInConfig {
    /// The load balancer's ARN, which the token's `signer` must equal.
    pub signer: String,
    /// Where public keys are fetched by `kid` (default: the ARN's region's).
    pub key_endpoint: String,
    /// The identity provider's logout, where sign-out sends the browser.
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

impl Refused {
    /// The answer to a request refused so.
    pub fn into_problem(self, retry_after_secs: u64) -> Problem {
        match self {
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
                     {retry_after_secs} seconds."
                ),
            )
            .with_retry_after(retry_after_secs),
        }
    }
}

/// The token's header, as the ALB writes it.
#[derive(Debug, Deserialize)]
pub struct TokenHeader {
    alg: String,
    pub kid: String,
    signer: String,
    /// Seconds since the epoch.
    exp: i64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// The header of `token` if it is the ALB's and still good at `now`: `alg`
/// ES256, `signer` this load balancer, `exp` after `now`. All but the signature.
pub fn checked_header(token: &str, signer: &str, now: i64) -> Result<TokenHeader, Refused> {
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
pub fn customer_in(claims: serde_json::Value) -> Result<String, Refused> {
    let claims: Claims =
        serde_json::from_value(claims).map_err(|_| Refused::Invalid("no sub claim".to_owned()))?;
    match order_contract::order::check_customer_id(&claims.sub) {
        Ok(()) => Ok(claims.sub),
        Err(_) => Err(Refused::NotACustomerId(claims.sub)),
    }
}

/// The customer `token` names, checked but for the signature: for a target
/// only this load balancer can invoke, where the invocation path vouches for it.
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

/// Signs `header` and `claims` as the ALB does, for `local-alb` and tests.
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
