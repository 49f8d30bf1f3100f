//! What the Kubernetes source holds: every object the API server gave it,
//! decoded, with the last good version of each object that stopped
//! validating, and the changes since the last snapshot.
//!
//! A relist (after `410 Gone`, an API-server restart or a dropped watch)
//! replays every object; an object that comes back equal is no change,
//! and one that did not come back is deleted. So a relist that finds what
//! the source already had publishes nothing.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use crate::{
    kinds::{Object, ObjectKey},
    metrics::{ConfigEvent, Metrics},
    source::{FileError, Snapshot},
};

/// One object as the API server last served it.
#[derive(Debug, Default)]
struct Entry {
    /// The last version that validated (may be older than `error`'s).
    good: Option<Object>,
    /// Why the latest version was rejected.
    error: Option<FileError>,
}

/// The decoded objects of every watched resource.
#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Entry>,
    /// Per resource (index into the watched table), the keys listed since
    /// its relist began; `None` when no relist is under way.
    relisting: Vec<Option<HashSet<ObjectKey>>>,
    /// Object changes since the last snapshot.
    pending: Vec<(ObjectKey, Option<Object>)>,
    /// Whether an error appeared or went since the last snapshot.
    errors_changed: bool,
    seq: u64,
    /// Where object changes are counted.
    metrics: Option<Arc<Metrics>>,
}

impl Store {
    pub fn new(resources: usize) -> Self {
        Store {
            relisting: vec![None; resources],
            ..Default::default()
        }
    }

