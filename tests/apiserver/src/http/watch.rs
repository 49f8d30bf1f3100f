//! WATCH: a chunked stream of newline-separated JSON events.
//!
//! Each watch keeps a cursor (the last resourceVersion it has accounted
//! for) and, whenever the store changes, replays the resource's history
//! after the cursor under the store lock. So events, bookmarks and the
//! in-stream 410 are always in resourceVersion order, and the cost per
//! event per watch is one filter, never a rescan of the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::watch as signal;
use tokio::time::{Instant, Interval};

use super::read::selectors;
use super::{Body, ResourceRequest, write_object};
use crate::selector::Selectors;
use crate::shared::Shared;
use crate::status::ApiError;
use crate::store::{CollectionKey, Event, EventType, collection_key};

/// Events replayed per wake-up, so one watch cannot hold the store lock long.
const BATCH: usize = 1_000;

/// Opens a watch stream.
pub fn watch(shared: Arc<Shared>, req: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    let selectors = selectors(req)?;
    let start = match req.param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion must be an unsigned integer, got {text:?}"
            ))
        })?),
    };
    let send_initial = req.param("sendInitialEvents") == Some("true");
    let timeout = match req.param("timeoutSeconds") {
        None | Some("") => None,
        Some(text) => Some(Duration::from_secs(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds must be an unsigned integer, got {text:?}"
            ))
        })?)),
    };
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let mut changes = shared.subscribe();
    changes.borrow_and_update();

    let mut watch = Watch {
        key: collection_key(&req.resource),
        kind: req.resource.kind.clone(),
        api_version: req.api_version.clone(),
        namespace: req.path.namespace.clone(),
        selectors,
        cursor: 0,
        compact_epoch: 0,
        drop_epoch: 0,
        initial: Vec::new(),
        changes,
        bookmarks: bookmarks.then(|| {
            let period = shared.bookmark_interval;
            tokio::time::interval_at(Instant::now() + period, period)
        }),
        deadline: timeout.map(|t| Instant::now() + t),
        bookmark_pending: false,
        done: false,
        shared,
    };
    watch.begin(start, send_initial || start.is_none());
    if send_initial {
        let rv = watch.cursor;
        watch.push_bookmark(rv, true);
    }

    let body = StreamBody::new(stream::unfold(watch, |mut watch| async move {
        let chunk = watch.next_chunk().await?;
        Some((chunk.map(Frame::data), watch))
    }));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(BodyExt::boxed_unsync(body))
        .expect("static response parts are valid"))
}

/// One open watch's position and filters.
struct Watch {
    shared: Arc<Shared>,
    key: CollectionKey,
    kind: String,
    api_version: String,
    namespace: Option<String>,
    selectors: Selectors,
    /// Every event of this resource at or below this rv has been handled.
    cursor: u64,
    compact_epoch: u64,
    drop_epoch: u64,
    /// Serialized events not yet sent.
    initial: Vec<u8>,
    changes: signal::Receiver<u64>,
    bookmarks: Option<Interval>,
    deadline: Option<Instant>,
    /// A bookmark tick arrived while replaying a backlog: send it once caught up.
    bookmark_pending: bool,
    done: bool,
}

/// What one look at the store produced.
enum Step {
    /// Bytes to send (possibly none); the watch continues.
    Continue(Vec<u8>),
    /// Final bytes (the 410 ERROR event); the watch ends cleanly.
    End(Vec<u8>),
    /// `drop_watches()`: end the stream abruptly.
    Abort,
}

impl Watch {
    /// Fixes the starting point: from `start`, or with ADDED events for
    /// every current object when `snapshot`.
    fn begin(&mut self, start: Option<u64>, snapshot: bool) {
        let store = self.shared.store();
        self.compact_epoch = store.compact_epoch;
        self.drop_epoch = store.drop_epoch;
        self.cursor = start.unwrap_or(store.resource_version());
        if snapshot {
            self.cursor = store.resource_version();
            let (objects, _) = store.list(
                &self.key,
                self.namespace.as_deref(),
                None,
                None,
                &self.selectors,
            );
            drop(store);
            for object in objects {
                self.push_event(EventType::Added.as_str(), &object);
            }
        }
    }

