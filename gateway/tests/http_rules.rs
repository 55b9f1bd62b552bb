//! The http-rule features agora's protos do not use yet — `additional_bindings`,
//! custom methods, `:verb` suffixes, multi-segment and `**` variables, a body
//! field with `response_body`, nested/repeated/enum/well-known query parameters —
//! checked against a small test contract compiled at test time.

use std::sync::OnceLock;

use agora_gateway::contract::Contract;
use agora_gateway::route::{BodyRule, RouteMiss, RouteTable};
use agora_gateway::transcode::response::render_field;
use agora_gateway::transcode::{build_message, render_message};
use bytes::Bytes;
use http::Method;
use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};
use serde_json::json;

fn contract() -> &'static (Contract, RouteTable) {
    static CONTRACT: OnceLock<(Contract, RouteTable)> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut compiler =
            protox::Compiler::new([here.join("tests/protos"), here.join("../proto")]).unwrap();
        compiler.include_imports(true).include_source_info(true);
        compiler.open_files(["gwtest.proto"]).unwrap();
        let contract = Contract::from_bytes(&compiler.encode_file_descriptor_set()).unwrap();
        let routes = RouteTable::build(&contract).unwrap();
        (contract, routes)
    })
}

fn transcode(method: Method, uri: &str, body: &str) -> (String, DynamicMessage) {
    let (path, query) = match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    };
    let (route, captures) = contract().1.resolve(&method, path).unwrap();
    let message = build_message(&route, &captures, query, &Bytes::from(body.to_owned())).unwrap();
    (route.grpc_path(), message)
}

fn json_of(message: &DynamicMessage) -> serde_json::Value {
    render_message(message)
}

#[test]
fn a_multi_segment_variable_captures_the_resource_name() {
    let (rpc, message) = transcode(Method::GET, "/v1/shelves/s1/books/b2", "");
    assert_eq!(rpc, "/gwtest.v1.ShelfService/GetBook");
    assert_eq!(json_of(&message), json!({"name": "shelves/s1/books/b2"}));
}

#[test]
fn additional_bindings_route_to_the_same_rpc() {
    let (rpc, message) = transcode(Method::GET, "/v1/books/any/depth/here", "");
    assert_eq!(rpc, "/gwtest.v1.ShelfService/GetBook");
    assert_eq!(json_of(&message)["name"], "any/depth/here");
    let bindings = contract()
        .1
        .routes()
        .iter()
        .filter(|r| r.method.name() == "GetBook")
        .count();
    assert_eq!(bindings, 2);
}

#[test]
fn a_verb_suffix_selects_its_own_rpc() {
    let (rpc, message) = transcode(
        Method::POST,
        "/v1/shelves/s1/books/b2:publish",
        r#"{"notify": true}"#,
    );
    assert_eq!(rpc, "/gwtest.v1.ShelfService/PublishBook");
    assert_eq!(
        json_of(&message),
        json!({"name": "shelves/s1/books/b2", "notify": true})
    );
    assert_eq!(
        contract()
            .1
            .resolve(&Method::POST, "/v1/shelves/s1/books/b2")
            .unwrap_err(),
        RouteMiss::MethodNotAllowed
    );
}

#[test]
fn a_custom_method_is_routed_by_its_kind() {
    let method = Method::from_bytes(b"SEARCH").unwrap();
    let (rpc, _) = transcode(method, "/v1/books", "");
    assert_eq!(rpc, "/gwtest.v1.ShelfService/Search");
}

#[test]
fn query_parameters_reach_nested_repeated_enum_and_well_known_fields() {
    let method = Method::from_bytes(b"SEARCH").unwrap();
    let (_, message) = transcode(
        method,
        "/v1/books?filter.title=dune&filter.pages.min=100&filter.pages.max=900\
         &genres=GENRE_SCIFI&genres=2&authors=a&authors=b\
         &after=2024-01-02T03:04:05.5Z&inPrint=true&unknown=1",
        "",
    );
    assert_eq!(
        json_of(&message),
        json!({
            "filter": {"title": "dune", "pages": {"min": 100, "max": 900}},
            "genres": ["GENRE_SCIFI", "GENRE_POETRY"],
            "authors": ["a", "b"],
            "after": "2024-01-02T03:04:05.500Z",
            "inPrint": true
        })
    );
}

#[test]
fn a_body_field_takes_the_body_and_the_path_sets_a_field_inside_it() {
    let (route, _) = contract()
        .1
        .resolve(&Method::PATCH, "/v1/shelves/s/books/b")
        .unwrap();
    assert_eq!(route.body, BodyRule::Field("book".into()));
    assert_eq!(route.response_body.as_deref(), Some("book"));

    let (_, message) = transcode(
        Method::PATCH,
        "/v1/shelves/s/books/b?validateOnly=true&book.title=ignored",
        r#"{"title": "Dune", "genre": "GENRE_SCIFI", "pages": 412, "name": "overridden"}"#,
    );
    assert_eq!(
        json_of(&message),
        json!({
            "book": {
                "name": "shelves/s/books/b", "title": "Dune", "genre": "GENRE_SCIFI",
                "publishedAt": null, "pages": 412
            },
            "validateOnly": true
        })
    );
}

#[test]
fn response_body_renders_one_field_and_oneofs_render_only_the_set_member() {
    let (contract, _) = contract();
    let response = contract
        .pool
        .get_message_by_name("gwtest.v1.UpdateBookResponse")
        .unwrap();
    let book_type = contract.pool.get_message_by_name("gwtest.v1.Book").unwrap();
    let mut book = DynamicMessage::new(book_type);
    book.set_field_by_name("title", Value::String("Dune".into()));
    book.set_field_by_name("shelf_id", Value::I64(9));
    let mut reply = DynamicMessage::new(response.clone());
    reply.set_field_by_name("book", Value::Message(book));
    reply.set_field_by_name("etag", Value::String("x".into()));

    let field = reply.descriptor().get_field_by_name("book").unwrap();
    assert_eq!(
        render_field(&reply, &field),
        json!({
            "name": "", "title": "Dune", "genre": "GENRE_UNSPECIFIED",
            "publishedAt": null, "pages": null, "shelfId": 9
        })
    );
}

#[test]
fn the_openapi_document_of_the_test_contract_covers_every_binding() {
    let (contract, routes) = contract();
    let doc = agora_gateway::openapi::document(contract, routes);
    assert!(doc["paths"]["/v1/{name}"]["get"].is_object());
    assert!(doc["paths"]["/v1/books/{name}"]["get"].is_object());
    assert!(doc["paths"]["/v1/{name}:publish"]["post"].is_object());
    // OpenAPI 3.1 has no place for custom methods.
    assert!(doc["paths"]["/v1/books"].is_null());
    assert!(doc["paths"]["/v1/{book.name}"]["patch"].is_object());
    assert_eq!(
        doc["paths"]["/v1/{name}"]["get"]["summary"],
        json!("Gets a book")
    );
}
