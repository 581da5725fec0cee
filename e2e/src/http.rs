//! HTTP clients for the harness's own requests to the local servers.

/// A client builder for plain-HTTP requests to loopback servers, with proxies ignored.
///
/// In a workspace build reqwest also carries rustls without a crypto provider (oci-client,
/// through atelet, asks for it that way), and then refuses to build a client until a provider
/// is installed; this installs ring, the one kube uses, first.
pub fn client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}
