//! The signals that ask a loadfleet process to stop: Ctrl-C (SIGINT), and
//! SIGTERM, which `timeout`, systemd, `docker stop` and Kubernetes send.

/// The next Ctrl-C or SIGTERM.
#[cfg(unix)]
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The next Ctrl-C.
#[cfg(not(unix))]
pub async fn stop_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
