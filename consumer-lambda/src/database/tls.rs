//! TLS to PostgreSQL with full verification: the server's chain must lead to a CA
//! of the configured bundle (in AWS, the RDS CA bundle) and its certificate must
//! name the host we connect to.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read the CA bundle {path} (DB_CA_BUNDLE): {detail}")]
    Bundle { path: String, detail: String },
    #[error("the CA bundle {path} (DB_CA_BUNDLE) holds no usable certificate")]
    Empty { path: String },
    #[error("could not set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// A connector trusting exactly the certificates of the PEM bundle at `path`.
pub fn connector(path: &Path) -> Result<MakeRustlsConnect, TlsError> {
    let shown = || path.display().to_string();
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsError::Bundle {
            path: shown(),
            detail: err.to_string(),
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(TlsError::Empty { path: shown() });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
