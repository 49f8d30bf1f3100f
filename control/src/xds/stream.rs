//! The state of one delta xDS stream: what the client subscribed to, what
//! it holds (name → version), and which response carried what. Pure logic:
//! the gRPC plumbing is in `server.rs`.

use std::collections::{HashMap, HashSet, VecDeque};

use tonic::Status;
use weft_proto::{
    ADDRESS_TYPE_URL,
    core::ControlPlane,
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
};

use super::syncz::{Nack, StreamGuard, unix_now};
use crate::model::Model;

/// Responses remembered for matching ACKs and NACKs.
const PENDING_NONCES: usize = 32;
/// Marks a resource whose state on the client is unknown (its response
/// was NACKed): it differs from every real version, so it is sent again.
const UNKNOWN_VERSION: &str = "";

pub struct DeltaState {
    guard: StreamGuard,
    wildcard: bool,
    /// Names subscribed explicitly (besides the wildcard).
    names: HashSet<String>,
    /// What the client holds, as far as we know: name → version.
    client_has: HashMap<String, String>,
    /// Names the client just subscribed to: they must be answered, even
    /// if absent (as removed) or already held.
    must_answer: HashSet<String>,
    /// nonce → names carried by that response.
    pending: VecDeque<(String, Vec<String>)>,
    responses: u64,
}

/// What to do after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Nothing,
    Push,
}

/// Whether the request type is one weft serves.
pub fn check_type(type_url: &str) -> Result<(), Status> {
    if type_url == ADDRESS_TYPE_URL {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "unsupported type URL `{type_url}`; weft-control serves `{ADDRESS_TYPE_URL}` only"
        )))
    }
}

impl DeltaState {
    /// Starts from the stream's first request.
    pub fn new(guard: StreamGuard, first: &mut DeltaDiscoveryRequest) -> Self {
        let subscribe = std::mem::take(&mut first.resource_names_subscribe);
        let wildcard = subscribe.is_empty() || subscribe.iter().any(|n| n == "*");
        let names: HashSet<String> = subscribe.into_iter().filter(|n| n != "*").collect();
        let client_has = std::mem::take(&mut first.initial_resource_versions);
        guard.update(|s| s.wildcard = wildcard);
        DeltaState {
            guard,
            wildcard,
            must_answer: names.clone(),
            names,
            client_has: client_has.into_iter().collect(),
            pending: VecDeque::new(),
            responses: 0,
        }
    }

    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Handles a request after the first: ACK, NACK, subscription change.
    pub fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<Next, Status> {
        check_type(&request.type_url)?;
        if !request.response_nonce.is_empty() {
            match &request.error_detail {
                None => self.ack(&request.response_nonce),
                Some(error) => self.nack(&request.response_nonce, error.code, &error.message),
            }
        }
        let mut next = Next::Nothing;
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(&name);
            }
        }
        // The client drops what it no longer subscribes to.
        let (wildcard, names) = (self.wildcard, &self.names);
        self.client_has.retain(|n, _| wildcard || names.contains(n));
        for name in request.resource_names_subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
                self.must_answer.insert(name);
            }
            next = Next::Push;
        }
        let wildcard = self.wildcard;
        self.guard.update(|s| s.wildcard = wildcard);
        Ok(next)
    }

    fn ack(&mut self, nonce: &str) {
        self.pending.retain(|(n, _)| n != nonce);
        self.guard
            .update(|s| s.last_acked_nonce = nonce.to_string());
    }

    fn nack(&mut self, nonce: &str, code: i32, message: &str) {
        tracing::warn!(
            connection = self.guard.id(),
            nonce,
            code,
            message,
            "agent rejected (NACKed) an xDS response; it is sent again on the next change"
        );
        if let Some(i) = self.pending.iter().position(|(n, _)| n == nonce) {
            let (_, names) = self.pending.remove(i).expect("index in range");
            for name in names {
                self.client_has.insert(name, UNKNOWN_VERSION.to_string());
            }
        }
        self.guard.update(|s| {
            s.nacks += 1;
            s.last_nack = Some(Nack {
                nonce: nonce.to_string(),
                code,
                message: message.to_string(),
                at_unix: unix_now(),
            });
        });
    }

    /// The response that brings the client to `model`, if it needs one.
    /// `always` sends even an empty response (the first one, which tells
    /// the client it is in sync).
    pub fn response(&mut self, model: &Model, always: bool) -> Option<DeltaDiscoveryResponse> {
        let mut resources = Vec::new();
        for (name, resource) in &model.resources {
            if !self.subscribed(name) {
                continue;
            }
            let current = self.client_has.get(name);
            if current != Some(&resource.version) || self.must_answer.contains(name) {
                resources.push(Resource {
                    name: name.clone(),
                    version: resource.version.clone(),
                    resource: Some(resource.any.clone()),
                    ..Default::default()
                });
            }
        }
        let mut removed: Vec<String> = self
            .client_has
            .keys()
            .filter(|n| !model.resources.contains_key(*n))
            .cloned()
            .collect();
        for name in &self.must_answer {
            if !model.resources.contains_key(name) && !removed.contains(name) {
                removed.push(name.clone());
            }
        }
        removed.sort();
        self.must_answer.clear();
        if resources.is_empty() && removed.is_empty() && !always {
            return None;
        }

        for r in &resources {
            self.client_has.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            self.client_has.remove(name);
        }
        self.responses += 1;
        let nonce = format!("{:x}-{:x}", self.guard.id(), self.responses);
        let names = resources
            .iter()
            .map(|r| r.name.clone())
            .chain(removed.iter().cloned())
            .collect();
        self.pending.push_back((nonce.clone(), names));
        if self.pending.len() > PENDING_NONCES {
            self.pending.pop_front();
        }
        let held = self.client_has.len();
        self.guard.update(|s| {
            s.responses_sent += 1;
            s.last_sent_version = model.version.clone();
            s.last_sent_nonce = nonce.clone();
            s.resources = held;
        });
        tracing::debug!(
            connection = self.guard.id(),
            nonce,
            version = model.version,
            resources = resources.len(),
            removed = removed.len(),
            "sending delta xDS response"
        );
        Some(DeltaDiscoveryResponse {
            system_version_info: model.version.clone(),
            resources,
            type_url: ADDRESS_TYPE_URL.to_string(),
            removed_resources: removed,
            nonce,
            control_plane: Some(ControlPlane {
                identifier: "weft-control".into(),
            }),
        })
    }
}
