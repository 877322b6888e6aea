//! The kubeconfig document: a file read into an order-preserving generic value,
//! so that writing it back loses nothing kubectl sees.
//!
//! We deliberately do not deserialise into typed structs: a struct would drop
//! what it does not know (unknown fields, new fields of a newer kubectl,
//! `extensions` payloads, exec and auth-provider details) and reorder entries.
//! Instead the whole file becomes a `serde_json::Value` (with `preserve_order`)
//! and the merge touches only the entries it owns.
//!
//! Scalars are read the way kubectl reads them (go-yaml v2 via sigs.k8s.io/yaml,
//! YAML 1.1 flavoured): `yes`/`on` are booleans, `0123` is octal, duplicate
//! keys keep the last value. serde-saphyr's emitter quotes every string that a
//! YAML 1.1 or 1.2 reader would take for something else (`"yes"`, `"0123"`,
//! `"1e3"`, `"null"`, `"~"`, `":"`), so each string reads back as the same
//! string. Block scalars are switched off: a long folded string is one more
//! way for two YAML readers to disagree, and kubeconfigs do not need them.
//!
//! The file's outer form is kept: JSON stays JSON, CRLF line endings stay
//! CRLF (Notepad), a UTF-8 byte order mark stays, UTF-16 (what Windows
//! PowerShell 5 writes with `>`) stays UTF-16.
//!
//! Most kubeconfigs are plain block-style YAML: those are read by the fast
//! reader of [`super::layout`], which also notes where each entry sits, and
//! a change is written as an edit of the entries that changed: every other
//! line of the file, comments included, stays byte for byte. Any other file
//! is read by the general YAML reader and written back whole by the emitter
//! (comments and YAML anchors are then not kept; kubectl does not keep them
//! either when it rewrites a file).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::MessageFormatter;

use super::error::{KubeconfigError, TextPosition};
use super::layout::{self, Edits, Layout};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16BE_BOM: &[u8] = b"\xFE\xFF";

/// The three named lists of a kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Cluster,
    Context,
    User,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::Cluster, Section::Context, Section::User];

    /// The position in [`Section::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The top-level key holding the list (`clusters`, ...).
    pub fn list_key(self) -> &'static str {
        match self {
            Section::Cluster => "clusters",
            Section::Context => "contexts",
            Section::User => "users",
        }
    }
}

pub(crate) const CURRENT_CONTEXT: &str = "current-context";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
}

/// How a kubeconfig was written on disk, so that it is written back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FileFormat {
    pub syntax: Syntax,
    pub encoding: TextEncoding,
    pub crlf: bool,
}

impl FileFormat {
    /// The format of a file we create: what kubectl writes.
    pub const NEW_FILE: FileFormat = FileFormat {
        syntax: Syntax::Yaml,
        encoding: TextEncoding::Utf8,
        crlf: false,
    };
}

#[derive(Debug, Clone)]
pub struct Kubeconfig {
    root: Map<String, Value>,
    format: FileFormat,
    /// The text it was read from, when the fast reader could lay it out:
    /// changes are then written as edits of that text.
    source: Option<Box<Source>>,
}

#[derive(Debug, Clone)]
struct Source {
    text: String,
    layout: Layout,
    edits: Edits,
}

/// Two documents are equal when kubectl sees the same thing in them, in the
/// same file format (however their text is laid out).
impl PartialEq for Kubeconfig {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.format == other.format
    }
}

impl Default for Kubeconfig {
    fn default() -> Self {
        Kubeconfig::empty()
    }
}

impl Kubeconfig {
    /// An empty config, as kubectl treats a missing or empty file.
    pub fn empty() -> Self {
        Kubeconfig {
            root: Map::new(),
            format: FileFormat::NEW_FILE,
            source: None,
        }
    }

