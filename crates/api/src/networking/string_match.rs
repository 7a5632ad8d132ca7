use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How a string (a path, a header value, an origin...) is matched.
///
/// Istio allows an empty match object (`uri: {}`); in the `Option<StringMatch>`
/// fields of [`super::HttpMatchRequest`] that is `None` (no constraint), and in
/// header and query parameter maps it means "present with any value".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Exact string match.
    Exact(String),
    /// Prefix match.
    Prefix(String),
    /// RE2 regular expression match.
    Regex(String),
}

impl StringMatch {
    /// The matched text, whatever the kind of match.
    pub fn value(&self) -> &str {
        match self {
            StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Regex(s) => s,
        }
    }
}

const FIELDS: &[&str] = &["exact", "prefix", "regex"];

struct MatchVisitor;

impl<'de> Visitor<'de> for MatchVisitor {
    type Value = Option<StringMatch>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map with one of `exact`, `prefix`, `regex`")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Option<StringMatch> = None;
        while let Some(key) = map.next_key::<String>()? {
            let make: fn(String) -> StringMatch = match key.as_str() {
                "exact" => StringMatch::Exact,
                "prefix" => StringMatch::Prefix,
                "regex" => StringMatch::Regex,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            };
            let value: String = map.next_value()?;
            if found.is_some() {
                return Err(de::Error::custom(
                    "only one of `exact`, `prefix` or `regex` may be set",
                ));
            }
            found = Some(make(value));
        }
        Ok(found)
    }
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MatchVisitor)?
            .ok_or_else(|| de::Error::custom("one of `exact`, `prefix` or `regex` must be set"))
    }
}

/// `deserialize_with` for `Option<StringMatch>` fields: `{}` is `None`.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StringMatch>, D::Error> {
    d.deserialize_option(MatchVisitor)
}

/// Header and query parameter maps, where `{}` means "present".
pub(crate) fn map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<StringMatch>>, D::Error> {
    struct Entry(Option<StringMatch>);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_option(MatchVisitor).map(Entry)
        }
    }
    let raw: BTreeMap<String, Entry> = BTreeMap::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

pub(crate) fn serialize_map<S: Serializer>(
    m: &BTreeMap<String, Option<StringMatch>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    struct Empty;
    impl Serialize for Empty {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_map(Some(0))?.end()
        }
    }
    let mut out = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        match v {
            Some(v) => out.serialize_entry(k, v)?,
            None => out.serialize_entry(k, &Empty)?,
        }
    }
    out.end()
}
