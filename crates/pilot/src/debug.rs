//! The monitoring and debug server (Istio's 15014).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::PilotState;

pub async fn serve(listener: TcpListener, state: Arc<PilotState>) {
    let app = Router::new()
        .route("/ready", get(|| async { "ok" }))
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/config_dump", get(config_dump))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "debug server stopped");
    }
}

/// What each connected proxy was sent and acknowledged, per type.
async fn syncz(State(state): State<Arc<PilotState>>) -> Json<serde_json::Value> {
    Json(state.sync.to_json())
}

/// The resources in force, where each came from, and every config problem.
async fn configz(State(state): State<Arc<PilotState>>) -> Json<serde_json::Value> {
    let config = state.config.load();
    let model = state.model.load();
    let resources: Vec<serde_json::Value> = config
        .resources
        .iter()
        .map(|(file, resource)| {
            let key = resource.key();
            serde_json::json!({
                "kind": key.kind.to_string(),
                "namespace": key.namespace,
                "name": key.name,
                "file": file.display().to_string(),
            })
        })
        .collect();
    let errors: Vec<serde_json::Value> = config
        .problems
        .iter()
        .map(|p| serde_json::json!({"file": p.file.display().to_string(), "message": p.message}))
        .collect();
    Json(serde_json::json!({
        "generation": state.generation(),
        "resources": resources,
        "errors": errors,
        "warnings": model.warnings,
    }))
}

/// The configuration the pilot would send to a proxy, in Envoy's JSON shape:
/// `/debug/config_dump?proxyID=<node id>` of a connected proxy.
async fn config_dump(
    State(state): State<Arc<PilotState>>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let Some(id) = query.get("proxyID") else {
        return (StatusCode::BAD_REQUEST, "missing query parameter proxyID").into_response();
    };
    let known = state
        .proxies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned();
    let Some(proxy) = known else {
        return (
            StatusCode::NOT_FOUND,
            format!("no proxy {id} has connected"),
        )
            .into_response();
    };
    let model = state.model.load();
    Json(crate::translate::dump(&model, &proxy)).into_response()
}
