//! TLS set-up shared by the servers and the admin client.

/// Makes ring rustls's process-wide crypto provider, as tonic's TLS is built with it. Two
/// providers are compiled in (deltalake's HTTP client brings aws-lc-rs), and rustls then
/// refuses to pick one by itself. Idempotent.
pub fn use_ring_for_tls() {
    // An error means a provider is installed already, which is all this asks for.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server's TLS configuration from a PEM certificate chain and key; `door` names the
/// listener in errors.
///
/// # Errors
/// [`tarn_lake::Error::InvalidArgument`] when the certificate or key does not parse or
/// match.
pub fn server_config(
    cert: &[u8],
    key: &[u8],
    door: &str,
) -> tarn_lake::error::Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use_ring_for_tls();
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        tarn_lake::error::Error::InvalidArgument(format!("TLS {what} for the {door}: {e}"))
    };
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("key", &e))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate or key", &e))?;
    Ok(std::sync::Arc::new(config))
}
