//! The fast path for large kubeconfigs: a reader for the plain block-style
//! YAML that kubectl and the cloud CLIs write, which also records where each
//! top-level key and each entry of the named lists sits in the text, so that
//! a change is written as an edit of those lines (see [`super::edit`]).
//!
//! Why: a user with 1,500 contexts has a 2–3 MB kubeconfig. Reading it with
//! the general YAML reader and writing it back with the emitter took 60–100 ms
//! per merge; this reader takes a few milliseconds, and an in-place edit
//! writes every entry we do not own back byte for byte, comments included.
//!
//! The reader accepts a deliberately small subset of YAML and gives up
//! (returns `None`) on everything else, and then the general reader (and its
//! error messages) takes over, with [`super::outline`] placing the parts a
//! change edits. Inside the subset it must read exactly what
//! the general reader reads: that is what the tests check, entry by entry, on
//! the kubectl corpus and on many variants. The subset:
//! - one document whose top level is a block mapping starting at column 0,
//!   maybe after a `---` line and before a `...` line (comments may follow
//!   those);
//! - block mappings and block sequences indented with spaces (no tabs
//!   anywhere), including the compact forms `key:\n- item` and `- key: v`;
//! - on a line: plain scalars, single- and double-quoted scalars, and flow
//!   collections (`[a, b]`, `{k: v}`) that end on that line, then an
//!   optional comment (but not the entries of `clusters`, `users` or
//!   `contexts` in flow style: the outline reader places those);
//! - plain scalars folded over more indented lines (go-yaml writes long
//!   strings so), and literal or folded block scalars (`|`, `>-`);
//! - keys that read as strings; no duplicate keys in one mapping.
//!
//! Outside it: block scalars with keep chomping (`|+`) or an indentation
//! digit, quoted scalars and flow collections over several lines, anchors,
//! aliases, tags, merge keys (`<<`), complex keys (`?`), directives, content
//! on a marker's line, tabs, control characters, and anything ambiguous.
//!
//! Scalars are resolved as the general reader resolves them: the plain
//! scalars whose meaning is obvious (words starting with a letter that are
//! not one of YAML 1.1's booleans or nulls, `true`, `false`, `null`) here,
//! every other one (numbers, dates, `yes`, `~`, escapes, ...) by asking the
//! general reader about that one scalar.

use std::cell::Cell;
use std::ops::Range;

use serde_json::{Map, Value};

use super::edit::{Layout, Root, TopKey, TopValue};
use super::section::Section;

/// Deeper than this is left to the general reader (which has its own
/// limits): block nesting is bounded by the indentation, flow nesting by a
/// count, so that the recursion here stays shallow.
const MAX_INDENT: usize = 200;
const MAX_FLOW_DEPTH: usize = 32;

/// Reads `text`, when it is in the subset: the document's top level and
/// where it sits.
pub(crate) fn parse(text: &str) -> Option<(Map<String, Value>, Layout)> {
    if !plain_text(text) {
        return None;
    }
    let mut reader = Reader {
        text,
        b: text.as_bytes(),
        pos: 0,
        peeked: Cell::new(None),
        keys: Vec::new(),
    };
    let mut first = reader.peek()?;
    if reader.marker(&first) == Some(b'-') {
        // `---` before the document, alone on its line or with a comment.
        if !reader.only_comment(first.content + 3, first.end) {
            return None;
        }
        reader.consume(&first);
        first = reader.peek()?;
    }
    if first.indent != 0 || reader.marker(&first).is_some() {
        return None;
    }
    let root = reader.mapping(first, true)?;
    let mut end = text.len();
    if let Some(next) = reader.peek() {
        // `...` may end the document, followed by comments only; another
        // document (`---`) is the general reader's to refuse.
        if reader.marker(&next) != Some(b'.') || !reader.only_comment(next.content + 3, next.end) {
            return None;
        }
        end = next.start;
        reader.consume(&next);
        if reader.peek().is_some() {
            return None;
        }
    }
    let layout = Layout {
        root: Root::Block { indent: 0, end },
        keys: reader.keys,
        anchors: Vec::new(),
        unsupported: None,
    };
    Some((root, layout))
}