    /// Reads a kubeconfig file that must exist (e.g. the cluster's admin
    /// kubeconfig). An empty file is an empty config.
    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let bytes = std::fs::read(path).map_err(|e| KubeconfigError::io("read", path, e))?;
        Kubeconfig::parse(&bytes, path)
    }

    /// Parses the bytes of a kubeconfig; `origin` only names the file in errors.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<Self, KubeconfigError> {
        let parse_error = |at: Option<TextPosition>, message: String| KubeconfigError::Parse {
            path: origin.to_path_buf(),
            at,
            message,
        };
        let (text, encoding) =
            decode(bytes).map_err(|(at, message)| parse_error(Some(at), message))?;
        let crlf = text.find('\n').is_some_and(|i| text[..i].ends_with('\r'));
        let format = |syntax| FileFormat {
            syntax,
            encoding,
            crlf,
        };

        if !text.trim_start().starts_with('{')
            && let Some((root, layout)) = layout::parse(&text)
            && check_shape(&root).is_ok()
        {
            let edits = Edits::new(&root);
            return Ok(Kubeconfig {
                root,
                format: format(Syntax::Yaml),
                source: Some(Box::new(Source {
                    text,
                    layout,
                    edits,
                })),
            });
        }

        let (value, syntax) =
            parse_text(&text).map_err(|(at, message)| parse_error(at, message))?;
        let root = match value {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            _ => {
                let (at, message) = locate_shape_error(&text, syntax)
                    .unwrap_or((None, "the top level must be a mapping".to_string()));
                return Err(parse_error(at, message));
            }
        };
        if let Err(message) = check_shape(&root) {
            let (at, located) = locate_shape_error(&text, syntax).unwrap_or((None, message));
            return Err(parse_error(at, located));
        }
        Ok(Kubeconfig {
            root,
            format: format(syntax),
            source: None,
        })
    }

    /// The bytes to write back, in the file's own format. `path` only names
    /// the file in errors.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, KubeconfigError> {
        if let Some(text) = self.edited_text() {
            return Ok(encode(text, self.format.encoding));
        }
        let mut text = match self.format.syntax {
            Syntax::Yaml => {
                let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
                serde_saphyr::to_string_with_options(&self.root, options).map_err(|e| {
                    KubeconfigError::Serialize {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    }
                })?
            }
            Syntax::Json => {
                let mut json = serde_json::to_string_pretty(&self.root).map_err(|e| {
                    KubeconfigError::Serialize {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    }
                })?;
                json.push('\n');
                json
            }
        };
        // The emitters write no line break inside a scalar (strings with
        // newlines are double-quoted with `\n` escapes), so every '\n' here is
        // a line ending and can become CRLF.
        if self.format.crlf {
            text = text.replace('\n', "\r\n");
        }
        Ok(encode(text, self.format.encoding))
    }

    /// The source text with the changes written in place, when the document
    /// was laid out by the fast reader and the changes can be written so.
    fn edited_text(&self) -> Option<String> {
        let source = self.source.as_deref()?;
        let newline = if self.format.crlf { "\r\n" } else { "\n" };
        let emit = |value: &Value| {
            let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
            serde_saphyr::to_string_with_options(value, options).ok()
        };
        layout::render(
            &source.text,
            &source.layout,
            &source.edits,
            &self.root,
            newline,
            &emit,
        )
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Whether a change will be written as an edit of the file's own text
    /// (see the module documentation).
    pub fn edited_in_place(&self) -> bool {
        self.source.is_some()
    }

    /// The whole document, for comparisons and inspection.
    pub fn root(&self) -> &Map<String, Value> {
        &self.root
    }

    /// The current context; unset, `null` and `""` all mean "none" to kubectl.
    pub fn current_context(&self) -> Option<&str> {
        self.root
            .get(CURRENT_CONTEXT)
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
    }

    /// The entries of one list; a missing or `null` list is empty.
    pub fn entries(&self, section: Section) -> &[Value] {
        match self.root.get(section.list_key()) {
            Some(Value::Array(items)) => items,
            _ => &[],
        }
    }

    pub fn names(&self, section: Section) -> impl Iterator<Item = &str> {
        self.entries(section).iter().filter_map(entry_name)
    }

    pub fn contains(&self, section: Section, name: &str) -> bool {
        self.names(section).any(|n| n == name)
    }

    /// The cluster and user each context points at: `(context, cluster, user)`.
    pub fn context_refs(&self) -> impl Iterator<Item = (&str, Option<&str>, Option<&str>)> {
        self.entries(Section::Context).iter().filter_map(|entry| {
            let name = entry_name(entry)?;
            let context = entry.get("context");
            let field = |key: &str| context.and_then(|c| c.get(key)).and_then(Value::as_str);
            Some((name, field("cluster"), field("user")))
        })
    }

    /// Appends an entry to one list, creating the list when it is missing or
    /// `null`. A file that had nothing at all first gets the
    /// `apiVersion`/`kind` header kubectl writes.
    pub(crate) fn push_entry(&mut self, section: Section, entry: Value) {
        if self.root.is_empty() {
            self.source = None;
            self.root
                .insert("apiVersion".into(), Value::String("v1".into()));
            self.root
                .insert("kind".into(), Value::String("Config".into()));
        }
        let slot = self.root.entry(section.list_key()).or_insert(Value::Null);
        if !slot.is_array() {
            // Missing or `null`: parse() rejects any other non-list.
            *slot = Value::Array(Vec::new());
        }
        slot.as_array_mut()
            .expect("the slot was just made a list")
            .push(entry);
        if let Some(source) = &mut self.source {
            source.edits.origins[section.index()].push(None);
        }
    }

    /// Replaces the entry at `index` of one list.
    pub(crate) fn replace_entry(&mut self, section: Section, index: usize, entry: Value) {
        if let Some(Value::Array(list)) = self.root.get_mut(section.list_key()) {
            list[index] = entry;
            if let Some(source) = &mut self.source {
                source.edits.origins[section.index()][index] = None;
            }
        }
    }

    /// Removes every entry called `name` from one list; how many there were.
    pub(crate) fn remove_named(&mut self, section: Section, name: &str) -> usize {
        let Some(Value::Array(list)) = self.root.get_mut(section.list_key()) else {
            return 0;
        };
        let keep: Vec<bool> = list.iter().map(|e| entry_name(e) != Some(name)).collect();
        let removed = keep.iter().filter(|k| !**k).count();
        if removed == 0 {
            return 0;
        }
        let mut flags = keep.iter();
        list.retain(|_| *flags.next().expect("one flag per entry"));
        if let Some(source) = &mut self.source {
            let mut flags = keep.iter();
            source.edits.origins[section.index()]
                .retain(|_| *flags.next().expect("one flag per entry"));
        }
        removed
    }

    /// Removes the entry at `index` of one list.
    pub(crate) fn remove_entry(&mut self, section: Section, index: usize) {
        if let Some(Value::Array(list)) = self.root.get_mut(section.list_key()) {
            list.remove(index);
            if let Some(source) = &mut self.source {
                source.edits.origins[section.index()].remove(index);
            }
        }
    }

    /// Sets `current-context`, in place when the key exists.
    pub(crate) fn set_current_context(&mut self, name: &str) {
        self.root
            .insert(CURRENT_CONTEXT.to_string(), Value::String(name.to_string()));
        if let Some(source) = &mut self.source {
            source.edits.current_context = true;
        }
    }
}

