//! Accepting connections and serving HTTP/1.1 on them, with the limit `axum::serve` cannot set:
//! a deadline for a request's headers. Without one, a client sending a byte a second holds a
//! connection (and its task and buffers) for as long as it likes, before any request exists for
//! the timeouts and limits of the router to act on.
//!
//! HTTP/1.1 only: the proxies in front of the service speak it to their upstreams, and hyper's
//! HTTP/2 detection would wait without a deadline for a client that sends nothing.

use std::io;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` fires, then lets requests in progress finish
/// (idle connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    // The deadline runs from when the server starts waiting for a request: a new connection
    // that sends nothing, or an idle kept-alive one, is closed when it passes.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Without TCP_NODELAY a response written in two parts waits for the client's delayed
        // ACK (40 ms on Linux) once connections are busy.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Timeouts, resets and malformed requests end here; each is the client's doing.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A failed accept is the one client's problem (it gave up), or the process's (out of file
/// descriptors): then pause instead of spinning on the same error.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
