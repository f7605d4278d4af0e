//! TLS set-up shared by the servers and the admin client.

/// Makes ring rustls's process-wide crypto provider, as tonic's TLS is built with it. Two
/// providers are compiled in (deltalake's HTTP client brings aws-lc-rs), and rustls then
/// refuses to pick one by itself. Idempotent.
pub fn use_ring_for_tls() {
    // An error means a provider is installed already, which is all this asks for.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
