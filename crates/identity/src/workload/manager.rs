//! Keeps the workload certificate fresh.
//!
//! The current certificate sits in an `ArcSwap`, so a handshake reads it
//! without locking; rotation swaps in a new one and notifies subscribers.
//! Established connections keep the certificate they were made with (TLS
//! never re-authenticates), new handshakes get the new one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{WorkloadCertificate, WorkloadError};
use crate::spiffe::Identity;

/// Something that can issue a certificate for one identity.
pub trait CertificateProvider: Send + Sync + 'static {
    fn identity(&self) -> &Identity;
    fn fetch(&self) -> impl Future<Output = Result<WorkloadCertificate, WorkloadError>> + Send;
}

/// When to renew and how to retry.
#[derive(Debug, Clone)]
pub struct RotationPolicy {
    /// Renew after this fraction of the lifetime (Istio: half).
    pub refresh_fraction: f64,
    /// Renew up to this fraction of the lifetime earlier, at random, so that
    /// proxies started together do not all call the CA at the same moment.
    pub jitter_fraction: f64,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One certificate request may take this long.
    pub fetch_timeout: Duration,
    /// How long [`CertificateManager::start`] keeps retrying the first
    /// certificate before giving up.
    pub startup_timeout: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            refresh_fraction: 0.5,
            jitter_fraction: 0.05,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl RotationPolicy {
    /// When to start renewing `cert`. Counted from when it was received, not
    /// from `not_before`: the CA back-dates certificates, and the two clocks
    /// may differ.
    pub fn refresh_at(&self, cert: &WorkloadCertificate) -> SystemTime {
        let start = cert.received_at().max(cert.not_before());
        let lifetime = cert
            .not_after()
            .duration_since(start)
            .unwrap_or(Duration::ZERO);
        let fraction = self.refresh_fraction.clamp(0.0, 1.0);
        let jitter = self.jitter_fraction.clamp(0.0, fraction) * random_unit();
        start + lifetime.mul_f64(fraction - jitter)
    }

    fn next_backoff(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max_backoff)
    }
}

/// The certificate as shown by the admin API (`/certs`-like).
#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    pub identity: Identity,
    pub serial_number: String,
    pub issuer: String,
    /// RFC 3339.
    pub valid_from: String,
    pub expiration_time: String,
    pub seconds_until_expiration: u64,
    pub next_rotation: Option<String>,
    pub rotations: u64,
    pub failed_attempts: u64,
    pub last_error: Option<String>,
    pub cert_chain_pem: String,
    pub root_cert_pem: String,
}

struct Installed {
    cert: Arc<WorkloadCertificate>,
    key: Arc<CertifiedKey>,
}

struct Inner {
    identity: Identity,
    current: ArcSwap<Installed>,
    tx: watch::Sender<Arc<WorkloadCertificate>>,
    next_rotation: Mutex<Option<SystemTime>>,
    last_error: Mutex<Option<String>>,
    rotations: AtomicU64,
    failures: AtomicU64,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Inner {
    /// Checks a new certificate and converts it for rustls, without making
    /// it current yet.
    fn prepare(&self, cert: WorkloadCertificate) -> Result<Installed, WorkloadError> {
        if cert.identity() != &self.identity {
            return Err(WorkloadError::WrongIdentity {
                expected: self.identity.clone(),
                got: Some(cert.identity().to_uri()),
            });
        }
        let key = cert.certified_key()?;
        Ok(Installed {
            cert: Arc::new(cert),
            key,
        })
    }

    /// Makes a prepared certificate current. Bookkeeping (counters, next
    /// rotation) is done by the caller before this, so that a subscriber
    /// woken here sees a consistent `status()`.
    fn publish(&self, installed: Installed) {
        let cert = installed.cert.clone();
        // Swap first, then notify: a subscriber woken by the channel must
        // find the new certificate in `current()`.
        self.current.store(Arc::new(installed));
        self.tx.send_replace(cert);
    }

    fn set_next_rotation(&self, at: Option<SystemTime>) {
        *self
            .next_rotation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = at;
    }

    fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// Holds the current workload certificate and renews it in the background.
/// Clones share the same certificate; the renewal task stops when the last
/// clone (including those inside TLS configs) is dropped, or on
/// [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateManager")
            .field("identity", &self.inner.identity.to_uri())
            .field("serial", &self.current().serial())
            .finish()
    }
}

impl CertificateManager {
    /// Obtains the first certificate (retrying with backoff for up to
    /// `policy.startup_timeout`) and starts renewing it.
    pub async fn start<P: CertificateProvider>(
        provider: P,
        policy: RotationPolicy,
    ) -> Result<Self, WorkloadError> {
        let deadline = tokio::time::Instant::now() + policy.startup_timeout;
        let mut backoff = policy.initial_backoff;
        let first = loop {
            let attempt = tokio::time::timeout(policy.fetch_timeout, provider.fetch())
                .await
                .unwrap_or(Err(WorkloadError::Timeout(policy.fetch_timeout)));
            match attempt {
                Ok(cert) => break cert,
                Err(e) => {
                    let wait = jittered(backoff);
                    if tokio::time::Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(identity = %provider.identity(), error = %e, retry_in = ?wait, "cannot obtain the workload certificate yet");
                    tokio::time::sleep(wait).await;
                    backoff = policy.next_backoff(backoff);
                }
            }
        };
        let manager = Self::from_certificate_unchecked(provider.identity().clone(), first)?;
        let weak = Arc::downgrade(&manager.inner);
        let task = tokio::spawn(rotate(weak, provider, policy)).abort_handle();
        *manager
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(manager)
    }

