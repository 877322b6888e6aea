//! What kubectl would load: the kubeconfig v1 schema (client-go's
//! `tools/clientcmd/api/v1`), checked on the generic document.
//!
//! A file kubectl refuses to load is one we refuse to rewrite: writing our
//! entries into it would hand the user a file that still does not load, and
//! guessing what they meant could drop what they wrote. So the rules here
//! are kubectl's own, measured against it (`tests/kubeconfig_kubectl.rs`):
//! - `apiVersion` is `v1` and `kind` is `Config`, or they are unset: a
//!   Deployment manifest is not a kubeconfig;
//! - each field the schema types has that type (`server: 12` or
//!   `insecure-skip-tls-verify: "true"` fail in kubectl's JSON decoding);
//!   `null` is accepted anywhere, as Go accepts it; unknown fields are free;
//! - `*-data` fields hold base64, as Go's decoder reads it;
//! - the names of one list are unique (client-go fails on a duplicate name).
//!
//! Messages name the field by its path and say what it must be; they never
//! quote a value, which may be a key or a token.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

/// The type of a field, as the schema declares it.
enum Ty {
    Str,
    Bool,
    /// Go `[]byte`: a base64 string.
    Bytes,
    /// Anything at all (`runtime.RawExtension`).
    Any,
    List(&'static Ty),
    /// A map of string keys to values of one type.
    MapOf(&'static Ty),
    Object(&'static [(&'static str, Ty)]),
    /// A list of `{name, <field>: ...}` entries whose names are unique.
    Named {
        singular: &'static str,
        field: &'static str,
        body: &'static Ty,
    },
}

const EXTENSIONS: Ty = Ty::List(&Ty::Object(&[("name", Ty::Str), ("extension", Ty::Any)]));

const CLUSTER: Ty = Ty::Object(&[
    ("server", Ty::Str),
    ("tls-server-name", Ty::Str),
    ("insecure-skip-tls-verify", Ty::Bool),
    ("certificate-authority", Ty::Str),
    ("certificate-authority-data", Ty::Bytes),
    ("proxy-url", Ty::Str),
    ("disable-compression", Ty::Bool),
    ("extensions", EXTENSIONS),
]);

const CONTEXT: Ty = Ty::Object(&[
    ("cluster", Ty::Str),
    ("user", Ty::Str),
    ("namespace", Ty::Str),
    ("extensions", EXTENSIONS),
]);

const USER: Ty = Ty::Object(&[
    ("client-certificate", Ty::Str),
    ("client-certificate-data", Ty::Bytes),
    ("client-key", Ty::Str),
    ("client-key-data", Ty::Bytes),
    ("token", Ty::Str),
    ("tokenFile", Ty::Str),
    ("as", Ty::Str),
    ("as-uid", Ty::Str),
    ("as-groups", Ty::List(&Ty::Str)),
    ("as-user-extra", Ty::MapOf(&Ty::List(&Ty::Str))),
    ("username", Ty::Str),
    ("password", Ty::Str),
    (
        "auth-provider",
        Ty::Object(&[("name", Ty::Str), ("config", Ty::MapOf(&Ty::Str))]),
    ),
    (
        "exec",
        Ty::Object(&[
            ("command", Ty::Str),
            ("args", Ty::List(&Ty::Str)),
            (
                "env",
                Ty::List(&Ty::Object(&[("name", Ty::Str), ("value", Ty::Str)])),
            ),
            ("apiVersion", Ty::Str),
            ("installHint", Ty::Str),
            ("provideClusterInfo", Ty::Bool),
            ("interactiveMode", Ty::Str),
        ]),
    ),
    ("extensions", EXTENSIONS),
]);

const CONFIG: Ty = Ty::Object(&[
    ("apiVersion", Ty::Str),
    ("kind", Ty::Str),
    (
        "preferences",
        Ty::Object(&[("colors", Ty::Bool), ("extensions", EXTENSIONS)]),
    ),
    (
        "clusters",
        Ty::Named {
            singular: "cluster",
            field: "cluster",
            body: &CLUSTER,
        },
    ),
    (
        "users",
        Ty::Named {
            singular: "user",
            field: "user",
            body: &USER,
        },
    ),
    (
        "contexts",
        Ty::Named {
            singular: "context",
            field: "context",
            body: &CONTEXT,
        },
    ),
    ("current-context", Ty::Str),
    ("extensions", EXTENSIONS),
]);

