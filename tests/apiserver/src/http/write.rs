//! Writes: POST (create), PUT (replace), PATCH (merge, strategic-as-merge,
//! JSON patch, server-side apply), DELETE, DELETE collection, and the
//! TokenReview create. `/status` writes change only `.status`; writes to
//! the main resource keep the stored `.status`, as the real server does.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::read::selectors;
use super::{Body, ResourceRequest, bytes_response, json_response, object_response, write_object};
use crate::meta::{meta_str, metadata_mut};
use crate::patch::{json_patch, merge_patch};
use crate::shared::Shared;
use crate::status::ApiError;
use crate::store::{EventType, WriteScope, collection_key};

/// Puts the URL's namespace and name into the body, rejecting contradictions.
fn place(req: &ResourceRequest, object: &mut Value, name_from_url: bool) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    object["apiVersion"] = json!(req.api_version);
    let metadata = metadata_mut(object);
    if req.resource.namespaced {
        let url_namespace = req.namespace();
        if url_namespace.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} is namespaced: the request URL must name a namespace (/namespaces/{{ns}}/{})",
                req.resource.kind, req.resource.plural
            )));
        }
        let body_namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !body_namespace.is_empty() && body_namespace != url_namespace {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_namespace}) does not match the namespace sent on the request ({url_namespace})"
            )));
        }
        metadata.insert("namespace".into(), json!(url_namespace));
    } else {
        metadata.remove("namespace");
    }
    if name_from_url {
        let body_name = metadata.get("name").and_then(Value::as_str).unwrap_or("");
        if !body_name.is_empty() && body_name != req.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                req.name()
            )));
        }
        metadata.insert("name".into(), json!(req.name()));
    }
    Ok(())
}

fn scope(req: &ResourceRequest) -> WriteScope {
    if req.path.subresource.is_some() {
        WriteScope::StatusOnly
    } else {
        WriteScope::KeepStatus
    }
}

/// POST to a collection.
pub fn create(
    shared: &Arc<Shared>,
    req: &ResourceRequest,
    mut object: Value,
) -> Result<Response<Body>, ApiError> {
    if req.resource.create_only() {
        return Ok(token_review(shared, req, object));
    }
    if req.path.subresource.is_some() {
        return Err(ApiError::method_not_allowed("create", &req.resource.kind));
    }
    place(req, &mut object, false)?;
    let dry_run = req.dry_run();
    let (stored, _) = shared.write(&req.resource, dry_run, |store| {
        store
            .create(&req.resource, object, dry_run)
            .map(|o| (o, EventType::Added))
    })?;
    Ok(object_response(StatusCode::CREATED, &stored, req))
}

/// PUT to an object (or its `/status`); 404 if missing, 409 on a stale resourceVersion.
pub fn update(
    shared: &Arc<Shared>,
    req: &ResourceRequest,
    mut object: Value,
) -> Result<Response<Body>, ApiError> {
    place(req, &mut object, true)?;
    let dry_run = req.dry_run();
    let (stored, _) = shared.write(&req.resource, dry_run, |store| {
        store
            .update(&req.resource, object, scope(req), dry_run)
            .map(|o| (o, EventType::Modified))
    })?;
    Ok(object_response(StatusCode::OK, &stored, req))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Merge,
    Json,
    Apply,
}

