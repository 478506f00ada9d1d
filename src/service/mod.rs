//! Living as a service: systemd notification and signals.

pub mod notify;
pub mod signals;

/// Resolves on SIGTERM or SIGINT (for the demo, a foreground command; the daemon uses
/// [`signals::Signals`], which answers every signal).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: stopping"),
    }
}