/// One step of the path to a node: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Why kubectl would not load the document, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaError {
    /// The node at fault, from the top.
    pub path: Vec<Step>,
    pub reason: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return f.write_str(&self.reason);
        }
        f.write_str("`")?;
        for (i, step) in self.path.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        write!(f, "` {}", self.reason)
    }
}

/// Checks the document against the schema; see the module documentation.
/// The walk allocates nothing on a valid document (a 1,500-context file is
/// checked on every merge): an error's path is built on the way back up.
pub(crate) fn check(root: &Map<String, Value>) -> Result<(), SchemaError> {
    check_kind(root)?;
    check_object(root, fields_of(&CONFIG)).map_err(SchemaError::finish)
}

impl SchemaError {
    fn at(reason: String) -> SchemaError {
        SchemaError {
            path: Vec::new(),
            reason,
        }
    }

    /// Adds the step above the steps found so far (in reverse while the
    /// walk returns; see [`SchemaError::finish`]).
    fn under(mut self, step: Step) -> SchemaError {
        self.path.push(step);
        self
    }

    fn finish(mut self) -> SchemaError {
        self.path.reverse();
        self
    }
}

fn fields_of(ty: &'static Ty) -> &'static [(&'static str, Ty)] {
    match ty {
        Ty::Object(fields) => fields,
        _ => &[],
    }
}

/// `apiVersion: v1` and `kind: Config`, or unset (kubectl defaults them).
fn check_kind(root: &Map<String, Value>) -> Result<(), SchemaError> {
    let unset_or = |key: &str, want: &str| match root.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() || s == want => Ok(()),
        Some(Value::String(s)) => Err(s.clone()),
        // The type check reports it.
        Some(_) => Ok(()),
    };
    if let Err(kind) = unset_or("kind", "Config") {
        return Err(SchemaError {
            path: vec![Step::Key("kind".into())],
            reason: format!("is {kind:?}: this is not a kubeconfig (a kubeconfig has kind Config)"),
        });
    }
    if let Err(version) = unset_or("apiVersion", "v1") {
        return Err(SchemaError {
            path: vec![Step::Key("apiVersion".into())],
            reason: format!("is {version:?}: kubectl reads only kubeconfigs of apiVersion v1"),
        });
    }
    Ok(())
}

/// The fields the schema types, found by walking the mapping's own keys
/// (usually fewer than the schema's fields).
fn check_object(
    map: &Map<String, Value>,
    fields: &'static [(&'static str, Ty)],
) -> Result<(), SchemaError> {
    for (key, value) in map {
        if let Some((_, ty)) = fields.iter().find(|(name, _)| *name == key.as_str()) {
            check_value(value, ty).map_err(|e| e.under(Step::Key(key.clone())))?;
        }
    }
    Ok(())
}

fn check_value(value: &Value, ty: &'static Ty) -> Result<(), SchemaError> {
    if value.is_null() {
        return Ok(());
    }
    let wrong = |what: &str| Err(SchemaError::at(format!("must be {what}")));
    match (ty, value) {
        (Ty::Any, _) | (Ty::Str, Value::String(_)) | (Ty::Bool, Value::Bool(_)) => Ok(()),
        (Ty::Str, _) => wrong("a string"),
        (Ty::Bool, _) => wrong("true or false"),
        (Ty::Bytes, Value::String(data)) if is_base64(data) => Ok(()),
        (Ty::Bytes, _) => wrong("base64 data"),
        (Ty::Object(fields), Value::Object(map)) => check_object(map, fields),
        (Ty::Object(_), _) => wrong("a mapping"),
        (Ty::MapOf(inner), Value::Object(map)) => {
            for (key, item) in map {
                check_value(item, inner).map_err(|e| e.under(Step::Key(key.clone())))?;
            }
            Ok(())
        }
        (Ty::MapOf(_), _) => wrong("a mapping"),
        (Ty::List(inner), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, inner).map_err(|e| e.under(Step::Index(i)))?;
            }
            Ok(())
        }
        (Ty::List(_), _) => wrong("a list"),
        (
            Ty::Named {
                singular,
                field,
                body,
            },
            Value::Array(items),
        ) => {
            let mut seen = HashSet::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                check_named(item, &mut seen, singular, field, body)
                    .map_err(|e| e.under(Step::Index(i)))?;
            }
            Ok(())
        }
        (Ty::Named { .. }, _) => wrong("a list"),
    }
}

