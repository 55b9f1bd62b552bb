//! Rendering a response message as JSON, the way agora's clients need it. This
//! departs from the canonical proto3 JSON mapping on purpose:
//! - fields with default values are emitted (Conduit clients test `hasOwnProperty`
//!   on `following`, `favoritesCount`, `tagList`...);
//! - unset fields with presence (proto3 `optional`, singular messages) are `null`,
//!   as Conduit's `"bio": null`;
//! - 64-bit integers are JSON numbers, not strings (Conduit's comment `id`);
//! - Timestamps always carry milliseconds: `2024-01-02T03:04:05.123Z`.
//!
//! Field names are the lowerCamelCase JSON names; enums render as their names.

use base64::Engine as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage as _, Value,
};
use serde_json::{Map, Number, Value as Json};

/// Renders a whole message.
pub fn render_message(message: &DynamicMessage) -> Json {
    let descriptor = message.descriptor();
    if let Some(json) = render_well_known(&descriptor, message) {
        return json;
    }
    let mut object = Map::new();
    for field in descriptor.fields() {
        // A set member of a real oneof is rendered; the others are left out, since
        // a oneof has one value, not several nulls.
        if let Some(oneof) = field.containing_oneof()
            && !oneof.is_synthetic()
            && !message.has_field(&field)
        {
            continue;
        }
        object.insert(field.json_name().to_owned(), render_field(message, &field));
    }
    Json::Object(object)
}

/// Renders one field of a message, `null` when it has presence and is unset.
pub fn render_field(message: &DynamicMessage, field: &FieldDescriptor) -> Json {
    if field.supports_presence() && !message.has_field(field) {
        return Json::Null;
    }
    render_value(&message.get_field(field), &field.kind())
}

fn render_value(value: &Value, kind: &Kind) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(n) => render_float(f64::from(*n)),
        Value::F64(n) => render_float(*n),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => Json::String(v.name().to_owned()),
            None => Json::from(*n),
        },
        Value::Message(m) => render_message(m),
        Value::List(items) => Json::Array(items.iter().map(|v| render_value(v, kind)).collect()),
        Value::Map(entries) => {
            let value_kind = match kind.as_message() {
                Some(entry) if entry.is_map_entry() => entry.map_entry_value_field().kind(),
                _ => kind.clone(),
            };
            let mut keys: Vec<&MapKey> = entries.keys().collect();
            // Sorted keys keep the output stable for caches and tests.
            keys.sort();
            let object = keys
                .into_iter()
                .map(|key| (map_key(key), render_value(&entries[key], &value_kind)))
                .collect();
            Json::Object(object)
        }
    }
}

fn render_float(n: f64) -> Json {
    // proto3 JSON writes the non-finite values as strings.
    if n.is_nan() {
        Json::String("NaN".into())
    } else if n == f64::INFINITY {
        Json::String("Infinity".into())
    } else if n == f64::NEG_INFINITY {
        Json::String("-Infinity".into())
    } else {
        Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// The well-known types that have a special JSON form.
fn render_well_known(descriptor: &MessageDescriptor, message: &DynamicMessage) -> Option<Json> {
    let get = |name: &str| message.get_field_by_name(name).map(|v| v.into_owned());
    Some(match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let seconds = get("seconds")?.as_i64()?;
            let nanos = get("nanos")?.as_i32()?;
            Json::String(format_timestamp(seconds, nanos))
        }
        "google.protobuf.Duration" => {
            let seconds = get("seconds")?.as_i64()?;
            let nanos = get("nanos")?.as_i32()?;
            let sign = if seconds < 0 || nanos < 0 { "-" } else { "" };
            let (seconds, nanos) = (seconds.unsigned_abs(), nanos.unsigned_abs());
            if nanos == 0 {
                Json::String(format!("{sign}{seconds}s"))
            } else {
                Json::String(format!("{sign}{seconds}.{:03}s", nanos / 1_000_000))
            }
        }
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => {
            let field = descriptor.get_field_by_name("value")?;
            render_value(&message.get_field(&field), &field.kind())
        }
        "google.protobuf.Empty" => Json::Object(Map::new()),
        "google.protobuf.FieldMask" => {
            let paths = get("paths")?;
            let paths: Vec<String> = paths
                .as_list()?
                .iter()
                .filter_map(Value::as_str)
                .map(lower_camel)
                .collect();
            Json::String(paths.join(","))
        }
        "google.protobuf.Struct" => {
            let fields = descriptor.get_field_by_name("fields")?;
            render_value(&message.get_field(&fields), &fields.kind())
        }
        "google.protobuf.ListValue" => {
            let values = descriptor.get_field_by_name("values")?;
            render_value(&message.get_field(&values), &values.kind())
        }
        "google.protobuf.Value" => {
            // Exactly one member of the `kind` oneof is set; none means null.
            let set = descriptor.fields().find(|f| message.has_field(f));
            match set {
                None => Json::Null,
                Some(f) if f.name() == "null_value" => Json::Null,
                Some(f) => render_value(&message.get_field(&f), &f.kind()),
            }
        }
        "google.protobuf.Any" => {
            // Minimal: the type and the raw bytes; the gateway does not resolve types.
            let type_url = get("type_url")?;
            let value = get("value")?;
            let mut object = Map::new();
            object.insert("@type".into(), Json::String(type_url.as_str()?.to_owned()));
            object.insert(
                "value".into(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(value.as_bytes()?)),
            );
            Json::Object(object)
        }
        _ => return None,
    })
}

