//! One YAML file → objects, or a [`FileError`] with the line, column and
//! reason. A file is all or nothing: one bad document rejects the file.

use std::path::Path;

use super::FileError;
use crate::kinds::{self, Decoded, Object};

/// Parses every document in `text`. Kinds weft does not know are logged and
/// skipped.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Object>, FileError> {
    let mut objects = Vec::new();
    for doc in split_documents(text) {
        if let Some(object) = parse_document(path, &doc)? {
            objects.push(object);
        }
    }
    Ok(objects)
}

/// One document of a multi-document file.
struct Document {
    /// 1-based line of the document's first line in the file.
    first_line: usize,
    /// The document's text, preceded by `first_line - 1` newlines so that
    /// the YAML parser's line numbers are the file's.
    padded: String,
}

impl Document {
    fn lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.padded
            .lines()
            .enumerate()
            .skip(self.first_line - 1)
            .map(|(i, line)| (i + 1, line))
    }

    fn is_empty(&self) -> bool {
        self.lines().all(|(_, line)| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#')
        })
    }

    /// The first line with content, for errors about the whole document.
    fn content_line(&self) -> usize {
        self.lines()
            .find(|(_, line)| {
                let line = line.trim();
                !line.is_empty() && !line.starts_with('#')
            })
            .map_or(self.first_line, |(n, _)| n)
    }
}

/// Splits at `---` lines. A `---` at the start of a line always starts a
/// new document in YAML, so this agrees with the parser.
fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = Document {
        first_line: 1,
        padded: String::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker || line == "..." {
            docs.push(current);
            current = Document {
                first_line: line_no,
                padded: "\n".repeat(line_no - 1),
            };
            // `--- key: value` keeps its content, with the marker blanked.
            let rest = if is_marker { &line[3..] } else { "" };
            current.padded.push_str("   ");
            current.padded.push_str(rest);
            current.padded.push('\n');
        } else {
            current.padded.push_str(line);
            current.padded.push('\n');
        }
    }
    docs.push(current);
    docs.retain(|d| !d.is_empty());
    docs
}

fn parse_document(path: &Path, doc: &Document) -> Result<Option<Object>, FileError> {
    let error = |line: usize, column: usize, message: String| {
        // A `key:value` line is the usual cause of a confusing error
        // further down; point at it instead.
        match missing_space_after_colon(doc, line) {
            Some((hint_line, hint_column, text)) => FileError {
                file: path.to_path_buf(),
                line: hint_line,
                column: hint_column,
                message: format!(
                    "`{text}` has no space after ':', so YAML reads it as one string, not a key and a value (parser: {message})"
                ),
            },
            None => FileError {
                file: path.to_path_buf(),
                line,
                column,
                message,
            },
        }
    };
    let yaml_error = |err: serde_yaml::Error| {
        let (line, column) = err
            .location()
            .map_or((doc.content_line(), 1), |l| (l.line(), l.column()));
        error(line, column, strip_location(err.to_string(), line, column))
    };

    let value: serde_yaml::Value = serde_yaml::from_str(&doc.padded).map_err(yaml_error)?;
    if value.is_null() {
        return Ok(None);
    }
    if !value.is_mapping() {
        return Err(error(
            doc.content_line(),
            1,
            "a document must be a mapping with `apiVersion`, `kind` and `metadata`".into(),
        ));
    }
    let type_meta = kinds::type_meta(&value)
        .map_err(|reason| error(doc.content_line(), 1, reason.to_string()))?;
    match kinds::decode(&type_meta, &doc.padded) {
        Ok(Decoded::Object(object)) => Ok(Some(*object)),
        Ok(Decoded::Unknown(type_meta)) => {
            tracing::info!(
                file = %path.display(),
                line = doc.content_line(),
                api_version = type_meta.api_version,
                kind = type_meta.kind,
                "ignoring a kind weft does not handle yet"
            );
            Ok(None)
        }
        Err(kinds::DecodeError::Yaml(err)) => Err(yaml_error(err)),
        Err(err) => Err(error(doc.content_line(), 1, err.to_string())),
    }
}

/// serde_yaml ends its messages with " at line L column C"; the location
/// is reported separately.
fn strip_location(message: String, line: usize, column: usize) -> String {
    let suffix = format!(" at line {line} column {column}");
    match message.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_string(),
        None => message,
    }
}

/// Finds a line at or before `until` that looks like `key:value` (a mapping
/// key with no space after the colon, as in `kind:DestinationRule`).
fn missing_space_after_colon(doc: &Document, until: usize) -> Option<(usize, usize, String)> {
    let mut in_block_scalar: Option<usize> = None;
    for (line_no, line) in doc.lines() {
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
fn looks_like_glued_key(body: &str) -> bool {
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Object>, FileError> {
        parse_file(Path::new("test.yaml"), text)
    }

    #[test]
    fn multi_document_file() {
        let objects = parse(
            "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: a}\n",
        )
        .unwrap();
        let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(keys, ["Namespace a", "ServiceAccount a/sa"]);
    }

    #[test]
    fn seed_destination_rule_is_rejected_at_its_kind_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\napiVersion: networking.istio.io/v1alpha3\nkind:DestinationRule\nmetadata:\nname:my-service\nspec:\nhost:my-service.default.svc.cluster.local\n";
        let err = parse(text).unwrap_err();
        assert_eq!((err.line, err.column), (7, 1), "{err}");
        assert!(
            err.message
                .contains("`kind:DestinationRule` has no space after ':'"),
            "{err}"
        );
        assert!(err.to_string().starts_with("test.yaml:7:1: "), "{err}");
    }

    #[test]
    fn glued_key_inside_metadata() {
        let err = parse("apiVersion: v1\nkind: Pod\nmetadata:\n  name:web\n").unwrap_err();
        assert_eq!((err.line, err.column), (4, 3), "{err}");
    }

    #[test]
    fn type_errors_carry_the_file_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nstatus:\n  podIP: 10.0.0.300\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.line, 10, "{err}");
        assert!(err.message.contains("status.podIP"), "{err}");
        assert!(!err.message.contains(" at line "), "{err}");
    }

    #[test]
    fn missing_kind_and_wrong_api_version() {
        let err = parse("\n\napiVersion: v1\nmetadata: {name: a}\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("no `kind`"), "{err}");
        let err = parse("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: a}\n").unwrap_err();
        assert!(err.message.contains("apiVersion `v1`"), "{err}");
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let objects =
            parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n").unwrap();
        assert!(objects.is_empty());
    }

    #[test]
    fn urls_and_block_scalars_are_not_glued_keys() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  annotations:\n    docs: |\n      see:this\n    link: http://x\n";
        assert_eq!(parse(text).unwrap().len(), 1);
        assert!(!looks_like_glued_key("http://example.com"));
        assert!(looks_like_glued_key("simple:ROUND_ROBIN"));
    }
}