/// The `name` of a named entry (`{name: x, cluster: {...}}`).
pub(crate) fn entry_name(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
}

/// Reads the text, stripping and remembering a byte order mark.
fn decode(bytes: &[u8]) -> Result<(String, TextEncoding), (TextPosition, String)> {
    if let Some(rest) = bytes.strip_prefix(UTF16LE_BOM) {
        return decode_utf16(rest, u16::from_le_bytes).map(|t| (t, TextEncoding::Utf16Le));
    }
    if let Some(rest) = bytes.strip_prefix(UTF16BE_BOM) {
        return decode_utf16(rest, u16::from_be_bytes).map(|t| (t, TextEncoding::Utf16Be));
    }
    let (rest, encoding) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (rest, TextEncoding::Utf8Bom),
        None => (bytes, TextEncoding::Utf8),
    };
    match std::str::from_utf8(rest) {
        Ok(text) => Ok((text.to_string(), encoding)),
        Err(err) => {
            let valid = &rest[..err.valid_up_to()];
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let at = TextPosition {
                line: valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1,
                column: String::from_utf8_lossy(&valid[line_start..])
                    .chars()
                    .count() as u64
                    + 1,
            };
            Err((at, "the file is not UTF-8 text".to_string()))
        }
    }
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, (TextPosition, String)> {
    let units = bytes.chunks(2).map(|pair| match pair {
        [a, b] => unit([*a, *b]),
        // An odd trailing byte: let the decoder report it as invalid.
        _ => 0xD800,
    });
    let mut text = String::with_capacity(bytes.len() / 2);
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(c) => text.push(c),
            Err(_) => {
                let line = text.matches('\n').count() as u64 + 1;
                let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
                return Err((
                    TextPosition { line, column },
                    "the file is not valid UTF-16 text".to_string(),
                ));
            }
        }
    }
    Ok(text)
}

