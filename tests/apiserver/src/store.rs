//! The object store: every object of every resource, one global
//! resourceVersion counter, and a bounded per-resource event history that
//! watches replay from. Objects are shared `Arc<Value>`s so a list or a
//! history entry costs a pointer, not a copy.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::meta::{generated_name, meta_str, metadata_mut, new_uid, now_rfc3339, spec_differs};
use crate::registry::Resource;
use crate::selector::Selectors;
use crate::status::ApiError;

/// Events kept per resource for watches to resume from; older ones count
/// as compacted (a watch from before them gets 410 Expired).
pub const HISTORY_LIMIT: usize = 10_000;

/// (namespace or "", name): the order lists are returned in.
pub type ObjectKey = (String, String);

/// (group, plural): one resource's objects, whatever version they were written through.
pub type CollectionKey = (String, String);

/// The key of `resource`'s collection.
pub fn collection_key(resource: &Resource) -> CollectionKey {
    (resource.group.clone(), resource.plural.clone())
}

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object, at the resourceVersion it was made.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The state before this event (for MODIFIED and DELETED), so a watch
    /// with a selector can turn "stopped matching" into DELETED.
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug, Default)]
struct Collection {
    items: BTreeMap<ObjectKey, Arc<Value>>,
    history: VecDeque<Event>,
    /// Events at or below this rv were dropped from `history`.
    trimmed_rv: u64,
}

/// What a non-create write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteScope {
    /// Everything (the test-facing `ApiServer::apply`).
    Whole,
    /// Everything but `.status`, which is kept (a write to the main resource).
    KeepStatus,
    /// Only `.status` (a write to the `/status` subresource).
    StatusOnly,
}

/// Why a watch cannot continue from its resourceVersion.
#[derive(Debug, Clone, Copy)]
pub struct TooOld {
    /// The oldest resourceVersion still available.
    pub oldest: u64,
}

/// All objects and their history.
#[derive(Debug, Default)]
pub struct Store {
    rv: u64,
    /// Nothing at or before this rv can be replayed (set by `compact`).
    compacted_rv: u64,
    /// Bumped by `compact`; open watches compare it to end with 410.
    pub compact_epoch: u64,
    /// Bumped by `drop_watches`; open watches compare it to abort.
    pub drop_epoch: u64,
    collections: HashMap<CollectionKey, Collection>,
}

impl Store {
    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Forgets all history: watches and continue tokens from before now get 410.
    pub fn compact(&mut self) {
        self.compacted_rv = self.rv;
        self.compact_epoch += 1;
        for collection in self.collections.values_mut() {
            collection.history.clear();
            collection.trimmed_rv = self.rv;
        }
    }

