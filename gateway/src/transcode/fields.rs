//! Setting one field of a dynamic message from a string, as path variables and
//! query parameters arrive: dotted paths into nested messages, repeated fields
//! (each occurrence appends), enums by name or number, and the well-known wrapper
//! and Timestamp types. Errors are messages meant for the API client.

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage as _, Value,
};

use crate::route::find_field;

/// Sets the field at `path` (proto or JSON names) from `raw`. Repeated fields get
/// `raw` appended. `Ok(false)` when the path names no field: unknown query
/// parameters are ignored, as browsers add cache busters.
pub fn set_from_str(
    message: &mut DynamicMessage,
    path: &[&str],
    raw: &str,
) -> Result<bool, String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(false);
    };
    let mut current = message;
    for name in parents {
        let Some(field) = find_field(&current.descriptor(), name) else {
            return Ok(false);
        };
        if field.is_list() || field.is_map() || field.kind().as_message().is_none() {
            return Err(format!("{} is not a message", path.join(".")));
        }
        let next = current.get_field_mut(&field);
        current = match next.as_message_mut() {
            Some(next) => next,
            None => return Err(format!("{} is not a message", path.join("."))),
        };
    }
    let Some(field) = find_field(&current.descriptor(), last) else {
        return Ok(false);
    };
    if field.is_map() {
        return Err(format!(
            "{} is a map and cannot be set from a string",
            path.join(".")
        ));
    }
    let value = parse_value(&field, raw).map_err(|e| format!("{}: {e}", path.join(".")))?;
    if field.is_list() {
        match current.get_field_mut(&field).as_list_mut() {
            Some(list) => list.push(value),
            None => return Err(format!("{} is not a list", path.join("."))),
        }
    } else {
        current.set_field(&field, value);
    }
    Ok(true)
}

/// Parses one scalar (or well-known wrapper) value of `field`'s kind.
pub fn parse_value(field: &FieldDescriptor, raw: &str) -> Result<Value, String> {
    parse_kind(&field.kind(), raw)
}