/// No tab, no control character, no byte order mark or YAML 1.1 line
/// separator inside, and a CR only as part of CRLF.
fn plain_text(text: &str) -> bool {
    let b = text.as_bytes();
    let crlf_only = memchr::memchr_iter(b'\r', b).all(|i| b.get(i + 1) == Some(&b'\n'));
    // Printable ASCII or a line break, checked a block at a time (no early
    // exit inside a block, so that the loop vectorises).
    let printable = |c: u8| c.wrapping_sub(0x20) < 0x5F || c == b'\n' || c == b'\r';
    let ascii = b
        .chunks(64)
        .all(|block| block.iter().fold(true, |ok, &c| ok & printable(c)));
    if ascii {
        return crlf_only;
    }
    crlf_only
        && text.chars().all(|c| {
            if c.is_ascii() {
                printable(c as u8)
            } else {
                matches!(c, '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
                    && !matches!(c, '\u{FEFF}' | '\u{2028}' | '\u{2029}')
            }
        })
}

/// A line holding something (not blank, not only a comment).
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Where the physical line starts.
    start: usize,
    /// The column of the content (for `- key: v`, the column of `key`).
    indent: usize,
    /// Where the content starts.
    content: usize,
    /// Where the line ends, before its line break.
    end: usize,
    /// Where the next line starts.
    next: usize,
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    /// The start of the first line not read yet.
    pos: usize,
    /// The last answer of [`Reader::peek`] and where it looked from.
    peeked: Cell<Option<(usize, Option<Line>)>>,
    /// The top-level keys, filled while reading the root mapping.
    keys: Vec<TopKey>,
}

impl<'a> Reader<'a> {
    /// The next line with content, without consuming it.
    fn peek(&self) -> Option<Line> {
        if let Some((from, line)) = self.peeked.get()
            && from == self.pos
        {
            return line;
        }
        let line = self.find_line();
        self.peeked.set(Some((self.pos, line)));
        line
    }

    fn find_line(&self) -> Option<Line> {
        let mut start = self.pos;
        while start < self.b.len() {
            let (content, end, next) = self.physical_line(start);
            if content < end && self.b[content] != b'#' {
                return Some(Line {
                    start,
                    indent: content - start,
                    content,
                    end,
                    next,
                });
            }
            start = next;
        }
        None
    }

    /// The line starting at `start`: where its content starts (after the
    /// indentation), where it ends (before the line break), and where the
    /// next one starts.
    fn physical_line(&self, start: usize) -> (usize, usize, usize) {
        let next = memchr::memchr(b'\n', &self.b[start..]).map_or(self.b.len(), |i| start + i + 1);
        let mut end = if next > start && self.b[next - 1] == b'\n' {
            next - 1
        } else {
            next
        };
        if end > start && self.b[end - 1] == b'\r' {
            end -= 1;
        }
        let content = start
            + self.b[start..end]
                .iter()
                .take_while(|&&c| c == b' ')
                .count();
        (content, end, next)
    }

    fn consume(&mut self, line: &Line) {
        self.pos = line.next;
    }

    /// Whether the line is a document marker (`---` or `...` at column 0,
    /// then a space or the line's end): which one.
    fn marker(&self, line: &Line) -> Option<u8> {
        let b = &self.b[line.content..line.end];
        let marker = matches!(b.get(..3), Some(b"---" | b"...")) && line.indent == 0;
        (marker && matches!(b.get(3), None | Some(b' '))).then_some(b[0])
    }

    /// Whether only spaces and maybe a comment are between `at` and `end`.
    fn only_comment(&self, at: usize, end: usize) -> bool {
        let at = skip_spaces(self.b, at, end);
        at == end || self.b[at] == b'#'
    }

    /// A block node starting on `line`: a sequence or a mapping.
    fn block(&mut self, line: Line) -> Option<Value> {
        if is_item(self.b, &line) {
            self.sequence(line).map(|(items, _)| Value::Array(items))
        } else {
            self.mapping(line, false).map(Value::Object)
        }
    }

