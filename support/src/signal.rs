//! Waiting for Ctrl-C or SIGTERM. A listener that cannot be installed is logged
//! and the other signal alone stops the process.

use std::fmt;

use tokio::signal::unix::{self, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "Ctrl-C",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// Ctrl-C and SIGTERM, listened to from the moment this is built, so that
/// none is missed or kills the process with the default action.
#[derive(Debug)]
pub struct StopSignals {
    interrupt: Option<unix::Signal>,
    terminate: Option<unix::Signal>,
}

impl StopSignals {
    /// Installs both listeners; call it inside a Tokio runtime.
    pub fn listen() -> Self {
        Self {
            interrupt: install(SignalKind::interrupt(), "Ctrl-C", "SIGTERM"),
            terminate: install(SignalKind::terminate(), "SIGTERM", "Ctrl-C"),
        }
    }

    /// The next signal; a second call waits for a second one ("stop at once").
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            () = next(&mut self.interrupt) => Signal::Interrupt,
            () = next(&mut self.terminate) => Signal::Terminate,
        }
    }
}

/// The first Ctrl-C or SIGTERM after this call (not after the first poll).
pub fn shutdown_signal() -> impl Future<Output = Signal> + Send + 'static {
    let mut signals = StopSignals::listen();
    async move { signals.recv().await }
}

fn install(kind: SignalKind, name: &str, other: &str) -> Option<unix::Signal> {
    match unix::signal(kind) {
        Ok(listener) => Some(listener),
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for {name}; only {other} stops the process");
            None
        }
    }
}

async fn next(listener: &mut Option<unix::Signal>) {
    match listener {
        // `None` from `recv` means the runtime is shutting down: stop as well.
        Some(listener) => {
            listener.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Mutex;

    use super::*;

    /// Signals go to the whole test process: one test at a time sends them, so
    /// that no test receives another's.
    static SENDING: Mutex<()> = Mutex::const_new(());

    /// Sends `signal` to this very process, as `kill` from a shell would.
    fn send_to_self(signal: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {signal} failed: {status}");
    }

    async fn within_seconds<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the signal arrives within 10 s")
    }

    #[tokio::test]
    async fn the_shutdown_signal_resolves_on_sigterm_sent_to_the_process() {
        let _one_at_a_time = SENDING.lock().await;
        let stop = shutdown_signal();
        send_to_self("TERM");
        assert_eq!(within_seconds(stop).await, Signal::Terminate);
    }

    #[tokio::test]
    async fn stop_signals_tell_ctrl_c_from_sigterm_and_wait_again_for_a_second_one() {
        let _one_at_a_time = SENDING.lock().await;
        let mut signals = StopSignals::listen();
        send_to_self("INT");
        assert_eq!(within_seconds(signals.recv()).await, Signal::Interrupt);
        send_to_self("TERM");
        assert_eq!(within_seconds(signals.recv()).await, Signal::Terminate);
    }

    #[test]
    fn a_signal_is_named_as_an_operator_knows_it() {
        assert_eq!(Signal::Interrupt.to_string(), "Ctrl-C");
        assert_eq!(Signal::Terminate.to_string(), "SIGTERM");
    }
}
