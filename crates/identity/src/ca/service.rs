//! Istio's certificate service (`istio.v1.auth.IstioCertificateService`)
//! in front of [`CertificateAuthority`], so that Istio's own agents and
//! mizzen-proxy obtain certificates from mizzen-pilot the same way.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Authenticator, bearer_token};
use crate::ca::CertificateAuthority;
use crate::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};
use crate::tls::TlsConnectInfo;

/// The gRPC message limit for this service. A request is a CSR plus a little
/// metadata; refusing large messages early bounds what an unauthenticated
/// caller can make the server buffer.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Authenticates the caller, then signs its CSR for the authenticated
/// identity.
pub struct CaService<A> {
    ca: Arc<CertificateAuthority>,
    authenticator: A,
}

impl<A: Authenticator> CaService<A> {
    pub fn new(ca: Arc<CertificateAuthority>, authenticator: A) -> Self {
        Self { ca, authenticator }
    }

    /// The tonic service to add to a `Server` or `Router`.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl<A: Authenticator> IstioCertificateService for CaService<A> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request
            .extensions()
            .get::<TlsConnectInfo>()
            .map(|c| c.remote_addr.to_string())
            .or_else(|| request.remote_addr().map(|a| a.to_string()))
            .unwrap_or_else(|| "unknown".to_string());
        let header =
            match request.metadata().get("authorization") {
                Some(value) => Some(value.to_str().map_err(|_| {
                    Status::unauthenticated(AuthError::MalformedHeader.to_string())
                })?),
                None => None,
            };
        let identity = match bearer_token(header) {
            Ok(token) => self.authenticator.authenticate(token).await,
            Err(e) => Err(e),
        };
        let identity = identity.map_err(|e| {
            tracing::warn!(%peer, error = %e, "certificate request refused");
            match e {
                AuthError::Unavailable(_) => Status::unavailable(e.to_string()),
                _ => Status::unauthenticated(e.to_string()),
            }
        })?;

        let req = request.into_inner();
        // Istio treats a zero or negative validity as "use the default".
        let ttl = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let chain = self.ca.sign_csr(&req.csr, &identity, ttl).map_err(|e| {
            tracing::warn!(%peer, %identity, error = %e, "certificate request failed");
            if e.is_bad_request() {
                Status::invalid_argument(e.to_string())
            } else {
                Status::internal(format!("the CA could not sign the request: {e}"))
            }
        })?;
        tracing::info!(%peer, %identity, ?ttl, "issued workload certificate");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain.to_response_chain(),
        }))
    }
}