    /// Counts object changes (add, update, delete) in `metrics`.
    pub fn counting(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, kind: &'static str, event: ConfigEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.config_event(kind, event);
        }
    }

    /// A relist of `resource` begins: what it does not list again is gone
    /// when it ends.
    pub fn relist_started(&mut self, resource: usize) {
        self.relisting[resource] = Some(HashSet::new());
    }

    /// The relist of `resource`, whose objects are of `kind`, has listed
    /// everything: objects of that kind it did not list are deleted.
    pub fn relist_done(&mut self, resource: usize, kind: &str) {
        let Some(seen) = self.relisting[resource].take() else {
            return;
        };
        let gone: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|k| k.kind == kind && !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.delete(&key);
        }
    }

    /// A resource that the API server does not serve (its CRD is not
    /// installed) has no objects.
    pub fn absent(&mut self, resource: usize, kind: &str) {
        self.relist_started(resource);
        self.relist_done(resource, kind);
    }

    /// The API server's current version of an object: decoded, or why not.
    pub fn apply(&mut self, resource: usize, key: ObjectKey, decoded: Result<Object, FileError>) {
        if let Some(seen) = &mut self.relisting[resource] {
            seen.insert(key.clone());
        }
        let entry = self.objects.entry(key.clone()).or_default();
        match decoded {
            Ok(object) => {
                if entry.error.take().is_some() {
                    self.errors_changed = true;
                }
                if entry.good.as_ref() != Some(&object) {
                    let event = if entry.good.is_some() {
                        ConfigEvent::Update
                    } else {
                        ConfigEvent::Add
                    };
                    entry.good = Some(object.clone());
                    self.count(key.kind, event);
                    self.pending.push((key, Some(object)));
                }
            }
            Err(error) => {
                if entry.error.as_ref() != Some(&error) {
                    tracing::warn!(
                        object = %key,
                        path = error.path,
                        reason = error.message,
                        kept = entry.good.is_some(),
                        "config rejected; the last good version keeps serving"
                    );
                    entry.error = Some(error);
                    self.errors_changed = true;
                }
            }
        }
    }

    /// The object was deleted from the API server.
    pub fn delete(&mut self, key: &ObjectKey) {
        if let Some(entry) = self.objects.remove(key) {
            if entry.error.is_some() {
                self.errors_changed = true;
            }
            if entry.good.is_some() {
                self.count(key.kind, ConfigEvent::Delete);
                self.pending.push((key.clone(), None));
            }
        }
    }

    /// Whether a snapshot would differ from the last one.
    pub fn changed(&self) -> bool {
        !self.pending.is_empty() || self.errors_changed
    }

    /// How many objects are held (good or rejected).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Everything that applies now, with the changes since the last
    /// snapshot.
    pub fn snapshot(&mut self, synced: bool) -> Snapshot {
        self.seq += 1;
        self.errors_changed = false;
        Snapshot {
            seq: self.seq,
            synced,
            changes: Some(std::mem::take(&mut self.pending)),
            objects: self
                .objects
                .values()
                .filter_map(|e| e.good.clone())
                .collect(),
            errors: self
                .objects
                .values()
                .filter_map(|e| e.error.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::parse::parse_file;

    fn namespace(name: &str, label: &str) -> (ObjectKey, Object) {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{x: '{label}'}}}}\n"
        );
        let object = parse_file(Path::new("t"), &yaml).unwrap().remove(0);
        (object.key(), object)
    }

    fn rejected(key: &ObjectKey) -> FileError {
        FileError {
            file: "t".into(),
            line: 1,
            column: 1,
            object: Some(key.to_string()),
            path: "metadata.labels".into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn a_relist_that_finds_the_same_objects_changes_nothing() {
        let mut store = Store::new(1);
        let (ka, a) = namespace("a", "1");
        let (kb, b) = namespace("b", "1");
        store.relist_started(0);
        store.apply(0, ka.clone(), Ok(a.clone()));
        store.apply(0, kb.clone(), Ok(b.clone()));
        store.relist_done(0, "Namespace");
        assert_eq!(store.snapshot(true).objects.len(), 2);

        store.relist_started(0);
        store.apply(0, ka.clone(), Ok(a));
        store.apply(0, kb, Ok(b));
        store.relist_done(0, "Namespace");
        assert!(!store.changed(), "an identical relist is no change");

        // A relist that misses `b`, with `a` changed.
        let (_, a2) = namespace("a", "2");
        store.relist_started(0);
        store.apply(0, ka, Ok(a2));
        store.relist_done(0, "Namespace");
        let snapshot = store.snapshot(true);
        let changes = snapshot.changes.unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.iter().any(|(k, o)| k.name == "b" && o.is_none()));
        assert_eq!(snapshot.objects.len(), 1);
    }

    #[test]
    fn a_rejected_version_keeps_the_last_good_one_until_deleted() {
        let mut store = Store::new(1);
        let (ka, a) = namespace("a", "1");
        store.apply(0, ka.clone(), Ok(a.clone()));
        store.snapshot(true);
        store.apply(0, ka.clone(), Err(rejected(&ka)));
        let snapshot = store.snapshot(true);
        assert_eq!(snapshot.objects, vec![a]);
        assert_eq!(snapshot.errors.len(), 1);
        assert!(snapshot.changes.unwrap().is_empty());

        store.delete(&ka);
        let snapshot = store.snapshot(true);
        assert!(snapshot.objects.is_empty() && snapshot.errors.is_empty());
        assert_eq!(snapshot.changes.unwrap().len(), 1);
    }

    #[test]
    fn changes_are_counted_as_added_updated_deleted() {
        let metrics = Arc::new(Metrics::new());
        let mut store = Store::new(1).counting(Arc::clone(&metrics));
        let (ka, a) = namespace("a", "1");
        let (_, a2) = namespace("a", "2");
        store.relist_started(0);
        store.apply(0, ka.clone(), Ok(a.clone()));
        store.relist_done(0, "Namespace");
        // The same object again, and a rejected version: no event.
        store.apply(0, ka.clone(), Ok(a));
        store.apply(0, ka.clone(), Err(rejected(&ka)));
        store.apply(0, ka.clone(), Ok(a2));
        // A relist that does not find it: deleted.
        store.relist_started(0);
        store.relist_done(0, "Namespace");
        let (_, text) = metrics.render(None, &Snapshot::default());
        for event in ["add", "update", "delete"] {
            let line = format!("pilot_k8s_reg_events{{type=\"Namespaces\",event=\"{event}\"}} 1");
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
