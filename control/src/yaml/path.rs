//! Field paths (`spec.http[0].route[1].weight`) and finding the node a
//! path names, so that value rules checked on typed structs can still
//! point at a line.

use std::fmt;

use super::{Mark, Node, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from a document's root, e.g. `spec.http[0].route`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Parses `a.b[0].c` (keys containing `.` or `[` are written
    /// `a["x.y"]`).
    pub fn parse(text: &str) -> Self {
        let mut segs = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("[\"") {
                let end = r.find("\"]").unwrap_or(r.len());
                segs.push(Seg::Key(r[..end].to_string()));
                rest = r.get(end + 2..).unwrap_or("");
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').unwrap_or(r.len());
                match r[..end].parse() {
                    Ok(i) => segs.push(Seg::Index(i)),
                    Err(_) => segs.push(Seg::Key(r[..end].to_string())),
                }
                rest = r.get(end + 1..).unwrap_or("");
            } else {
                let r = rest.strip_prefix('.').unwrap_or(rest);
                let end = r.find(['.', '[']).unwrap_or(r.len());
                segs.push(Seg::Key(r[..end].to_string()));
                rest = &r[end..];
            }
        }
        FieldPath(segs)
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// The node the path names, if it exists.
    pub fn locate_value<'a>(&self, root: &'a Node) -> Option<&'a Node> {
        let mut node = root;
        for seg in &self.0 {
            node = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => entries
                    .iter()
                    .find(|(key, _)| &key.text == k)
                    .map(|(_, v)| v.as_ref())?,
                (Seg::Index(i), Value::Seq(items)) => items.get(*i)?.as_ref(),
                _ => return None,
            };
        }
        Some(node)
    }

    /// Where the path points in `root`: the deepest node that exists on
    /// it (a missing field is reported at its parent). For the last step
    /// being a key, the key's own position.
    pub fn locate(&self, root: &Node) -> Mark {
        let mut node = root;
        let mut mark = root.mark;
        for seg in &self.0 {
            match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => {
                    match entries.iter().find(|(key, _)| &key.text == k) {
                        Some((key, value)) => {
                            mark = if value.is_null() {
                                key.mark
                            } else {
                                value.mark
                            };
                            node = value;
                        }
                        None => return mark,
                    }
                }
                (Seg::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(item) => {
                        mark = item.mark;
                        node = item;
                    }
                    None => return mark,
                },
                _ => return mark,
            }
        }
        mark
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if k.contains(['.', '[', ']']) || k.is_empty() => {
                    write!(f, "[\"{k}\"]")?
                }
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for p in [
            "spec.http[0].route[1].weight",
            "metadata.labels[\"app.kubernetes.io/name\"]",
            "a",
            "",
        ] {
            assert_eq!(FieldPath::parse(p).to_string(), p);
        }
    }
}