fn encode(text: String, encoding: TextEncoding) -> Vec<u8> {
    match encoding {
        TextEncoding::Utf8 => text.into_bytes(),
        TextEncoding::Utf8Bom => [UTF8_BOM, text.as_bytes()].concat(),
        TextEncoding::Utf16Le => UTF16LE_BOM
            .iter()
            .copied()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
        TextEncoding::Utf16Be => UTF16BE_BOM
            .iter()
            .copied()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect(),
    }
}

/// The reader options that make serde-saphyr see scalars as kubectl does.
pub(super) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // go-yaml v2 reads `0123` as octal 83.
        legacy_octal_numbers: true,
        // go-yaml v2 (non-strict, as sigs.k8s.io/yaml uses it) keeps the last
        // of duplicate keys instead of failing.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    }
}

type LocatedMessage = (Option<TextPosition>, String);

/// Parses the text as JSON when it looks like JSON (kubectl accepts both),
/// else as YAML.
fn parse_text(text: &str) -> Result<(Value, Syntax), LocatedMessage> {
    if text.trim_start().starts_with('{') {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => return Ok((value, Syntax::Json)),
            // A YAML flow mapping also starts with '{': only if YAML fails too
            // is the file broken, and then the JSON message is the useful one.
            Err(json_err) => {
                return serde_saphyr::from_str_with_options::<Value>(text, yaml_options())
                    .map(|value| (value, Syntax::Yaml))
                    .map_err(|_| json_error(&json_err));
            }
        }
    }
    serde_saphyr::from_str_with_options::<Value>(text, yaml_options())
        .map(|value| (value, Syntax::Yaml))
        .map_err(|err| yaml_error(&err))
}

fn yaml_error(err: &serde_saphyr::Error) -> LocatedMessage {
    let at = err.location().map(|l| TextPosition {
        line: l.line(),
        column: l.column(),
    });
    // The formatter gives the message alone: no location suffix and no
    // snippet, which could print secrets from the file into a log.
    let message = serde_saphyr::DefaultMessageFormatter
        .format_message(err)
        .into_owned();
    (at, message)
}

fn json_error(err: &serde_json::Error) -> LocatedMessage {
    let at = (err.line() > 0).then(|| TextPosition {
        line: err.line() as u64,
        column: err.column() as u64,
    });
    // serde_json appends " at line L column C" to its Display; `at` has it.
    let text = err.to_string();
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    (at, message)
}

