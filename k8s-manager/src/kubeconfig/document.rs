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
//! YAML 1.1 flavoured): `yes`/`on` are booleans, `0123` is octal. A key
//! given twice, which kubectl reads as its last value, is refused: the first
//! would be lost. serde-saphyr's emitter quotes every string that a
//! YAML 1.1 or 1.2 reader would take for something else (`"yes"`, `"0123"`,
//! `"1e3"`, `"null"`, `"~"`, `":"`), so each string reads back as the same
//! string. Block scalars are switched off: a long folded string is one more
//! way for two YAML readers to disagree, and kubeconfigs do not need them.
//!
//! The file's outer form is kept: JSON stays JSON, CRLF line endings stay
//! CRLF (Notepad), a UTF-8 byte order mark stays, UTF-16 (what Windows
//! PowerShell 5 writes with `>`) stays UTF-16.
//!
//! A file read is never written back whole: a change is written as an edit
//! of the file's own text ([`super::edit`]), and every other byte, comments,
//! anchors and layout included, stays as it was. Most kubeconfigs are plain
//! block-style YAML: those are read by the fast reader of [`super::layout`],
//! which also notes where each entry sits. Any other file (flow style, JSON,
//! document markers, anchors, tabs, ...) is read by the general YAML reader,
//! and when a change is to be written, [`super::outline`] places its parts;
//! that edit is read back and compared before it is written. A change that
//! cannot be written as an edit is refused, naming the construct in the way
//! and what to change ([`KubeconfigError::Unsupported`]). Only a file we
//! create is written whole by the emitter.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::{MessageFormatter, Spanned};

use super::edit::{self, Edits, Layout, Origin, Unsupported};
use super::error::{KubeconfigError, TextPosition};
use super::layout::{self, yaml_options};
use super::outline;
use super::schema;
use super::section::CURRENT_CONTEXT;
pub use super::section::Section;
use crate::fsutil;

/// No kubeconfig comes near this (a 1,500-context file is 3 MB); a file
/// larger than this is a wrong path, and is not read.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a kubeconfig file: a regular file of at most [`MAX_FILE_BYTES`],
/// without blocking on a FIFO.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, KubeconfigError> {
    fsutil::read_bounded(path, MAX_FILE_BYTES).map_err(|err| match err {
        fsutil::ReadError::NotRegular { kind } => KubeconfigError::NotRegularFile {
            path: path.to_path_buf(),
            kind,
        },
        // Links are followed here: a kubeconfig may be one.
        fsutil::ReadError::Symlink => KubeconfigError::NotRegularFile {
            path: path.to_path_buf(),
            kind: "symbolic link",
        },
        fsutil::ReadError::TooLarge { limit } => KubeconfigError::TooLarge {
            path: path.to_path_buf(),
            limit,
        },
        fsutil::ReadError::Io(source) => KubeconfigError::io("read", path, source),
    })
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16BE_BOM: &[u8] = b"\xFE\xFF";

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
    /// The text it was read from (`None` for a document not read from a
    /// file): changes are written as edits of that text.
    source: Option<Box<Source>>,
}

