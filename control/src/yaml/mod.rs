//! YAML with positions: the documents of a file as trees whose every node
//! knows its line and column, so that a type error, an unknown field or a
//! value rule can point at the exact place. Built from `saphyr-parser`'s
//! event stream, with hard limits checked while building (nesting depth,
//! nodes including alias expansion), so hostile input cannot exhaust
//! memory or time. [`de`] reads typed structs from a tree.

pub mod de;
pub mod path;

use std::{collections::HashMap, rc::Rc};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_span(span: &Span) -> Mark {
        Mark {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// One node of a document.
#[derive(Debug)]
pub struct Node {
    pub mark: Mark,
    pub value: Value,
}

#[derive(Debug)]
pub enum Value {
    /// `~`, `null`, or nothing.
    Null,
    Scalar {
        text: String,
        /// Plain (unquoted) scalars may be numbers or booleans; quoted and
        /// block scalars are always strings.
        plain: bool,
    },
    Seq(Vec<Rc<Node>>),
    /// Keys in file order; keys are scalars, unique.
    Map(Vec<(Key, Rc<Node>)>),
}

/// A mapping key.
#[derive(Debug, Clone)]
pub struct Key {
    pub text: String,
    pub mark: Mark,
}

impl Node {
    /// The value at `key` if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Rc<Node>> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What a person calls this node's type, for messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A JSON value (an object from the Kubernetes API) as a tree the kinds
/// decode, without printing and re-parsing it. Strings stay strings;
/// numbers and booleans are plain scalars, as YAML would read them. Marks
/// count nodes in document order (a line per node, as in pretty JSON).
pub fn from_json(value: &serde_json::Value) -> Rc<Node> {
    fn node(value: &serde_json::Value, line: &mut usize) -> Rc<Node> {
        *line += 1;
        let mark = Mark {
            line: *line,
            column: 1,
        };
        let scalar = |text: String, plain| Value::Scalar { text, plain };
        let value = match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => scalar(b.to_string(), true),
            serde_json::Value::Number(n) => scalar(n.to_string(), true),
            serde_json::Value::String(s) => scalar(s.clone(), false),
            serde_json::Value::Array(items) => {
                Value::Seq(items.iter().map(|item| node(item, line)).collect())
            }
            serde_json::Value::Object(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = Key {
                            text: k.clone(),
                            mark: Mark {
                                line: *line + 1,
                                column: 1,
                            },
                        };
                        (key, node(v, line))
                    })
                    .collect(),
            ),
        };
        Rc::new(Node { mark, value })
    }
    node(value, &mut 0)
}

/// How much a file may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nesting of mappings and lists.
    pub max_depth: usize,
    /// Nodes per file, counting every alias as the nodes it expands to.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 2_000_000,
        }
    }
}

/// A syntax error or a broken limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub mark: Mark,
    pub message: String,
}

/// One document of a file.
#[derive(Debug)]
pub struct Document {
    pub root: Rc<Node>,
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Rc<Node>>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Key, Rc<Node>)>,
        key: Option<Key>,
        /// Keys that came from `<<`: an explicit key replaces them.
        merged: Vec<String>,
    },
}

/// Parses every document in `text`. Empty documents are skipped.
pub fn parse(text: &str, limits: Limits) -> Result<Vec<Document>, YamlError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Rc<Node>, usize)> = HashMap::new();
    let mut nodes = 0usize;
    let mut root: Option<Rc<Node>> = None;
    // Each node's expanded size, to charge aliases for what they expand to.
    let mut sizes: Vec<usize> = Vec::new();

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            mark: Mark {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let mark = Mark::from_span(&span);
        let too_many = |_: usize| YamlError {
            mark,
            message: format!(
                "the file has more than {} YAML nodes (aliases count as what they expand to); refusing it",
                limits.max_nodes
            ),
        };
        let (node, anchor, size) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                anchors.clear();
                continue;
            }
            Event::DocumentEnd => {
                if let Some(root) = root.take()
                    && !root.is_null()
                {
                    docs.push(Document { root });
                }
                continue;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= limits.max_depth {
                    return Err(YamlError {
                        mark,
                        message: format!(
                            "nesting deeper than {} levels; refusing it",
                            limits.max_depth
                        ),
                    });
                }
                sizes.push(1);
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        mark,
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        mark,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        merged: Vec::new(),
                    }
                });
                nodes += 1;
                if nodes > limits.max_nodes {
                    return Err(too_many(nodes));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let size = sizes.pop().unwrap_or(1);
                match stack.pop() {
                    Some(Frame::Seq {
                        mark,
                        anchor,
                        items,
                    }) => (
                        Rc::new(Node {
                            mark,
                            value: Value::Seq(items),
                        }),
                        anchor,
                        size,
                    ),
                    Some(Frame::Map {
                        mark,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Rc::new(Node {
                            mark,
                            value: Value::Map(entries),
                        }),
                        anchor,
                        size,
                    ),
                    None => continue,
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                nodes += 1;
                if nodes > limits.max_nodes {
                    return Err(too_many(nodes));
                }
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                (Rc::new(Node { mark, value }), anchor, 1)
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        mark,
                        message: "alias to an anchor that is not defined before it".into(),
                    });
                };
                nodes = nodes.saturating_add(size);
                if nodes > limits.max_nodes {
                    return Err(too_many(nodes));
                }
                (node, 0, size)
            }
        };
        if anchor != 0 {
            anchors.insert(anchor, (Rc::clone(&node), size));
        }
        if let Some(parent) = sizes.last_mut() {
            *parent = parent.saturating_add(size);
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                merged,
                ..
            }) => match key.take() {
                None => {
                    let Value::Scalar { text, .. } = &node.value else {
                        if node.is_null() {
                            *key = Some(Key {
                                text: String::new(),
                                mark: node.mark,
                            });
                            continue;
                        }
                        return Err(YamlError {
                            mark: node.mark,
                            message: format!(
                                "a mapping key must be a scalar, not {}",
                                node.describe()
                            ),
                        });
                    };
                    if let Some(i) = merged.iter().position(|m| m == text) {
                        merged.remove(i);
                        entries.retain(|(k, _)| &k.text != text);
                    } else if entries.iter().any(|(k, _)| &k.text == text) {
                        return Err(YamlError {
                            mark: node.mark,
                            message: format!("duplicate key `{text}` in one mapping"),
                        });
                    }
                    *key = Some(Key {
                        text: text.clone(),
                        mark: node.mark,
                    });
                }
                Some(k) if k.text == "<<" => merge(entries, merged, &node)?,
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(docs)
}

