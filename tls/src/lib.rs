//! TLS for the APR links, in one place for every part: the device → gateway
//! MQTT link (the embedded broker's gate, mosquitto, the device clients), and
//! the gateway → server and browser → server HTTPS link.
//!
//! Everything here builds [`rustls`] configurations on the **ring** crypto
//! provider, explicitly (never the process default, never aws-lc-rs), from PEM
//! files named in a part's TOML configuration:
//!
//! - [`server_config`]: a listener's certificate chain and key, and
//!   optionally a CA whose client certificates it requires (mutual TLS, for
//!   gateways at the server).
//! - [`client_config`]: the CA a client trusts (only that one: no system or
//!   bundled roots), and optionally the client's own certificate and key.
//! - [`check_plaintext`]: the rule that a plain (unencrypted) listener is
//!   only started on a loopback address unless the configuration says
//!   `allow_plaintext = true`.
//!
//! # Layout
//! One module: PEM loading ([`load_certs`], [`load_key`]), the two config
//! builders, the plaintext rule, and [`TlsError`].
#![deny(unsafe_code, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use rustls;

/// What can go wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {detail}")]
    File {
        /// Which file it is (e.g. "certificate chain").
        what: &'static str,
        /// Its path.
        path: String,
        /// Why it cannot be used.
        detail: String,
    },
    /// rustls refused the material (key does not match, bad CA, ...).
    #[error("TLS setup: {0}")]
    Setup(String),
    /// A plain listener on a non-loopback address without `allow_plaintext`.
    #[error(
        "{what}: refusing to listen without TLS on {addr}, which is not a loopback address; \
         configure a certificate and key ({cert_keys}) or set {allow_key} = true to accept \
         unencrypted traffic on the network"
    )]
    PlaintextRefused {
        /// The listener (e.g. "[http] listen").
        what: String,
        /// Its address.
        addr: SocketAddr,
        /// The keys that configure TLS for it.
        cert_keys: String,
        /// The key that allows plain text.
        allow_key: String,
    },
}

/// The ring crypto provider every configuration here is built on.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(what: &'static str, path: &Path, detail: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Every certificate in a PEM file (a chain: leaf first), at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    const WHAT: &str = "certificate file";
    let bytes = std::fs::read(path).map_err(|e| file_err(WHAT, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(WHAT, path, e))?;
    if certs.is_empty() {
        return Err(file_err(WHAT, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key file";
    let bytes = std::fs::read(path).map_err(|e| file_err(WHAT, path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| file_err(WHAT, path, e))
}

/// The trust anchors of a PEM file of CA certificates.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_err("CA file", path, e))?;
    }
    Ok(roots)
}

fn setup(e: rustls::Error) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// A server configuration: `cert` (PEM chain) and `key`; with `client_ca`,
/// every client must present a certificate that CA signed (mutual TLS).
/// `alpn` lists the application protocols offered (e.g. `http/1.1`).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(setup)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Setup(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| {
            TlsError::Setup(format!(
                "certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the CAs in `ca` and, with
/// `identity` (certificate chain, key), presents that certificate.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_root_certificates(load_roots(ca)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                TlsError::Setup(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The plaintext rule: a listener without TLS may use a loopback address;
/// any other address needs `allow_plaintext`. `what` names the listener,
/// `cert_keys` and `allow_key` the configuration keys, for the error.
pub fn check_plaintext(
    addr: SocketAddr,
    allow_plaintext: bool,
    what: &str,
    cert_keys: &str,
    allow_key: &str,
) -> Result<(), TlsError> {
    if addr.ip().is_loopback() || allow_plaintext {
        Ok(())
    } else {
        Err(TlsError::PlaintextRefused {
            what: what.to_string(),
            addr,
            cert_keys: cert_keys.to_string(),
            allow_key: allow_key.to_string(),
        })
    }
}

/// Which non-empty configuration string names a file (empty: not set).
pub fn configured(path: &str) -> Option<&Path> {
    (!path.trim().is_empty()).then(|| Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn plain_listeners_are_allowed_on_loopback_only_unless_configured() {
        let on = |a: &str, allow| check_plaintext(a.parse().unwrap(), allow, "x", "a/b", "c");
        assert!(on("127.0.0.1:1883", false).is_ok());
        assert!(on("[::1]:8080", false).is_ok());
        let e = on("0.0.0.0:8080", false).unwrap_err();
        assert!(
            e.to_string().contains("set c = true") && e.to_string().contains("0.0.0.0:8080"),
            "{e}"
        );
        assert!(on("192.168.1.10:1883", false).is_err());
        assert!(on("0.0.0.0:8080", true).is_ok());
    }

    #[test]
    fn configs_build_from_generated_pem_files_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let ca_pem = write(dir.path(), "ca.pem", &ca.pem());
        let cert = write(dir.path(), "cert.pem", &leaf.pem());
        let key = write(dir.path(), "key.pem", &leaf_key.serialize_pem());
        assert!(server_config(&cert, &key, None, &[b"http/1.1"]).is_ok());
        assert!(server_config(&cert, &key, Some(&ca_pem), &[]).is_ok());
        assert!(client_config(&ca_pem, None).is_ok());
        assert!(client_config(&ca_pem, Some((&cert, &key))).is_ok());

        let e = server_config(&cert, &dir.path().join("missing.pem"), None, &[]).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = write(dir.path(), "empty.pem", "not a certificate\n");
        let e = client_config(&empty, None).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        // A key that does not belong to the certificate.
        let other_key = write(
            dir.path(),
            "other.pem",
            &rcgen::KeyPair::generate().unwrap().serialize_pem(),
        );
        assert!(server_config(&cert, &other_key, None, &[]).is_err());
    }
}
