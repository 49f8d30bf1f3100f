//! What one client holds of one type, stored cheaply: for a wildcard
//! subscription, a snapshot of the model's resources the client was last
//! brought to in full (shared with the model, so 200 agents cost no
//! per-resource memory), plus the names where the client differs from it.

use std::collections::HashMap;

use crate::model::Resources;

/// The version of a resource whose state on the client is unknown (its
/// response was NACKed): it differs from every real version, so it is
/// sent again.
pub const UNKNOWN_VERSION: &str = "";

#[derive(Debug, Default)]
pub struct ClientView {
    /// The client holds these (all of them), unless `overrides` says
    /// otherwise.
    base: Option<Resources>,
    /// name → the version the client holds, or `None`: it holds nothing.
    overrides: HashMap<String, Option<String>>,
}

impl ClientView {
    /// From the versions a reconnecting client says it holds.
    pub fn from_initial(initial: HashMap<String, String>) -> Self {
        ClientView {
            base: None,
            overrides: initial.into_iter().map(|(k, v)| (k, Some(v))).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        match self.overrides.get(name) {
            Some(v) => v.as_deref(),
            None => self
                .base
                .as_ref()
                .and_then(|b| b.get(name))
                .map(|r| r.version.as_str()),
        }
    }

    /// Whether the client holds nothing.
    pub fn is_empty(&self) -> bool {
        self.base.as_ref().is_none_or(|b| b.is_empty())
            && self.overrides.values().all(|v| v.is_none())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn set(&mut self, name: String, version: String) {
        self.overrides.insert(name, Some(version));
    }

    pub fn remove(&mut self, name: &str) {
        if self.base.as_ref().is_some_and(|b| b.contains_key(name)) {
            self.overrides.insert(name.to_string(), None);
        } else {
            self.overrides.remove(name);
        }
    }

    /// Every name the client holds.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .overrides
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(base) = &self.base {
            names.extend(
                base.iter()
                    .filter(|(k, _)| !self.overrides.contains_key(*k))
                    .map(|(k, _)| k.clone()),
            );
        }
        names
    }

    /// How many names the client holds (approximately, for display).
    pub fn len(&self) -> usize {
        let base = self.base.as_ref().map_or(0, |b| b.len());
        base + self.overrides.values().filter(|v| v.is_some()).count()
    }

    /// The client now holds exactly `resources`, except the names still
    /// marked unknown.
    pub fn rebase(&mut self, resources: &Resources) {
        self.base = Some(resources.clone());
        self.overrides
            .retain(|_, v| v.as_deref() == Some(UNKNOWN_VERSION));
    }

    /// Keeps only what `keep` accepts (after an unsubscribe): drops the
    /// snapshot, keeping its entries that remain as explicit ones.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        if let Some(base) = self.base.take() {
            for (name, r) in base.iter() {
                if keep(name) && !self.overrides.contains_key(name) {
                    self.overrides.insert(name.clone(), Some(r.version.clone()));
                }
            }
        }
        self.overrides.retain(|k, v| v.is_some() && keep(k));
    }

    /// Overrides piled up since the last rebase.
    pub fn drift(&self) -> usize {
        self.overrides.len()
    }
}