/// RFC 3339 in UTC with exactly three fractional digits. Out-of-range values clamp
/// to the representable range instead of failing the whole response.
pub fn format_timestamp(seconds: i64, nanos: i32) -> String {
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let seconds = seconds.clamp(MIN, MAX);
    let millis = nanos.clamp(0, 999_999_999) / 1_000_000;
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(seconds) else {
        return "1970-01-01T00:00:00.000Z".to_owned();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `created_at` -> `createdAt`.
pub fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use serde_json::json;

    fn message(name: &str) -> DynamicMessage {
        let pool = Contract::agora().unwrap().pool;
        DynamicMessage::new(pool.get_message_by_name(name).unwrap())
    }

    #[test]
    fn default_values_are_emitted_and_unset_optionals_are_null() {
        let mut profile = message("agora.user.v1.Profile");
        profile.set_field_by_name("username", Value::String("jake".into()));
        assert_eq!(
            render_message(&profile),
            json!({"username": "jake", "bio": null, "image": null, "following": false})
        );
    }

    #[test]
    fn a_set_optional_is_emitted_even_when_empty() {
        let mut profile = message("agora.user.v1.Profile");
        profile.set_field_by_name("bio", Value::String(String::new()));
        assert_eq!(render_message(&profile)["bio"], json!(""));
    }

    #[test]
    fn empty_lists_counts_and_unset_messages_render() {
        let response = message("agora.post.v1.ListArticlesResponse");
        assert_eq!(
            render_message(&response),
            json!({"articles": [], "articlesCount": 0})
        );
        let article = render_message(&message("agora.post.v1.Article"));
        assert_eq!(article["tagList"], json!([]));
        assert_eq!(article["favoritesCount"], json!(0));
        assert_eq!(article["author"], Json::Null);
        assert_eq!(article["createdAt"], Json::Null);
    }

    #[test]
    fn int64_is_a_number_and_timestamps_have_milliseconds() {
        let pool = Contract::agora().unwrap().pool;
        let mut comment = message("agora.post.v1.Comment");
        comment.set_field_by_name("id", Value::I64(7));
        let mut at = DynamicMessage::new(
            pool.get_message_by_name("google.protobuf.Timestamp")
                .unwrap(),
        );
        at.set_field_by_name("seconds", Value::I64(1_704_164_645));
        at.set_field_by_name("nanos", Value::I32(123_456_789));
        comment.set_field_by_name("created_at", Value::Message(at.clone()));
        at.set_field_by_name("nanos", Value::I32(0));
        comment.set_field_by_name("updated_at", Value::Message(at));
        let json = render_message(&comment);
        assert_eq!(json["id"], json!(7));
        assert_eq!(json["createdAt"], json!("2024-01-02T03:04:05.123Z"));
        assert_eq!(json["updatedAt"], json!("2024-01-02T03:04:05.000Z"));
    }

    #[test]
    fn enums_render_as_names_and_unknown_numbers_as_numbers() {
        let mut user = message("agora.user.v1.CurrentUser");
        user.set_field_by_name("role", Value::EnumNumber(3));
        assert_eq!(render_message(&user)["role"], json!("ROLE_ADMIN"));
        user.set_field_by_name("role", Value::EnumNumber(42));
        assert_eq!(render_message(&user)["role"], json!(42));
    }

    #[test]
    fn maps_render_as_objects_with_sorted_keys() {
        let mut batch = message("agora.user.v1.BatchGetProfilesResponse");
        let mut profile = message("agora.user.v1.Profile");
        profile.set_field_by_name("username", Value::String("b".into()));
        let mut map = std::collections::HashMap::new();
        map.insert(
            MapKey::String("id-2".into()),
            Value::Message(profile.clone()),
        );
        profile.set_field_by_name("username", Value::String("a".into()));
        map.insert(MapKey::String("id-1".into()), Value::Message(profile));
        batch.set_field_by_name("profiles", Value::Map(map));
        let json = render_message(&batch);
        let keys: Vec<_> = json["profiles"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["id-1", "id-2"]);
        assert_eq!(json["profiles"]["id-1"]["username"], json!("a"));
    }

    #[test]
    fn timestamps_clamp_instead_of_failing() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(i64::MAX, -5), "9999-12-31T23:59:59.000Z");
        assert_eq!(
            format_timestamp(i64::MIN, i32::MAX),
            "0001-01-01T00:00:00.999Z"
        );
    }

    #[test]
    fn lower_camel_follows_protoc() {
        assert_eq!(lower_camel("tag_list"), "tagList");
        assert_eq!(lower_camel("email"), "email");
    }
}
