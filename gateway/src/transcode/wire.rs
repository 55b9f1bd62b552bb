//! JSON written straight from a response's protobuf bytes, guided by its
//! descriptor: no `DynamicMessage`, no `serde_json::Value` tree, no copies of the
//! strings — the text of a page of articles goes from the upstream's buffer into
//! the response body once. The output is the same as [`super::response`]'s for
//! every message (a test holds the two together); the rarely used well-known types
//! other than `Timestamp` are rendered by that module.
//!
//! The bytes are first indexed (field number and value, in wire order), then
//! fields are written in declaration order, so repeated fields split across the
//! message, packed or not, come out as one array. A singular field that appears
//! twice takes its last value, as protobuf parsers do for scalars.

use base64::Engine as _;
use bytes::Buf as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};

use super::response::{format_timestamp, render_message};

/// The bytes are not a valid encoding of the message.
#[derive(Debug, thiserror::Error)]
#[error("malformed {0} in the upstream's answer")]
pub struct WireError(&'static str);

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Delimited(&'a [u8]),
}

/// Every field of `bytes` in wire order.
fn scan(mut bytes: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, WireError> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).map_err(|_| WireError("key"))?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError("field number"))?;
        let raw = match key & 7 {
            0 => Raw::Varint(
                prost::encoding::decode_varint(&mut bytes).map_err(|_| WireError("varint"))?,
            ),
            1 if bytes.len() >= 8 => Raw::Fixed64(bytes.get_u64_le()),
            5 if bytes.len() >= 4 => Raw::Fixed32(bytes.get_u32_le()),
            2 => {
                let len = prost::encoding::decode_varint(&mut bytes)
                    .ok()
                    .and_then(|l| usize::try_from(l).ok())
                    .filter(|l| *l <= bytes.len())
                    .ok_or(WireError("length"))?;
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Raw::Delimited(value)
            }
            _ => return Err(WireError("wire type")),
        };
        fields.push((number, raw));
    }
    Ok(fields)
}