/// The parts of the shape that the merge relies on and that kubectl itself
/// enforces: named lists are lists of mappings with string names, and
/// `current-context` is a string. Everything else is free-form.
fn check_shape(root: &Map<String, Value>) -> Result<(), String> {
    for section in Section::ALL {
        let key = section.list_key();
        match root.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Value::Object(fields) = item else {
                        return Err(format!("`{key}[{i}]` must be a mapping"));
                    };
                    if !matches!(fields.get("name"), None | Some(Value::String(_))) {
                        return Err(format!("`{key}[{i}].name` must be a string"));
                    }
                }
            }
            Some(_) => return Err(format!("`{key}` must be a list")),
        }
    }
    match root.get(CURRENT_CONTEXT) {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(_) => Err(format!("`{CURRENT_CONTEXT}` must be a string")),
    }
}

/// The same rules as [`check_shape`], as types: deserialising the text into
/// them yields the line and column of the offending node. Only used once
/// `check_shape` has failed, so a valid file is parsed once. The fields exist
/// to be validated, never read.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ShapeProbe {
    #[serde(default, rename = "clusters")]
    _clusters: Option<Vec<EntryProbe>>,
    #[serde(default, rename = "contexts")]
    _contexts: Option<Vec<EntryProbe>>,
    #[serde(default, rename = "users")]
    _users: Option<Vec<EntryProbe>>,
    #[serde(default, rename = "current-context")]
    _current_context: Option<String>,
}

#[derive(Deserialize)]
struct EntryProbe {
    #[serde(default, rename = "name")]
    _name: Option<String>,
}

fn locate_shape_error(text: &str, syntax: Syntax) -> Option<LocatedMessage> {
    match syntax {
        Syntax::Json => serde_json::from_str::<ShapeProbe>(text)
            .err()
            .map(|e| json_error(&e)),
        Syntax::Yaml => {
            let mut options = yaml_options();
            // Reject `name: yes` / `name: 12` for string fields, as kubectl does.
            options.no_schema = true;
            serde_saphyr::from_str_with_options::<ShapeProbe>(text, options)
                .err()
                .map(|e| yaml_error(&e))
        }
    }
}

/// Strings that a YAML 1.1 or 1.2 reader may take for something else, for
/// the tests of both readers.
#[cfg(test)]
pub(crate) const TRICKY_SCALARS: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "N",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "",
    "0123",
    "0o17",
    "0x1F",
    "1e3",
    "1.5",
    ".5",
    "+1",
    "-1",
    "1_000",
    "12:30",
    "2001-12-14",
    ":",
    "- a",
    "a: b",
    "#x",
    "x #y",
    "@a",
    "`a",
    "!a",
    "&a",
    "*a",
    "|",
    ">",
    "%a",
    "'q'",
    "\"q\"",
    "a\nb",
    "a\nb\n",
    "tab\tx",
    " lead",
    "trail ",
    "=",
    "<<",
    ".inf",
    ".nan",
    "[a]",
    "{a}",
    "?",
    "---",
    "...",
    "C:\\Users\\dev\\.kube\\config",
    "https://10.0.0.1:6443",
    "word ",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Kubeconfig {
        Kubeconfig::parse(text.as_bytes(), Path::new("test-config")).unwrap()
    }

    fn parse_err(bytes: &[u8]) -> KubeconfigError {
        Kubeconfig::parse(bytes, Path::new("/k/config")).unwrap_err()
    }

    fn round_trip(doc: &Kubeconfig) -> Kubeconfig {
        let bytes = doc.to_bytes(Path::new("test-config")).unwrap();
        Kubeconfig::parse(&bytes, Path::new("test-config")).unwrap()
    }

    const FULL: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
  extensions:
  - name: pref-ext
    extension: {anything: [1, 2]}
clusters:
- name: zeta
  cluster:
    server: https://zeta.example:6443
    certificate-authority-data: QUJD
    proxy-url: socks5://localhost:1080
    extensions:
    - name: cluster_info
      extension:
        provider: minikube.sigs.k8s.io
        last-update: Mon, 03 Mar 2025 10:00:00 CET
  vendor-note: kept
- name: alpha
  cluster:
    server: https://alpha.example
    insecure-skip-tls-verify: true
