//! String, header and query-parameter matchers with Envoy's semantics.

use http::HeaderName;
use mizzen_xds::pb;
use pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
};
use pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern};
use regex::Regex;

use super::check::reject_unknown;
use super::{ConfigError, Scope, fields, join};

/// A compiled `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Needle stored lowercased when `ignore_case`.
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        value: String,
        ignore_case: bool,
    },
    Suffix {
        value: String,
        ignore_case: bool,
    },
    Contains {
        value: String,
        ignore_case: bool,
    },
    /// Anchored: Envoy's safe_regex must match the whole input.
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, input: &str) -> bool {
        match self {
            StringMatch::Exact { value, ignore_case } => {
                if *ignore_case {
                    input.eq_ignore_ascii_case(value)
                } else {
                    input == value
                }
            }
            StringMatch::Prefix { value, ignore_case } => {
                input.len() >= value.len()
                    && input.is_char_boundary(value.len())
                    && eq(&input[..value.len()], value, *ignore_case)
            }
            StringMatch::Suffix { value, ignore_case } => {
                input.len() >= value.len()
                    && input.is_char_boundary(input.len() - value.len())
                    && eq(&input[input.len() - value.len()..], value, *ignore_case)
            }
            StringMatch::Contains { value, ignore_case } => {
                if *ignore_case {
                    input.to_ascii_lowercase().contains(value.as_str())
                } else {
                    input.contains(value.as_str())
                }
            }
            StringMatch::Regex(re) => re.is_match(input),
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn folded(value: &str, ignore_case: bool) -> String {
    if ignore_case {
        value.to_ascii_lowercase()
    } else {
        value.to_string()
    }
}

/// Compiles a `RegexMatcher` into a regex anchored at both ends.
pub(crate) fn regex(scope: &Scope, path: &str, m: &RegexMatcher) -> Result<Regex, ConfigError> {
    // engine_type (google_re2) is a deprecated tuning knob with no effect on
    // matching; accept it.
    reject_unknown(scope, path, m, fields::REGEX_MATCHER, |m| {
        m.regex.clear();
        m.engine_type = None;
    })?;
    Regex::new(&format!("^(?:{})$", m.regex))
        .map_err(|e| scope.invalid(join(path, "regex"), format!("invalid regex: {e}")))
}

pub(crate) fn string_match(
    scope: &Scope,
    path: &str,
    m: &StringMatcher,
) -> Result<StringMatch, ConfigError> {
    let ic = m.ignore_case;
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(v)) => StringMatch::Exact {
            value: folded(v, ic),
            ignore_case: ic,
        },
        Some(MatchPattern::Prefix(v)) => StringMatch::Prefix {
            value: folded(v, ic),
            ignore_case: ic,
        },
        Some(MatchPattern::Suffix(v)) => StringMatch::Suffix {
            value: folded(v, ic),
            ignore_case: ic,
        },
        Some(MatchPattern::Contains(v)) => StringMatch::Contains {
            value: folded(v, ic),
            ignore_case: ic,
        },
        Some(MatchPattern::SafeRegex(r)) => {
            StringMatch::Regex(regex(scope, &join(path, "safe_regex"), r)?)
        }
        Some(MatchPattern::Custom(_)) => return Err(scope.unsupported(join(path, "custom"))),
        None => return Err(scope.missing(join(path, "match_pattern"))),
    })
}

/// Where a header matcher reads its value: a real header or a pseudo-header
/// that HTTP/1 carries elsewhere (request line, Host).
#[derive(Debug, Clone)]
pub enum HeaderSource {
    Header(HeaderName),
    Method,
    Path,
    Authority,
    Scheme,
}

#[derive(Debug, Clone)]
pub enum HeaderTest {
    Value(StringMatch),
    /// `present_match`: true matches a present header, false an absent one.
    Present(bool),
}

/// A compiled `route.v3.HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub source: HeaderSource,
    pub test: HeaderTest,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

impl HeaderMatch {
    /// `value` is the header's value (all occurrences joined with `,`, as
    /// Envoy does), or `None` when absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => "",
            None => {
                // Envoy: an absent header only satisfies `present_match: false`,
                // or `present_match: true` inverted.
                return match self.test {
                    HeaderTest::Present(present) => present == self.invert,
                    HeaderTest::Value(_) => false,
                };
            }
        };
        let matched = match &self.test {
            HeaderTest::Present(present) => *present,
            HeaderTest::Value(m) => m.matches(value),
        };
        matched != self.invert
    }
}

pub(crate) fn header_match(
    scope: &Scope,
    path: &str,
    m: &HeaderMatcher,
) -> Result<HeaderMatch, ConfigError> {
    reject_unknown(scope, path, m, fields::HEADER_MATCHER, |m| {
        m.name.clear();
        m.invert_match = false;
        m.treat_missing_header_as_empty = false;
        m.header_match_specifier = None;
    })?;
    let source = match m.name.as_str() {
        ":method" => HeaderSource::Method,
        ":path" => HeaderSource::Path,
        ":authority" | "host" | "Host" => HeaderSource::Authority,
        ":scheme" => HeaderSource::Scheme,
        name => HeaderSource::Header(
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                scope.invalid(join(path, "name"), format!("invalid header name {name:?}"))
            })?,
        ),
    };
    let plain = |value: &str, make: fn(String) -> StringMatch| make(value.to_string());
    let test = match &m.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(v)) => {
            HeaderTest::Value(plain(v, |value| StringMatch::Exact {
                value,
                ignore_case: false,
            }))
        }
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => {
            HeaderTest::Value(plain(v, |value| StringMatch::Prefix {
                value,
                ignore_case: false,
            }))
        }
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => {
            HeaderTest::Value(plain(v, |value| StringMatch::Suffix {
                value,
                ignore_case: false,
            }))
        }
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => {
            HeaderTest::Value(plain(v, |value| StringMatch::Contains {
                value,
                ignore_case: false,
            }))
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => HeaderTest::Value(StringMatch::Regex(
            regex(scope, &join(path, "safe_regex_match"), r)?,
        )),
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            HeaderTest::Value(string_match(scope, &join(path, "string_match"), s)?)
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderTest::Present(*p),
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(scope.unsupported(join(path, "range_match")));
        }
        // No specifier: Envoy treats the matcher as a presence check.
        None => HeaderTest::Present(true),
    };
    Ok(HeaderMatch {
        source,
        test,
        invert: m.invert_match,
        treat_missing_as_empty: m.treat_missing_header_as_empty,
    })
}

