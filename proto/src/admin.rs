//! The admin endpoint every binary serves: `/healthz` and `/metrics` (Prometheus text).

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::logging::LogFormat;

/// Flags every binary takes for its admin endpoint and its logs.
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin endpoint serving /healthz and /metrics.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Format of the log lines written to stderr; RUST_LOG sets the filter.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Builds the admin router over a registry of the binary's metrics.
///
/// `/healthz` answers `200 ok` while the process serves; `/metrics` renders the registry,
/// which always holds `substrate_build_info{component,version} 1`.
pub fn router(component: &'static str, mut registry: Registry) -> Router {
    let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    build_info
        .get_or_create(&vec![("component", component), ("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register(
        "substrate_build_info",
        "Which substrate-rs binary and version runs",
        build_info,
    );

    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(registry))
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "metrics could not be encoded\n".to_owned(),
            )
        }
    }
}

/// Serves the admin endpoint on `listener` until `shutdown` resolves.
///
/// # Errors
///
/// Fails when the listener fails to accept connections.
pub async fn serve(
    listener: TcpListener,
    component: &'static str,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz and /metrics");
    axum::serve(listener, router(component, registry)).with_graceful_shutdown(shutdown).await
}

/// Binds the admin address from `args` and serves it until SIGTERM or SIGINT.
///
/// The whole life of a binary that has nothing else to serve yet; binaries that serve more
/// call [`serve`] beside their other servers instead.
///
/// # Errors
///
/// Fails when the address cannot be bound (in use, not local) or the listener fails.
pub async fn run(
    component: &'static str,
    args: &AdminArgs,
    registry: Registry,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --admin-addr {}: {e}", args.admin_addr))?;
    serve(listener, component, registry, crate::shutdown::signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use tower::ServiceExt;

    use super::*;

    async fn get_body(path: &str) -> (StatusCode, String) {
        let app = router("test-component", Registry::default());
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        assert_eq!(get_body("/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
    }

    #[tokio::test]
    async fn metrics_name_the_component() {
        let (status, body) = get_body("/metrics").await;

        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#"substrate_build_info{component="test-component""#), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
