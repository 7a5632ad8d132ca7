//! The demo's certificates for TLS at the ingress gateway: a CA of its own
//! (what a user would get from their PKI, kept apart from the mesh CA) and a
//! server certificate for `istioinaction.io` signed by it, handed to the
//! gateway as the Kubernetes Secret `istio-system/istioinaction-cert` —
//! the seed's `kubectl create secret tls` — so that `credentialName` finds it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Where the files went.
pub struct EdgeCerts {
    /// The CA certificate clients pass to `curl --cacert`.
    pub ca_cert: PathBuf,
    /// The Secret YAML written into the config directory.
    pub secret: PathBuf,
}

/// Creates the demo CA in `dir` on first use (kept across runs, so a CA
/// file users saved keeps working), signs a fresh certificate for `hosts`,
/// and writes the Secret `namespace/name` into `config_dir`.
pub fn write(
    dir: &Path,
    config_dir: &Path,
    namespace: &str,
    name: &str,
    hosts: &[&str],
) -> anyhow::Result<EdgeCerts> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Mizzen demo CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = match (
        std::fs::read_to_string(&ca_cert),
        std::fs::read_to_string(&ca_key),
    ) {
        (Ok(cert), Ok(key)) => {
            let key = KeyPair::from_pem(&key).context("the demo CA key")?;
            Issuer::from_ca_cert_pem(&cert, key).context("the demo CA certificate")?
        }
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params.self_signed(&key)?;
            std::fs::write(&ca_cert, cert.pem())
                .with_context(|| format!("writing {}", ca_cert.display()))?;
            write_private(&ca_key, &key.serialize_pem())?;
            Issuer::new(ca_params, key)
        }
    };
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, hosts[0]);
    let cert = params.signed_by(&key, &issuer)?;
    let secret = config_dir.join(format!("{name}-secret.yaml"));
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "# The gateway's certificate for {hosts}, signed by the demo CA\n# ({ca}); `credentialName: {name}` refers to it.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{cert}  tls.key: |\n{key}",
        hosts = hosts.join(", "),
        ca = ca_cert.display(),
        cert = indent(&cert.pem()),
        key = indent(&key.serialize_pem()),
    );
    write_private(&secret, &yaml)?;
    Ok(EdgeCerts { ca_cert, secret })
}

/// Writes a file only its owner can read (it holds a private key).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parses_and_the_ca_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let first = write(
            &dir.path().join("ca"),
            &config,
            "istio-system",
            "cert",
            &["a.io"],
        )
        .unwrap();
        let ca = std::fs::read_to_string(&first.ca_cert).unwrap();
        let second = write(
            &dir.path().join("ca"),
            &config,
            "istio-system",
            "cert",
            &["a.io"],
        )
        .unwrap();
        assert_eq!(ca, std::fs::read_to_string(&second.ca_cert).unwrap());
        let docs = mizzen_api::parse_file(&second.secret).unwrap();
        assert_eq!(docs.len(), 1);
    }
}
