//! Logs and metrics. Logs are JSON lines on stdout (target `symbolon::access` for the access
//! log); metrics go to a Prometheus recorder installed once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber. `RUST_LOG` overrides the default level (`info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus handle (installed on first use). `None` if another recorder was
/// installed first, in which case `/metrics` says so.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("symbolon_request_duration_seconds".into()),
                    &LATENCY_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            metrics::describe_counter!(
                "symbolon_handshakes_total",
                "TLS handshakes by result (accepted, rejected) and reason"
            );
            metrics::describe_counter!(
                "symbolon_requests_total",
                "HTTP requests by route and status"
            );
            metrics::describe_histogram!(
                "symbolon_request_duration_seconds",
                "Time from request to response headers, by route"
            );
            metrics::describe_counter!(
                "symbolon_reloads_total",
                "Configuration reloads by result (applied, refused)"
            );
            Some(handle)
        })
        .clone()
}

/// The error and its causes, joined, so a 502 names the real cause ("connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