/// PATCH an object (or its `/status`). Server-side apply creates a missing
/// object and otherwise merges the applied object in; field ownership
/// (managers, conflicts) is not modelled, so `force` changes nothing.
pub fn patch(
    shared: &Arc<Shared>,
    req: &ResourceRequest,
    content_type: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let kind = match media_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            PatchKind::Merge
        }
        "application/json-patch+json" => PatchKind::Json,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(json_error) if kind == PatchKind::Apply => {
            serde_yaml::from_slice(&body).map_err(|yaml_error| {
                ApiError::bad_request(format!(
                    "the apply body is neither JSON ({json_error}) nor YAML ({yaml_error})"
                ))
            })?
        }
        Err(error) => {
            return Err(ApiError::bad_request(format!(
                "the patch body is not valid JSON: {error}"
            )));
        }
    };
    let dry_run = req.dry_run();
    let key = collection_key(&req.resource);
    let (stored, event) = shared.write(&req.resource, dry_run, |store| {
        let Some(current) = store.get(&key, req.namespace(), req.name()) else {
            if kind == PatchKind::Apply && req.path.subresource.is_none() {
                let mut object = patch;
                place(req, &mut object, true)?;
                return store
                    .create(&req.resource, object, dry_run)
                    .map(|o| (o, EventType::Added));
            }
            return Err(ApiError::not_found(
                &req.resource.qualified_name(),
                req.name(),
            ));
        };
        let mut object = (*current).clone();
        match kind {
            PatchKind::Merge | PatchKind::Apply => merge_patch(&mut object, &patch),
            PatchKind::Json => json_patch(&mut object, &patch)?,
        }
        if kind == PatchKind::Apply {
            // Apply bodies rarely carry a resourceVersion; when absent, no precondition.
            let rv = meta_str(&current, "resourceVersion").to_string();
            if meta_str(&patch, "resourceVersion").is_empty() {
                metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv));
            }
        }
        place(req, &mut object, true)?;
        store
            .update(&req.resource, object, scope(req), dry_run)
            .map(|o| (o, EventType::Modified))
    })?;
    let status = if event == EventType::Added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(object_response(status, &stored, req))
}

/// DELETE an object: 200 with its last state.
pub fn delete(shared: &Arc<Shared>, req: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    if req.path.subresource.is_some() {
        return Err(ApiError::method_not_allowed("delete", &req.resource.kind));
    }
    let dry_run = req.dry_run();
    let (last, _) = shared.write(&req.resource, dry_run, |store| {
        store
            .delete(&req.resource, req.namespace(), req.name(), dry_run)
            .map(|o| (o, EventType::Deleted))
    })?;
    Ok(object_response(StatusCode::OK, &last, req))
}

/// DELETE a collection (with selectors): 200 with a list of what was deleted.
pub fn delete_collection(
    shared: &Arc<Shared>,
    req: &ResourceRequest,
) -> Result<Response<Body>, ApiError> {
    let selectors = selectors(req)?;
    let key = collection_key(&req.resource);
    let (doomed, _) =
        shared
            .store()
            .list(&key, req.path.namespace.as_deref(), None, None, &selectors);
    let dry_run = req.dry_run();
    let mut buffer = Vec::new();
    buffer.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{}},\"items\":[",
            req.resource.kind, req.api_version
        )
        .as_bytes(),
    );
    let mut first = true;
    for object in doomed {
        let result = shared.write(&req.resource, dry_run, |store| {
            store
                .delete(
                    &req.resource,
                    meta_str(&object, "namespace"),
                    meta_str(&object, "name"),
                    dry_run,
                )
                .map(|o| (o, EventType::Deleted))
        });
        // Deleted concurrently: nothing to report.
        if let Ok((last, _)) = result {
            if !first {
                buffer.push(b',');
            }
            first = false;
            write_object(&mut buffer, &last, &req.api_version, &req.resource.kind);
        }
    }
    buffer.extend_from_slice(b"]}");
    Ok(bytes_response(StatusCode::OK, Bytes::from(buffer)))
}

/// POST tokenreviews: the review echoed with its `status`; nothing is stored.
fn token_review(shared: &Shared, req: &ResourceRequest, mut review: Value) -> Response<Body> {
    let status = shared
        .tokens()
        .review(review.get("spec").unwrap_or(&Value::Null));
    if !review.is_object() {
        review = json!({});
    }
    review["apiVersion"] = json!(req.api_version);
    review["kind"] = json!("TokenReview");
    metadata_mut(&mut review);
    review["status"] = status;
    json_response(StatusCode::CREATED, &review)
}
