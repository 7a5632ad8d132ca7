//! Who is asking for a certificate.
//!
//! The CA trusts a credential, never the CSR: the identity returned here is
//! the only name that goes into the issued certificate. On Kubernetes the
//! credential is the pod's projected service-account token, checked with a
//! TokenReview (hence the async trait); in the local runtime the pilot mints
//! one random bootstrap token per workload ([`StaticTokens`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use crate::spiffe::Identity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token in the authorization metadata")]
    MissingToken,
    #[error("the authorization metadata is not of the form \"Bearer <token>\"")]
    MalformedHeader,
    #[error("the token is not valid")]
    InvalidToken,
    /// The authenticator could not decide (e.g. the API server is down); the
    /// caller should retry.
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into the identity it stands for.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, token: &str)
    -> impl Future<Output = Result<Identity, AuthError>> + Send;
}

impl<A: Authenticator> Authenticator for Arc<A> {
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        A::authenticate(self, token)
    }
}

/// Bootstrap tokens for the local runtime: a shared map from token to
/// identity. Clones share the map, so the pilot can mint a token for a new
/// workload while the CA service is already serving.
///
/// Tokens are stored as SHA-256 digests: the map never holds a usable secret,
/// and lookups compare digests rather than the secret itself.
#[derive(Clone, Default)]
pub struct StaticTokens {
    by_digest: Arc<RwLock<HashMap<[u8; 32], Identity>>>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .by_digest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("StaticTokens").field("tokens", &n).finish()
    }
}

impl StaticTokens {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as `identity` from now on.
    pub fn insert(&self, token: &str, identity: Identity) {
        self.by_digest
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest(token), identity);
    }

    /// Stops accepting `token`; returns whether it was known.
    pub fn revoke(&self, token: &str) -> bool {
        self.by_digest
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest(token))
            .is_some()
    }

    /// Creates a random token (256 bits, hex) for `identity` and returns it.
    pub fn mint(&self, identity: Identity) -> io::Result<String> {
        let bytes = crate::random_bytes::<32>()
            .ok_or_else(|| io::Error::other("the system random number generator failed"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.insert(&token, identity);
        Ok(token)
    }

    /// Mints a token for `identity` and writes it to `path` with mode 0600,
    /// where the workload's proxy reads it (the local counterpart of the
    /// projected token at `/var/run/secrets/tokens/istio-token`).
    pub fn mint_to_file(&self, identity: Identity, path: &Path) -> io::Result<String> {
        let token = self.mint(identity)?;
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        crate::ca::write_atomically(path, token.as_bytes(), 0o600).map_err(|e| match e {
            crate::ca::CaError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        Ok(token)
    }

    pub fn len(&self) -> usize {
        self.by_digest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        let found = self
            .by_digest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest(token))
            .cloned();
        std::future::ready(found.ok_or(AuthError::InvalidToken))
    }
}

/// Extracts the token from an `authorization` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::MissingToken)?;
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_tokens() {
        let tokens = StaticTokens::new();
        let id = Identity::in_default_domain("default", "sleep").unwrap();
        let token = tokens.mint(id.clone()).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(tokens.authenticate(&token).await, Ok(id));
        assert_eq!(
            tokens.authenticate("nope").await,
            Err(AuthError::InvalidToken)
        );
        assert!(tokens.revoke(&token));
        assert_eq!(
            tokens.authenticate(&token).await,
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn token_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods/sleep/istio-token");
        let tokens = StaticTokens::new();
        let id = Identity::in_default_domain("default", "sleep").unwrap();
        let token = tokens.mint_to_file(id, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::MissingToken));
        assert_eq!(bearer_token(Some("Bearer ")), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(Some("Basic abc")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(bearer_token(Some("abc")), Err(AuthError::MalformedHeader));
    }
}
