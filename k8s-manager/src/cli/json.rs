//! The JSON the CLI prints has camelCase keys on every command, as
//! Kubernetes writes its objects.

use serde::Serialize;
use serde_json::Value;

/// `value` as JSON with every key, at every depth, in camelCase. For the
/// kubeconfig reports, whose fields serialise under their Rust (snake_case)
/// names; not for a value holding a map keyed by data, whose data it would
/// rename.
pub fn with_camel_case_keys(value: &impl Serialize) -> serde_json::Result<Value> {
    Ok(rename_keys(serde_json::to_value(value)?))
}

fn rename_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (camel_case(&key), rename_keys(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(rename_keys).collect()),
        other => other,
    }
}

/// `current_context_set` → `currentContextSet`.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lowercase ASCII letter, then letters and digits.
    fn is_camel_case(key: &str) -> bool {
        let mut chars = key.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_alphanumeric())
    }

    #[test]
    fn snake_case_becomes_camel_case() {
        assert_eq!(camel_case("current_context_set"), "currentContextSet");
        assert_eq!(camel_case("file"), "file");
        assert_eq!(camel_case("alreadyCamel"), "alreadyCamel");
        assert_eq!(camel_case("_private"), "private");
        for key in ["file", "currentContextSet", "daysLeft", "sha256"] {
            assert!(is_camel_case(key), "{key}");
        }
        for key in ["kept_shared", "phase-done", "Code", ""] {
            assert!(!is_camel_case(key), "{key}");
        }
    }

    #[test]
    fn keys_are_renamed_at_every_depth_and_values_are_not() {
        let report = serde_json::json!({
            "kept_shared": [{"kind": "user", "name": "my_user"}],
            "files": [{"cleared_current_context": true, "backup": "/a_b"}],
        });
        assert_eq!(
            with_camel_case_keys(&report).unwrap(),
            serde_json::json!({
                "keptShared": [{"kind": "user", "name": "my_user"}],
                "files": [{"clearedCurrentContext": true, "backup": "/a_b"}],
            })
        );
    }
}
