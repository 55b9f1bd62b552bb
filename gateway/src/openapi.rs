//! The OpenAPI 3.1 document of the REST surface, generated from the same route
//! table the gateway serves and from the proto comments, so the docs cannot drift
//! from the behaviour. Schemas describe the JSON the gateway actually emits
//! (default fields present, `null` for unset optionals, int64 as numbers).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::contract::Contract;
use crate::route::{BodyRule, Route, RouteTable, find_field, resolve_field_path};

const STANDARD_METHODS: &[&str] = &[
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// Builds the document for a contract and its routes.
pub fn document(contract: &Contract, routes: &RouteTable) -> Json {
    let mut schemas = Schemas::new(contract);
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for route in routes.routes() {
        // OpenAPI 3.1 path items have fixed method keys; custom methods cannot be listed.
        if !STANDARD_METHODS.contains(&route.http_method.as_str()) {
            continue;
        }
        let operation = operation(contract, route, &mut schemas);
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), operation);
    }
    let mut components = Map::new();
    components.insert("schemas".into(), Json::Object(schemas.finish()));
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "tokenAuth": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "Conduit's form: `Authorization: Token <jwt>`."
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "agora",
            "version": "v1",
            "description": "agora's REST surface, generated from the gRPC contract's google.api.http rules."
        },
        // Signing in is optional on many routes; each service decides, so every
        // operation accepts either token form or none.
        "security": [{"bearerAuth": []}, {"tokenAuth": []}, {}],
        "paths": paths,
        "components": components,
    })
}

