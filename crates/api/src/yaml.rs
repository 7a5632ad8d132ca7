//! YAML documents as position-aware trees.
//!
//! Each document is read once into a [`Node`] tree that remembers the line of
//! every key and value. The tree is converted to JSON for typed decoding, and
//! kept to map field paths in error messages back to lines.

use crate::error::{FieldPath, PathSegment};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A value with the (document-relative, 1-based) line it starts on.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub line: usize,
    /// Byte offset just past the key's text, when known.
    pub end: Option<usize>,
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Uint(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        String::from_utf8(v.to_vec())
            .map(Value::String)
            .map_err(|_| E::custom("binary values are not supported"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(Node {
                line: item.referenced.line() as usize,
                value: item.value,
            });
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Value>>()? {
            let name = match key.value {
                Value::String(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Uint(u) => u.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                Value::Seq(_) | Value::Map(_) => {
                    return Err(de::Error::custom("mapping keys must be scalars"));
                }
            };
            let value = map.next_value::<Spanned<Value>>()?;
            let span = key.referenced.span();
            let end = match (span.byte_offset(), span.byte_len()) {
                (Some(off), Some(len)) => usize::try_from(off + len).ok(),
                _ => None,
            };
            entries.push((
                Key {
                    name,
                    line: key.referenced.line() as usize,
                    end,
                },
                Node {
                    line: value.referenced.line() as usize,
                    value: value.value,
                },
            ));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// One `---` separated part of a file.
pub(crate) struct RawDocument<'a> {
    pub text: &'a str,
    /// Number of lines of the file before this document's text.
    pub line_offset: usize,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']))
}

/// Splits a multi-document YAML stream on `---` lines.
///
/// Splitting by hand (instead of asking the YAML parser for all documents at
/// once) keeps one broken document from hiding the others and lets each error
/// carry its document index. Column-0 markers cannot occur inside a block
/// scalar, so the split agrees with the YAML grammar.
pub(crate) fn split_documents(text: &str) -> Vec<RawDocument<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0usize;
    let mut pos = 0usize;
    let mut in_doc_end = false;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let next = pos + line.len();
        if is_marker(trimmed, "---") {
            if !in_doc_end {
                docs.push(RawDocument {
                    text: &text[start..pos],
                    line_offset: start_line,
                });
            }
            in_doc_end = false;
            // Content after the marker on the same line belongs to the new
            // document; blank out the marker so columns stay right.
            start = pos + 3;
            start_line = line_no;
        } else if is_marker(trimmed, "...") {
            if !in_doc_end {
                docs.push(RawDocument {
                    text: &text[start..pos],
                    line_offset: start_line,
                });
            }
            in_doc_end = true;
            start = next;
            start_line = line_no + 1;
        }
        pos = next;
    }
    if !in_doc_end {
        docs.push(RawDocument {
            text: &text[start..],
            line_offset: start_line,
        });
    }
    docs
}

/// Parses one document; `None` for an empty one.
pub(crate) fn parse_document(text: &str) -> Result<Option<Node>, (String, Option<usize>)> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let options = serde_saphyr::options! { with_snippet: false };
    match serde_saphyr::from_str_with_options::<Option<Spanned<Value>>>(text, options) {
        Ok(None) => Ok(None),
        Ok(Some(spanned)) => {
            if matches!(spanned.value, Value::Null) {
                return Ok(None);
            }
            let mut node = Node {
                line: spanned.referenced.line() as usize,
                value: spanned.value,
            };
            fix_flow_colons(&mut node, text);
            Ok(Some(node))
        }
        Err(e) => {
            let line = e.location().map(|l| l.line() as usize).filter(|l| *l > 0);
            let mut msg = e.without_snippet().to_string();
            // The location goes into its own field; drop the copy the
            // message carries.
            if let Some(idx) = msg.rfind(" at line ") {
                msg.truncate(idx);
            }
            Err((format!("invalid YAML: {msg}"), line))
        }
    }
}

/// YAML 1.2 reads `[1.2.3.4, 2001:db8::]` as a list holding a string and a
/// one-entry map `{"2001:db8:": null}`, because a `:` followed by a flow
/// indicator separates a key from its value. The YAML library Kubernetes and
/// Istio use reads the second item as the string `2001:db8::`, and IPv6
/// addresses ending in `::` are common in address lists, so such items are
/// turned back into strings.
fn fix_flow_colons(node: &mut Node, text: &str) {
    match &mut node.value {
        Value::Seq(items) => {
            for item in items {
                let mut replacement = None;
                if let Value::Map(entries) = &item.value
                    && let [(key, value)] = entries.as_slice()
                    && matches!(value.value, Value::Null)
                    && let Some(end) = key.end
                    && let Some(rest) = text.as_bytes().get(end..end + 2)
                    && rest[0] == b':'
                    && matches!(rest[1], b']' | b',')
                {
                    replacement = Some(Value::String(format!("{}:", key.name)));
                }
                match replacement {
                    Some(v) => item.value = v,
                    None => fix_flow_colons(item, text),
                }
            }
        }
        Value::Map(entries) => {
            for (_, value) in entries {
                fix_flow_colons(value, text);
            }
        }
        _ => {}
    }
}

impl Node {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The line of the deepest part of `path` present in the tree: the key's
    /// line for a field, the item's line for a list index.
    pub(crate) fn line_of(&self, path: &FieldPath) -> usize {
        let mut node = self;
        let mut line = self.line;
        for seg in path.segments() {
            match (seg, &node.value) {
                (PathSegment::Key(k), Value::Map(entries)) => {
                    match entries.iter().find(|(key, _)| &key.name == k) {
                        Some((key, value)) => {
                            line = key.line;
                            node = value;
                        }
                        None => break,
                    }
                }
                (PathSegment::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(item) => {
                        line = item.line;
                        node = item;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        line
    }

    /// The node at `path`, if present.
    pub(crate) fn at(&self, path: &FieldPath) -> Option<&Node> {
        let mut node = self;
        for seg in path.segments() {
            node = match (seg, &node.value) {
                (PathSegment::Key(k), Value::Map(entries)) => {
                    &entries.iter().find(|(key, _)| &key.name == k)?.1
                }
                (PathSegment::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The line of key `key` directly inside the map at `path`.
    pub(crate) fn key_line(&self, path: &FieldPath, key: &str) -> Option<usize> {
        match &self.at(path)?.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, _)| k.line),
            _ => None,
        }
    }

    pub(crate) fn to_json(&self) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        Ok(match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Uint(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .ok_or_else(|| format!("the number {f} cannot be represented"))?,
            Value::String(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(
                items
                    .iter()
                    .map(Node::to_json)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Value::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.insert(k.name.clone(), v.to_json()?);
                }
                J::Object(map)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers() {
        let text = "a: 1\n---\nb: 2\n--- # c\nc: 3\n...\n---\n";
        let docs = split_documents(text);
        let texts: Vec<&str> = docs.iter().map(|d| d.text.trim()).collect();
        assert_eq!(texts, vec!["a: 1", "b: 2", "# c\nc: 3", ""]);
        assert_eq!(docs[1].line_offset, 1);
        assert_eq!(docs[2].line_offset, 3);
    }

    #[test]
    fn lines_are_tracked() {
        let node = parse_document("a:\n  b:\n  - x\n  - y: 1\n")
            .unwrap()
            .unwrap();
        let p = FieldPath::root().key("a").key("b").index(1).key("y");
        assert_eq!(node.line_of(&p), 4);
        assert_eq!(node.line_of(&FieldPath::root().key("a").key("zz")), 1);
    }

    #[test]
    fn ipv6_in_flow_lists_stays_a_string() {
        let node = parse_document("a: [1.2.3.4, 001:db8::, 2001:db8::1]\nb: [x:]\n")
            .unwrap()
            .unwrap();
        let json = node.to_json().unwrap();
        assert_eq!(
            json["a"],
            serde_json::json!(["1.2.3.4", "001:db8::", "2001:db8::1"])
        );
        assert_eq!(json["b"], serde_json::json!(["x:"]));
    }
}
