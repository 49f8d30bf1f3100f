//! The HTTP API: authentication, routing, discovery, and dispatch of
//! resource requests to reads, watches and writes.

mod path;
mod read;
mod watch;
mod write;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::auth::ADMIN_TOKEN;
use crate::registry::Resource;
use crate::shared::Shared;
use crate::status::ApiError;
use path::{ResourcePath, Route};

/// Response bodies: whole JSON documents or endless watch streams.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Serves one request; failures become `metav1.Status` responses.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = match route(&shared, request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    tracing::debug!(%method, %uri, status = response.status().as_u16(), "request");
    Ok(response)
}

async fn route(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let route = path::parse(request.uri().path());
    if !matches!(route, Route::Version | Route::Health) {
        authenticate(shared, &request)?;
    }
    let not_found = || ApiError::not_found("", "");
    match route {
        Route::Version => Ok(json_response(StatusCode::OK, &version())),
        Route::Health => Ok(Response::new(full(Bytes::from_static(b"ok")))),
        Route::CoreVersions => Ok(json_response(
            StatusCode::OK,
            &shared.registry().core_versions(),
        )),
        Route::GroupList => Ok(json_response(
            StatusCode::OK,
            &shared.registry().group_list(),
        )),
        Route::Group(group) => {
            let body = shared.registry().group(&group).ok_or_else(not_found)?;
            Ok(json_response(StatusCode::OK, &body))
        }
        Route::ResourceList { group, version } => {
            let body = shared
                .registry()
                .resource_list(&group, &version)
                .ok_or_else(not_found)?;
            Ok(json_response(StatusCode::OK, &body))
        }
        Route::Resource(path) => resource_request(shared, path, request).await,
        Route::Unknown => Err(not_found()),
    }
}

fn authenticate(shared: &Shared, request: &Request<Incoming>) -> Result<(), ApiError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    if token == ADMIN_TOKEN || shared.tokens().accepts(token) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "weft-apiserver",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// One resource request, resolved against the registry.
pub struct ResourceRequest {
    /// The served resource type.
    pub resource: Resource,
    /// The parsed URL.
    pub path: ResourcePath,
    /// Query parameters (last value wins).
    pub query: HashMap<String, String>,
    /// `group/version` as requested: responses carry it as `apiVersion`.
    pub api_version: String,
}

impl ResourceRequest {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Whether `dryRun=All` was given.
    pub fn dry_run(&self) -> bool {
        self.param("dryRun").is_some_and(|v| v == "All")
    }

    /// The namespace of the URL, or "" for cluster-scoped resources.
    pub fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }

    /// The object name of the URL ("" for a collection).
    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    path: ResourcePath,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let resource = shared
        .registry()
        .lookup(&path.group, &path.version, &path.plural)
        .cloned()
        .ok_or_else(|| ApiError::not_found("", ""))?;
    if path.namespace.is_some() && !resource.namespaced {
        return Err(ApiError::not_found("", ""));
    }
    if path.subresource.as_deref().is_some_and(|s| s != "status") {
        return Err(ApiError::not_found("", ""));
    }
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let api_version = resource.api_version(&path.version);
    let req = ResourceRequest {
        resource,
        path,
        query,
        api_version,
    };
    let (parts, body) = request.into_parts();
    let has_name = req.path.name.is_some();
    if req.resource.create_only() && (parts.method != Method::POST || has_name) {
        return Err(ApiError::method_not_allowed(
            parts.method.as_str(),
            &req.resource.kind,
        ));
    }
    let watching = req.param("watch").is_some_and(|v| v == "true" || v == "1");
    match (&parts.method, has_name) {
        (&Method::GET, false) if watching => {
            shared.count("watch");
            watch::watch(shared.clone(), &req)
        }
        (&Method::GET, false) => {
            shared.count("list");
            read::list(shared, &req)
        }
        (&Method::GET, true) => {
            shared.count("get");
            read::get(shared, &req)
        }
        (&Method::POST, false) => {
            shared.count("create");
            write::create(shared, &req, read_json(body).await?)
        }
        (&Method::PUT, true) => {
            shared.count("update");
            write::update(shared, &req, read_json(body).await?)
        }
        (&Method::PATCH, true) => {
            shared.count("patch");
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            write::patch(shared, &req, &content_type, read_bytes(body).await?)
        }
        (&Method::DELETE, true) => {
            shared.count("delete");
            write::delete(shared, &req)
        }
        (&Method::DELETE, false) => {
            shared.count("deletecollection");
            write::delete_collection(shared, &req)
        }
        (method, _) => Err(ApiError::method_not_allowed(
            method.as_str(),
            &req.resource.kind,
        )),
    }
}

async fn read_bytes(body: Incoming) -> Result<Bytes, ApiError> {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))
}

async fn read_json(body: Incoming) -> Result<Value, ApiError> {
    let bytes = read_bytes(body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// A whole body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    bytes_response(
        status,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

/// A response with already-serialized JSON.
pub fn bytes_response(status: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

/// Serializes `object` with `apiVersion` and `kind` set to what the client asked for.
pub fn write_object(buffer: &mut Vec<u8>, object: &Value, api_version: &str, kind: &str) {
    let matches = object.get("apiVersion").and_then(Value::as_str) == Some(api_version)
        && object.get("kind").and_then(Value::as_str) == Some(kind);
    let result = if matches {
        serde_json::to_writer(&mut *buffer, object)
    } else {
        let mut copy = object.clone();
        copy["apiVersion"] = json!(api_version);
        copy["kind"] = json!(kind);
        serde_json::to_writer(&mut *buffer, &copy)
    };
    result.expect("a serde_json::Value always serializes");
}

/// One object as a response body, in the requested version.
pub fn object_response(
    status: StatusCode,
    object: &Value,
    req: &ResourceRequest,
) -> Response<Body> {
    let mut buffer = Vec::new();
    write_object(&mut buffer, object, &req.api_version, &req.resource.kind);
    bytes_response(status, Bytes::from(buffer))
}