/// One entry of a named list: a mapping, its name a string not seen before
/// in the list, its `field` of type `body`.
fn check_named<'v>(
    item: &'v Value,
    seen: &mut HashSet<&'v str>,
    singular: &str,
    field: &'static str,
    body: &'static Ty,
) -> Result<(), SchemaError> {
    let Value::Object(entry) = item else {
        return Err(SchemaError::at("must be a mapping".into()));
    };
    let name_step = || Step::Key("name".into());
    let name = match entry.get("name") {
        None | Some(Value::Null) => "",
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err(SchemaError::at("must be a string".into()).under(name_step())),
    };
    if !seen.insert(name) {
        let reason = format!(
            "repeats the {singular} name {name:?}: kubectl refuses a file that names two \
             {singular}s alike; rename or remove one"
        );
        return Err(SchemaError::at(reason).under(name_step()));
    }
    match entry.get(field) {
        Some(body_value) => {
            check_value(body_value, body).map_err(|e| e.under(Step::Key(field.to_string())))
        }
        None => Ok(()),
    }
}

/// Whether Go's `encoding/json` reads the string as `[]byte`: standard
/// base64 (`A-Z a-z 0-9 + /`) in groups of four, `=` padding only at the
/// very end (one or two), line breaks ignored, trailing bits allowed.
/// Checked without decoding or allocating, and without a branch per byte
/// (1,500 embedded CA bundles are 1.6 MB of it).
fn is_base64(data: &str) -> bool {
    let bytes = data.as_bytes();
    if memchr::memchr2(b'\r', b'\n', bytes).is_some() {
        let joined: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        return is_base64_line(&joined);
    }
    is_base64_line(bytes)
}

