//! GET of one object and LIST of a collection, with selectors and paging.
//!
//! A continue token carries the resourceVersion of the first page and the
//! key of the last object returned; later pages report the first page's
//! resourceVersion, so a watch started from it replays anything the pages
//! may have missed. Pages show the current state, not a snapshot.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, ResourceRequest, bytes_response, object_response, write_object};
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::shared::Shared;
use crate::status::ApiError;
use crate::store::{ObjectKey, collection_key};

/// GET one object.
pub fn get(shared: &Shared, req: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    let object = shared
        .store()
        .get(&collection_key(&req.resource), req.namespace(), req.name())
        .ok_or_else(|| ApiError::not_found(&req.resource.qualified_name(), req.name()))?;
    Ok(object_response(StatusCode::OK, &object, req))
}

/// The `labelSelector` and `fieldSelector` of a request.
pub fn selectors(req: &ResourceRequest) -> Result<Selectors, ApiError> {
    Ok(Selectors {
        labels: LabelSelector::parse(req.param("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(req.param("fieldSelector").unwrap_or(""))?,
    })
}

/// LIST a collection (one namespace or all), honouring `limit` and `continue`.
pub fn list(shared: &Arc<Shared>, req: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    let selectors = selectors(req)?;
    let limit = match req.param("limit") {
        None | Some("") | Some("0") => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "limit must be a non-negative integer, got {text:?}"
            ))
        })?),
    };
    let token = match req.param("continue") {
        None | Some("") => None,
        Some(text) => Some(ContinueToken::decode(text)?),
    };
    let (items, next, rv) = {
        let store = shared.store();
        if let Some(token) = &token
            && token.rv < store.compacted_rv()
        {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            ));
        }
        let rv = token.as_ref().map_or(store.resource_version(), |t| t.rv);
        let after = token.as_ref().map(|t| t.after.clone());
        let (items, next) = store.list(
            &collection_key(&req.resource),
            req.path.namespace.as_deref(),
            after.as_ref(),
            limit,
            &selectors,
        );
        (items, next, rv)
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(after) = next {
        metadata["continue"] = json!(ContinueToken { rv, after }.encode());
    }
    let mut buffer = Vec::with_capacity(256 + items.len() * 512);
    buffer.extend_from_slice(b"{\"kind\":");
    write_json(&mut buffer, &json!(format!("{}List", req.resource.kind)));
    buffer.extend_from_slice(b",\"apiVersion\":");
    write_json(&mut buffer, &json!(req.api_version));
    buffer.extend_from_slice(b",\"metadata\":");
    write_json(&mut buffer, &metadata);
    buffer.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buffer.push(b',');
        }
        write_object(&mut buffer, item, &req.api_version, &req.resource.kind);
    }
    buffer.extend_from_slice(b"]}");
    Ok(bytes_response(StatusCode::OK, Bytes::from(buffer)))
}

fn write_json(buffer: &mut Vec<u8>, value: &Value) {
    serde_json::to_writer(buffer, value).expect("a serde_json::Value always serializes");
}

/// Where the next page starts.
struct ContinueToken {
    rv: u64,
    after: ObjectKey,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let json = json!({"rv": self.rv, "ns": self.after.0, "name": self.after.1});
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::bad_request(format!(
                "continue key {text:?} is not valid: it was not issued by this server"
            ))
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        Ok(ContinueToken {
            rv: value
                .get("rv")
                .and_then(Value::as_u64)
                .ok_or_else(invalid)?,
            after: (
                value
                    .get("ns")
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?
                    .to_string(),
                value
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?
                    .to_string(),
            ),
        })
    }
}
