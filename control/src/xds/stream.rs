//! The state of one delta xDS stream. A client subscribes to each type on
//! the one (aggregated) stream with that type's first request; from then
//! on every type has its own subscription (wildcard and/or names), its own
//! view of what the client holds (name → version), and its own nonces, so
//! ACKs and NACKs are per type. Pure logic: the gRPC plumbing is in
//! `server.rs`.

use bytes::Bytes;
use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::Status;
use weft_proto::{core::ControlPlane, discovery::DeltaDiscoveryRequest};

use super::{
    raw::RawDeltaDiscoveryResponse,
    syncz::{Nack, StreamGuard, TypeStatus, unix_now},
    view::{ClientView, UNKNOWN_VERSION},
};
use crate::{
    metrics::Metrics,
    model::{Model, XdsResource, full::CHUNK},
};

/// The types weft serves, in the order a push sends them.
pub const SERVED_TYPES: [&str; 7] = weft_proto::TYPE_URLS;

/// Responses remembered per type for matching ACKs and NACKs.
const PENDING_NONCES: usize = 32;
/// Past this many names where a wildcard client differs from its
/// snapshot, take a new snapshot.
const REBASE_DRIFT: usize = 4096;
/// A client that NACKs this many responses within [`NACK_WINDOW`] is in a
/// loop (it rejects what it is sent and asks again): disconnect it.
const NACK_LIMIT: usize = 20;
const NACK_WINDOW: Duration = Duration::from_secs(10);

/// The whole stream: one [`TypeState`] per subscribed type.
pub struct DeltaState {
    guard: StreamGuard,
    metrics: Arc<Metrics>,
    /// The model version the client was last brought to (all types).
    synced: String,
    types: BTreeMap<&'static str, TypeState>,
    responses: u64,
    recent_nacks: VecDeque<Instant>,
}

/// One type's subscription on the stream.
struct TypeState {
    type_url: &'static str,
    wildcard: bool,
    /// Names subscribed explicitly (besides the wildcard).
    names: HashSet<String>,
    /// What the client holds, as far as we know.
    client_has: ClientView,
    /// The next push must compare everything (a full response was NACKed).
    needs_full: bool,
    /// Names the client just subscribed to: they must be answered, even
    /// if absent (as removed) or already held.
    must_answer: HashSet<String>,
    /// Sent and not yet answered: nonce, names it carried (`None`: a
    /// full response), type version.
    pending: VecDeque<(String, Option<Vec<String>>, String)>,
    /// Names whose response was NACKed: compared again on the next push.
    retry: HashSet<String>,
}

/// What to do after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// Send this type's differences; `always`: even an empty response
    /// (the answer to a type's first request, which tells the client it
    /// is in sync).
    Push {
        type_url: &'static str,
        always: bool,
    },
}

/// The served type a URL names.
pub fn check_type(type_url: &str) -> Result<&'static str, Status> {
    SERVED_TYPES
        .iter()
        .copied()
        .find(|t| *t == type_url)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "unsupported type URL `{type_url}`; weft-control serves {}",
                SERVED_TYPES
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

impl DeltaState {
    pub fn new(guard: StreamGuard, metrics: Arc<Metrics>) -> Self {
        DeltaState {
            guard,
            metrics,
            synced: String::new(),
            types: BTreeMap::new(),
            responses: 0,
            recent_nacks: VecDeque::new(),
        }
    }

    /// Handles a request: a type's first (subscription, with what the
    /// client already holds), or an ACK, NACK or subscription change.
    pub fn on_request(&mut self, mut request: DeltaDiscoveryRequest) -> Result<Next, Status> {
        let type_url = check_type(&request.type_url)?;
        if !self.types.contains_key(type_url) {
            let state = TypeState::new(type_url, &mut request);
            let wildcard = state.wildcard;
            self.guard.update(|s| {
                s.types.insert(
                    type_url.to_string(),
                    TypeStatus {
                        wildcard,
                        ..Default::default()
                    },
                );
            });
            self.types.insert(type_url, state);
            // A first request may carry a nonce only by mistake; the
            // subscription is what matters.
            return Ok(Next::Push {
                type_url,
                always: true,
            });
        }
        if !request.response_nonce.is_empty() {
            match &request.error_detail {
                None => self.ack(type_url, &request.response_nonce),
                Some(error) => self.nack(
                    type_url,
                    &request.response_nonce,
                    error.code,
                    &error.message,
                )?,
            }
        }
        let state = self.types.get_mut(type_url).expect("checked above");
        let next = state.change_subscription(request);
        let wildcard = state.wildcard;
        self.update(type_url, |s| s.wildcard = wildcard);
        Ok(next)
    }