    /// A block mapping whose first key is at `line.content`, at column
    /// `line.indent`. At the top level, records the layout of every key.
    fn mapping(&mut self, mut line: Line, top: bool) -> Option<Map<String, Value>> {
        let indent = line.indent;
        if indent > MAX_INDENT {
            return None;
        }
        let mut map = Map::new();
        loop {
            let (key, colon_end) = self.key(line.content, line.end)?;
            if map.contains_key(&key) {
                return None;
            }
            let rest = skip_spaces(self.b, colon_end, line.end);
            let (value, top_value) = if rest == line.end || self.b[rest] == b'#' {
                self.consume(&line);
                match self.peek() {
                    Some(next) if next.indent > indent => {
                        if is_item(self.b, &next) {
                            let (items, spans) = self.sequence(next)?;
                            let layout = TopValue::Sequence {
                                indent: next.indent,
                                head_end: colon_end,
                                items: spans,
                            };
                            (Value::Array(items), layout)
                        } else {
                            (Value::Object(self.mapping(next, false)?), TopValue::Other)
                        }
                    }
                    Some(next) if next.indent == indent && is_item(self.b, &next) => {
                        let (items, spans) = self.sequence(next)?;
                        let layout = TopValue::Sequence {
                            indent,
                            head_end: colon_end,
                            items: spans,
                        };
                        (Value::Array(items), layout)
                    }
                    _ => (
                        Value::Null,
                        TopValue::Scalar {
                            span: colon_end..colon_end,
                        },
                    ),
                }
            } else {
                let (value, end) = self.inline(&line, rest, indent)?;
                // A list written in flow style keeps it: the outline reader
                // places its entries.
                let listed = Section::ALL.iter().any(|s| s.list_key() == key);
                if top && listed && value.as_array().is_some_and(|a| !a.is_empty()) {
                    return None;
                }
                (value, TopValue::Scalar { span: rest..end })
            };
            if top {
                self.keys.push(TopKey {
                    name: key.clone(),
                    key: line.content..colon_end - 1,
                    colon_end: Some(colon_end),
                    value: top_value,
                    anchor: None,
                    explicit: false,
                });
            }
            map.insert(key, value);
            match self.peek() {
                Some(next) if self.marker(&next).is_some() => return Some(map),
                Some(next) if next.indent == indent && !is_item(self.b, &next) => line = next,
                Some(next) if next.indent >= indent => return None,
                _ => return Some(map),
            }
        }
    }

    /// A block sequence whose first `-` is on `line`; also where each item
    /// sits.
    fn sequence(&mut self, mut line: Line) -> Option<(Vec<Value>, Vec<Range<usize>>)> {
        let indent = line.indent;
        if indent > MAX_INDENT {
            return None;
        }
        let mut items = Vec::new();
        let mut spans = Vec::new();
        loop {
            // Sequences start at the beginning of a physical line.
            if line.content != line.start + indent {
                return None;
            }
            let rest = skip_spaces(self.b, line.content + 1, line.end);
            let value = if rest == line.end {
                self.consume(&line);
                match self.peek() {
                    Some(next) if next.indent > indent => self.block(next)?,
                    _ => Value::Null,
                }
            } else if self.b[rest] == b'#'
                || self.b[rest] == b'-' && (rest + 1 == line.end || self.b[rest + 1] == b' ')
            {
                // `- # x` (a comment first) and `- - x` are left to the general reader.
                return None;
            } else if self.key(rest, line.end).is_some() {
                let inner = Line {
                    indent: rest - line.start,
                    content: rest,
                    ..line
                };
                Value::Object(self.mapping(inner, false)?)
            } else {
                self.inline(&line, rest, indent)?.0
            };
            items.push(value);
            spans.push(line.start..self.pos);
            match self.peek() {
                Some(next) if next.indent == indent && is_item(self.b, &next) => line = next,
                Some(next) if next.indent > indent => return None,
                _ => return Some((items, spans)),
            }
        }
    }

    /// A key at `at` followed by `:` and a space or the end of the line:
    /// the key and where its `:` ends.
    fn key(&self, at: usize, end: usize) -> Option<(String, usize)> {
        let (key, after) = match self.b[at] {
            b'"' | b'\'' => {
                let (value, after) = self.quoted(at, end)?;
                (value, after)
            }
            c if is_indicator(c) => return None,
            _ => {
                let colon = find_key_colon(self.b, at, end)?;
                let raw = self.text[at..colon].trim_end_matches(' ');
                if raw.contains(" #") || raw == "<<" || raw.len() > 1024 {
                    return None;
                }
                (resolve_plain(raw)?, colon)
            }
        };
        let Value::String(key) = key else {
            return None;
        };
        if self.b.get(after) != Some(&b':') {
            return None;
        }
        let colon_end = after + 1;
        if colon_end < end && self.b[colon_end] != b' ' {
            return None;
        }
        Some((key, colon_end))
    }

