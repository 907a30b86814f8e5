//! Log set-up: human-readable by default, JSON lines when `LOG_FORMAT=json`
//! (for CloudWatch), filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is not a valid filter (e.g. `info` or `producer=debug,info`)")]
    Filter(#[source] tracing_subscriber::filter::FromEnvError),
    #[error("a global logger was already installed")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init() -> Result<(), TelemetryError> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(TelemetryError::Filter)?;
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, not in journald or files.
        .with_ansi(!json && std::io::stdout().is_terminal());
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(TelemetryError::Install)
}