fn parse_kind(kind: &Kind, raw: &str) -> Result<Value, String> {
    fn num<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, String> {
        raw.trim()
            .parse()
            .map_err(|_| format!("{raw:?} is not a valid {what}"))
    }
    Ok(match kind {
        Kind::Double => Value::F64(num(raw, "number")?),
        Kind::Float => Value::F32(num(raw, "number")?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(num(raw, "int32")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(num(raw, "int64")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(num(raw, "uint32")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(num(raw, "uint64")?),
        Kind::Bool => Value::Bool(match raw {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{raw:?} is not a boolean")),
        }),
        Kind::String => Value::String(raw.to_owned()),
        Kind::Bytes => {
            use base64::Engine as _;
            let engine = base64::engine::general_purpose::STANDARD;
            let url = base64::engine::general_purpose::URL_SAFE;
            let bytes = engine
                .decode(raw)
                .or_else(|_| url.decode(raw))
                .map_err(|_| format!("{raw:?} is not base64"))?;
            Value::Bytes(bytes.into())
        }
        Kind::Enum(descriptor) => {
            let value = descriptor
                .get_value_by_name(raw)
                .map(|v| v.number())
                .or_else(|| {
                    raw.parse::<i32>()
                        .ok()
                        .filter(|n| descriptor.get_value(*n).is_some())
                })
                .ok_or_else(|| format!("{raw:?} is not one of {}", enum_names(descriptor)))?;
            Value::EnumNumber(value)
        }
        Kind::Message(descriptor) => Value::Message(parse_well_known(descriptor, raw)?),
    })
}

fn enum_names(descriptor: &prost_reflect::EnumDescriptor) -> String {
    descriptor
        .values()
        .map(|v| v.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wrappers take their inner value; Timestamp takes RFC 3339. Other messages
/// cannot come from a single string.
fn parse_well_known(descriptor: &MessageDescriptor, raw: &str) -> Result<DynamicMessage, String> {
    let mut message = DynamicMessage::new(descriptor.clone());
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let parsed =
                time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| format!("{raw:?} is not an RFC 3339 timestamp"))?;
            message.set_field_by_name("seconds", Value::I64(parsed.unix_timestamp()));
            message.set_field_by_name("nanos", Value::I32(parsed.nanosecond() as i32));
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
            let field = descriptor
                .get_field_by_name("value")
                .ok_or_else(|| "malformed wrapper type".to_owned())?;
            message.set_field(&field, parse_value(&field, raw)?);
        }
        other => return Err(format!("a {other} cannot be given as a single value")),
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;

    fn message(name: &str) -> DynamicMessage {
        let pool = Contract::agora().unwrap().pool;
        DynamicMessage::new(pool.get_message_by_name(name).unwrap())
    }

    #[test]
    fn nested_fields_are_set_through_dotted_paths_with_either_name() {
        let mut request = message("agora.post.v1.UpdateArticleRequest");
        assert!(set_from_str(&mut request, &["article", "title"], "New").unwrap());
        assert!(set_from_str(&mut request, &["article", "published"], "true").unwrap());
        let article = request.get_field_by_name("article").unwrap();
        let article = article.as_message().unwrap();
        assert_eq!(
            article.get_field_by_name("title").unwrap().as_str(),
            Some("New")
        );
        assert_eq!(
            article.get_field_by_name("published").unwrap().as_bool(),
            Some(true)
        );

        let mut list = message("agora.post.v1.ListArticlesRequest");
        assert!(set_from_str(&mut list, &["limit"], "5").unwrap());
        assert_eq!(list.get_field_by_name("limit").unwrap().as_i32(), Some(5));
    }

    #[test]
    fn each_occurrence_of_a_repeated_field_appends() {
        let mut article = message("agora.post.v1.NewArticle");
        set_from_str(&mut article, &["tagList"], "a").unwrap();
        set_from_str(&mut article, &["tag_list"], "b").unwrap();
        let tags = article.get_field_by_name("tag_list").unwrap();
        let tags: Vec<_> = tags
            .as_list()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(tags, ["a", "b"]);
    }

    #[test]
    fn enums_accept_names_and_known_numbers_only() {
        let mut request = message("agora.user.v1.SetUserRoleRequest");
        set_from_str(&mut request, &["role"], "ROLE_ADMIN").unwrap();
        assert_eq!(
            request.get_field_by_name("role").unwrap().as_enum_number(),
            Some(3)
        );
        set_from_str(&mut request, &["role"], "2").unwrap();
        assert_eq!(
            request.get_field_by_name("role").unwrap().as_enum_number(),
            Some(2)
        );
        let error = set_from_str(&mut request, &["role"], "ROLE_GOD").unwrap_err();
        assert!(error.contains("ROLE_ADMIN"), "{error}");
        assert!(set_from_str(&mut request, &["role"], "99").is_err());
    }

    #[test]
    fn unknown_names_are_ignored_and_bad_values_are_errors() {
        let mut request = message("agora.post.v1.ListArticlesRequest");
        assert!(!set_from_str(&mut request, &["_"], "123").unwrap());
        assert!(!set_from_str(&mut request, &["no", "such"], "1").unwrap());
        assert!(set_from_str(&mut request, &["limit"], "ten").is_err());
        assert!(set_from_str(&mut request, &["limit"], "99999999999").is_err());
        assert!(set_from_str(&mut request, &["tag", "deeper"], "x").is_err());
    }

    #[test]
    fn int64_path_values_parse() {
        let mut request = message("agora.post.v1.DeleteCommentRequest");
        set_from_str(&mut request, &["id"], "42").unwrap();
        assert_eq!(request.get_field_by_name("id").unwrap().as_i64(), Some(42));
    }
}
