//! The route table: every `google.api.http` binding of every public RPC, compiled
//! at start, and the lookup from (HTTP method, path) to the RPC it calls.
//!
//! Routes come only from the contract; there is no per-endpoint code. Services
//! without http rules (the `*InternalService`s) get no routes and are therefore not
//! reachable through the gateway at all.

pub mod template;

use std::collections::BTreeSet;
use std::sync::Arc;

use http::{Method, StatusCode};
use prost_reflect::{DynamicMessage, FieldDescriptor, MessageDescriptor, MethodDescriptor, Value};

use crate::contract::Contract;
pub use template::{Captures, Template};

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: any request body is ignored; query parameters fill the fields.
    None,
    /// `body: "*"`: the body is the whole request message (less path fields).
    Whole,
    /// `body: "field"`: the body is one top-level field; query parameters fill the rest.
    Field(String),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method it answers.
    pub http_method: Method,
    /// The compiled path template.
    pub template: Template,
    /// The RPC it calls.
    pub method: MethodDescriptor,
    /// Where the request body goes.
    pub body: BodyRule,
    /// The response field to answer with instead of the whole message.
    pub response_body: Option<String>,
    /// The HTTP status on success (200 unless the method option says otherwise).
    pub success: StatusCode,
    /// 0 for the main binding, 1.. for `additional_bindings` (for OpenAPI ids).
    pub binding_index: usize,
}

impl Route {
    /// `/{package.Service}/{Method}`, the gRPC path of the RPC.
    pub fn grpc_path(&self) -> String {
        grpc_path(&self.method)
    }
}

/// `/{package.Service}/{Method}` for a method.
pub fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// Why a request found no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMiss {
    /// No template matches the path.
    NotFound,
    /// Some template matches the path, but not with this method.
    MethodNotAllowed,
}

/// Every route of the contract, most specific first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from the contract's http rules. Every invalid rule is
    /// reported at once.
    pub fn build(contract: &Contract) -> anyhow::Result<Self> {
        let mut routes = Vec::new();
        let mut problems = Vec::new();
        for service in contract.pool.services() {
            // Internal services are never exposed, even if someone annotates them.
            if service.name().ends_with("InternalService") {
                continue;
            }
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&contract.http_rule) {
                    continue;
                }
                let success = success_code(contract, &method);
                let rule = options.get_extension(&contract.http_rule);
                let Some(rule) = rule.as_message() else {
                    continue;
                };
                let mut bindings = vec![rule.clone()];
                if let Some(extra) = rule.get_field_by_name("additional_bindings")
                    && let Some(list) = extra.as_list()
                {
                    bindings.extend(list.iter().filter_map(|v| v.as_message().cloned()));
                }
                for (index, binding) in bindings.iter().enumerate() {
                    match compile(&method, binding, success, index) {
                        Ok(route) => routes.push(Arc::new(route)),
                        Err(problem) => problems.push(format!("{}: {problem}", method.full_name())),
                    }
                }
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("invalid http rules:\n  {}", problems.join("\n  "));
        }
        routes.sort_by(|a: &Arc<Route>, b| a.template.specificity_cmp(&b.template));
        Ok(RouteTable { routes })
    }

    /// The routes `keep` selects, in the same order.
    pub fn only(&self, keep: impl Fn(&Route) -> bool) -> RouteTable {
        RouteTable {
            routes: self.routes.iter().filter(|r| keep(r)).cloned().collect(),
        }
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Full names of the services with at least one route: the only services the
    /// gateway forwards gRPC and gRPC-web calls to.
    pub fn exposed_services(&self) -> BTreeSet<String> {
        self.routes
            .iter()
            .map(|r| r.method.parent_service().full_name().to_owned())
            .collect()
    }

    /// Proto packages with at least one route: the upstreams the gateway needs.
    pub fn packages(&self) -> BTreeSet<String> {
        self.routes
            .iter()
            .map(|r| r.method.parent_service().package_name().to_owned())
            .collect()
    }

    /// Finds the most specific route for a method and path. A trailing slash is
    /// forgiven, since some clients add one.
    pub fn resolve(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(Arc<Route>, Captures), RouteMiss> {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        let mut path_matched = false;
        // Routes are sorted most specific first, so the first hit wins.
        for route in &self.routes {
            if let Some(captures) = route.template.matches(path) {
                if route.http_method == *method {
                    return Ok((Arc::clone(route), captures));
                }
                path_matched = true;
            }
        }
        Err(if path_matched {
            RouteMiss::MethodNotAllowed
        } else {
            RouteMiss::NotFound
        })
    }
}

fn success_code(contract: &Contract, method: &MethodDescriptor) -> StatusCode {
    let Some(ext) = &contract.success_code else {
        return StatusCode::OK;
    };
    let options = method.options();
    if !options.has_extension(ext) {
        return StatusCode::OK;
    }
    options
        .get_extension(ext)
        .as_i32()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|code| code.is_success())
        .unwrap_or(StatusCode::OK)
}

