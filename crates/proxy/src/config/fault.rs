//! The HTTP fault filter (`envoy.filters.http.fault`): fixed delays and
//! aborts on a fraction of requests, configured on the filter and overridden
//! per route through `typed_per_filter_config`.

use std::time::Duration;

use http::StatusCode;
use mizzen_xds::pb;
use pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort};
use pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};

use super::check::reject_unknown;
use super::{ConfigError, Scope, duration, join};

/// Name of the filter in `http_filters` and in `typed_per_filter_config`.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub(crate) const FAULT_TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

const HTTP_FAULT_FIELDS: &[(u32, &str)] = &[
    (1, "delay"),
    (2, "abort"),
    (3, "upstream_cluster"),
    (4, "headers"),
    (5, "downstream_nodes"),
    (6, "max_active_faults"),
    (7, "response_rate_limit"),
    (8, "delay_percent_runtime"),
    (9, "abort_percent_runtime"),
    (10, "delay_duration_runtime"),
    (11, "abort_http_status_runtime"),
    (12, "max_active_faults_runtime"),
    (13, "response_rate_limit_percent_runtime"),
    (14, "abort_grpc_status_runtime"),
    (15, "disable_downstream_cluster_stats"),
    (16, "filter_metadata"),
];
const DELAY_FIELDS: &[(u32, &str)] = &[
    (1, "type"),
    (3, "fixed_delay"),
    (4, "percentage"),
    (5, "header_delay"),
];
const ABORT_FIELDS: &[(u32, &str)] = &[
    (2, "http_status"),
    (3, "percentage"),
    (4, "header_abort"),
    (5, "grpc_status"),
    (6, "response_body"),
];

/// A probability as parts per million, compared with a uniform draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction(u32);

impl Fraction {
    pub const ALL: Fraction = Fraction(1_000_000);

    pub fn per_million(n: u32) -> Fraction {
        Fraction(n.min(1_000_000))
    }