    /// The value starting at `at` on `line`, of a key or `- ` at column
    /// `indent`: on this line, or a plain scalar folded over more indented
    /// lines (as go-yaml writes long strings, e.g. GKE's `installHint`).
    /// Only spaces and a comment may follow it. Consumes its lines; returns
    /// the value and where it ends.
    fn inline(&mut self, line: &Line, at: usize, indent: usize) -> Option<(Value, usize)> {
        let end = line.end;
        let (value, mut value_end, open) = match self.b[at] {
            b'"' | b'\'' => {
                let (value, value_end) = self.quoted(at, end)?;
                (Some(value), value_end, false)
            }
            b'[' | b'{' => {
                let (value, value_end) = self.flow(at, end, 0)?;
                (Some(value), value_end, false)
            }
            b'|' | b'>' => return self.block_scalar(line, at, indent),
            _ if !starts_plain(self.b, at, end, false) => return None,
            _ => {
                let (raw, stop) = self.plain_on_line(at, end)?;
                (None, at + raw.len(), stop == end)
            }
        };
        let after = skip_spaces(self.b, value_end, end);
        if !(after == end || (self.b[after] == b'#' && after > value_end)) {
            return None;
        }
        self.consume(line);
        let value = match value {
            Some(value) => value,
            None => {
                let first = &self.text[at..value_end];
                let mut folded: Option<String> = None;
                // Continued on the next lines, unless a comment or a blank line ends it.
                while let Some(next) = self.peek().filter(|n| open && n.start == self.pos) {
                    if next.indent <= indent || !starts_plain(self.b, next.content, next.end, false)
                    {
                        break;
                    }
                    let (raw, stop) = self.plain_on_line(next.content, next.end)?;
                    if stop != next.end {
                        return None;
                    }
                    let folded = folded.get_or_insert_with(|| first.to_string());
                    folded.push(' ');
                    folded.push_str(raw);
                    value_end = next.content + raw.len();
                    self.consume(&next);
                }
                resolve_plain(folded.as_deref().unwrap_or(first))?
            }
        };
        if self.peek().is_some_and(|next| next.indent > indent) {
            return None;
        }
        Some((value, value_end))
    }

    /// A literal or folded block scalar whose header (`|`, `>-`, ...) is at
    /// `at`, of a key or `- ` at column `indent`: its lines are those after
    /// the header that are blank or more indented. Its value is the general
    /// reader's: block scalars have rules of their own (chomping, folding)
    /// and are rare in kubeconfigs. Headers with an indentation digit, and
    /// keep chomping (`+`, where trailing blank lines count), step aside.
    fn block_scalar(&mut self, line: &Line, at: usize, indent: usize) -> Option<(Value, usize)> {
        let mut header_end = at + 1;
        if header_end < line.end && self.b[header_end] == b'-' {
            header_end += 1;
        }
        let after = skip_spaces(self.b, header_end, line.end);
        if !(after == line.end || self.b[after] == b'#' && after > header_end) {
            return None;
        }
        self.consume(line);
        let mut value_end = header_end;
        let mut start = self.pos;
        while start < self.b.len() {
            let (content, end, next) = self.physical_line(start);
            if content < end {
                if content - start <= indent {
                    break;
                }
                value_end = end;
                self.pos = next;
            }
            start = next;
        }
        let snippet = format!(
            "k: {}
",
            &self.text[at..value_end]
        );
        let Value::Object(mut map) =
            serde_saphyr::from_str_with_options::<Value>(&snippet, yaml_options()).ok()?
        else {
            return None;
        };
        match map.remove("k") {
            Some(value @ Value::String(_)) => Some((value, value_end)),
            _ => None,
        }
    }

