//! Building the request message of an RPC from an HTTP request: the JSON body
//! (proto3 JSON mapping, unknown fields ignored), then query parameters, then path
//! variables, each later source overriding the earlier, as http.proto specifies.

use bytes::Bytes;
use prost_reflect::{DeserializeOptions, DynamicMessage};

use crate::route::{BodyRule, Captures, Route};
use crate::transcode::fields::set_from_str;

/// What went wrong turning an HTTP request into a message; always the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Builds the RPC's input message. `body` is ignored when the rule takes no body.
pub fn build_message(
    route: &Route,
    captures: &Captures,
    query: Option<&str>,
    body: &Bytes,
) -> Result<DynamicMessage, RequestError> {
    let input = route.method.input();
    let mut message = match &route.body {
        BodyRule::None => DynamicMessage::new(input),
        BodyRule::Whole => decode_json(input, body, None)?,
        BodyRule::Field(field) => decode_json(input, body, Some(field))?,
    };

    // With `body: "*"` every field not in the path comes from the body, so the
    // query string has nothing left to fill.
    if route.body != BodyRule::Whole
        && let Some(query) = query
    {
        for (key, value) in parse_query(query)? {
            // The body field is the body's alone.
            if let BodyRule::Field(field) = &route.body
                && key.split('.').next() == Some(field.as_str())
            {
                continue;
            }
            let path: Vec<&str> = key.split('.').collect();
            set_from_str(&mut message, &path, &value)
                .map_err(|e| RequestError(format!("query parameter {e}")))?;
        }
    }

    for (path, value) in &captures.0 {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        set_from_str(&mut message, &path, value)
            .map_err(|e| RequestError(format!("path parameter {e}")))?;
    }
    Ok(message)
}

/// Decodes the body as the whole message, or as one field of it. An empty body is
/// an empty message, so `POST /api/auth/logout` with no body works.
fn decode_json(
    input: prost_reflect::MessageDescriptor,
    body: &Bytes,
    field: Option<&str>,
) -> Result<DynamicMessage, RequestError> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(input));
    }
    let bad = |e: serde_json::Error| RequestError(format!("invalid JSON body: {e}"));
    match field {
        None => {
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            let message =
                DynamicMessage::deserialize_with_options(input, &mut deserializer, &options)
                    .map_err(bad)?;
            deserializer.end().map_err(bad)?;
            Ok(message)
        }
        Some(field) => {
            // Wrapping the body as `{field: body}` lets the proto3 JSON mapping handle
            // every kind of body field (message, repeated, scalar) the same way.
            let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
            let wrapped =
                serde_json::Value::Object([(field.to_owned(), value)].into_iter().collect());
            DynamicMessage::deserialize_with_options(input, wrapped, &options).map_err(bad)
        }
    }
}

/// Splits `a=1&b=x%20y&b=z` into decoded pairs (`+` is a space, as in forms).
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, RequestError> {
    let decode = |s: &str| {
        crate::route::template::percent_decode(&s.replace('+', " "), true).ok_or_else(|| {
            RequestError(format!(
                "query string is not valid UTF-8 percent-encoding: {s:?}"
            ))
        })
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::route::RouteTable;
    use http::Method;

    fn build(
        method: Method,
        path_and_query: &str,
        body: &str,
    ) -> Result<DynamicMessage, RequestError> {
        let table = RouteTable::build(&Contract::agora().unwrap()).unwrap();
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let (route, captures) = table.resolve(&method, path).unwrap();
        build_message(&route, &captures, query, &Bytes::from(body.to_owned()))
    }

    fn field(message: &DynamicMessage, path: &str) -> prost_reflect::Value {
        let mut current = message.clone();
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            current = current
                .get_field_by_name(part)
                .unwrap()
                .as_message()
                .unwrap()
                .clone();
        }
        current
            .get_field_by_name(parts[parts.len() - 1])
            .unwrap()
            .into_owned()
    }

    #[test]
    fn query_parameters_fill_fields_of_a_get() {
        let message = build(
            Method::GET,
            "/api/articles?tag=rust&limit=5&offset=10&_=1",
            "",
        )
        .unwrap();
        assert_eq!(field(&message, "tag").as_str(), Some("rust"));
        assert_eq!(field(&message, "limit").as_i32(), Some(5));
        assert_eq!(field(&message, "offset").as_i32(), Some(10));
    }

    #[test]
    fn a_body_is_ignored_when_the_rule_takes_none() {
        let message = build(Method::GET, "/api/profiles/jake", "{not json").unwrap();
        assert_eq!(field(&message, "username").as_str(), Some("jake"));
    }

    #[test]
    fn a_whole_body_takes_camel_and_proto_names_and_ignores_unknown_fields() {
        let body = r#"{"article": {"title": "T", "tagList": ["a"], "tag_list": ["b"], "extra": 1}, "more": true}"#;
        let message = build(Method::POST, "/api/articles", body).unwrap();
        assert_eq!(field(&message, "article.title").as_str(), Some("T"));
        assert!(field(&message, "article.tag_list").as_list().is_some());
    }

    #[test]
    fn path_variables_override_the_body() {
        let body = r#"{"slug": "from-body", "article": {"body": "text"}}"#;
        let message = build(Method::PUT, "/api/articles/from-path", body).unwrap();
        assert_eq!(field(&message, "slug").as_str(), Some("from-path"));
        assert_eq!(field(&message, "article.body").as_str(), Some("text"));
    }

    #[test]
    fn an_empty_body_is_an_empty_message() {
        assert!(build(Method::POST, "/api/auth/logout", "").is_ok());
    }

    #[test]
    fn malformed_json_and_wrong_types_are_request_errors() {
        for body in [
            "{",
            "[]",
            "42",
            r#"{"article": {"title": 5}}"#,
            r#"{"article": "x"}"#,
            r#"{"article": {}} trailing"#,
        ] {
            let error = build(Method::POST, "/api/articles", body).unwrap_err();
            assert!(error.0.starts_with("invalid JSON body"), "{body}: {error}");
        }
    }

    #[test]
    fn bad_query_values_are_request_errors() {
        let error = build(Method::GET, "/api/articles?limit=many", "").unwrap_err();
        assert!(error.0.contains("limit"), "{error}");
        assert!(build(Method::GET, "/api/articles?tag=%zz", "").is_err());
    }

    #[test]
    fn query_strings_decode_plus_and_percent() {
        let pairs = parse_query("a=x+y&b=%C3%A9&c&&d=").unwrap();
        assert_eq!(
            pairs,
            [
                ("a".into(), "x y".into()),
                ("b".into(), "é".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into())
            ]
        );
    }
}