fn is_base64_line(bytes: &[u8]) -> bool {
    let padding = bytes
        .iter()
        .rev()
        .take(2)
        .take_while(|&&b| b == b'=')
        .count();
    let body = &bytes[..bytes.len() - padding];
    let in_alphabet = |c: u8| {
        let letter = (c | 0x20).wrapping_sub(b'a') < 26;
        let digit = c.wrapping_sub(b'0') < 10;
        letter | digit | (c == b'+') | (c == b'/')
    };
    bytes.len().is_multiple_of(4) && body.iter().fold(true, |ok, &c| ok & in_alphabet(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(value: Value) -> Result<(), String> {
        let Value::Object(root) = value else {
            panic!("a mapping")
        };
        check(&root).map_err(|e| e.to_string())
    }

    #[test]
    fn a_plain_kubeconfig_passes() {
        verdict(json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "a", "cluster": {"server": "https://a", "certificate-authority-data": "QUJD\nREVG", "insecure-skip-tls-verify": null}}],
            "users": [{"name": "u", "user": {"exec": {"command": "aws", "args": ["x"], "env": [{"name": "A", "value": "1"}]}, "as-user-extra": {"k": ["v"]}}}],
            "contexts": [{"name": "c", "context": {"cluster": "a", "user": "u", "extensions": [{"name": "e", "extension": 5}]}}],
            "current-context": "c",
            "x-unknown": [1, {"a": 2}]
        }))
        .unwrap();
        verdict(json!({"kind": "", "apiVersion": null, "clusters": null})).unwrap();
    }

    #[test]
    fn what_kubectl_refuses_is_refused_with_its_path() {
        let cases = [
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
                "`kind` is \"Deployment\": this is not a kubeconfig",
            ),
            (json!({"apiVersion": "v2"}), "`apiVersion` is \"v2\""),
            (json!({"kind": "List"}), "`kind` is \"List\""),
            (
                json!({"clusters": [{"name": "a", "cluster": {"server": 12}}]}),
                "`clusters[0].cluster.server` must be a string",
            ),
            (
                json!({"clusters": [{"name": "a", "cluster": {"insecure-skip-tls-verify": "true"}}]}),
                "`clusters[0].cluster.insecure-skip-tls-verify` must be true or false",
            ),
            (
                json!({"clusters": [{"name": "a", "cluster": "abc"}]}),
                "`clusters[0].cluster` must be a mapping",
            ),
            (
                json!({"clusters": [{"name": "a", "cluster": {"certificate-authority-data": "!!!"}}]}),
                "`clusters[0].cluster.certificate-authority-data` must be base64 data",
            ),
            (
                json!({"clusters": [{"name": "a", "cluster": {"certificate-authority-data": "QUJ"}}]}),
                "must be base64 data",
            ),
            (
                json!({"users": [{"name": "u", "user": {"exec": {"args": "x"}}}]}),
                "`users[0].user.exec.args` must be a list",
            ),
            (
                json!({"users": [{"name": "u", "user": {"auth-provider": {"config": {"k": 1}}}}]}),
                "`users[0].user.auth-provider.config.k` must be a string",
            ),
            (json!({"contexts": {"a": 1}}), "`contexts` must be a list"),
            (
                json!({"contexts": ["a"]}),
                "`contexts[0]` must be a mapping",
            ),
            (
                json!({"contexts": [{"name": 5}]}),
                "`contexts[0].name` must be a string",
            ),
            (
                json!({"current-context": ["a"]}),
                "`current-context` must be a string",
            ),
            (
                json!({"preferences": {"colors": "yes"}}),
                "`preferences.colors` must be true or false",
            ),
            (
                json!({"extensions": [{"name": 1}]}),
                "`extensions[0].name` must be a string",
            ),
        ];
        for (doc, want) in cases {
            let got = verdict(doc.clone()).unwrap_err();
            assert!(got.contains(want), "{doc}: {got}");
        }
    }

    #[test]
    fn a_repeated_name_is_refused_without_quoting_the_entry() {
        let got = verdict(json!({"users": [
            {"name": "u", "user": {"token": "secret-one"}},
            {"name": "u", "user": {"token": "secret-two"}}
        ]}))
        .unwrap_err();
        assert!(
            got.starts_with("`users[1].name` repeats the user name \"u\""),
            "{got}"
        );
        assert!(!got.contains("secret"), "{got}");
        // Two unnamed entries share the empty name, as in client-go.
        assert!(verdict(json!({"clusters": [{"cluster": {}}, {"name": null}]})).is_err());
        // The same name in two lists is fine.
        verdict(json!({"clusters": [{"name": "a"}], "users": [{"name": "a"}]})).unwrap();
    }

    #[test]
    fn base64_as_go_reads_it() {
        for good in [
            "",
            "QUJD",
            "QUI=",
            "QQ==",
            "QUJD\nREVG",
            "QUJD\r\nREVG",
            "QUJE",
        ] {
            assert!(is_base64(good), "{good:?}");
        }
        for bad in [
            "QUJ", "Q===", "QQ=Q", "====", "QU!D", "QUJD ", "-_AA", "QQ==QQ==",
        ] {
            assert!(!is_base64(bad), "{bad:?}");
        }
    }

    #[test]
    fn messages_never_quote_a_value() {
        for doc in [
            json!({"users": [{"name": "u", "user": {"token": ["tok-secret"]}}]}),
            json!({"users": [{"name": "u", "user": {"client-key-data": "tok-secret!"}}]}),
            json!({"users": [{"name": "u", "user": {"password": 1234567}}]}),
        ] {
            let got = verdict(doc).unwrap_err();
            assert!(
                !got.contains("tok-secret") && !got.contains("1234567"),
                "{got}"
            );
        }
    }
}