fn operation(contract: &Contract, route: &Route, schemas: &mut Schemas) -> Json {
    let method = &route.method;
    let service = method.parent_service();
    let comment = contract.method_comment(method).unwrap_or("");
    let summary = comment
        .split("\n\n")
        .next()
        .unwrap_or("")
        .replace('\n', " ");
    let summary = summary
        .split(". ")
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
        .to_owned();
    let mut operation_id = format!("{}_{}", service.name(), method.name());
    if route.binding_index > 0 {
        operation_id.push_str(&format!("_{}", route.binding_index));
    }

    let input = method.input();
    let mut parameters = Vec::new();
    let mut bound: BTreeSet<String> = BTreeSet::new();
    for variable in route.template.variables() {
        let name = variable.field_path.join(".");
        let fields = resolve_field_path(&input, &variable.field_path).unwrap_or_default();
        bound.insert(
            fields
                .first()
                .map(|f| f.name().to_owned())
                .unwrap_or_default(),
        );
        let (schema, description) = match fields.last() {
            Some(field) => (schemas.scalar_schema(field), schemas.field_comment(field)),
            None => (json!({"type": "string"}), None),
        };
        let mut parameter = json!({"name": name, "in": "path", "required": true, "schema": schema});
        if let Some(description) = description {
            parameter["description"] = json!(description);
        }
        parameters.push(parameter);
    }
    if route.body != BodyRule::Whole {
        let body_field = match &route.body {
            BodyRule::Field(field) => Some(field.as_str()),
            _ => None,
        };
        for field in input.fields() {
            if bound.contains(field.name()) || Some(field.name()) == body_field {
                continue;
            }
            query_parameters(schemas, &field, String::new(), 0, &mut parameters);
        }
    }

    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id));
    op.insert("tags".into(), json!([service.name()]));
    if !summary.is_empty() {
        op.insert("summary".into(), json!(summary));
    }
    if !comment.is_empty() {
        op.insert("description".into(), json!(comment));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Json::Array(parameters));
    }
    let request_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole => Some(schemas.reference(&input)),
        BodyRule::Field(field) => find_field(&input, field).map(|f| schemas.field_schema(&f)),
    };
    if let Some(schema) = request_schema {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
    }

    let output = method.output();
    let response_schema = match &route.response_body {
        Some(field) => find_field(&output, field).map_or(json!({}), |f| schemas.field_schema(&f)),
        None => schemas.reference(&output),
    };
    let success = route.success.as_u16().to_string();
    let success_response = if route.success == http::StatusCode::NO_CONTENT {
        json!({"description": "Done; no body."})
    } else if method.is_server_streaming() {
        json!({
            "description": "A Server-Sent Events stream; each `data:` line is one JSON message of this schema.",
            "content": {"text/event-stream": {"schema": response_schema}}
        })
    } else {
        json!({
            "description": "Success.",
            "content": {"application/json": {"schema": response_schema}}
        })
    };
    let error = json!({
        "description": "`{\"errors\": {\"<field>\": [\"<message>\"]}}`: 400 malformed request, 401 not signed in, 403 not allowed, 404 not found, 409 conflict, 422 validation failed, 429 rate limited.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    });
    op.insert(
        "responses".into(),
        json!({ success: success_response, "default": error }),
    );
    Json::Object(op)
}

/// Query parameters for a field: scalars, enums and repeated scalars directly,
/// nested messages by dotted names (a few levels deep, which also stops recursion).
fn query_parameters(
    schemas: &mut Schemas,
    field: &FieldDescriptor,
    prefix: String,
    depth: usize,
    out: &mut Vec<Json>,
) {
    let name = format!("{prefix}{}", field.json_name());
    if field.is_map() {
        return;
    }
    match field.kind() {
        Kind::Message(message) if !is_scalar_like(&message) => {
            if depth < 3 && !field.is_list() {
                for inner in message.fields() {
                    query_parameters(schemas, &inner, format!("{name}."), depth + 1, out);
                }
            }
        }
        _ => {
            let mut schema = schemas.scalar_schema(field);
            if field.is_list() {
                schema = json!({"type": "array", "items": schema});
            }
            let mut parameter =
                json!({"name": name, "in": "query", "required": false, "schema": schema});
            if field.is_list() {
                parameter["explode"] = json!(true);
            }
            if let Some(description) = schemas.field_comment(field) {
                parameter["description"] = json!(description);
            }
            out.push(parameter);
        }
    }
}

fn is_scalar_like(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Collects component schemas for the messages and enums that operations use.
struct Schemas<'a> {
    contract: &'a Contract,
    done: BTreeMap<String, Json>,
    pending: VecDeque<Kind>,
}

impl<'a> Schemas<'a> {
    fn new(contract: &'a Contract) -> Self {
        Schemas {
            contract,
            done: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn reference(&mut self, message: &MessageDescriptor) -> Json {
        if let Some(inline) = well_known_schema(message) {
            return inline;
        }
        self.pending.push_back(Kind::Message(message.clone()));
        json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
    }

    fn field_comment(&self, field: &FieldDescriptor) -> Option<String> {
        self.contract
            .comment(field.parent_file().name(), field.path())
            .map(str::to_owned)
    }

    /// The schema of one value of the field (ignoring `repeated`).
    fn scalar_schema(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "integer", "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => {
                self.pending.push_back(Kind::Enum(e.clone()));
                json!({"$ref": format!("#/components/schemas/{}", e.full_name())})
            }
            Kind::Message(m) => self.reference(&m),
        }
    }

    /// The full schema of a field: repeated, map and presence included.
    fn field_schema(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map() {
            let value = match field.kind().as_message() {
                Some(entry) => self.scalar_schema(&entry.map_entry_value_field()),
                None => json!({}),
            };
            return json!({"type": "object", "additionalProperties": value});
        }
        let one = self.scalar_schema(field);
        if field.is_list() {
            return json!({"type": "array", "items": one});
        }
        if field.supports_presence() {
            // Unset optionals and messages are rendered as null.
            return json!({"oneOf": [one, {"type": "null"}]});
        }
        one
    }

    fn finish(mut self) -> Map<String, Json> {
        while let Some(kind) = self.pending.pop_front() {
            match kind {
                Kind::Message(message) => {
                    if self.done.contains_key(message.full_name()) {
                        continue;
                    }
                    // Reserve the name first: recursive messages refer to themselves.
                    self.done.insert(message.full_name().to_owned(), Json::Null);
                    let schema = self.message_schema(&message);
                    self.done.insert(message.full_name().to_owned(), schema);
                }
                Kind::Enum(e) => {
                    if self.done.contains_key(e.full_name()) {
                        continue;
                    }
                    let mut schema = json!({
                        "type": "string",
                        "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
                    });
                    if let Some(comment) = self.contract.comment(e.parent_file().name(), e.path()) {
                        schema["description"] = json!(comment);
                    }
                    self.done.insert(e.full_name().to_owned(), schema);
                }
                _ => {}
            }
        }
        let mut schemas: Map<String, Json> = self.done.into_iter().collect();
        schemas.insert(
            "ErrorResponse".into(),
            json!({
                "type": "object",
                "required": ["errors"],
                "properties": {"errors": {
                    "type": "object",
                    "description": "Messages by field name; `body` when no single field is at fault.",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}}
                }}
            }),
        );
        schemas
    }

    fn message_schema(&mut self, message: &MessageDescriptor) -> Json {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let mut schema = self.field_schema(&field);
            if let Some(comment) = self.field_comment(&field) {
                schema = match schema {
                    Json::Object(mut object) if !object.contains_key("$ref") => {
                        object.insert("description".into(), json!(comment));
                        Json::Object(object)
                    }
                    // Siblings of $ref are allowed in 3.1, but wrapping keeps older tools happy.
                    other => json!({"allOf": [other], "description": comment}),
                };
            }
            // Every field is emitted in responses, so all are present.
            required.push(json!(field.json_name()));
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties, "required": required});
        if let Some(comment) = self
            .contract
            .comment(message.parent_file().name(), message.path())
        {
            schema["description"] = json!(comment);
        }
        schema
    }
}