/// A compiled `route.v3.QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    pub test: HeaderTest,
}

impl QueryMatch {
    /// `value` is the first value of the parameter, decoded, or `None`.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (value, &self.test) {
            (None, _) => false,
            (Some(_), HeaderTest::Present(p)) => *p,
            (Some(v), HeaderTest::Value(m)) => m.matches(v),
        }
    }
}

pub(crate) fn query_match(
    scope: &Scope,
    path: &str,
    m: &QueryParameterMatcher,
) -> Result<QueryMatch, ConfigError> {
    reject_unknown(scope, path, m, fields::QUERY_PARAMETER_MATCHER, |m| {
        m.name.clear();
        m.query_parameter_match_specifier = None;
    })?;
    let test = match &m.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            HeaderTest::Value(string_match(scope, &join(path, "string_match"), s)?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(p)) => HeaderTest::Present(*p),
        None => HeaderTest::Present(true),
    };
    Ok(QueryMatch {
        name: m.name.clone(),
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(pattern: MatchPattern, ignore_case: bool) -> StringMatch {
        let scope = Scope::new("test", "t");
        string_match(
            &scope,
            "m",
            &StringMatcher {
                ignore_case,
                match_pattern: Some(pattern),
            },
        )
        .unwrap()
    }

    #[test]
    fn string_matchers() {
        let cases: &[(MatchPattern, bool, &str, bool)] = &[
            (MatchPattern::Exact("abc".into()), false, "abc", true),
            (MatchPattern::Exact("abc".into()), false, "ABC", false),
            (MatchPattern::Exact("abc".into()), true, "ABC", true),
            (MatchPattern::Prefix("/api".into()), false, "/api/v1", true),
            (MatchPattern::Prefix("/API".into()), true, "/api/v1", true),
            (MatchPattern::Prefix("/api".into()), false, "/ap", false),
            (MatchPattern::Suffix(".js".into()), false, "a.js", true),
            (MatchPattern::Suffix(".JS".into()), true, "a.js", true),
            (MatchPattern::Contains("mid".into()), false, "amidst", true),
            (MatchPattern::Contains("MID".into()), true, "amidst", true),
            (MatchPattern::Contains("x".into()), false, "amidst", false),
            (
                MatchPattern::SafeRegex(RegexMatcher {
                    regex: "v[0-9]".into(),
                    engine_type: None,
                }),
                false,
                "v1",
                true,
            ),
            (
                MatchPattern::SafeRegex(RegexMatcher {
                    regex: "v[0-9]".into(),
                    engine_type: None,
                }),
                false,
                "xv1",
                false,
            ),
        ];
        for (pattern, ic, input, want) in cases {
            assert_eq!(
                sm(pattern.clone(), *ic).matches(input),
                *want,
                "{pattern:?} {ic} {input}"
            );
        }
    }

    #[test]
    fn header_presence_and_inversion() {
        let scope = Scope::new("test", "t");
        let hm = |spec, invert| {
            header_match(
                &scope,
                "h",
                &HeaderMatcher {
                    name: "x-user".into(),
                    invert_match: invert,
                    header_match_specifier: Some(spec),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let exact = || HeaderMatchSpecifier::ExactMatch("jason".into());
        let cases: &[(HeaderMatch, Option<&str>, bool)] = &[
            (hm(exact(), false), Some("jason"), true),
            (hm(exact(), false), Some("other"), false),
            (hm(exact(), false), None, false),
            (hm(exact(), true), Some("other"), true),
            (hm(exact(), true), None, false),
            (
                hm(HeaderMatchSpecifier::PresentMatch(true), false),
                Some(""),
                true,
            ),
            (
                hm(HeaderMatchSpecifier::PresentMatch(true), false),
                None,
                false,
            ),
            (
                hm(HeaderMatchSpecifier::PresentMatch(false), false),
                None,
                true,
            ),
            (
                hm(HeaderMatchSpecifier::PresentMatch(true), true),
                None,
                true,
            ),
            (
                hm(HeaderMatchSpecifier::PresentMatch(true), true),
                Some("x"),
                false,
            ),
        ];
        for (i, (m, value, want)) in cases.iter().enumerate() {
            assert_eq!(m.matches(*value), *want, "case {i}");
        }
    }

    #[test]
    fn range_match_is_refused() {
        let scope = Scope::new("route_configuration", "r");
        let err = header_match(
            &scope,
            "virtual_hosts[0].routes[0].match.headers[0]",
            &HeaderMatcher {
                name: "x".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::RangeMatch(Default::default())),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "route_configuration r: virtual_hosts[0].routes[0].match.headers[0].range_match is not supported"
        );
    }
}
