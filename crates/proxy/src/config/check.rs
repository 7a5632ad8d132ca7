//! Detection of set-but-unsupported fields.
//!
//! prost has no reflection, so instead of listing every unsupported field by
//! hand the compiler clears the fields it understands in a copy of the message
//! and re-encodes it: proto3 encodes only non-default values, so any byte left
//! is a field the proxy would otherwise ignore. Its tag names the field.

use prost::Message;

use super::{ConfigError, Scope, join};

/// Fails with `Unsupported` naming the first field of `msg` left set after
/// `clear` has reset the supported ones. Compile-time only, never on the data path.
pub(super) fn reject_unknown<M: Message + Clone>(
    scope: &Scope,
    path: &str,
    msg: &M,
    names: &[(u32, &str)],
    clear: impl FnOnce(&mut M),
) -> Result<(), ConfigError> {
    let mut rest = msg.clone();
    clear(&mut rest);
    let bytes = rest.encode_to_vec();
    if bytes.is_empty() {
        return Ok(());
    }
    let tag = first_tag(&bytes);
    let name = names
        .iter()
        .find(|(t, _)| Some(*t) == tag)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| match tag {
            Some(t) => format!("field #{t}"),
            None => "an unknown field".to_string(),
        });
    Err(scope.unsupported(join(path, &name)))
}

/// The field number of the first key in a protobuf encoding.
fn first_tag(bytes: &[u8]) -> Option<u32> {
    let mut key: u64 = 0;
    for (i, b) in bytes.iter().take(10).enumerate() {
        key |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(key >> 3).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_xds::pb::envoy::config::listener::v3::Listener;

    #[test]
    fn names_the_first_leftover_field() {
        let scope = Scope::new("listener", "l");
        let listener = Listener {
            name: "l".into(),
            stat_prefix: "x".into(),
            ..Default::default()
        };
        let err = reject_unknown(&scope, "", &listener, super::super::fields::LISTENER, |l| {
            l.name.clear()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "listener l: stat_prefix is not supported");
        assert!(reject_unknown(&scope, "", &listener, &[], |l| *l = Listener::default()).is_ok());
    }

    #[test]
    fn decodes_multi_byte_tags() {
        // Field 33, wire type 2: key 0x10a = [0x8a, 0x02].
        assert_eq!(first_tag(&[0x8a, 0x02, 0x00]), Some(33));
        assert_eq!(first_tag(&[0x0a, 0x00]), Some(1));
    }
}