    /// From Envoy's `FractionalPercent`; an unset value means 100 %.
    pub(crate) fn compile(
        scope: &Scope,
        path: &str,
        p: Option<&FractionalPercent>,
    ) -> Result<Fraction, ConfigError> {
        let Some(p) = p else {
            return Ok(Fraction::ALL);
        };
        let scale = match DenominatorType::try_from(p.denominator) {
            Ok(DenominatorType::Hundred) => 10_000,
            Ok(DenominatorType::TenThousand) => 100,
            Ok(DenominatorType::Million) => 1,
            Err(_) => return Err(scope.invalid(join(path, "denominator"), "unknown enum value")),
        };
        Ok(Fraction::per_million(p.numerator.saturating_mul(scale)))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether a draw in `[0, 1_000_000)` falls inside the fraction.
    pub fn hit(self, draw: u32) -> bool {
        draw < self.0
    }

    /// One random draw.
    pub fn sample(self) -> bool {
        match self.0 {
            0 => false,
            1_000_000 => true,
            n => rand::random_range(0..1_000_000) < n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultConfig {
    pub delay: Option<(Duration, Fraction)>,
    pub abort: Option<(Abort, Fraction)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status; gRPC requests get a trailers-only reply with it.
    Grpc(u32),
}

impl FaultConfig {
    pub fn is_empty(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }

    pub(crate) fn compile(
        scope: &Scope,
        path: &str,
        f: &HttpFault,
    ) -> Result<FaultConfig, ConfigError> {
        reject_unknown(scope, path, f, HTTP_FAULT_FIELDS, |f| {
            f.delay = None;
            f.abort = None;
        })?;
        let delay = match &f.delay {
            None => None,
            Some(d) => Some(compile_delay(scope, &join(path, "delay"), d)?),
        };
        let abort = match &f.abort {
            None => None,
            Some(a) => Some(compile_abort(scope, &join(path, "abort"), a)?),
        };
        Ok(FaultConfig { delay, abort })
    }
}

fn compile_delay(
    scope: &Scope,
    path: &str,
    d: &FaultDelay,
) -> Result<(Duration, Fraction), ConfigError> {
    reject_unknown(scope, path, d, DELAY_FIELDS, |d| {
        d.percentage = None;
        if matches!(
            d.fault_delay_secifier,
            Some(fault_delay::FaultDelaySecifier::FixedDelay(_))
        ) {
            d.fault_delay_secifier = None;
        }
    })?;
    let Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) = &d.fault_delay_secifier else {
        return Err(scope.missing(join(path, "fixed_delay")));
    };
    let fixed = duration(scope, &join(path, "fixed_delay"), fixed)?;
    let fraction = Fraction::compile(scope, &join(path, "percentage"), d.percentage.as_ref())?;
    Ok((fixed, fraction))
}

fn compile_abort(
    scope: &Scope,
    path: &str,
    a: &FaultAbort,
) -> Result<(Abort, Fraction), ConfigError> {
    reject_unknown(scope, path, a, ABORT_FIELDS, |a| {
        a.percentage = None;
        if !matches!(
            a.error_type,
            Some(fault_abort::ErrorType::HeaderAbort(_)) | None
        ) {
            a.error_type = None;
        }
    })?;
    let abort = match &a.error_type {
        Some(fault_abort::ErrorType::HttpStatus(code)) => {
            let status = u16::try_from(*code)
                .ok()
                .filter(|c| (200..600).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| scope.invalid(join(path, "http_status"), "must be in [200, 600)"))?;
            Abort::Http(status)
        }
        Some(fault_abort::ErrorType::GrpcStatus(code)) => Abort::Grpc(*code),
        Some(fault_abort::ErrorType::HeaderAbort(_)) => {
            return Err(scope.unsupported(join(path, "header_abort")));
        }
        None => return Err(scope.missing(join(path, "error_type"))),
    };
    let fraction = Fraction::compile(scope, &join(path, "percentage"), a.percentage.as_ref())?;
    Ok((abort, fraction))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::google::protobuf::Duration as PbDuration;

    fn percent(n: u32, d: DenominatorType) -> Option<FractionalPercent> {
        Some(FractionalPercent {
            numerator: n,
            denominator: d as i32,
        })
    }

    #[test]
    fn compiles_delay_and_abort() {
        let scope = Scope::new("route_configuration", "r");
        let f = HttpFault {
            delay: Some(FaultDelay {
                percentage: percent(500_000, DenominatorType::Million),
                fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                    PbDuration {
                        seconds: 0,
                        nanos: 300_000_000,
                    },
                )),
            }),
            abort: Some(FaultAbort {
                percentage: percent(10, DenominatorType::Hundred),
                error_type: Some(fault_abort::ErrorType::HttpStatus(503)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = FaultConfig::compile(&scope, "", &f).unwrap();
        assert_eq!(
            c.delay,
            Some((Duration::from_millis(300), Fraction::per_million(500_000)))
        );
        assert_eq!(
            c.abort,
            Some((
                Abort::Http(StatusCode::SERVICE_UNAVAILABLE),
                Fraction::per_million(100_000)
            ))
        );
        assert!(
            FaultConfig::compile(&scope, "", &HttpFault::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn refusals() {
        let scope = Scope::new("route_configuration", "r");
        let f = HttpFault {
            max_active_faults: Some(pb::google::protobuf::UInt32Value { value: 1 }),
            ..Default::default()
        };
        assert_eq!(
            FaultConfig::compile(&scope, "x", &f)
                .unwrap_err()
                .to_string(),
            "route_configuration r: x.max_active_faults is not supported"
        );
        let f = HttpFault {
            abort: Some(FaultAbort {
                error_type: Some(fault_abort::ErrorType::HttpStatus(99)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(FaultConfig::compile(&scope, "", &f).is_err());
    }

    #[test]
    fn fractions() {
        assert!(Fraction::ALL.sample());
        assert!(!Fraction::per_million(0).sample());
        assert!(Fraction::per_million(10).hit(9));
        assert!(!Fraction::per_million(10).hit(10));
    }
}