    /// The oldest rv a continue token may carry.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// One object.
    pub fn get(&self, key: &CollectionKey, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.collections
            .get(key)?
            .items
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects in (namespace, name) order after `after`, in `namespace` if
    /// given, passing `selectors`; at most `limit`. Returns the objects and,
    /// when more remain, the key of the last one returned.
    pub fn list(
        &self,
        key: &CollectionKey,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: Option<usize>,
        selectors: &Selectors,
    ) -> (Vec<Arc<Value>>, Option<ObjectKey>) {
        let Some(collection) = self.collections.get(key) else {
            return (Vec::new(), None);
        };
        use std::ops::Bound;
        let lower = match (after, namespace) {
            (Some(after), _) => Bound::Excluded(after.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut iter = collection
            .items
            .range((lower, Bound::Unbounded))
            .take_while(|((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
            .filter(|(_, object)| selectors.matches(object));
        let limit = limit.unwrap_or(usize::MAX);
        for (object_key, object) in iter.by_ref() {
            items.push(object.clone());
            if items.len() == limit {
                let more = iter.next().is_some();
                return (items, more.then(|| object_key.clone()));
            }
        }
        (items, None)
    }

    /// Events of `key` with rv > `after`, at most `max`; 410 if some were forgotten.
    pub fn events_after(
        &self,
        key: &CollectionKey,
        after: u64,
        max: usize,
    ) -> Result<Vec<Event>, TooOld> {
        let Some(collection) = self.collections.get(key) else {
            return if after < self.compacted_rv {
                Err(TooOld {
                    oldest: self.compacted_rv,
                })
            } else {
                Ok(Vec::new())
            };
        };
        let oldest = collection.trimmed_rv.max(self.compacted_rv);
        if after < oldest {
            return Err(TooOld { oldest });
        }
        let start = collection.history.partition_point(|e| e.rv <= after);
        Ok(collection
            .history
            .range(start..)
            .take(max)
            .cloned()
            .collect())
    }

    /// Creates an object; 409 AlreadyExists if the name is taken. The
    /// caller has set `metadata.namespace` (or removed it) already.
    pub fn create(
        &mut self,
        resource: &Resource,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let key = collection_key(resource);
        let namespace = meta_str(&object, "namespace").to_string();
        let mut name = meta_str(&object, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&object, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(format!(
                    "{} is invalid: metadata.name: Required value: name or generateName is required",
                    resource.kind
                )));
            }
            name = loop {
                let candidate = generated_name(&prefix);
                if self.get(&key, &namespace, &candidate).is_none() {
                    break candidate;
                }
            };
        }
        if self.get(&key, &namespace, &name).is_some() {
            return Err(ApiError::already_exists(&resource.qualified_name(), &name));
        }
        let rv = self.rv + 1;
        object["kind"] = json!(resource.kind);
        let metadata = metadata_mut(&mut object);
        metadata.insert("name".into(), json!(name));
        metadata.insert("uid".into(), json!(new_uid()));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        metadata.insert("generation".into(), json!(1));
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        let object = Arc::new(object);
        if !dry_run {
            self.record(
                key,
                (namespace, name),
                EventType::Added,
                object.clone(),
                None,
            );
        }
        Ok(object)
    }

    /// Replaces an existing object (404 if missing). `expected_rv` is the
    /// client's `metadata.resourceVersion`, if any: a mismatch is 409.
    pub fn update(
        &mut self,
        resource: &Resource,
        mut object: Value,
        scope: WriteScope,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let key = collection_key(resource);
        let namespace = meta_str(&object, "namespace").to_string();
        let name = meta_str(&object, "name").to_string();
        let Some(stored) = self.get(&key, &namespace, &name) else {
            return Err(ApiError::not_found(&resource.qualified_name(), &name));
        };
        let expected_rv = meta_str(&object, "resourceVersion");
        if !expected_rv.is_empty() && expected_rv != meta_str(&stored, "resourceVersion") {
            return Err(ApiError::conflict(&resource.qualified_name(), &name));
        }
        match scope {
            WriteScope::Whole => {}
            WriteScope::KeepStatus => match stored.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    object.as_object_mut().map(|o| o.remove("status"));
                }
            },
            WriteScope::StatusOnly => {
                let status = object.get("status").cloned();
                object = (*stored).clone();
                match status {
                    Some(status) => object["status"] = status,
                    None => {
                        object.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
        }
        let rv = self.rv + 1;
        let generation = stored
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_differs(&stored, &object) {
            generation + 1
        } else {
            generation
        };
        object["kind"] = json!(resource.kind);
        if object.get("apiVersion").is_none() {
            object["apiVersion"] = stored["apiVersion"].clone();
        }
        let metadata = metadata_mut(&mut object);
        for kept in ["uid", "creationTimestamp"] {
            if let Some(value) = stored.pointer(&format!("/metadata/{kept}")) {
                metadata.insert(kept.into(), value.clone());
            }
        }
        metadata.insert("generation".into(), json!(generation));
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        let object = Arc::new(object);
        if !dry_run {
            self.record(
                key,
                (namespace, name),
                EventType::Modified,
                object.clone(),
                Some(stored),
            );
        }
        Ok(object)
    }

    /// Deletes an object and returns its last state (with the deletion's rv).
    pub fn delete(
        &mut self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let key = collection_key(resource);
        let Some(stored) = self.get(&key, namespace, name) else {
            return Err(ApiError::not_found(&resource.qualified_name(), name));
        };
        if dry_run {
            return Ok(stored);
        }
        Ok(self.remove_object(key, (namespace.to_string(), name.to_string()), stored))
    }

    /// Deletes every namespaced object in `namespace` (namespace deletion cascade).
    pub fn delete_namespace_contents(&mut self, namespace: &str) {
        let mut doomed = Vec::new();
        for (key, collection) in &self.collections {
            let lower = (namespace.to_string(), String::new());
            for (object_key, object) in collection.items.range(lower..) {
                if object_key.0 != namespace {
                    break;
                }
                doomed.push((key.clone(), object_key.clone(), object.clone()));
            }
        }
        for (key, object_key, object) in doomed {
            self.remove_object(key, object_key, object);
        }
    }

    fn remove_object(
        &mut self,
        key: CollectionKey,
        object_key: ObjectKey,
        stored: Arc<Value>,
    ) -> Arc<Value> {
        let mut last = (*stored).clone();
        metadata_mut(&mut last).insert("resourceVersion".into(), json!((self.rv + 1).to_string()));
        let last = Arc::new(last);
        self.record(
            key,
            object_key,
            EventType::Deleted,
            last.clone(),
            Some(stored),
        );
        last
    }

    /// Bumps the rv, stores (or removes) the object and appends the event.
    fn record(
        &mut self,
        key: CollectionKey,
        object_key: ObjectKey,
        kind: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        self.rv += 1;
        let collection = self.collections.entry(key).or_default();
        if kind == EventType::Deleted {
            collection.items.remove(&object_key);
        } else {
            collection.items.insert(object_key, object.clone());
        }
        collection.history.push_back(Event {
            rv: self.rv,
            kind,
            object,
            previous,
        });
        while collection.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = collection.history.pop_front() {
                collection.trimmed_rv = dropped.rv;
            }
        }
    }
}
