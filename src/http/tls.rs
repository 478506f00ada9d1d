//! HTTPS for the page: a listener that hands axum only connections whose TLS handshake is done.
//!
//! Handshakes run in their own tasks with a deadline, so a client that connects and says nothing
//! (or a slow one) holds up nobody else; a failed handshake is logged once at debug level and
//! dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::HttpTlsConfig;
use crate::telemetry::connection::{read_certs, read_key};

/// The longest a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for axum.
const READY: usize = 64;

/// The server side of `cfg` (certificate chain and key), or why it cannot be used.
pub fn server_config(cfg: &HttpTlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = read_certs(&cfg.cert)?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in the file (http.tls.cert)", cfg.cert.display()));
    }
    let key = read_key(&cfg.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!("{} and {}: the key does not fit the certificate: {e}", cfg.cert.display(), cfg.key.display())
        })?;
    Ok(Arc::new(config))
}

/// Connections that finished their handshake, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    /// The accepting task; ends with the listener.
    _accepting: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(READY);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "the page cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake with a page client failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake with a page client timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, _accepting: AbortOnDrop(accepting) })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended (only when aborted): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
