//! Logs for the command-line tools (`local-esm`, `replay-dlq`): to stderr, so
//! that stdout stays free for what the tool prints; filtered by `RUST_LOG`, or
//! by the tool's default when it is unset or invalid; JSON lines when
//! `LOG_FORMAT=json`; colours only for a person at a terminal.
//!
//! The producer sets up its own (`producer::telemetry`): a service logs to
//! stdout for journald and CloudWatch, and refuses an invalid `RUST_LOG` at
//! start-up rather than run with logs it was not asked for.

use std::io::IsTerminal;

/// Installs the global subscriber; call once, first thing in `main`.
/// `default` is an `EnvFilter` directive such as `"info"` or `"warn,my_tool=info"`.
pub fn init_tool_logs(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
}
