//! The CORS filter (`envoy.filters.http.cors`): per-route or per-virtual-host
//! `CorsPolicy` deciding which origins may call, answering preflights in the
//! proxy and adding the CORS headers to allowed responses.

use http::{HeaderMap, HeaderValue, Method, header};
use mizzen_xds::pb;
use pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as PbCorsPolicy;

use super::check::reject_unknown;
use super::fault::Fraction;
use super::matcher::{StringMatch, string_match};
use super::{ConfigError, Scope, join};

pub const CORS_FILTER: &str = "envoy.filters.http.cors";
pub(crate) const CORS_TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";

const POLICY_FIELDS: &[(u32, &str)] = &[
    (1, "allow_origin_string_match"),
    (2, "allow_methods"),
    (3, "allow_headers"),
    (4, "expose_headers"),
    (5, "max_age"),
    (6, "allow_credentials"),
    (7, "filter_enabled"),
    (8, "shadow_enabled"),
    (9, "allow_private_network_access"),
    (10, "forward_not_matching_preflights"),
];

#[derive(Debug)]
pub struct CorsPolicy {
    origins: Vec<StringMatch>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    enabled: Fraction,
    forward_not_matching_preflights: bool,
}

/// What the filter decided for one request.
#[derive(Debug)]
pub enum CorsDecision {
    /// Not a CORS request, or the filter is off: nothing to do.
    Pass,
    /// Answer the preflight with these headers.
    Preflight(HeaderMap),
    /// Forward, then add these headers to the response.
    Simple(HeaderMap),
}

impl CorsPolicy {
    pub(crate) fn compile(
        scope: &Scope,
        path: &str,
        p: &PbCorsPolicy,
    ) -> Result<CorsPolicy, ConfigError> {
        reject_unknown(scope, path, p, POLICY_FIELDS, |p| {
            p.allow_origin_string_match.clear();
            p.allow_methods.clear();
            p.allow_headers.clear();
            p.expose_headers.clear();
            p.max_age.clear();
            p.allow_credentials = None;
            if p.filter_enabled
                .as_ref()
                .is_some_and(|f| f.runtime_key.is_empty())
            {
                p.filter_enabled = None;
            }
            p.forward_not_matching_preflights = None;
            if p.allow_private_network_access.is_some_and(|b| !b.value) {
                p.allow_private_network_access = None;
            }
        })?;
        let origins = p
            .allow_origin_string_match
            .iter()
            .enumerate()
            .map(|(i, m)| {
                string_match(
                    scope,
                    &join(path, &format!("allow_origin_string_match[{i}]")),
                    m,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let value = |field: &str, v: &str| -> Result<Option<HeaderValue>, ConfigError> {
            if v.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(v)
                .map(Some)
                .map_err(|_| scope.invalid(join(path, field), "not a valid header value"))
        };
        let enabled = match &p.filter_enabled {
            None => Fraction::ALL,
            Some(f) => Fraction::compile(
                scope,
                &join(path, "filter_enabled.default_value"),
                f.default_value.as_ref(),
            )?,
        };
        Ok(CorsPolicy {
            origins,
            allow_methods: value("allow_methods", &p.allow_methods)?,
            allow_headers: value("allow_headers", &p.allow_headers)?,
            expose_headers: value("expose_headers", &p.expose_headers)?,
            max_age: value("max_age", &p.max_age)?,
            allow_credentials: p.allow_credentials.is_some_and(|b| b.value),
            enabled,
            forward_not_matching_preflights: p
                .forward_not_matching_preflights
                .is_none_or(|b| b.value),
        })
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| match m {
            StringMatch::Exact { value, .. } if value == "*" => true,
            m => m.matches(origin),
        })
    }

    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> CorsDecision {
        let Some(origin) = headers.get(header::ORIGIN).filter(|o| !o.is_empty()) else {
            return CorsDecision::Pass;
        };
        if !self.enabled.sample() {
            return CorsDecision::Pass;
        }
        let preflight = method == Method::OPTIONS
            && headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .is_some_and(|m| !m.is_empty());
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        let mut out = HeaderMap::new();
        if !allowed {
            return if preflight && !self.forward_not_matching_preflights {
                CorsDecision::Preflight(out)
            } else {
                CorsDecision::Pass
            };
        }
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if preflight {
            let pairs = [
                (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
                (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
            ];
            for (name, v) in pairs {
                if let Some(v) = v {
                    out.insert(name, v.clone());
                }
            }
            CorsDecision::Preflight(out)
        } else {
            if let Some(v) = &self.expose_headers {
                out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            CorsDecision::Simple(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};

    fn policy() -> CorsPolicy {
        let p = PbCorsPolicy {
            allow_origin_string_match: vec![StringMatcher {
                match_pattern: Some(MatchPattern::Exact("https://a.example".into())),
                ..Default::default()
            }],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-a".into(),
            expose_headers: "x-b".into(),
            max_age: "86400".into(),
            allow_credentials: Some(pb::google::protobuf::BoolValue { value: true }),
            ..Default::default()
        };
        CorsPolicy::compile(&Scope::new("route_configuration", "r"), "", &p).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn preflight_and_simple_requests() {
        let p = policy();
        let pre = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        let CorsDecision::Preflight(h) = p.decide(&Method::OPTIONS, &pre) else {
            panic!("expected a preflight answer")
        };
        assert_eq!(h["access-control-allow-origin"], "https://a.example");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-max-age"], "86400");
        assert_eq!(h["access-control-allow-credentials"], "true");
        let simple = headers(&[("origin", "https://a.example")]);
        let CorsDecision::Simple(h) = p.decide(&Method::GET, &simple) else {
            panic!("expected CORS headers")
        };
        assert_eq!(h["access-control-expose-headers"], "x-b");
        assert!(!h.contains_key("access-control-allow-methods"));
        let other = headers(&[
            ("origin", "https://b.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(matches!(
            p.decide(&Method::OPTIONS, &other),
            CorsDecision::Pass
        ));
        assert!(matches!(
            p.decide(&Method::GET, &HeaderMap::new()),
            CorsDecision::Pass
        ));
    }
}