fn compile(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    success: StatusCode,
    binding_index: usize,
) -> Result<Route, String> {
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let has = |name: &str| rule.has_field_by_name(name);

    let (http_method, path) = if has("get") {
        (Method::GET, text("get"))
    } else if has("put") {
        (Method::PUT, text("put"))
    } else if has("post") {
        (Method::POST, text("post"))
    } else if has("delete") {
        (Method::DELETE, text("delete"))
    } else if has("patch") {
        (Method::PATCH, text("patch"))
    } else if has("custom") {
        let custom = rule.get_field_by_name("custom");
        let custom = custom.as_deref().and_then(Value::as_message);
        let field = |name: &str| {
            custom
                .and_then(|m| m.get_field_by_name(name))
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let method = Method::from_bytes(field("kind").as_bytes())
            .map_err(|_| format!("invalid custom method {:?}", field("kind")))?;
        (method, field("path"))
    } else {
        return Err("http rule without a pattern".to_owned());
    };

    let template = Template::parse(&path).map_err(|e| e.to_string())?;
    let input = method.input();
    for variable in template.variables() {
        resolve_field_path(&input, &variable.field_path)?;
    }

    let body = match text("body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        field => {
            find_field(&input, field).ok_or_else(|| format!("body field {field:?} not found"))?;
            BodyRule::Field(field.to_owned())
        }
    };
    let response_body = match text("response_body").as_str() {
        "" => None,
        field => {
            find_field(&method.output(), field)
                .ok_or_else(|| format!("response_body field {field:?} not found"))?;
            Some(field.to_owned())
        }
    };
    Ok(Route {
        http_method,
        template,
        method: method.clone(),
        body,
        response_body,
        success,
        binding_index,
    })
}

/// A field by proto name or JSON name: clients may use either.
pub fn find_field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// Resolves a dotted path to its fields; every step but the last must be a singular
/// message field.
pub fn resolve_field_path(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut current = message.clone();
    let mut fields = Vec::with_capacity(path.len());
    for (i, name) in path.iter().enumerate() {
        let field = find_field(&current, name).ok_or_else(|| {
            format!(
                "field {:?} not found in {}",
                path.join("."),
                message.full_name()
            )
        })?;
        if i + 1 < path.len() {
            match field.kind().as_message() {
                Some(next) if !field.is_list() && !field.is_map() => current = next.clone(),
                _ => {
                    return Err(format!(
                        "{:?} does not lead through messages",
                        path.join(".")
                    ));
                }
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::build(&Contract::agora().unwrap()).unwrap()
    }

    fn resolve(method: Method, path: &str) -> (Arc<Route>, Captures) {
        table().resolve(&method, path).unwrap()
    }

    #[test]
    fn a_profile_path_resolves_to_get_profile_with_the_username() {
        let (route, captures) = resolve(Method::GET, "/api/profiles/jake");
        assert_eq!(route.grpc_path(), "/agora.user.v1.UserService/GetProfile");
        assert_eq!(captures.get("username"), Some("jake"));
        assert_eq!(route.success, StatusCode::OK);
        assert_eq!(route.body, BodyRule::None);
    }

    #[test]
    fn registering_is_a_post_to_users_answered_with_201() {
        let (route, _) = resolve(Method::POST, "/api/users");
        assert_eq!(route.grpc_path(), "/agora.auth.v1.AuthService/Register");
        assert_eq!(route.success, StatusCode::CREATED);
        assert_eq!(route.body, BodyRule::Whole);
    }

    #[test]
    fn deleting_a_user_answers_204() {
        let (route, captures) = resolve(Method::DELETE, "/api/admin/users/x");
        assert_eq!(route.grpc_path(), "/agora.user.v1.UserService/DeleteUser");
        assert_eq!(route.success, StatusCode::NO_CONTENT);
        assert_eq!(captures.get("username"), Some("x"));
    }

    #[test]
    fn the_feed_literal_wins_over_the_article_slug_variable() {
        let (route, _) = resolve(Method::GET, "/api/articles/feed");
        assert_eq!(route.grpc_path(), "/agora.post.v1.PostService/GetFeed");
        let (route, captures) = resolve(Method::GET, "/api/articles/how-to-train");
        assert_eq!(route.grpc_path(), "/agora.post.v1.PostService/GetArticle");
        assert_eq!(captures.get("slug"), Some("how-to-train"));
    }

    #[test]
    fn comment_ids_and_streams_resolve() {
        let (route, captures) = resolve(Method::DELETE, "/api/articles/a/comments/42");
        assert_eq!(
            route.grpc_path(),
            "/agora.post.v1.PostService/DeleteComment"
        );
        assert_eq!(captures.get("id"), Some("42"));
        let (route, _) = resolve(Method::GET, "/api/articles/a/comments/stream");
        assert!(route.method.is_server_streaming());
    }

    #[test]
    fn a_known_path_with_the_wrong_method_is_not_allowed() {
        assert_eq!(
            table()
                .resolve(&Method::PATCH, "/api/profiles/jake")
                .unwrap_err(),
            RouteMiss::MethodNotAllowed
        );
        assert_eq!(
            table()
                .resolve(&Method::GET, "/api/nothing-here")
                .unwrap_err(),
            RouteMiss::NotFound
        );
    }

    #[test]
    fn internal_services_have_no_routes_and_are_not_exposed() {
        let table = table();
        let exposed = table.exposed_services();
        assert!(exposed.contains("agora.user.v1.UserService"));
        assert!(exposed.contains("agora.notification.v1.NotificationService"));
        assert!(exposed.iter().all(|s| !s.ends_with("InternalService")));
        assert!(table.routes().iter().all(|r| {
            !r.method
                .parent_service()
                .name()
                .ends_with("InternalService")
        }));
    }

    #[test]
    fn a_trailing_slash_is_forgiven() {
        let (route, _) = resolve(Method::GET, "/api/tags/");
        assert_eq!(route.grpc_path(), "/agora.post.v1.PostService/ListTags");
    }
}
