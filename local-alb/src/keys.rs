//! The load balancer's signing key, kept in a file so that sessions (and the
//! `CUSTOMER_COOKIE` that `scripts/dev` exports) outlive a restart; the
//! session cookie and the `x-amzn-oidc-data` it turns into.

use std::path::Path;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey,
};
use producer::auth;
use serde_json::json;

/// The ARN local-alb signs as; the producer behind it is given the same one.
pub const LOCAL_SIGNER: &str =
    "arn:aws:elasticloadbalancing:local:000000000000:loadbalancer/app/local-alb/0000000000000000";

/// How long a signed `x-amzn-oidc-data` is good for: it is made per request.
const CLAIMS_LIFETIME_SECS: i64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read or write the signing key {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a P-256 key in PKCS#8: delete it and a new one is made (signed-in sessions end)"
    )]
    Unusable { path: String },
}

#[derive(Debug)]
pub struct Keys {
    key: EcdsaKeyPair,
    public: ParsedPublicKey,
    /// Stable for the key: derived from its public half.
    pub kid: String,
    pub pem: String,
    pub signer: String,
}

impl Keys {
    /// The key in `path`, made (readable by its owner only) when there is none.
    pub fn load_or_create(path: &Path, signer: &str) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let unusable = || KeyError::Unusable {
                    path: shown.clone(),
                };
                let pkcs8 = auth::new_signing_key().map_err(|_| unusable())?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, &pkcs8).map_err(io)?;
                pkcs8
            }
            Err(err) => return Err(io(err)),
        };
        Self::from_pkcs8(&pkcs8, signer).ok_or(KeyError::Unusable { path: shown })
    }

    fn from_pkcs8(pkcs8: &[u8], signer: &str) -> Option<Self> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).ok()?;
        let public =
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref()).ok()?;
        let hash = digest(&SHA256, key.public_key().as_ref());
        let hex: String = hash.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Shaped like the ALB's key ids, a UUID.
        let kid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        let pem = auth::public_key_pem(&key).ok()?;
        Some(Self {
            key,
            public,
            kid,
            pem,
            signer: signer.to_owned(),
        })
    }

    /// A session cookie value for `customer`, good until `expires` (seconds
    /// since the epoch). Its header has no `signer`, so the producer never
    /// takes it for `x-amzn-oidc-data`.
    pub fn session(&self, customer: &str, expires: i64) -> Option<String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "session"});
        auth::sign(
            &self.key,
            &header,
            &json!({"sub": customer, "exp": expires}),
        )
        .ok()
    }

    /// The customer of a session cookie this key signed, if it has not expired at `now`.
    pub fn customer_of_session(&self, cookie: &str, now: i64) -> Option<String> {
        let claims = auth::verified_claims(cookie, &self.public)?;
        let exp = claims.get("exp")?.as_i64()?;
        let sub = claims.get("sub")?.as_str()?;
        (exp > now).then(|| sub.to_owned())
    }

    /// `x-amzn-oidc-data` for `customer` at `now`: the header fields and claims
    /// the ALB documents, ES256, padded base64url.
    pub fn claims(&self, customer: &str, now: i64) -> Option<String> {
        let exp = now + CLAIMS_LIFETIME_SECS;
        let header = json!({
            "alg": "ES256",
            "kid": self.kid,
            "signer": self.signer,
            "iss": "local-alb",
            "client": "local-alb",
            "exp": exp,
        });
        let claims = json!({"sub": customer, "username": customer, "exp": exp, "iss": "local-alb"});
        auth::sign(&self.key, &header, &claims).ok()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
