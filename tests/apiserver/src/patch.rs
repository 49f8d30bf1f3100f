//! PATCH bodies: JSON merge patch (RFC 7386, also used for strategic merge
//! patch, whose list-merge keys are not modelled) and JSON patch (RFC 6902).

use serde_json::Value;

use crate::status::ApiError;

/// Applies an RFC 7386 merge patch: objects merge, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(target_fields) = target else {
        unreachable!("target was just made an object");
    };
    for (key, value) in patch_fields {
        if value.is_null() {
            target_fields.remove(key);
        } else {
            merge_patch(
                target_fields.entry(key.clone()).or_insert(Value::Null),
                value,
            );
        }
    }
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let operations = patch.as_array().ok_or_else(|| {
        ApiError::bad_request("json patch body must be a JSON array of operations")
    })?;
    for (index, operation) in operations.iter().enumerate() {
        apply_operation(target, operation).map_err(|reason| {
            ApiError::invalid(format!(
                "json patch operation {index} ({operation}) failed: {reason}"
            ))
        })?;
    }
    Ok(())
}

fn apply_operation(target: &mut Value, operation: &Value) -> Result<(), String> {
    let op = operation
        .get("op")
        .and_then(Value::as_str)
        .ok_or("missing \"op\"")?;
    let path = operation
        .get("path")
        .and_then(Value::as_str)
        .ok_or("missing \"path\"")?;
    let value = || operation.get("value").cloned().ok_or("missing \"value\"");
    let from = || {
        operation
            .get("from")
            .and_then(Value::as_str)
            .ok_or("missing \"from\"")
    };
    match op {
        "add" => add(target, path, value()?),
        "remove" => remove(target, path).map(drop),
        "replace" => {
            let slot = target
                .pointer_mut(path)
                .ok_or_else(|| format!("path {path:?} does not exist"))?;
            *slot = value()?;
            Ok(())
        }
        "move" => {
            let moved = remove(target, from()?)?;
            add(target, path, moved)
        }
        "copy" => {
            let from = from()?;
            let copied = target
                .pointer(from)
                .cloned()
                .ok_or_else(|| format!("path {from:?} does not exist"))?;
            add(target, path, copied)
        }
        "test" => {
            if target.pointer(path) == Some(&value()?) {
                Ok(())
            } else {
                Err(format!("test of {path:?} did not match"))
            }
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// Splits a JSON pointer into its parent pointer and unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("path {path:?} is not a JSON pointer"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(fields)) => {
            fields.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let index: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if index > items.len() {
                return Err(format!("array index {index} out of bounds"));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("parent of {path:?} does not exist")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("path {path:?} does not exist");
    match target.pointer_mut(parent) {
        Some(Value::Object(fields)) => fields.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if index >= items.len() {
                return Err(missing());
            }
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut target = json!({"spec": {"list": [1, 2]}, "x": 1});
        json_patch(
            &mut target,
            &json!([
                {"op": "test", "path": "/x", "value": 1},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "replace", "path": "/x", "value": 2},
                {"op": "remove", "path": "/spec/list/0"},
                {"op": "add", "path": "/metadata~1name", "value": "n"},
            ]),
        )
        .unwrap();
        assert_eq!(
            target,
            json!({"spec": {"list": [2, 3]}, "x": 2, "metadata/name": "n"})
        );
        let err = json_patch(
            &mut target,
            &json!([{"op": "test", "path": "/x", "value": 9}]),
        )
        .unwrap_err();
        assert_eq!(err.reason, "Invalid");
    }
}