    /// A plain scalar's text on one line from `at`, and where it stops: at
    /// a comment, or at the end of the line. `None` for `: ` (a key inside a
    /// value).
    fn plain_on_line(&self, at: usize, end: usize) -> Option<(&'a str, usize)> {
        // A comment (` #`) or a mapping indicator (`: `) ends it.
        let stop = memchr::memchr2_iter(b'#', b':', &self.b[at..end])
            .map(|i| at + i)
            .find(|&i| {
                if self.b[i] == b'#' {
                    self.b[i - 1] == b' '
                } else {
                    i + 1 < end && self.b[i + 1] == b' '
                }
            })
            .unwrap_or(end);
        if stop < end && self.b[stop] == b':' {
            return None;
        }
        let raw = self.text[at..stop].trim_end_matches(' ');
        if raw.ends_with(':') {
            return None;
        }
        Some((raw, stop))
    }

    /// A quoted scalar starting at `at` and closed on this line.
    fn quoted(&self, at: usize, end: usize) -> Option<(Value, usize)> {
        let quote = self.b[at];
        let mut i = at + 1;
        let mut escaped = false;
        while i < end {
            match self.b[i] {
                b'\\' if quote == b'"' => {
                    escaped = true;
                    i += 2;
                    continue;
                }
                b'\'' if quote == b'\'' && self.b.get(i + 1) == Some(&b'\'') => {
                    escaped = true;
                    i += 2;
                    continue;
                }
                c if c == quote => break,
                _ => i += 1,
            }
        }
        if i >= end {
            return None;
        }
        let token = &self.text[at..=i];
        let inner = &self.text[at + 1..i];
        let value = match (quote, escaped) {
            (_, false) => inner.to_string(),
            (b'\'', true) => inner.replace("''", "'"),
            // Escapes (`\n`, `\u00e9`, ...) are the general reader's to decode.
            _ => match general_scalar(token)? {
                Value::String(s) => s,
                _ => return None,
            },
        };
        Some((Value::String(value), i + 1))
    }

    /// A flow collection starting at `at` and closed on this line.
    fn flow(&self, at: usize, end: usize, depth: usize) -> Option<(Value, usize)> {
        if depth > MAX_FLOW_DEPTH {
            return None;
        }
        let close = if self.b[at] == b'[' { b']' } else { b'}' };
        let mut i = skip_spaces(self.b, at + 1, end);
        let mut seq = Vec::new();
        let mut map = Map::new();
        if i < end && self.b[i] == close {
            return Some((collection(close, seq, map), i + 1));
        }
        loop {
            if i >= end {
                return None;
            }
            if close == b']' {
                let (value, after) = self.flow_node(i, end, depth)?;
                seq.push(value);
                i = skip_spaces(self.b, after, end);
            } else {
                let (key, after) = self.flow_node(i, end, depth)?;
                let Value::String(key) = key else {
                    return None;
                };
                if self.b.get(after) != Some(&b':') || self.b.get(after + 1) != Some(&b' ') {
                    return None;
                }
                let (value, after) =
                    self.flow_node(skip_spaces(self.b, after + 1, end), end, depth)?;
                if map.insert(key, value).is_some() {
                    return None;
                }
                i = skip_spaces(self.b, after, end);
            }
            match self.b.get(i) {
                Some(&b',') if i < end => {
                    i = skip_spaces(self.b, i + 1, end);
                    if i >= end || self.b[i] == close {
                        return None;
                    }
                }
                Some(&c) if c == close && i < end => {
                    return Some((collection(close, seq, map), i + 1));
                }
                _ => return None,
            }
        }
    }

    /// One node inside a flow collection: where it ends is where the next
    /// `,`, `:`, `]` or `}` is looked for.
    fn flow_node(&self, at: usize, end: usize, depth: usize) -> Option<(Value, usize)> {
        if at >= end {
            return None;
        }
        match self.b[at] {
            b'"' | b'\'' => self.quoted(at, end),
            b'[' | b'{' => self.flow(at, end, depth + 1),
            _ if !starts_plain(self.b, at, end, true) => None,
            _ => {
                let stop = find(self.b, at, end, |b, i| {
                    matches!(b[i], b',' | b'[' | b']' | b'{' | b'}')
                        || b[i] == b'#' && b[i - 1] == b' '
                        || b[i] == b':'
                            && matches!(b.get(i + 1), None | Some(b' ' | b',' | b']' | b'}'))
                })
                .unwrap_or(end);
                if stop < end && matches!(self.b[stop], b'[' | b'{' | b'#') {
                    return None;
                }
                let raw = self.text[at..stop].trim_end_matches(' ');
                if raw.is_empty() {
                    return None;
                }
                Some((resolve_plain(raw)?, at + raw.len()))
            }
        }
    }
}

