//! One YAML file → objects, each accepted or rejected on its own with the
//! file, line, column, object, field path and reason. A file that is not
//! YAML at all (a syntax error, or over a limit) is rejected as a whole.
//!
//! Documents may be single objects or `kind: List` with `items`.

use std::{path::Path, rc::Rc};

use super::FileError;
use crate::{
    kinds::{self, DecodeError, Object, ObjectKey},
    yaml::{self, Limits, Node, Value, path::FieldPath},
};

/// What one document (or List item) of a file became.
#[derive(Debug)]
pub enum Outcome {
    Object(Object),
    /// Rejected; `key` when the object could still be identified (so
    /// that its last good version can keep serving).
    Rejected {
        key: Option<ObjectKey>,
        error: FileError,
    },
    /// A kind weft does not handle (logged).
    Skipped,
}

/// Parses every document of `text`: `Err` only when the file as a whole
/// is not usable.
pub fn parse_outcomes(path: &Path, text: &str) -> Result<Vec<Outcome>, FileError> {
    let docs = yaml::parse(text, Limits::default()).map_err(|e| {
        let (line, column, message) = match glued_key_before(text, e.mark.line) {
            Some((line, column, glued)) => (line, column, glued_message(&glued, &e.message)),
            None => (e.mark.line, e.mark.column, e.message.clone()),
        };
        FileError {
            file: path.to_path_buf(),
            line,
            column,
            object: None,
            path: String::new(),
            message,
        }
    })?;
    let mut outcomes = Vec::new();
    for doc in docs {
        let root = &doc.root;
        let is_list = root.get("kind").and_then(|k| k.as_str()) == Some("List")
            || root
                .get("kind")
                .and_then(|k| k.as_str())
                .is_some_and(|k| k.ends_with("List") && root.get("items").is_some());
        if is_list {
            match root.get("items").map(|i| &i.value) {
                Some(Value::Seq(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        outcomes.push(one(path, item, FieldPath::root().key("items").index(i)));
                    }
                }
                Some(Value::Null) | None => {}
                Some(_) => outcomes.push(Outcome::Rejected {
                    key: None,
                    error: error_at(
                        path,
                        root,
                        &FieldPath::parse("items"),
                        None,
                        "`items` must be a list".into(),
                    ),
                }),
            }
        } else {
            outcomes.push(one(path, root, FieldPath::root()));
        }
    }
    Ok(outcomes)
}

/// Parses a file, all or nothing: the objects, or the first error.
/// (Tests and one-shot tools; the directory source uses
/// [`parse_outcomes`].)
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Object>, FileError> {
    let mut objects = Vec::new();
    for outcome in parse_outcomes(path, text)? {
        match outcome {
            Outcome::Object(o) => objects.push(o),
            Outcome::Rejected { error, .. } => return Err(error),
            Outcome::Skipped => {}
        }
    }
    Ok(objects)
}

/// One object already in tree form (from the Kubernetes API, through
/// [`yaml::from_json`]), decoded and validated as a document of a file.
pub fn parse_node(file: &Path, node: &Rc<Node>) -> Outcome {
    one(file, node, FieldPath::root())
}

fn one(file: &Path, node: &Rc<Node>, at: FieldPath) -> Outcome {
    let reject = |key: Option<ObjectKey>, error| Outcome::Rejected { key, error };
    if !matches!(node.value, Value::Map(_)) {
        let message = match node.as_str() {
            Some(s) if looks_like_glued_key(s) => glued_message(s, "the document is one string"),
            _ => format!(
                "a document must be a mapping with `apiVersion`, `kind` and `metadata`, not {}",
                node.describe()
            ),
        };
        return reject(
            None,
            error_at(file, node, &FieldPath::root(), None, message),
        );
    }
    let type_meta = match kinds::type_meta(node) {
        Ok(t) => t,
        Err((field, reason)) => {
            return reject(
                None,
                error_at(file, node, &FieldPath::parse(field), None, reason),
            );
        }
    };
    let key = kinds::key_of(&type_meta, node);
    let object_name = key
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| Some(type_meta.kind.clone()));
    match kinds::decode(&type_meta, node) {
        Ok(Some(object)) => Outcome::Object(object),
        Ok(None) => {
            tracing::info!(
                file = %file.display(),
                line = node.mark.line,
                api_version = type_meta.api_version,
                kind = type_meta.kind,
                "ignoring a kind weft does not handle"
            );
            Outcome::Skipped
        }
        Err(DecodeError::Read(e)) => {
            let mark = e.mark.unwrap_or(node.mark);
            let field = e.path.clone().unwrap_or_default();
            let offending = field.locate_value(node);
            let message = match offending.and_then(|n| n.as_str()) {
                Some(s) if looks_like_glued_key(s) => glued_message(s, &e.message),
                _ => e.message.clone(),
            };
            reject(
                key,
                FileError {
                    file: file.to_path_buf(),
                    line: mark.line,
                    column: mark.column,
                    object: object_name,
                    path: prefixed(&at, &field),
                    message,
                },
            )
        }
        Err(DecodeError::Invalid(errors)) => {
            // The first; `validate` reports them all.
            let first = errors.into_iter().next().expect("at least one");
            let field = FieldPath::parse(&first.path);
            let mut error = error_at(file, node, &field, object_name, first.message);
            error.path = prefixed(&at, &field);
            reject(key, error)
        }
        Err(e @ DecodeError::Kind(_)) => {
            let field = FieldPath::parse("apiVersion");
            let mut error = error_at(file, node, &field, object_name, e.to_string());
            error.path = prefixed(&at, &field);
            reject(key, error)
        }
    }
}