/// Appends the JSON of the message `bytes` encodes.
pub fn write_message(
    out: &mut Vec<u8>,
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<(), WireError> {
    match message.full_name() {
        "google.protobuf.Timestamp" => {
            let (mut seconds, mut nanos) = (0i64, 0i32);
            for (number, raw) in scan(bytes)? {
                match (number, raw) {
                    (1, Raw::Varint(v)) => seconds = v as i64,
                    (2, Raw::Varint(v)) => nanos = v as i32,
                    _ => {}
                }
            }
            write_json(out, &format_timestamp(seconds, nanos));
            return Ok(());
        }
        name if name.starts_with("google.protobuf.") => {
            let decoded = DynamicMessage::decode(message.clone(), bytes)
                .map_err(|_| WireError("well-known message"))?;
            write_json(out, &render_message(&decoded));
            return Ok(());
        }
        _ => {}
    }
    let fields = scan(bytes)?;
    out.push(b'{');
    let mut first = true;
    for field in message.fields() {
        let present = fields.iter().any(|(n, _)| *n == field.number());
        // Only the set member of a real oneof is written.
        if !present
            && field
                .containing_oneof()
                .is_some_and(|oneof| !oneof.is_synthetic())
        {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json(out, field.json_name());
        out.push(b':');
        write_field_value(out, &field, &fields)?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends the JSON of one field of the message `bytes` encodes (an http rule's
/// `response_body`).
pub fn write_field(
    out: &mut Vec<u8>,
    field: &FieldDescriptor,
    bytes: &[u8],
) -> Result<(), WireError> {
    write_field_value(out, field, &scan(bytes)?)
}

fn write_field_value(
    out: &mut Vec<u8>,
    field: &FieldDescriptor,
    fields: &[(u32, Raw<'_>)],
) -> Result<(), WireError> {
    let mut values = fields
        .iter()
        .filter(|(n, _)| *n == field.number())
        .map(|(_, raw)| *raw);
    let kind = field.kind();
    if field.is_map() {
        return write_map(out, &kind, values);
    }
    if field.is_list() {
        out.push(b'[');
        let mut first = true;
        for raw in values {
            match (raw, packed_width(&kind)) {
                (Raw::Delimited(mut packed), Some(width)) => {
                    while !packed.is_empty() {
                        let element = match width {
                            Width::Varint => Raw::Varint(
                                prost::encoding::decode_varint(&mut packed)
                                    .map_err(|_| WireError("packed varint"))?,
                            ),
                            Width::Fixed32 if packed.len() >= 4 => {
                                Raw::Fixed32(packed.get_u32_le())
                            }
                            Width::Fixed64 if packed.len() >= 8 => {
                                Raw::Fixed64(packed.get_u64_le())
                            }
                            _ => return Err(WireError("packed field")),
                        };
                        comma(out, &mut first);
                        write_value(out, &kind, element)?;
                    }
                }
                (raw, _) => {
                    comma(out, &mut first);
                    write_value(out, &kind, raw)?;
                }
            }
        }
        out.push(b']');
        return Ok(());
    }
    match values.next_back() {
        Some(raw) => write_value(out, &kind, raw),
        None if field.supports_presence() => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        None => write_default(out, &kind),
    }
}

fn comma(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

/// How the elements of a packed repeated field are laid out.
enum Width {
    Varint,
    Fixed32,
    Fixed64,
}

fn packed_width(kind: &Kind) -> Option<Width> {
    Some(match kind {
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Bool
        | Kind::Enum(_) => Width::Varint,
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => Width::Fixed32,
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => Width::Fixed64,
        Kind::String | Kind::Bytes | Kind::Message(_) => return None,
    })
}

/// A map field: its entries, keys sorted as the other renderer sorts them.
fn write_map<'a>(
    out: &mut Vec<u8>,
    kind: &Kind,
    entries: impl Iterator<Item = Raw<'a>>,
) -> Result<(), WireError> {
    let entry = kind.as_message().ok_or(WireError("map entry"))?;
    let key_field = entry.map_entry_key_field();
    let value_field = entry.map_entry_value_field();
    let mut pairs: Vec<(MapKey, Vec<u8>)> = Vec::new();
    for raw in entries {
        let Raw::Delimited(bytes) = raw else {
            return Err(WireError("map entry"));
        };
        let fields = scan(bytes)?;
        let key = fields
            .iter()
            .rev()
            .find(|(n, _)| *n == key_field.number())
            .map(|(_, raw)| *raw);
        let key = map_key(&key_field.kind(), key)?;
        let mut value = Vec::new();
        write_field_value(&mut value, &value_field, &fields)?;
        // A later entry with the same key replaces the earlier one.
        pairs.retain(|(k, _)| *k != key);
        pairs.push((key, value));
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    out.push(b'{');
    let mut first = true;
    for (key, value) in pairs {
        comma(out, &mut first);
        write_json(out, &key.text());
        out.push(b':');
        out.extend_from_slice(&value);
    }
    out.push(b'}');
    Ok(())
}

/// A map key, ordered as prost-reflect's `MapKey` orders keys of one type.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MapKey {
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    String(String),
}

impl MapKey {
    fn text(&self) -> String {
        match self {
            MapKey::Bool(b) => b.to_string(),
            MapKey::Signed(n) => n.to_string(),
            MapKey::Unsigned(n) => n.to_string(),
            MapKey::String(s) => s.clone(),
        }
    }
}

fn map_key(kind: &Kind, raw: Option<Raw<'_>>) -> Result<MapKey, WireError> {
    Ok(match (kind, raw) {
        (Kind::String, None) => MapKey::String(String::new()),
        (Kind::String, Some(Raw::Delimited(b))) => MapKey::String(
            std::str::from_utf8(b)
                .map_err(|_| WireError("map key"))?
                .to_owned(),
        ),
        (Kind::Bool, raw) => MapKey::Bool(matches!(raw, Some(Raw::Varint(v)) if v != 0)),
        (Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64, raw) => {
            MapKey::Unsigned(match raw {
                None => 0,
                Some(Raw::Varint(v) | Raw::Fixed64(v)) => {
                    if matches!(kind, Kind::Uint32) {
                        u64::from(v as u32)
                    } else {
                        v
                    }
                }
                Some(Raw::Fixed32(v)) => u64::from(v),
                Some(Raw::Delimited(_)) => return Err(WireError("map key")),
            })
        }
        (kind, raw) => MapKey::Signed(match (kind, raw) {
            (_, None) => 0,
            (Kind::Int32, Some(Raw::Varint(v))) => i64::from(v as i32),
            (Kind::Int64, Some(Raw::Varint(v))) => v as i64,
            (Kind::Sint32, Some(Raw::Varint(v))) => i64::from(zigzag32(v)),
            (Kind::Sint64, Some(Raw::Varint(v))) => zigzag64(v),
            (Kind::Sfixed32, Some(Raw::Fixed32(v))) => i64::from(v as i32),
            (Kind::Sfixed64, Some(Raw::Fixed64(v))) => v as i64,
            _ => return Err(WireError("map key")),
        }),
    })
}

fn zigzag32(v: u64) -> i32 {
    let v = v as u32;
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn write_value(out: &mut Vec<u8>, kind: &Kind, raw: Raw<'_>) -> Result<(), WireError> {
    match (kind, raw) {
        (Kind::Double, Raw::Fixed64(v)) => write_float(out, f64::from_bits(v)),
        (Kind::Float, Raw::Fixed32(v)) => write_float(out, f64::from(f32::from_bits(v))),
        (Kind::Int32, Raw::Varint(v)) => write_json(out, &(v as i32)),
        (Kind::Int64, Raw::Varint(v)) => write_json(out, &(v as i64)),
        (Kind::Uint32, Raw::Varint(v)) => write_json(out, &(v as u32)),
        (Kind::Uint64, Raw::Varint(v)) => write_json(out, &v),
        (Kind::Sint32, Raw::Varint(v)) => write_json(out, &zigzag32(v)),
        (Kind::Sint64, Raw::Varint(v)) => write_json(out, &zigzag64(v)),
        (Kind::Fixed32, Raw::Fixed32(v)) => write_json(out, &v),
        (Kind::Fixed64, Raw::Fixed64(v)) => write_json(out, &v),
        (Kind::Sfixed32, Raw::Fixed32(v)) => write_json(out, &(v as i32)),
        (Kind::Sfixed64, Raw::Fixed64(v)) => write_json(out, &(v as i64)),
        (Kind::Bool, Raw::Varint(v)) => write_json(out, &(v != 0)),
        (Kind::String, Raw::Delimited(b)) => write_json(
            out,
            std::str::from_utf8(b).map_err(|_| WireError("string"))?,
        ),
        (Kind::Bytes, Raw::Delimited(b)) => {
            write_json(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Message(message), Raw::Delimited(b)) => write_message(out, message, b)?,
        (Kind::Enum(e), Raw::Varint(v)) => {
            let number = v as i32;
            match e.get_value(number) {
                Some(value) => write_json(out, value.name()),
                None => write_json(out, &number),
            }
        }
        _ => return Err(WireError("field value")),
    }
    Ok(())
}

fn write_default(out: &mut Vec<u8>, kind: &Kind) -> Result<(), WireError> {
    match kind {
        Kind::Double | Kind::Float => write_float(out, 0.0),
        Kind::String | Kind::Bytes => out.extend_from_slice(b"\"\""),
        Kind::Bool => out.extend_from_slice(b"false"),
        Kind::Enum(e) => match e.get_value(0) {
            Some(value) => write_json(out, value.name()),
            None => out.push(b'0'),
        },
        Kind::Message(_) => out.extend_from_slice(b"null"),
        _ => out.push(b'0'),
    }
    Ok(())
}

fn write_float(out: &mut Vec<u8>, n: f64) {
    // proto3 JSON writes the non-finite values as strings.
    if n.is_nan() {
        write_json(out, "NaN");
    } else if n == f64::INFINITY {
        write_json(out, "Infinity");
    } else if n == f64::NEG_INFINITY {
        write_json(out, "-Infinity");
    } else {
        write_json(out, &n);
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("writing JSON to memory cannot fail");
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, MapKey as ReflectKey, Value};

    use super::*;

    /// A value of `kind` that differs with `n`, reaching into nested messages.
    fn sample(kind: &Kind, n: i32, depth: usize) -> Value {
        match kind {
            Kind::Double => Value::F64(f64::from(n) * 1.5 - 3.0),
            Kind::Float => Value::F32(n as f32 / 4.0),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-7 * n - 1),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64(-(1 << 40) * i64::from(n) - 3)
            }
            Kind::Uint32 | Kind::Fixed32 => Value::U32(7 * n as u32 + 1),
            Kind::Uint64 | Kind::Fixed64 => Value::U64((1 << 40) * n as u64 + 3),
            Kind::Bool => Value::Bool(n % 2 == 1),
            Kind::String => Value::String(format!("s{n} \"quoted\"\n\u{e9}\u{1F600}")),
            Kind::Bytes => Value::Bytes(vec![0, 255, n as u8].into()),
            Kind::Enum(e) => Value::EnumNumber(e.values().last().map_or(0, |v| v.number())),
            Kind::Message(m) => Value::Message(filled(m, n, depth + 1)),
        }
    }

    fn filled(message: &MessageDescriptor, n: i32, depth: usize) -> DynamicMessage {
        let mut out = DynamicMessage::new(message.clone());
        if depth > 3 {
            return out;
        }
        for field in message.fields() {
            if field
                .containing_oneof()
                .is_some_and(|o| !o.is_synthetic() && o.fields().next().unwrap() != field)
            {
                continue;
            }
            let kind = field.kind();
            let value = if field.is_map() {
                let entry = kind.as_message().unwrap();
                let key_kind = entry.map_entry_key_field().kind();
                let value_kind = entry.map_entry_value_field().kind();
                let key = |i: i32| match sample(&key_kind, i, depth) {
                    Value::String(s) => ReflectKey::String(s),
                    Value::Bool(b) => ReflectKey::Bool(b),
                    Value::I32(v) => ReflectKey::I32(v),
                    Value::I64(v) => ReflectKey::I64(v),
                    Value::U32(v) => ReflectKey::U32(v),
                    Value::U64(v) => ReflectKey::U64(v),
                    other => panic!("not a key: {other:?}"),
                };
                Value::Map(
                    [
                        (key(n + 2), sample(&value_kind, n, depth)),
                        (key(n + 1), sample(&value_kind, n + 1, depth)),
                    ]
                    .into_iter()
                    .collect(),
                )
            } else if field.is_list() {
                Value::List(vec![sample(&kind, n, depth), sample(&kind, n + 1, depth)])
            } else {
                sample(&kind, n, depth)
            };
            out.set_field(&field, value);
        }
        out
    }

    #[test]
    fn every_message_of_the_contract_renders_as_the_decoded_renderer_does() {
        let pool = DescriptorPool::decode(agora_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut checked = 0;
        for message in pool.all_messages().filter(|m| !m.is_map_entry()) {
            for sample in [DynamicMessage::new(message.clone()), filled(&message, 1, 0)] {
                let bytes = sample.encode_to_vec();
                let decoded = DynamicMessage::decode(message.clone(), bytes.as_slice()).unwrap();
                let expected = render_message(&decoded);
                let mut out = Vec::new();
                write_message(&mut out, &message, &bytes).unwrap();
                let written: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}: {}",
                        message.full_name(),
                        String::from_utf8_lossy(&out)
                    )
                });
                assert_eq!(written, expected, "{}", message.full_name());
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} messages checked");
    }

    #[test]
    fn fields_split_across_the_message_and_unpacked_lists_become_one_array() {
        let pool = DescriptorPool::decode(agora_proto::FILE_DESCRIPTOR_SET).unwrap();
        let article = pool.get_message_by_name("agora.post.v1.Article").unwrap();
        let tag_list = article.get_field_by_name("tag_list").unwrap();
        let title = article.get_field_by_name("title").unwrap();
        let mut bytes = Vec::new();
        for (field, text) in [
            (&tag_list, "a"),
            (&title, "first"),
            (&tag_list, "b"),
            (&title, "last"),
        ] {
            prost::encoding::string::encode(field.number(), &text.to_owned(), &mut bytes);
        }
        let mut out = Vec::new();
        write_message(&mut out, &article, &bytes).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["tagList"], serde_json::json!(["a", "b"]));
        assert_eq!(json["title"], "last");
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let pool = DescriptorPool::decode(agora_proto::FILE_DESCRIPTOR_SET).unwrap();
        let article = pool.get_message_by_name("agora.post.v1.Article").unwrap();
        for bytes in [
            &[0x0a, 0x05, b'a'][..],
            &[0xff; 11],
            &[0x0b],
            &[0x0a, 0x02, 0xff, 0xfe],
        ] {
            assert!(
                write_message(&mut Vec::new(), &article, bytes).is_err(),
                "{bytes:?}"
            );
        }
    }
}