/// `<<: *base` (or a list of them): the merged mappings' keys that this
/// mapping does not set itself.
fn merge(
    entries: &mut Vec<(Key, Rc<Node>)>,
    merged: &mut Vec<String>,
    value: &Rc<Node>,
) -> Result<(), YamlError> {
    let sources: Vec<&Rc<Node>> = match &value.value {
        Value::Map(_) => vec![value],
        Value::Seq(items) => items.iter().collect(),
        _ => {
            return Err(YamlError {
                mark: value.mark,
                message: "`<<` (merge) needs a mapping or a list of mappings".into(),
            });
        }
    };
    for source in sources {
        let Value::Map(from) = &source.value else {
            return Err(YamlError {
                mark: source.mark,
                message: "`<<` (merge) needs a mapping or a list of mappings".into(),
            });
        };
        for (k, v) in from {
            if !entries.iter().any(|(e, _)| e.text == k.text) {
                entries.push((k.clone(), Rc::clone(v)));
                merged.push(k.text.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Rc<Node> {
        let mut docs = parse(text, Limits::default()).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0).root
    }

    #[test]
    fn positions_of_nested_values() {
        let root = one("a: 1\nb:\n  c: [x, 'y']\n");
        let c = root.get("b").unwrap().get("c").unwrap();
        assert_eq!(c.mark, Mark { line: 3, column: 6 });
        let Value::Seq(items) = &c.value else {
            panic!()
        };
        assert_eq!(
            items[1].mark,
            Mark {
                line: 3,
                column: 10
            }
        );
        assert!(matches!(
            &items[1].value,
            Value::Scalar { plain: false, .. }
        ));
    }

    #[test]
    fn documents_and_nulls() {
        let docs = parse("---\n# only a comment\n---\na: ~\n---\n", Limits::default()).unwrap();
        assert_eq!(docs.len(), 1);
        assert!(docs[0].root.get("a").unwrap().is_null());
    }

    #[test]
    fn duplicate_keys_and_complex_keys_are_errors() {
        let err = parse("a: 1\nb: 2\na: 3\n", Limits::default()).unwrap_err();
        assert_eq!(err.mark.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
        assert!(parse("? [a]\n: 1\n", Limits::default()).is_err());
    }

    #[test]
    fn merge_keys() {
        let root = one("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n");
        let m = root.get("m").unwrap();
        assert_eq!(m.get("x").unwrap().as_str(), Some("1"));
        assert_eq!(m.get("y").unwrap().as_str(), Some("3"));
        let root = one("base: &b {x: 1}\nm:\n  y: 3\n  <<: *b\n");
        assert_eq!(root.get("m").unwrap().get("x").unwrap().as_str(), Some("1"));
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&bomb, Limits::default()).unwrap_err();
        assert!(err.message.contains("more than"), "{err}");

        let deep = "[".repeat(100) + &"]".repeat(100);
        let err = parse(&deep, Limits::default()).unwrap_err();
        assert!(err.message.contains("nesting deeper than 64"), "{err}");
        // Far deeper: the parser's own guard answers first; no crash.
        let deeper = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse(&deeper, Limits::default()).is_err());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n", Limits::default()).unwrap_err();
        assert!(err.mark.line >= 1);
        assert!(!err.message.is_empty());
    }
}