#[derive(Debug, Clone)]
struct Source {
    text: String,
    /// Where its parts sit, when the fast reader read it; else placed by
    /// the outline reader when a change is written.
    layout: Option<Layout>,
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
        Kubeconfig::parse(&read_file(path)?, path)
    }

    /// Parses the bytes of a kubeconfig; `origin` only names the file in
    /// errors. Refused: what is not YAML or JSON, what kubectl would not
    /// load (see [`super::schema`]), and what two readers could read two
    /// ways (a key given twice, several documents). The messages say where
    /// and what, never quoting the file's values, which may be secrets.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<Self, KubeconfigError> {
        let parse_error = |at: Option<TextPosition>, message: String| KubeconfigError::Parse {
            path: origin.to_path_buf(),
            at,
            message,
        };
        let (text, encoding) =
            decode(bytes).map_err(|(at, message)| parse_error(Some(at), message))?;
        let crlf = text.find('\n').is_some_and(|i| text[..i].ends_with('\r'));

        let fast = match text.trim_start().starts_with('{') {
            true => None,
            false => layout::parse(&text),
        };
        let (root, syntax, layout) = match fast {
            Some((root, layout)) => (root, Syntax::Yaml, Some(layout)),
            None => {
                let (value, syntax) =
                    parse_text(&text).map_err(|(at, message)| parse_error(at, message))?;
                let root = match value {
                    Value::Null => Map::new(),
                    Value::Object(map) => map,
                    _ => {
                        return Err(parse_error(
                            locate(&text, &[]),
                            "the top level must be a mapping (`apiVersion: v1`, `kind: Config`, \
                             `clusters: ...`)"
                                .to_string(),
                        ));
                    }
                };
                (root, syntax, None)
            }
        };
        if let Err(err) = schema::check(&root) {
            return Err(parse_error(locate(&text, &err.path), err.to_string()));
        }
        let source = Some(Box::new(Source {
            edits: Edits::new(&root),
            text,
            layout,
        }));
        Ok(Kubeconfig {
            root,
            format: FileFormat {
                syntax,
                encoding,
                crlf,
            },
            source,
        })
    }

    /// The bytes to write back, in the file's own format. `path` only names
    /// the file in errors. A document read from a file is written as an edit
    /// of its text, or not at all ([`KubeconfigError::Unsupported`]).
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, KubeconfigError> {
        if let Some(source) = self.source.as_deref() {
            let text = self
                .edited_text(source)
                .map_err(|reason| KubeconfigError::Unsupported {
                    path: path.to_path_buf(),
                    reason: reason.to_string(),
                })?;
            return Ok(encode(text, self.format.encoding));
        }
        let mut text = match self.format.syntax {
            Syntax::Yaml => emit_yaml(&self.root).ok_or_else(|| KubeconfigError::Serialize {
                path: path.to_path_buf(),
                message: "the YAML emitter failed".to_string(),
            })?,
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

    /// The source text with the changes written in place. A text the fast
    /// reader did not lay out is placed now, and the edit is read back: it
    /// must read as the document in memory, in the same syntax.
    fn edited_text(&self, source: &Source) -> Result<String, Unsupported> {
        let newline = if self.format.crlf { "\r\n" } else { "\n" };
        let emit = |value: &Value| emit_yaml(value);
        let render = |layout: &Layout| {
            edit::render(
                &source.text,
                layout,
                &source.edits,
                &self.root,
                newline,
                &emit,
            )
        };
        if let Some(layout) = &source.layout {
            return render(layout);
        }
        let text = render(&outline::read(&source.text)?)?;
        // JSON stays JSON (a YAML flow mapping may become JSON).
        let (read, syntax) = parse_text(&text).map_err(|_| Unsupported::Unverified)?;
        let read = match read {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            _ => return Err(Unsupported::Unverified),
        };
        match read == self.root && (syntax == Syntax::Json || self.format.syntax == Syntax::Yaml) {
            true => Ok(text),
            false => Err(Unsupported::Unverified),
        }
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Whether the document was read from a text, and so changes are
    /// written as edits of it (see the module documentation).
    pub fn edited_in_place(&self) -> bool {
        self.source.is_some()
    }

    /// Whether the fast reader laid the text out (plain block-style YAML).
    pub fn read_fast(&self) -> bool {
        self.source.as_ref().is_some_and(|s| s.layout.is_some())
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
            for (key, value) in [("apiVersion", "v1"), ("kind", "Config")] {
                self.add_key(key, Value::String(value.into()));
            }
        }
        if !self.root.contains_key(section.list_key()) {
            self.add_key(section.list_key(), Value::Null);
        }
        let slot = self
            .root
            .get_mut(section.list_key())
            .expect("the list was just added");
        if !slot.is_array() {
            // Missing or `null`: parse() rejects any other non-list.
            *slot = Value::Array(Vec::new());
        }
        slot.as_array_mut()
            .expect("the slot was just made a list")
            .push(entry);
        if let Some(source) = &mut self.source {
            source.edits.origins[section.index()].push(Origin::New);
        }
    }

    /// A top-level key the text does not have.
    fn add_key(&mut self, key: &str, value: Value) {
        self.root.insert(key.to_string(), value);
        if let Some(source) = &mut self.source {
            source.edits.added.push(key.to_string());
        }
    }

    /// Replaces the entry at `index` of one list.
    pub(crate) fn replace_entry(&mut self, section: Section, index: usize, entry: Value) {
        if let Some(Value::Array(list)) = self.root.get_mut(section.list_key()) {
            list[index] = entry;
            if let Some(source) = &mut self.source {
                source.edits.replaced(section, index);
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

    /// Sets `current-context`, in place when the key exists.
    pub(crate) fn set_current_context(&mut self, name: &str) {
        let name = Value::String(name.to_string());
        if !self.root.contains_key(CURRENT_CONTEXT) {
            self.add_key(CURRENT_CONTEXT, name);
            return;
        }
        self.root.insert(CURRENT_CONTEXT.to_string(), name);
        if let Some(source) = &mut self.source {
            source.edits.current_context = true;
        }
    }
}

/// The `name` of a named entry (`{name: x, cluster: {...}}`).
pub(crate) fn entry_name(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
}

/// A value in block-style YAML (lines ending in `\n`), every string quoted
/// where a YAML 1.1 or 1.2 reader could take it for something else.
fn emit_yaml(value: &impl serde::Serialize) -> Option<String> {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(value, options).ok()
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

type LocatedMessage = (Option<TextPosition>, String);

/// Parses the text as JSON when it looks like JSON (kubectl accepts both),
/// else as YAML.
fn parse_text(text: &str) -> Result<(Value, Syntax), LocatedMessage> {
    if text.trim_start().starts_with('{') {
        match serde_json::from_str::<UniqueKeys>(text) {
            Ok(UniqueKeys(value)) => return Ok((value, Syntax::Json)),
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

/// The reader's error in the user's terms: what is wrong and what to do,
/// never the reader's internals nor a quote of the file (which may hold a
/// key or a token).
fn yaml_error(err: &serde_saphyr::Error) -> LocatedMessage {
    use serde_saphyr::Error as E;
    let at = err.location().map(|l| TextPosition {
        line: l.line(),
        column: l.column(),
    });
    let message = match err.without_snippet() {
        E::DuplicateMappingKey { key, .. } => {
            let key = key.as_deref().filter(|k| plain_words(k));
            format!(
                "{} is given twice in one mapping: kubectl would keep only the last and \
                 silently drop the first; merge the two into one",
                key.map_or("a key".to_string(), |k| format!("the key {k:?}"))
            )
        }
        E::MultipleDocuments { .. } => "the file holds more than one YAML document (`---` \
             between them): kubectl reads only the first; keep one document per file"
            .to_string(),
        E::Budget { .. } => {
            "the file is too large or too deeply nested to be a kubeconfig".to_string()
        }
        E::InvalidUtf8Input => "the file is not UTF-8 text".to_string(),
        E::UnknownAnchor { .. } => "an alias (`*name`) refers to no anchor".to_string(),
        other => {
            let said = serde_saphyr::DefaultMessageFormatter.format_message(other);
            match plain_words(&said) {
                true => format!("this is not valid YAML: {said}"),
                false => "this is not valid YAML".to_string(),
            }
        }
    };
    (at, message)
}

/// Whether a reader's message is safe and useful to show: short words with
/// no quoted part, which could be a piece of the file.
fn plain_words(text: &str) -> bool {
    text.len() <= 120
        && !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_,.()/".contains(c))
}

/// A JSON value whose mappings give each key once: serde_json alone keeps
/// the last of a repeated key, silently.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> Result<UniqueKeys, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let UniqueKeys(value) = access.next_value()?;
            if map.contains_key(&key) {
                let key = Some(key.as_str()).filter(|k| plain_words(k));
                return Err(serde::de::Error::custom(format!(
                    "{} is given twice in one mapping: kubectl would keep only the last and \
                     silently drop the first; merge the two into one",
                    key.map_or("a key".to_string(), |k| format!("the key {k:?}"))
                )));
            }
            map.insert(key, value);
        }
        Ok(UniqueKeys(Value::Object(map)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut access: A,
    ) -> Result<UniqueKeys, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = access.next_element()? {
            items.push(item);
        }
        Ok(UniqueKeys(Value::Array(items)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::Null))
    }
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
    // serde_json's own messages are fixed phrases, never a piece of the file.
    let message = match message.as_str() {
        "recursion limit exceeded" => {
            "the file is too large or too deeply nested to be a kubeconfig".to_string()
        }
        _ => message,
    };
    (at, message)
}

/// Where the node at `path` starts in the text, found by reading the text
/// once more with positions. Only used for an error, so a valid file is
/// read once.
fn locate(text: &str, path: &[schema::Step]) -> Option<TextPosition> {
    let tree: Spanned<Tree> = serde_saphyr::from_str_with_options(text, yaml_options()).ok()?;
    let mut node = &tree;
    for step in path {
        node = match (&node.value, step) {
            (Tree::Map(entries), schema::Step::Key(key)) => {
                &entries.iter().rev().find(|(k, _)| k == key)?.1
            }
            (Tree::Seq(items), schema::Step::Index(i)) => items.get(*i)?,
            _ => return None,
        };
    }
    let at = node.referenced;
    Some(TextPosition {
        line: at.line(),
        column: at.column(),
    })
}

/// A YAML document as nodes with their positions, for [`locate`].
enum Tree {
    Map(Vec<(String, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML node")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            entries.push((key.0, map.next_value()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
}

/// A mapping key as text, whatever scalar it is.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(KeyText(match value {
            Value::String(s) => s,
            other => other.to_string(),
        }))
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
    fn a_key_given_twice_is_refused_where_it_is_repeated() {
        for (text, line) in [
            ("current-context: a\ncurrent-context: b\n", 2),
            (
                "clusters:\n- name: a\n  cluster: {server: x, server: y}\n",
                3,
            ),
            ("{\"users\": [], \"kind\": \"Config\", \"users\": []}", 1),
        ] {
            let KubeconfigError::Parse { at, message, .. } = parse_err(text.as_bytes()) else {
                panic!("{text}: not a parse error")
            };
            assert_eq!(at.map(|at| at.line), Some(line), "{text}: {message}");
            assert!(message.contains("given twice"), "{message}");
        }
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