    fn update(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        self.guard.update(|s| {
            if let Some(t) = s.types.get_mut(type_url) {
                f(t);
            }
        });
    }

    fn ack(&mut self, type_url: &'static str, nonce: &str) {
        let state = self.types.get_mut(type_url).expect("subscribed");
        let Some(i) = state.pending.iter().position(|(n, _, _)| n == nonce) else {
            // Unknown or too old: nothing to learn from it.
            return;
        };
        let (_, _, version) = state.pending.remove(i).expect("index in range");
        // Older responses are implied by this one: the client handles
        // responses in order.
        state.pending.drain(..i);
        self.update(type_url, |s| {
            s.last_acked_nonce = nonce.to_string();
            s.last_acked_version = version;
            s.acks += 1;
        });
    }

    fn nack(
        &mut self,
        type_url: &'static str,
        nonce: &str,
        code: i32,
        message: &str,
    ) -> Result<(), Status> {
        tracing::warn!(
            connection = self.guard.id(),
            type_url,
            nonce,
            code,
            message,
            "agent rejected (NACKed) an xDS response; it is sent again on the next change"
        );
        self.metrics.xds_rejected(type_url);
        let state = self.types.get_mut(type_url).expect("subscribed");
        if let Some(i) = state.pending.iter().position(|(n, _, _)| n == nonce) {
            let (_, names, _) = state.pending.remove(i).expect("index in range");
            match names {
                Some(names) => {
                    for name in names {
                        state
                            .client_has
                            .set(name.clone(), UNKNOWN_VERSION.to_string());
                        state.retry.insert(name);
                    }
                }
                None => {
                    state.client_has = ClientView::default();
                    state.needs_full = true;
                }
            }
        }
        let nack = Nack {
            nonce: nonce.to_string(),
            code,
            message: message.to_string(),
            at_unix: unix_now(),
        };
        self.update(type_url, |s| {
            s.nacks += 1;
            s.last_nack = Some(nack);
        });
        let now = Instant::now();
        self.recent_nacks.push_back(now);
        while self
            .recent_nacks
            .front()
            .is_some_and(|t| now.duration_since(*t) > NACK_WINDOW)
        {
            self.recent_nacks.pop_front();
        }
        if self.recent_nacks.len() > NACK_LIMIT {
            return Err(Status::resource_exhausted(format!(
                "{} NACKs within {NACK_WINDOW:?}; the client rejects what it asks for, closing the stream (last error: {message})",
                self.recent_nacks.len()
            )));
        }
        Ok(())
    }