fn collection(close: u8, seq: Vec<Value>, map: Map<String, Value>) -> Value {
    if close == b']' {
        Value::Array(seq)
    } else {
        Value::Object(map)
    }
}

/// Whether the line is a sequence entry: `-` then a space or its end.
fn is_item(b: &[u8], line: &Line) -> bool {
    b[line.content] == b'-' && (line.content + 1 == line.end || b[line.content + 1] == b' ')
}

/// Characters that give a scalar's first character a meaning in YAML.
fn is_indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
    )
}

/// Whether a plain scalar may start at `at`: not with an indicator, except
/// `-`, `?` and `:` followed by a character that cannot end it (`--region`).
fn starts_plain(b: &[u8], at: usize, end: usize, flow: bool) -> bool {
    match b[at] {
        b'-' | b'?' | b':' => b[..end].get(at + 1).is_some_and(|&c| {
            c != b' ' && !(flow && matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
        }),
        c => !is_indicator(c),
    }
}

/// The `:` ending a plain key: followed by a space or the end of the line.
fn find_key_colon(b: &[u8], at: usize, end: usize) -> Option<usize> {
    find(b, at, end, |b, i| {
        b[i] == b':' && (i + 1 == end || b[i + 1] == b' ')
    })
}

fn find(b: &[u8], from: usize, end: usize, hit: impl Fn(&[u8], usize) -> bool) -> Option<usize> {
    (from..end).find(|&i| hit(&b[..end], i))
}

fn skip_spaces(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && b[i] == b' ' {
        i += 1;
    }
    i
}

/// What a plain scalar means, as the general reader (YAML 1.1 flavoured, as
/// kubectl) reads it.
fn resolve_plain(raw: &str) -> Option<Value> {
    match raw {
        "" => return None,
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        "null" => return Some(Value::Null),
        _ => {}
    }
    let b = raw.as_bytes();
    let obvious = match b[0] {
        c if c.is_ascii_alphabetic() => !special_word(raw),
        b'/' => true,
        b'-' => b.len() > 2 && b[1] == b'-' && b[2].is_ascii_alphabetic(),
        // Numbers and dates use no letters but these (`0x1F`, `0o17`, `1e3`,
        // `2001-12-14t21:59:43z`); a hex id or token usually has another.
        b'0'..=b'9' => {
            !b.iter().any(|c| matches!(c, b'x' | b'X'))
                && b.iter().any(|c| {
                    c.is_ascii_alphabetic()
                        && !matches!(
                            c,
                            b'e' | b'E' | b'o' | b'O' | b'b' | b'B' | b't' | b'T' | b'z' | b'Z'
                        )
                })
        }
        _ => false,
    };
    if obvious {
        return Some(Value::String(raw.to_string()));
    }
    general_scalar(raw)
}

/// What the general reader makes of one scalar token, read as a mapping's
/// value (alone, `---` would be a document marker).
fn general_scalar(token: &str) -> Option<Value> {
    let text = format!("k: {token}\n");
    let Value::Object(mut map) =
        serde_saphyr::from_str_with_options::<Value>(&text, yaml_options()).ok()?
    else {
        return None;
    };
    match map.remove("k")? {
        value @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) => Some(value),
        _ => None,
    }
}

/// Words that YAML 1.1 or a float parser may read as something else, in any
/// case (compared without allocating: every key goes through here).
fn special_word(raw: &str) -> bool {
    const WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "inf", "nan", "infinity",
    ];
    raw.len() <= 8 && WORDS.iter().any(|w| w.eq_ignore_ascii_case(raw))
}