    fn push_event(&mut self, kind: &str, object: &Value) {
        self.initial.extend_from_slice(b"{\"type\":\"");
        self.initial.extend_from_slice(kind.as_bytes());
        self.initial.extend_from_slice(b"\",\"object\":");
        write_object(&mut self.initial, object, &self.api_version, &self.kind);
        self.initial.extend_from_slice(b"}\n");
    }

    fn push_bookmark(&mut self, rv: u64, initial_events_end: bool) {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let bookmark =
            json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": metadata});
        self.push_event("BOOKMARK", &bookmark);
    }

    /// The next chunk to send, waiting for changes; None ends the stream cleanly.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        let mut bookmark_due = false;
        loop {
            match self.step(bookmark_due) {
                Step::Continue(bytes) if !bytes.is_empty() => return Some(Ok(Bytes::from(bytes))),
                Step::Continue(_) => {}
                Step::End(bytes) => {
                    self.done = true;
                    return Some(Ok(Bytes::from(bytes)));
                }
                Step::Abort => {
                    self.done = true;
                    return Some(Err(std::io::Error::other(
                        "watch dropped by drop_watches()",
                    )));
                }
            }
            bookmark_due = false;
            let deadline = self.deadline;
            let bookmarks = self.bookmarks.as_mut();
            let has_bookmarks = bookmarks.is_some();
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = async { bookmarks.expect("guarded by the select condition").tick().await }, if has_bookmarks => {
                    bookmark_due = true;
                }
                _ = async { tokio::time::sleep_until(deadline.expect("guarded by the select condition")).await }, if deadline.is_some() => {
                    return None;
                }
            }
        }
    }

    /// Replays new events (and a bookmark if due) under the store lock.
    fn step(&mut self, bookmark_due: bool) -> Step {
        self.bookmark_pending |= bookmark_due;
        loop {
            match self.step_once() {
                // A whole batch filtered out and more to read: read on, do not wait.
                (Step::Continue(bytes), false) if bytes.is_empty() => continue,
                (step, _) => return step,
            }
        }
    }

    /// One batch of at most `BATCH` events; also says whether it caught up.
    fn step_once(&mut self) -> (Step, bool) {
        let mut out = std::mem::take(&mut self.initial);
        let store = self.shared.store();
        if store.drop_epoch != self.drop_epoch {
            return (Step::Abort, true);
        }
        if store.compact_epoch != self.compact_epoch {
            let oldest = store.compacted_rv();
            drop(store);
            return (Step::End(self.too_old(out, oldest)), true);
        }
        let events = match store.events_after(&self.key, self.cursor, BATCH) {
            Ok(events) => events,
            Err(too_old) => {
                drop(store);
                return (Step::End(self.too_old(out, too_old.oldest)), true);
            }
        };
        let caught_up = events.len() < BATCH;
        let current = store.resource_version();
        drop(store);
        if let Some(last) = events.last() {
            self.cursor = last.rv;
        }
        self.initial = out;
        for event in &events {
            self.push_filtered(event);
        }
        if caught_up {
            self.cursor = self.cursor.max(current);
            if std::mem::take(&mut self.bookmark_pending) {
                self.push_bookmark(self.cursor, false);
            }
        }
        out = std::mem::take(&mut self.initial);
        (Step::Continue(out), caught_up)
    }

    /// Sends `event` if it concerns this watch; an object entering or
    /// leaving the selectors becomes ADDED or DELETED, as on the real server.
    fn push_filtered(&mut self, event: &Event) {
        let in_scope = |object: &Value| {
            self.namespace
                .as_deref()
                .is_none_or(|ns| crate::meta::meta_str(object, "namespace") == ns)
                && self.selectors.matches(object)
        };
        let now = event.kind != EventType::Deleted && in_scope(&event.object);
        let before = event.previous.as_deref().is_some_and(in_scope);
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) | (EventType::Deleted, true, _) => {
                EventType::Deleted
            }
            _ => return,
        };
        self.push_event(kind.as_str(), &event.object);
    }

    fn too_old(&self, mut out: Vec<u8>, oldest: u64) -> Vec<u8> {
        let status = ApiError::expired(format!(
            "too old resource version: {} ({oldest})",
            self.cursor
        ))
        .to_status();
        out.extend_from_slice(b"{\"type\":\"ERROR\",\"object\":");
        serde_json::to_writer(&mut out, &status).expect("a serde_json::Value always serializes");
        out.extend_from_slice(b"}\n");
        out
    }
}
