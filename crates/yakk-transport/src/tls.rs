//! The certificates yakk trusts as a TLS client (`turns:` relays here; `wss://` signalling
//! servers in the session crate): the Web PKI roots compiled in, plus those of a PEM file named
//! by `SSL_CERT_FILE`, for a rendezvous with a private certificate authority.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The environment variable naming extra trusted certificates (PEM).
pub const CA_FILE_ENV: &str = "SSL_CERT_FILE";

/// A TLS client configuration with [`roots`], built once per process.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots()).with_no_client_auth());
            match config {
                Ok(config) => Arc::new(config),
                // The ring provider supports the default versions; should it ever not, TLS
                // connections fail with the error instead of the process.
                Err(e) => {
                    tracing::warn!("TLS client configuration: {e}");
                    Arc::new(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(roots())
                            .with_no_client_auth(),
                    )
                }
            }
        })
        .clone()
}

/// The Web PKI roots plus the certificates in `$SSL_CERT_FILE` (an unreadable file or a bad
/// certificate in it is logged and skipped).
pub fn roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = std::env::var_os(CA_FILE_ENV) {
        match CertificateDer::pem_file_iter(&path) {
            Ok(certs) => {
                for cert in certs {
                    match cert.map(|c| roots.add(c)) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("{CA_FILE_ENV}: a certificate skipped: {e}"),
                        Err(e) => tracing::warn!("{CA_FILE_ENV}: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("{CA_FILE_ENV} {}: {e}", path.to_string_lossy()),
        }
    }
    roots
}
