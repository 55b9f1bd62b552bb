//! `/healthz` (the process serves) and `/readyz` (every upstream says SERVING to
//! `grpc.health.v1.Health/Check`), for Kubernetes probes.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::upstream::Upstreams;

/// How long one upstream may take to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Always 200 while the process serves.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// 200 when every upstream is SERVING, else 503 naming the ones that are not.
/// A package the routes need but no upstream is configured for counts as failing.
pub async fn readyz(upstreams: &Upstreams, required: &BTreeSet<String>) -> Response {
    let checks = upstreams.iter().map(|(package, channel)| {
        let channel = channel.clone();
        async move {
            let mut client = HealthClient::new(channel);
            // The empty service name asks about the server as a whole, which a
            // service's health reporter flips to NOT_SERVING when it starts draining.
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let answer = tokio::time::timeout(CHECK_TIMEOUT, client.check(request)).await;
            let problem = match answer {
                Err(_) => Some("health check timed out".to_owned()),
                Ok(Err(status)) => Some(format!("health check failed: {:?}", status.code())),
                Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
                    None
                }
                Ok(Ok(_)) => Some("not serving".to_owned()),
            };
            (package.clone(), problem)
        }
    });
    let mut failing: Vec<(String, String)> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(|(package, problem)| problem.map(|p| (package, p)))
        .collect();
    for package in required {
        if upstreams.for_package(package).is_err() {
            failing.push((package.clone(), "no upstream configured".to_owned()));
        }
    }
    failing.sort();
    if failing.is_empty() {
        return Json(json!({"status": "ready"})).into_response();
    }
    let body = json!({
        "status": "unavailable",
        "failing": failing.iter().map(|(package, _)| package).collect::<Vec<_>>(),
        "errors": {
            "body": failing.iter().map(|(package, problem)| format!("{package}: {problem}")).collect::<Vec<_>>(),
        },
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