    /// A manager for a fixed certificate, without renewal (certificates
    /// from files, tests).
    pub fn from_certificate(cert: WorkloadCertificate) -> Result<Self, WorkloadError> {
        Self::from_certificate_unchecked(cert.identity().clone(), cert)
    }

    fn from_certificate_unchecked(
        identity: Identity,
        cert: WorkloadCertificate,
    ) -> Result<Self, WorkloadError> {
        if cert.identity() != &identity {
            return Err(WorkloadError::WrongIdentity {
                expected: identity,
                got: Some(cert.identity().to_uri()),
            });
        }
        let key = cert.certified_key()?;
        let cert = Arc::new(cert);
        let (tx, _) = watch::channel(cert.clone());
        let inner = Inner {
            identity,
            current: ArcSwap::from_pointee(Installed { cert, key }),
            tx,
            next_rotation: Mutex::new(None),
            last_error: Mutex::new(None),
            rotations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            task: Mutex::new(None),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn current(&self) -> Arc<WorkloadCertificate> {
        self.inner.current.load().cert.clone()
    }

    /// The current certificate in rustls form, for certificate resolvers.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.inner.current.load().key.clone()
    }

    /// Notified with every new certificate.
    pub fn subscribe(&self) -> watch::Receiver<Arc<WorkloadCertificate>> {
        self.inner.tx.subscribe()
    }

    /// Replaces the certificate now (e.g. one read from files again).
    pub fn replace(&self, cert: WorkloadCertificate) -> Result<(), WorkloadError> {
        let installed = self.inner.prepare(cert)?;
        self.inner.rotations.fetch_add(1, Ordering::Relaxed);
        self.inner.publish(installed);
        Ok(())
    }

    /// Stops renewing; the current certificate stays in use.
    pub fn shutdown(&self) {
        if let Some(task) = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    pub fn status(&self) -> CertStatus {
        let cert = self.current();
        let now = SystemTime::now();
        let fmt = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        CertStatus {
            identity: cert.identity().clone(),
            serial_number: cert.serial().to_string(),
            issuer: cert.issuer().to_string(),
            valid_from: fmt(cert.not_before()),
            expiration_time: fmt(cert.not_after()),
            seconds_until_expiration: cert
                .not_after()
                .duration_since(now)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            next_rotation: self
                .inner
                .next_rotation
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map(fmt),
            rotations: self.inner.rotations.load(Ordering::Relaxed),
            failed_attempts: self.inner.failures.load(Ordering::Relaxed),
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            cert_chain_pem: cert.chain_pem().to_string(),
            root_cert_pem: cert.roots_pem().to_string(),
        }
    }
}

/// The renewal loop. It holds the manager only weakly, so it never keeps a
/// dropped manager alive; it exits when the manager is gone.
async fn rotate<P: CertificateProvider>(weak: Weak<Inner>, provider: P, policy: RotationPolicy) {
    let mut refresh_at = {
        let Some(inner) = weak.upgrade() else { return };
        let at = policy.refresh_at(&inner.current.load().cert);
        inner.set_next_rotation(Some(at));
        at
    };
    loop {
        let wait = refresh_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;

        let mut backoff = policy.initial_backoff;
        loop {
            let attempt = tokio::time::timeout(policy.fetch_timeout, provider.fetch())
                .await
                .unwrap_or(Err(WorkloadError::Timeout(policy.fetch_timeout)));
            let Some(inner) = weak.upgrade() else { return };
            match attempt.and_then(|cert| inner.prepare(cert)) {
                Ok(installed) => {
                    let serial = installed.cert.serial().to_string();
                    refresh_at = policy.refresh_at(&installed.cert);
                    inner.rotations.fetch_add(1, Ordering::Relaxed);
                    inner.set_last_error(None);
                    inner.set_next_rotation(Some(refresh_at));
                    inner.publish(installed);
                    tracing::info!(identity = %inner.identity, %serial, "rotated workload certificate");
                    break;
                }
                Err(e) => {
                    inner.failures.fetch_add(1, Ordering::Relaxed);
                    inner.set_last_error(Some(e.to_string()));
                    let expired = inner.current.load().cert.not_after() <= SystemTime::now();
                    let wait = jittered(backoff);
                    if expired {
                        tracing::error!(identity = %inner.identity, error = %e, retry_in = ?wait, "workload certificate expired and renewal failed");
                    } else {
                        tracing::warn!(identity = %inner.identity, error = %e, retry_in = ?wait, "workload certificate renewal failed");
                    }
                    drop(inner);
                    tokio::time::sleep(wait).await;
                    backoff = policy.next_backoff(backoff);
                }
            }
        }
    }
}

/// Between half and all of `d`, so retries from many proxies spread out.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * random_unit())
}

/// Uniform in [0, 1); 0 if the random generator fails, which only costs
/// the jitter.
fn random_unit() -> f64 {
    match crate::random_bytes::<8>() {
        Some(b) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        None => 0.0,
    }
}
