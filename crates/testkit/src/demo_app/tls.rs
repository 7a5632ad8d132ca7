//! The demo app's HTTPS mode: a self-signed certificate made at start,
//! whatever server name the client asks for.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor with a fresh self-signed certificate for `name` (and
/// `localhost`); clients of the demo app do not verify it. Offers h2 and
/// http/1.1 by ALPN.
pub fn acceptor(name: &str) -> anyhow::Result<TlsAcceptor> {
    let mut names = vec!["localhost".to_owned()];
    if !name.is_empty() && name != "localhost" {
        names.push(name.to_owned());
    }
    let certified =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .context("TLS certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
