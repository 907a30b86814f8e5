//! RDS IAM authentication tokens: a SigV4-presigned `connect` URL, signed locally
//! with the function's own credentials and used as the password. A token is only
//! checked when a connection opens and is valid for 15 minutes, so every new
//! connection gets a freshly signed one: an expired token is never sent.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// How long RDS accepts a token after signing.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// SigV4's URI encoding: everything but the unreserved characters of RFC 3986.
const SIGV4: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, thiserror::Error)]
#[error("could not sign an RDS IAM authentication token")]
pub struct TokenError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// The token for `user` at `host:port`, signed at `now` with `credentials` for `region`.
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, TokenError> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(TOKEN_LIFETIME);
    settings.signature_location = SignatureLocation::QueryParams;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|err| TokenError(err.into()))?;
    let unsigned = format!(
        "{host}:{port}/?Action=connect&DBUser={}",
        utf8_percent_encode(user, SIGV4)
    );
    let url = format!("https://{unsigned}");
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|err| TokenError(err.into()))?;
    let (instructions, _signature) = sign(request, &params.into())
        .map_err(|err| TokenError(err.into()))?
        .into_parts();
    let mut token = unsigned;
    for (name, value) in instructions.params() {
        // Writing to a String cannot fail.
        let _ = write!(token, "&{name}={}", utf8_percent_encode(value, SIGV4));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const HOST: &str = "orders-proxy.proxy-abc123.eu-west-1.rds.amazonaws.com";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// 2026-11-24T18:27:15Z
    fn fixed_clock() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_544_835)
    }

    fn query(token: &str) -> (String, BTreeMap<String, String>) {
        let (address, query) = token.split_once("/?").expect("a query");
        let pairs = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("key=value");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        (address.to_owned(), pairs)
    }

    // The expected tokens were produced by botocore's `generate_db_auth_token`
    // (the AWS CLI's implementation) with the same credentials and a frozen clock.
    #[test]
    fn the_token_matches_the_aws_cli_for_long_term_credentials() {
        let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", SECRET, None, None, "test");
        let token = auth_token(
            HOST,
            5432,
            "orders_consumer",
            "eu-west-1",
            &credentials,
            fixed_clock(),
        )
        .expect("signed");
        let expected = "orders-proxy.proxy-abc123.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=orders_consumer&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261124%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261124T182715Z&X-Amz-SignedHeaders=host&X-Amz-Expires=900&X-Amz-Signature=7c2b0c0899587bf2bfd92fd4da5dca54026e4dad52424bda2882bc34de6cbe3e";
        assert_eq!(query(&token), query(expected));
        assert!(
            !token.starts_with("https://"),
            "RDS wants the token without a scheme"
        );
    }

    #[test]
    fn the_token_matches_the_aws_cli_for_temporary_credentials_as_lambda_has() {
        let credentials = Credentials::new(
            "ASIAIOSFODNN7EXAMPLE",
            SECRET,
            Some("IQoJb3JpZ2luX2VjEXAMPLE+token/with=chars".to_owned()),
            None,
            "test",
        );
        let token = auth_token(
            HOST,
            5432,
            "orders_consumer",
            "eu-west-1",
            &credentials,
            fixed_clock(),
        )
        .expect("signed");
        let expected = "orders-proxy.proxy-abc123.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=orders_consumer&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAIOSFODNN7EXAMPLE%2F20261124%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261124T182715Z&X-Amz-SignedHeaders=host&X-Amz-Expires=900&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2Btoken%2Fwith%3Dchars&X-Amz-Signature=f09a79657e5a660d00c6172eca70a9690859a66e4d7c13702f37d57838c50403";
        assert_eq!(query(&token), query(expected));
    }

    #[test]
    fn a_token_signed_later_differs_and_is_valid_for_fifteen_minutes() {
        let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", SECRET, None, None, "test");
        let now =
            auth_token(HOST, 5432, "u", "eu-west-1", &credentials, fixed_clock()).expect("signed");
        let later = auth_token(
            HOST,
            5432,
            "u",
            "eu-west-1",
            &credentials,
            fixed_clock() + Duration::from_secs(600),
        )
        .expect("signed");
        assert_ne!(now, later);
        assert_eq!(query(&later).1["X-Amz-Date"], "20261124T183715Z");
        assert_eq!(query(&later).1["X-Amz-Expires"], "900");
    }
}