    /// A push bringing every subscribed type to `model`, one type at a
    /// time (so each can be timed and counted): the subscribed types with
    /// the names to compare, each answered with
    /// [`DeltaState::push_type`]. When the stream is at a version the
    /// model's history covers, only the names changed since are compared
    /// (`Some`); otherwise everything (`None`). The stream counts as
    /// brought to `model`.
    pub fn push_types<'m>(
        &mut self,
        model: &'m Model,
    ) -> Vec<(&'static str, Option<Vec<&'m str>>)> {
        let changed = model.changed_since(&self.synced);
        let out = self
            .subscribed_types()
            .into_iter()
            .map(|type_url| {
                let full = self.types.get(type_url).is_some_and(|t| t.needs_full);
                let names = changed.as_ref().filter(|_| !full).map(|c| {
                    c.iter()
                        .filter(|(t, _)| *t == type_url)
                        .map(|(_, n)| *n)
                        .collect()
                });
                (type_url, names)
            })
            .collect();
        self.synced = model.version.clone();
        out
    }

    /// One type's part of a push (see [`DeltaState::push_types`]).
    pub fn push_type(
        &mut self,
        type_url: &'static str,
        model: &Model,
        names: Option<&[&str]>,
    ) -> Vec<RawDeltaDiscoveryResponse> {
        self.respond(type_url, model, false, names)
    }

    /// The model version the client was last brought to (empty before
    /// its first response).
    pub fn synced_version(&self) -> &str {
        &self.synced
    }

    /// The types this stream subscribes to.
    pub fn subscribed_types(&self) -> Vec<&'static str> {
        SERVED_TYPES
            .iter()
            .copied()
            .filter(|t| self.types.contains_key(t))
            .collect()
    }

    /// The response that brings the client's `type_url` resources to
    /// `model`, if it needs one (or `always`).
    pub fn response(
        &mut self,
        type_url: &'static str,
        model: &Model,
        always: bool,
    ) -> Vec<RawDeltaDiscoveryResponse> {
        if self.synced.is_empty() {
            self.synced = model.version.clone();
        }
        self.respond(type_url, model, always, None)
    }

    /// The responses for one type: usually one; a large one is split into
    /// chunks of [`CHUNK`] resources (each with its own nonce), so that no
    /// response is the size of the whole mesh. A wildcard client that
    /// holds nothing gets the type's shared full state.
    fn respond(
        &mut self,
        type_url: &'static str,
        model: &Model,
        always: bool,
        only: Option<&[&str]>,
    ) -> Vec<RawDeltaDiscoveryResponse> {
        let Some(state) = self.types.get_mut(type_url) else {
            return Vec::new();
        };
        let Some(resources) = model.of_type(type_url) else {
            return Vec::new();
        };
        let type_version = model.type_version(type_url);
        if only.is_none() && state.holds_nothing() {
            if resources.is_empty() && !always {
                return Vec::new();
            }
            let full = model.full_state(type_url).expect("a served type");
            state.client_has.rebase(resources);
            state.needs_full = false;
            return full
                .chunks
                .iter()
                .map(|(chunk, count)| {
                    self.one_response(
                        type_url,
                        &type_version,
                        None,
                        vec![chunk.clone()],
                        *count,
                        Vec::new(),
                    )
                })
                .collect();
        }
        let full = only.is_none();
        let (mut upserts, removed) = match only {
            Some(names) => state.diff_names(resources, names),
            None => state.diff(resources),
        };
        state.needs_full = false;
        if upserts.is_empty() && removed.is_empty() && !always {
            return Vec::new();
        }
        let mut chunks = Vec::new();
        while upserts.len() > CHUNK {
            let rest = upserts.split_off(CHUNK);
            chunks.push(std::mem::replace(&mut upserts, rest));
        }
        chunks.push(upserts);
        let last = chunks.len() - 1;
        let mut out = Vec::with_capacity(chunks.len());
        let mut removed = Some(removed);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let removed = if i == last {
                removed.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let names = (!full).then(|| {
                chunk
                    .iter()
                    .map(|r| r.name.clone())
                    .chain(removed.iter().cloned())
                    .collect()
            });
            let count = chunk.len();
            let framed = chunk.into_iter().map(|r| r.framed.clone()).collect();
            out.push(self.one_response(type_url, &type_version, names, framed, count, removed));
        }
        out
    }

    /// One response; `names` are the names it carries (added, changed,
    /// removed), `None` for part of a full state.
    fn one_response(
        &mut self,
        type_url: &'static str,
        type_version: &str,
        names: Option<Vec<String>>,
        resources: Vec<Bytes>,
        count: usize,
        removed: Vec<String>,
    ) -> RawDeltaDiscoveryResponse {
        self.responses += 1;
        let nonce = format!("{:x}-{:x}", self.guard.id(), self.responses);
        let state = self.types.get_mut(type_url).expect("subscribed");
        state
            .pending
            .push_back((nonce.clone(), names, type_version.to_string()));
        if state.pending.len() > PENDING_NONCES {
            state.pending.pop_front();
        }
        let held = state.client_has.len();
        self.update(type_url, |s| {
            s.responses_sent += 1;
            s.last_sent_version = type_version.to_string();
            s.last_sent_nonce = nonce.clone();
            s.resources = held;
        });
        tracing::debug!(
            connection = self.guard.id(),
            type_url,
            nonce,
            version = type_version,
            resources = count,
            removed = removed.len(),
            "sending delta xDS response"
        );
        RawDeltaDiscoveryResponse {
            system_version_info: type_version.to_string(),
            resources,
            count,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            control_plane: Some(ControlPlane {
                identifier: "weft-control".into(),
            }),
        }
    }
}