/// The reader options that make serde-saphyr see scalars as kubectl does.
pub(super) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // go-yaml v2 reads `0123` as octal 83.
        legacy_octal_numbers: true,
        // go-yaml v2 (non-strict, as sigs.k8s.io/yaml uses it) keeps the last
        // of duplicate keys, silently dropping the first: two `clusters:`
        // lists in a hand-edited file would lose one. Ambiguous: refused.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeconfig::document::TRICKY_SCALARS;
    use crate::kubeconfig::samples::{CORPUS, TYPICAL};

    /// What the general reader reads (`None`: it refuses the text).
    fn general(text: &str) -> Option<Value> {
        serde_saphyr::from_str_with_options::<Value>(text, yaml_options()).ok()
    }

    /// The fast reader either steps aside or reads exactly what the general
    /// reader reads; never does it accept what the general reader refuses.
    /// Returns whether it read the text.
    fn agrees(text: &str) -> bool {
        match parse(text) {
            None => false,
            Some((root, _)) => {
                assert_eq!(
                    general(text),
                    Some(Value::Object(root)),
                    "the fast reader disagrees on {text:?}"
                );
                true
            }
        }
    }

    #[test]
    fn reads_the_corpus_and_typical_files_as_the_general_reader() {
        for text in CORPUS.iter().chain([&TYPICAL]) {
            let text = text.trim_start_matches('\u{feff}');
            assert!(agrees(text), "the fast reader stepped aside on {text}");
        }
    }

    #[test]
    fn plain_scalars_resolve_as_the_general_reader_resolves_them() {
        // Beyond the document's tricky strings: numbers, dates, indicators.
        let scalars = TRICKY_SCALARS.iter().chain(&[
            "Infinity",
            "-Inf",
            "-.Inf",
            ".NaN",
            "inf",
            "nan",
            "0b101",
            "190:20:30",
            "2001-12-14t21:59:43.10-05:00",
            "--region",
            "-x",
            "--1",
            "-",
            "?x",
            ":x",
            "a:b",
            "a,b",
            "a]b",
            "a}b",
            "a[b",
            "a{b",
            "deadbeef",
            "0a1b2c",
            "1a",
            "123abc",
            "12e",
            "1E5",
            "0xZZ",
            "1.2.3",
            "v1",
            "/usr/bin/aws",
            "C:/x",
            "a b  c",
            "a#b",
            "a@b",
            "a'b",
            "a\"b",
            "a\\b",
            "héllo",
            "日本",
            "x\u{a0}y",
        ]);
        let mut read = 0;
        let count = scalars.clone().count();
        for scalar in scalars {
            for doc in [
                format!("k: {scalar}\n"),
                format!("k: {scalar} # note\n"),
                format!("k:\n- {scalar}\n"),
                format!("k: [{scalar}]\n"),
                format!("k: [{scalar}, x]\n"),
                format!("k: {{a: {scalar}}}\n"),
                format!("{scalar}: v\n"),
                format!("k: '{scalar}'\n"),
                format!("k: \"{scalar}\"\n"),
            ] {
                read += usize::from(agrees(&doc));
            }
        }
        // Most of these are in the subset: the fast reader does the work.
        assert!(read > count * 5, "only {read} of {} read", count * 9);
    }

    #[test]
    fn reads_folded_and_block_scalars_as_the_general_reader() {
        let inside = [
            "a: b\n  c\n",
            "a: long text\n  folded by go-yaml  \n   over three lines\nb: c\n",
            "k:\n- x\n  y\n- z\n",
            "a:\n- x\n  y\n",
            "a: |\n  text\n",
            "a: >-\n  text\n  more\n\n  para\nb: c\n",
            "a:\n  b: |\n    line 1\n      indented\n    # not a comment\n\n  c: d\n",
            "k:\n- |-\n  x\n- >\n  y\n",
            "a: | # comment\n  text\n",
            "a: 12\n  34\n",
            "---\napiVersion: v1\n",
            "--- # mine\napiVersion: v1\n...\n# after\n",
            "a: |\n  text\n...\n",
            "a: b\n  c\n...\n",
        ];
        for text in inside {
            assert!(agrees(text), "stepped aside on {text:?}");
        }
    }

    #[test]
    fn steps_aside_on_what_is_outside_the_subset() {
        let outside = [
            "",
            "# only a comment\n",
            "--- !!map\napiVersion: v1\n",
            "---\n",
            "apiVersion: v1\n...\nkind: Config\n",
            "apiVersion: v1\n---\nkind: Config\n",
            "%YAML 1.1\n---\na: b\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: |+\n  text\n\n",
            "a: |2\n   text\n",
            "a: b\n\n  c\n",
            "a: b\n  # c\n  d\n",
            "a: b\n  - c\n",
            "a: 'b\n  c'\n",
            "a: \"b\n  c\"\n",
            "a: [b,\n  c]\n",
            "a:\tb\n",
            "\ta: b\n",
            "a: b\na: c\n",
            "<<: {a: b}\n",
            "? a\n: b\n",
            "- a\n- b\n",
            "  a: b\n",
            "a:\n  - - b\n",
            "a: [b, ]\n",
            "a: {b}\n",
            "a: {b: c, b: d}\n",
            "a: b: c\n",
            "a: x\rb: y\n",
            "a: \u{feff}b\n",
            "a: \u{1}\n",
            "yes: b\n",
            "1: b\n",
            &"[".repeat(100_000),
            &format!("a: {}{}\n", "[".repeat(100), "]".repeat(100)),
            "a:\n  b\n",
        ];
        for text in outside {
            assert!(parse(text).is_none(), "read {text:?}");
        }
    }

    #[test]
    fn never_accepts_what_the_general_reader_refuses() {
        let broken = [
            "a: b\n c: d\n",
            "a:\n  b: c\n d: e\n",
            "a: [b\n",
            "a: {b: c\n",
            "a: 'b\n",
            "a: \"b\n",
            "a: \"b\" c\n",
            "a: 'b' c\n",
            "a: [b] c\n",
            "a:\n  - b\n  c: d\n",
            "a:\n  b: c\n  - d\n",
            "a: b\n- c\n",
            "a: @b\n",
            "a: `b\n",
            "a: \"\\q\"\n",
            "clusters:\n- name: a\n   cluster: {}\n",
        ];
        for text in broken {
            assert!(general(text).is_none(), "the general reader reads {text:?}");
            assert!(parse(text).is_none(), "the fast reader read {text:?}");
        }
    }

    /// Every one of these lines, put anywhere in the typical file: the fast
    /// reader never disagrees with the general one.
    #[test]
    fn insertions_anywhere_never_make_the_readers_disagree() {
        let snippets = [
            "# comment",
            "",
            "   ",
            "x: y",
            "  x: y",
            "    x: y",
            "- x",
            "  - x",
            "- name: z",
            "  - name: z",
            "x:",
            "  x:",
            "x: [a, {b: c}]",
            "  x: 'q''s' # c",
            "x: \"a\\tb\"",
            "...",
            "---",
            "x: &a y",
            "x: |",
            "  continued",
            "      continued more",
            "name: dup",
            "  name: dup",
            "current-context: other",
            "x: a: b",
            "x: - a",
            "- - a",
            "-",
            "  -",
            "x: {a: [b, c], d: 'e'}",
        ];
        let lines: Vec<&str> = TYPICAL.lines().collect();
        let mut read = 0;
        let mut cases = 0;
        for snippet in snippets {
            for at in 0..=lines.len() {
                let mut doc = lines[..at].to_vec();
                doc.push(snippet);
                doc.extend(&lines[at..]);
                read += usize::from(agrees(&(doc.join("\n") + "\n")));
                cases += 1;
                // The same line instead of one of the file's own.
                if at < lines.len() {
                    let mut doc = lines.clone();
                    doc[at] = snippet;
                    agrees(&(doc.join("\n") + "\n"));
                }
            }
        }
        assert!(read > cases / 4, "only {read} of {cases} read");
    }

    /// Thousands of small random edits of real-shaped files (a character
    /// dropped, doubled, or one with a meaning in YAML put in): whatever the
    /// fast reader reads, it reads as the general reader does.
    #[test]
    fn random_edits_never_make_the_readers_disagree() {
        let alphabet = b":#-'\"[]{}|>?&*!,. \n\n  ab0";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            // xorshift64*: a fixed sequence, so a failure is reproducible.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        };
        let (mut read, mut cases) = (0, 0);
        for original in [TYPICAL, CORPUS[0], CORPUS[1], CORPUS[2]] {
            for _ in 0..1500 {
                let mut bytes = original.as_bytes().to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(bytes.len());
                    match next(3) {
                        0 => {
                            bytes.remove(at);
                        }
                        1 => bytes.insert(at, bytes[at]),
                        _ => bytes.insert(at, alphabet[next(alphabet.len())]),
                    }
                }
                let Ok(text) = String::from_utf8(bytes) else {
                    continue;
                };
                read += usize::from(agrees(&text));
                cases += 1;
            }
        }
        assert!(read > cases / 4, "only {read} of {cases} read");
    }
}
