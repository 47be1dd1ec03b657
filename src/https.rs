//! The HTTP(S) connector of hoist's own clients (the OCI registry API, the
//! canaries): rustls with ring, HTTP/1, and the system's root certificates
//! only when some peer speaks TLS.

use crate::error::{Error, Result};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Arc;
use std::time::Duration;

/// A connector for plain HTTP and HTTPS. `tls_peer` names whose
/// certificates the roots check ("ghcr.io", "the canaries"), or is `None`
/// when every peer speaks plain HTTP: then no roots are read, since reading
/// them (a bundle and a directory of ~150 files) is most of a short
/// command's time.
pub fn connector(
    tls_peer: Option<&str>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match tls_peer {
        Some(peer) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| {
                Error::failed(format!(
                    "cannot load the system's root certificates to check the TLS certificate of {peer}"
                ))
                .caused_by(e)
                .hint(
                    "install the CA certificates (Debian: apt-get install ca-certificates), \
                     or point SSL_CERT_FILE at a PEM bundle",
                )
            })?,
        None => {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::failed("cannot set up TLS").caused_by(e))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}
