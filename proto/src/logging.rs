//! Structured logs with `tracing`, the same way in every binary.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Installs the global subscriber writing to stderr, filtered by `RUST_LOG` (default `info`).
///
/// Call once, first thing in `main`. A second call is ignored, so tests may call it freely.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// As [`init`], with the filter `default_directives` (e.g. `info,kube_client=off`) when
/// `RUST_LOG` is not set.
pub fn init_with_default(format: LogFormat, default_directives: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directives));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
