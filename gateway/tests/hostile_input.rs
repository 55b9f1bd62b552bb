//! Property tests: hostile paths, query strings, headers and bodies never make the
//! gateway panic or answer 5xx on its own account. Everything it cannot use is a
//! 4xx with the JSON errors shape; anything else is the upstream's answer.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use agora_gateway::contract::Contract;
use agora_gateway::route::{Captures, RouteTable, Template};
use agora_gateway::transcode::build_message;
use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use proptest::prelude::*;
use serde_json::Value as Json;
use support::TestApp;

/// Words the contract uses, so generated input reaches deep into real routes.
const WORDS: &[&str] = &[
    "api",
    "articles",
    "profiles",
    "users",
    "user",
    "login",
    "feed",
    "comments",
    "stream",
    "favorite",
    "follow",
    "admin",
    "role",
    "auth",
    "sessions",
    "tags",
    "notifications",
    "preferences",
    "read",
    "jake",
    "live",
    "42",
    "-1",
    "article",
    "comment",
    "email",
    "title",
    "tagList",
    "tag_list",
    "bio",
    "image",
    "limit",
    "offset",
    "published",
    "body",
    "username",
    "password",
    "id",
    "slug",
    "tag",
    "kind",
    "cursor",
    "refreshToken",
    "refresh_token",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9%{}:*._~!$&'()+,;=@-]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
        1 => Just("%zz".to_owned()),
        1 => Just("%F0%9F%92%A9".to_owned()),
        1 => Just("%FF%FE".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 0..7).prop_map(|segments| format!("/{}", segments.join("/")))
}

fn query() -> impl Strategy<Value = Option<String>> {
    let pair = (word(), word(), any::<bool>()).prop_map(|(k, v, dotted)| {
        if dotted {
            format!("article.{k}={v}")
        } else {
            format!("{k}={v}")
        }
    });
    prop::option::of(prop::collection::vec(pair, 0..6).prop_map(|pairs| pairs.join("&")))
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        word().prop_map(Json::String),
        Just(Json::String("1e400".into())),
        Just(Json::from(u64::MAX)),
        Just(Json::String("2024-13-45T99:99:99Z".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((proptest::sample::select(WORDS), inner), 0..5).prop_map(
                |entries| {
                    Json::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }
            ),
        ]
    })
}

fn body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => json_value().prop_map(|v| Bytes::from(v.to_string())),
        1 => prop::collection::vec(any::<u8>(), 0..128).prop_map(Bytes::from),
        1 => Just(Bytes::from_static(b"{\"user\": {\"email\": \"a\"")),
        1 => Just(Bytes::new()),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    proptest::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::from_bytes(b"PURGE").unwrap(),
    ])
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    proptest::sample::select(vec![
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/grpc-web+proto"),
        Some("application/grpc-web-text"),
        Some("application/grpc"),
        Some("garbage\u{7f}"),
        None,
    ])
}

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| RouteTable::build(&Contract::agora().unwrap()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn templates_never_panic_on_any_text(template in ".{0,40}", path in ".{0,40}") {
        if let Ok(template) = Template::parse(&template) {
            let _ = template.matches(&path);
            let _ = template.openapi_path();
        }
    }

    #[test]
    fn the_transcoder_never_panics_on_hostile_input(
        route_index in any::<prop::sample::Index>(),
        captured in prop::collection::vec(word(), 0..3),
        query in query(),
        body in body(),
    ) {
        let route = &table().routes()[route_index.index(table().routes().len())];
        let captures = Captures(
            route
                .template
                .variables()
                .iter()
                .zip(captured.iter().chain(std::iter::repeat(&String::new())))
                .map(|(v, value)| (v.field_path.clone(), value.clone()))
                .collect(),
        );
        let _ = build_message(route, &captures, query.as_deref(), &body);
    }

    #[test]
    fn route_lookup_never_panics(method in method(), path in ".{0,60}") {
        let _ = table().resolve(&method, &path);
    }
}

struct Shared {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.block_on(TestApp::with_config(|config| {
            // Budgets would turn most cases into 429s and hide the transcoder.
            config.rate_limit_per_second = 0;
            config.auth_rate_limit_per_minute = 0;
            config.request_timeout = Duration::from_secs(2);
        }));
        Shared { runtime, app }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_get_4xx_or_the_upstreams_answer_never_a_gateway_5xx(
        method in method(),
        path in path(),
        query in query(),
        content_type in content_type(),
        body in body(),
    ) {
        let uri = match &query {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        // Strings http itself refuses never reach a server.
        let Ok(request) = request.body(Body::from(body)) else {
            return Ok(());
        };
        let shared = shared();
        let (status, grpc, body) = shared.runtime.block_on(async {
            let response = shared.app.send(request).await;
            let status = response.status();
            let grpc = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            let body = tokio::time::timeout(Duration::from_secs(5), support::body_bytes(response))
                .await
                .expect("bodies end");
            (status, grpc, body)
        });

        // 501 is the fake upstream saying it does not implement an RPC.
        prop_assert!(
            status.as_u16() < 500 || status == StatusCode::NOT_IMPLEMENTED,
            "{uri}: {status} {}", String::from_utf8_lossy(&body)
        );
        if status.is_client_error() && !grpc && !body.is_empty() {
            let json: Json = serde_json::from_slice(&body)
                .map_err(|e| TestCaseError::fail(format!("{uri}: {status} non-JSON body ({e})")))?;
            prop_assert!(json["errors"].is_object(), "{uri}: {json}");
        }
    }
}