fn well_known_schema(message: &MessageDescriptor) -> Option<Json> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => {
            json!({"type": "string", "format": "date-time", "examples": ["2024-01-02T03:04:05.123Z"]})
        }
        "google.protobuf.Duration" => json!({"type": "string", "examples": ["1.500s"]}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Json {
        let contract = Contract::agora().unwrap();
        document(&contract, &RouteTable::build(&contract).unwrap())
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_token_schemes() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["securitySchemes"]["bearerAuth"].is_object());
        assert!(doc["components"]["securitySchemes"]["tokenAuth"].is_object());
    }

    #[test]
    fn operations_carry_summaries_parameters_and_success_codes() {
        let doc = doc();
        let get_profile = &doc["paths"]["/api/profiles/{username}"]["get"];
        assert_eq!(get_profile["operationId"], "UserService_GetProfile");
        assert_eq!(get_profile["summary"], "Returns a user's public profile");
        assert_eq!(get_profile["parameters"][0]["name"], "username");
        assert_eq!(get_profile["parameters"][0]["in"], "path");
        assert!(get_profile["responses"]["200"].is_object());

        let register = &doc["paths"]["/api/users"]["post"];
        assert!(register["responses"]["201"].is_object());
        assert_eq!(
            register["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/agora.auth.v1.RegisterRequest"
        );
        assert!(
            doc["paths"]["/api/admin/users/{username}"]["delete"]["responses"]["204"].is_object()
        );

        let list = &doc["paths"]["/api/articles"]["get"]["parameters"];
        let names: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect();
        assert!(
            names.contains(&json!("tag")) && names.contains(&json!("limit")),
            "{names:?}"
        );
    }

    #[test]
    fn schemas_describe_messages_with_field_comments() {
        let doc = doc();
        let profile = &doc["components"]["schemas"]["agora.user.v1.Profile"];
        assert_eq!(profile["properties"]["following"]["type"], "boolean");
        assert!(profile["properties"]["bio"]["oneOf"].is_array());
        assert!(profile["properties"]["following"]["description"].is_string());
        let role = &doc["components"]["schemas"]["agora.user.v1.Role"];
        assert!(
            role["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("ROLE_ADMIN"))
        );
        assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
    }

    #[test]
    fn internal_services_are_not_documented() {
        let text = doc().to_string();
        assert!(!text.contains("InternalService"));
        assert!(!text.contains("VerifyCredentials"));
    }
}
