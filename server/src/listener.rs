//! The HTTP listener of `[http]`: HTTPS with rustls when a certificate is
//! configured, otherwise plain HTTP, which is only allowed on a loopback
//! address unless `allow_plaintext = true` (see [`apr_tls::check_plaintext`]).
//!
//! With `client_ca`, the TLS handshake requires a client certificate signed by
//! that CA (mutual TLS for site gateways): a client without one never gets to
//! send a request. Handshakes run in their own tasks (bounded in time), so a
//! slow or silent client cannot hold up the others; [`TlsListener`] hands the
//! finished connections to `axum::serve` through its `Listener` trait, with
//! the peer address, so `ConnectInfo` (the loopback check of `/metrics`) works
//! the same over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::config::Http;
use crate::error::{Error, Result};
use crate::AppState;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 256;

/// The bound `[http]` listener.
#[derive(Debug)]
pub enum HttpListener {
    /// Plain HTTP (loopback, or `allow_plaintext`).
    Plain(TcpListener),
    /// HTTPS.
    Tls(TlsListener),
}

impl HttpListener {
    /// Binds `[http] listen` as configured: TLS with `tls_cert`/`tls_key`
    /// (and client certificates from `client_ca`), else plain within the
    /// plaintext rule. Errors name the key or file at fault.
    pub async fn bind(http: &Http) -> Result<HttpListener> {
        let addr: SocketAddr = http.listen.parse().map_err(|_| {
            Error::Invalid(format!("[http] listen {:?} is not host:port", http.listen))
        })?;
        let tls = tls_config(http)?;
        if tls.is_none() {
            apr_tls::check_plaintext(
                addr,
                http.allow_plaintext,
                "[http] listen",
                "[http] tls_cert and tls_key",
                "[http] allow_plaintext",
            )
            .map_err(|e| Error::Invalid(e.to_string()))?;
        }
        let tcp = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            what: format!("cannot listen on {addr}"),
            source,
        })?;
        Ok(match tls {
            Some(config) => HttpListener::Tls(TlsListener::new(tcp, config)?),
            None => HttpListener::Plain(tcp),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        match self {
            HttpListener::Plain(l) => l.local_addr().map_err(|source| Error::Io {
                what: "reading the listen address".into(),
                source,
            }),
            HttpListener::Tls(l) => Ok(l.local),
        }
    }

    /// Whether clients connect with HTTPS.
    pub fn is_tls(&self) -> bool {
        matches!(self, HttpListener::Tls(_))
    }
}

/// The rustls server configuration of `[http]`, if TLS is configured.
pub fn tls_config(http: &Http) -> Result<Option<Arc<rustls::ServerConfig>>> {
    let invalid = |e: apr_tls::TlsError| Error::Invalid(format!("[http]: {e}"));
    match (
        apr_tls::configured(&http.tls_cert),
        apr_tls::configured(&http.tls_key),
    ) {
        (Some(cert), Some(key)) => Ok(Some(
            apr_tls::server_config(
                cert,
                key,
                apr_tls::configured(&http.client_ca),
                &[b"http/1.1"],
            )
            .map_err(invalid)?,
        )),
        (None, None) if apr_tls::configured(&http.client_ca).is_some() => Err(Error::Invalid(
            "[http] client_ca needs tls_cert and tls_key (mutual TLS is TLS)".into(),
        )),
        (None, None) => Ok(None),
        _ => Err(Error::Invalid(
            "[http] tls_cert and tls_key go together: set both or neither".into(),
        )),
    }
}

/// Serves the app on `listener` (see [`crate::serve`]) until `shutdown`.
pub async fn serve(
    listener: HttpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    match listener {
        HttpListener::Plain(l) => crate::serve(l, state, shutdown).await,
        HttpListener::Tls(l) => crate::serve(l, state, shutdown).await,
    }
}

/// A TLS listener for `axum::serve`: a task accepts TCP connections and runs
/// each handshake in its own task; finished ones queue here.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Result<TlsListener> {
        let local = tcp.local_addr().map_err(|source| Error::Io {
            what: "reading the listen address".into(),
            source,
        })?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(
            accept_tls(tcp, TlsAcceptor::from(config), tx)
                .instrument(tracing::info_span!("https_listener", %local)),
        );
        info!(%local, "HTTPS listener");
        Ok(TlsListener {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(
            async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        debug!(%peer, "TLS handshake done");
                        let _ = ready.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => warn!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => warn!(%peer, "TLS handshake timed out"),
                }
            }
            .in_current_span(),
        );
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task is gone (only on drop): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(listen: &str) -> Http {
        Http {
            listen: listen.into(),
            ..Http::default()
        }
    }

    #[tokio::test]
    async fn plain_http_is_refused_off_loopback_unless_allowed() {
        let e = HttpListener::bind(&http("0.0.0.0:0")).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("[http] allow_plaintext") && text.contains("0.0.0.0:0"),
            "{text}"
        );
        let l = HttpListener::bind(&http("127.0.0.1:0")).await.unwrap();
        assert!(!l.is_tls());
        let mut allowed = http("0.0.0.0:0");
        allowed.allow_plaintext = true;
        assert!(HttpListener::bind(&allowed).await.is_ok());
    }

    #[tokio::test]
    async fn half_a_tls_configuration_is_an_error() {
        let mut h = http("127.0.0.1:0");
        h.tls_cert = "/nonexistent/cert.pem".into();
        let e = HttpListener::bind(&h).await.unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let mut h = http("127.0.0.1:0");
        h.client_ca = "/nonexistent/ca.pem".into();
        let e = HttpListener::bind(&h).await.unwrap_err();
        assert!(e.to_string().contains("client_ca"), "{e}");
        let mut h = http("127.0.0.1:0");
        h.tls_cert = "/nonexistent/cert.pem".into();
        h.tls_key = "/nonexistent/key.pem".into();
        let e = HttpListener::bind(&h).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }
}
