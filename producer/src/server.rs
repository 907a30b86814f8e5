//! The HTTP/1 server loop. `axum::serve` leaves hyper's header-read timeout off
//! and takes every connection offered; this loop sets the timeout, caps the
//! open connections, tells handlers the peer's address, and shuts down
//! gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::limits::Limits;

/// Serves `app` on `listener`, with `limits`' header-read timeout and
/// connection cap, until `shutdown` resolves, then lets every request in
/// progress be answered.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; stop rather than spin
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if accept_failed(&err, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small and written once: send them without Nagle's delay.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // Timeouts and clients that hang up: theirs, not ours.
                tracing::debug!(%peer, error = %err, "connection closed with an error");
            }
            drop(slot);
        });
    }
    // Closing the listener refuses new connections while the others finish.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Out of file descriptors and the like: wait a little instead of spinning on
/// the error. True when `shutdown` resolved meanwhile (it must not be polled again).
async fn accept_failed(
    err: &std::io::Error,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return false;
    }
    tracing::error!(error = %err, "cannot accept a connection; retrying in 1 s");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => false,
        () = shutdown => true,
    }
}