/// Every error of every document, for `validate`: like
/// [`parse_outcomes`], but a document with several broken value rules
/// reports each.
pub fn all_errors(path: &Path, text: &str) -> Vec<FileError> {
    let outcomes = match parse_outcomes(path, text) {
        Ok(o) => o,
        Err(e) => return vec![e],
    };
    let mut errors: Vec<FileError> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Rejected { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    // Value rules beyond the first of each object.
    if let Ok(docs) = yaml::parse(text, Limits::default()) {
        for doc in docs {
            let Ok(type_meta) = kinds::type_meta(&doc.root) else {
                continue;
            };
            if let Err(DecodeError::Invalid(all)) = kinds::decode(&type_meta, &doc.root) {
                let name = kinds::key_of(&type_meta, &doc.root).map(|k| k.to_string());
                for invalid in all.into_iter().skip(1) {
                    let field = FieldPath::parse(&invalid.path);
                    errors.push(error_at(
                        path,
                        &doc.root,
                        &field,
                        name.clone(),
                        invalid.message,
                    ));
                }
            }
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

fn prefixed(at: &FieldPath, field: &FieldPath) -> String {
    let mut all = at.clone();
    all.0.extend(field.0.iter().cloned());
    all.to_string()
}

fn error_at(
    file: &Path,
    root: &Node,
    field: &FieldPath,
    object: Option<String>,
    message: String,
) -> FileError {
    let mark = field.locate(root);
    FileError {
        file: file.to_path_buf(),
        line: mark.line,
        column: mark.column,
        object,
        path: field.to_string(),
        message,
    }
}

fn glued_message(text: &str, cause: &str) -> String {
    let shown: String = text.chars().take(60).collect();
    format!(
        "`{shown}` has no space after ':', so YAML reads it as one string, not a key and a value ({cause})"
    )
}

/// Finds a line at or before `until` that looks like `key:value` (a mapping
/// key with no space after the colon, as in `kind:DestinationRule`), for
/// syntax errors that such a line caused further down.
fn glued_key_before(text: &str, until: usize) -> Option<(usize, usize, String)> {
    let mut in_block_scalar: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line_no > until {
            break;
        }
        let indent = line.len() - line.trim_start().len();
        let content = line.trim();
        if let Some(block_indent) = in_block_scalar {
            if content.is_empty() || indent > block_indent {
                continue;
            }
            in_block_scalar = None;
        }
        if content.ends_with('|') || content.ends_with('>') {
            in_block_scalar = Some(indent);
        }
        let (column, body) = match content.strip_prefix("- ") {
            Some(rest) => (indent + 3, rest.trim_start()),
            None => (indent + 1, content),
        };
        if looks_like_glued_key(body) {
            return Some((line_no, column, body.to_string()));
        }
    }
    None
}

/// `key:value` where key is an identifier and value does not start with a
/// space, `/` (a URL) or `:`.
pub fn looks_like_glued_key(body: &str) -> bool {
    let body = body.trim_start_matches("- ").trim();
    let Some((key, value)) = body.split_once(':') else {
        return false;
    };
    let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let value_ok = value
        .chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != '/' && c != ':');
    key_ok && value_ok
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