impl TypeState {
    /// A wildcard subscription to everything, holding nothing (a first
    /// sync without initial versions): it gets the shared full state.
    fn holds_nothing(&self) -> bool {
        self.wildcard
            && self.client_has.is_empty()
            && self.must_answer.is_empty()
            && self.retry.is_empty()
    }

    fn new(type_url: &'static str, first: &mut DeltaDiscoveryRequest) -> Self {
        let subscribe = std::mem::take(&mut first.resource_names_subscribe);
        // An empty first subscription is the legacy wildcard.
        let wildcard = subscribe.is_empty() || subscribe.iter().any(|n| n == "*");
        let names: HashSet<String> = subscribe.into_iter().filter(|n| n != "*").collect();
        let client_has = std::mem::take(&mut first.initial_resource_versions);
        TypeState {
            type_url,
            wildcard,
            must_answer: names.clone(),
            names,
            client_has: ClientView::from_initial(client_has.into_iter().collect()),
            needs_full: false,
            pending: VecDeque::new(),
            retry: HashSet::new(),
        }
    }

    fn change_subscription(&mut self, request: DeltaDiscoveryRequest) -> Next {
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
        if !wildcard {
            self.client_has.retain(|n| names.contains(n));
        }
        for name in request.resource_names_subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
                self.must_answer.insert(name);
            }
            next = Next::Push {
                type_url: self.type_url,
                always: false,
            };
        }
        next
    }

    /// Like [`TypeState::diff`], looking only at `names` (and at what was
    /// NACKed or newly subscribed).
    fn diff_names(
        &mut self,
        resources: &crate::model::Resources,
        names: &[&str],
    ) -> (Vec<Arc<XdsResource>>, Vec<String>) {
        let mut candidates: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        candidates.extend(self.retry.drain());
        candidates.extend(self.must_answer.iter().cloned());
        candidates.sort();
        candidates.dedup();
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for name in candidates {
            if !(self.wildcard || self.names.contains(&name)) {
                continue;
            }
            match resources.get(&name) {
                Some(resource) => {
                    if self.client_has.get(&name) != Some(resource.version.as_str())
                        || self.must_answer.contains(&name)
                    {
                        upserts.push(Arc::clone(resource));
                    }
                }
                None => {
                    if self.client_has.contains(&name) || self.must_answer.contains(&name) {
                        removed.push(name);
                    }
                }
            }
        }
        self.must_answer.clear();
        for r in &upserts {
            self.client_has.set(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            self.client_has.remove(name);
        }
        if self.wildcard && self.retry.is_empty() && self.client_has.drift() > REBASE_DRIFT {
            self.client_has.rebase(resources);
        }
        (upserts, removed)
    }

    /// What the client lacks (new or changed) and what it holds that is
    /// gone; records that it will have them.
    fn diff(
        &mut self,
        resources: &crate::model::Resources,
    ) -> (Vec<Arc<XdsResource>>, Vec<String>) {
        self.retry.clear();
        let mut upserts = Vec::new();
        let mut visit = |name: &String, resource: &Arc<XdsResource>| {
            if self.client_has.get(name) != Some(resource.version.as_str())
                || self.must_answer.contains(name)
            {
                upserts.push(Arc::clone(resource));
            }
        };
        if self.wildcard {
            for (name, resource) in resources.iter() {
                visit(name, resource);
            }
        } else {
            for name in &self.names {
                if let Some(resource) = resources.get(name) {
                    visit(name, resource);
                }
            }
        }
        let mut removed: Vec<String> = self
            .client_has
            .names()
            .into_iter()
            .filter(|n| !resources.contains_key(n))
            .collect();
        for name in &self.must_answer {
            if !resources.contains_key(name) && !removed.contains(name) {
                removed.push(name.clone());
            }
        }
        removed.sort();
        self.must_answer.clear();
        if self.wildcard {
            // The client now holds exactly the model's resources.
            self.client_has.rebase(resources);
        } else {
            for r in &upserts {
                self.client_has.set(r.name.clone(), r.version.clone());
            }
            for name in &removed {
                self.client_has.remove(name);
            }
        }
        (upserts, removed)
    }
}