users:
- name: eks
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [--region, eu-west-1, eks, get-token, --cluster-name, shop]
      env:
      - name: AWS_PROFILE
        value: "0123"
      interactiveMode: IfAvailable
      provideClusterInfo: false
- name: oidc
  user:
    auth-provider:
      name: oidc
      config:
        client-id: k8s
        idp-issuer-url: https://issuer.example
        extra-scopes: "yes"
contexts:
- name: zeta
  context: {cluster: zeta, user: eks, namespace: "null"}
current-context: zeta
x-unknown-top:
  nested: [a, {b: c}]
"#;

    #[test]
    fn round_trip_keeps_every_field_and_order() {
        let doc = parse(FULL);
        let back = round_trip(&doc);
        assert_eq!(back, doc);
        let keys: Vec<&str> = back.root().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "apiVersion",
                "kind",
                "preferences",
                "clusters",
                "users",
                "contexts",
                "current-context",
                "x-unknown-top"
            ]
        );
        assert_eq!(
            back.names(Section::Cluster).collect::<Vec<_>>(),
            ["zeta", "alpha"]
        );
        assert_eq!(back.root()["clusters"][0]["vendor-note"], json!("kept"));
        assert_eq!(
            back.root()["users"][0]["user"]["exec"]["env"][0]["value"],
            json!("0123")
        );
        assert_eq!(
            back.root()["contexts"][0]["context"]["namespace"],
            json!("null")
        );
    }

    #[test]
    fn strings_that_look_like_other_types_stay_strings() {
        let tricky = TRICKY_SCALARS;
        let mut root = Map::new();
        root.insert("values".into(), json!(tricky));
        let long = "word ".repeat(40);
        root.insert("long".into(), json!(long));
        for crlf in [false, true] {
            let doc = Kubeconfig {
                root: root.clone(),
                format: FileFormat {
                    crlf,
                    ..FileFormat::NEW_FILE
                },
                source: None,
            };
            assert_eq!(round_trip(&doc).root(), doc.root(), "crlf={crlf}");
        }
    }

    #[test]
    fn scalars_are_read_as_kubectl_reads_them() {
        // go-yaml v2 semantics, checked against kubectl in the corpus tests.
        let doc = parse("a: yes\nb: 0123\nc: on\nd: 1e3\ne: ~\nf: \"yes\"\ng: 0x1F\n");
        let root = doc.root();
        assert_eq!(root["a"], json!(true));
        assert_eq!(root["b"], json!(83));
        assert_eq!(root["c"], json!(true));
        assert_eq!(root["d"].as_f64(), Some(1000.0));
        assert_eq!(root["e"], Value::Null);
        assert_eq!(root["f"], json!("yes"));
        assert_eq!(root["g"], json!(31));
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_like_kubectl() {
        let doc = parse("current-context: a\ncurrent-context: b\n");
        assert_eq!(doc.current_context(), Some("b"));
    }

    #[test]
    fn crlf_and_bom_are_read_and_kept() {
        let text = "\u{feff}apiVersion: v1\r\nclusters:\r\n- name: c\r\n  cluster:\r\n    server: https://c\r\n";
        let doc = parse(text);
        assert_eq!(
            doc.format(),
            FileFormat {
                syntax: Syntax::Yaml,
                encoding: TextEncoding::Utf8Bom,
                crlf: true
            }
        );
        let bytes = doc.to_bytes(Path::new("x")).unwrap();
        assert!(bytes.starts_with(UTF8_BOM));
        let body = std::str::from_utf8(&bytes[3..]).unwrap();
        assert!(
            body.contains("\r\n") && !body.replace("\r\n", "").contains('\n'),
            "{body:?}"
        );
        assert_eq!(round_trip(&doc), doc);
    }

    #[test]
    fn utf16_from_powershell_is_read_and_kept() {
        let text = "apiVersion: v1\r\nclusters:\r\n- name: ü\r\n  cluster: {server: https://c}\r\n";
        for (bom, to_bytes) in [
            (UTF16LE_BOM, u16::to_le_bytes as fn(u16) -> [u8; 2]),
            (UTF16BE_BOM, u16::to_be_bytes),
        ] {
            let bytes: Vec<u8> = bom
                .iter()
                .copied()
                .chain(text.encode_utf16().flat_map(to_bytes))
                .collect();
            let doc = Kubeconfig::parse(&bytes, Path::new("x")).unwrap();
            assert!(doc.contains(Section::Cluster, "ü"));
            assert!(doc.format().crlf);
            assert_eq!(doc.to_bytes(Path::new("x")).unwrap()[..2], bom[..]);
            assert_eq!(round_trip(&doc), doc);
        }
    }

    #[test]
    fn json_stays_json() {
        let text = r#"{"kind":"Config","apiVersion":"v1","clusters":[{"name":"j","cluster":{"server":"https://j"}}]}"#;
        let doc = parse(text);
        assert_eq!(doc.format().syntax, Syntax::Json);
        let bytes = doc.to_bytes(Path::new("x")).unwrap();
        let again: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(again, Value::Object(doc.root().clone()));
        assert_eq!(doc.root().keys().next().map(String::as_str), Some("kind"));
    }

    #[test]
    fn yaml_flow_mapping_is_not_mistaken_for_broken_json() {
        let doc = parse("{apiVersion: v1, clusters: []}\n");
        assert_eq!(doc.format().syntax, Syntax::Yaml);
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_configs() {
        for text in ["", "\n\n", "# nothing yet\n", "\u{feff}"] {
            let doc = parse(text);
            assert!(doc.root().is_empty(), "{text:?}");
            assert_eq!(doc.current_context(), None);
        }
    }

    #[test]
    fn empty_current_context_means_none() {
        assert_eq!(parse("current-context: \"\"\n").current_context(), None);
        assert_eq!(parse("current-context:\n").current_context(), None);
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse_err(b"apiVersion: v1\nclusters:\n- name: a\n  cluster: {server: x\n");
        let KubeconfigError::Parse { at, path, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(path, Path::new("/k/config"));
        assert!(at.is_some(), "{err}");

        let err = parse_err(b"a: b\n  c: d\n");
        assert!(err.to_string().contains("at line 2, column 4"), "{err}");

        let err = parse_err(b"{\"clusters\": [}\n");
        assert!(err.to_string().contains("at line 1, column 15"), "{err}");
    }

    #[test]
    fn shape_errors_are_located_too() {
        let err = parse_err(b"apiVersion: v1\nclusters:\n  server: https://x\n");
        assert!(err.to_string().contains("line 3"), "{err}");

        let err = parse_err(b"contexts:\n- name: a\n- name: yes\n");
        assert!(err.to_string().contains("line 3"), "{err}");

        let err = parse_err(b"- just\n- a list\n");
        assert!(err.to_string().contains("line 1"), "{err}");

        let err = parse_err(b"{\"users\": {\"a\": 1}}");
        assert!(err.to_string().contains("line 1"), "{err}");

        let err = parse_err(b"current-context: [a]\n");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = parse_err(b"apiVersion: v1\nkind: Con\xfffig\n");
        assert!(err.to_string().contains("line 2, column 10"), "{err}");
    }

    #[test]
    fn multiple_documents_are_refused() {
        parse_err(b"apiVersion: v1\n---\napiVersion: v1\n");
    }

    #[test]
    fn push_entry_gives_a_new_file_the_kubectl_header() {
        let mut doc = Kubeconfig::empty();
        doc.push_entry(Section::User, json!({"name": "u"}));
        let keys: Vec<&str> = doc.root().keys().map(String::as_str).collect();
        assert_eq!(keys, ["apiVersion", "kind", "users"]);

        let mut doc = parse("apiVersion: v1\nusers: null\n");
        doc.push_entry(Section::User, json!({"name": "u"}));
        assert_eq!(doc.root()["users"], json!([{"name": "u"}]));
    }
}
