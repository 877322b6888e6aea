//! Changes written as edits of the user's own text, never as a new rendering
//! of the file: only the entries a merge or remove changes, the value of
//! `current-context`, and the keys that are new are written; every other byte,
//! comments, quoting, blank lines, anchors and style included, stays as it was.
//!
//! Where things sit comes from one of two readers: [`super::layout`], the fast
//! reader of the plain block-style YAML nearly every kubeconfig is, or
//! [`super::outline`], which places the same things in any other shape YAML
//! allows (flow style and JSON, document markers, anchors and aliases, tabs,
//! indented top levels, ...). Both give a [`Layout`].
//!
//! What is written takes the style of where it goes: block YAML in a block
//! collection, indented as its neighbours, and JSON in a flow collection
//! (`{...}`, `[...]`): JSON is also YAML flow style, reads the same to every
//! YAML reader, and keeps a JSON file JSON. Entries are removed with the
//! lines they fill and one comma, never with a comment around them.
//!
//! A change that cannot be written without touching what is not ours is
//! refused with an [`Unsupported`] that says which construct is in the way
//! and what to change, and the caller leaves the file untouched: an entry
//! that defines an anchor used elsewhere, a list that is an alias of a node
//! written elsewhere, a top level that takes keys from a merge key (`<<`).

use std::fmt;
use std::ops::Range;

use serde_json::{Map, Value};

use super::section::{CURRENT_CONTEXT, Section};

/// Where the parts of a document a merge or remove edits sit in its text
/// (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) root: Root,
    /// The top-level keys (at least every one a merge or remove edits).
    pub(crate) keys: Vec<TopKey>,
    /// Every anchor of the text and where its aliases are (none in the fast
    /// reader's subset).
    pub(crate) anchors: Vec<Anchor>,
    /// Why no change at all can be written as an edit of this text.
    pub(crate) unsupported: Option<Unsupported>,
}

/// The document's top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Root {
    /// A block mapping whose keys are at column `indent`; new keys go at
    /// `end` (before a `...` marker, else at the end of the text).
    Block { indent: usize, end: usize },
    /// A flow mapping (JSON included): its `{` and `}`, and its last entry
    /// (from the key to the end of the value).
    Flow {
        open: usize,
        close: usize,
        last: Option<Range<usize>>,
    },
    /// No mapping: an empty document (nothing, comments, `---`) or one holding
    /// only a null. New keys replace `at`: a `null` written out, or nothing.
    Empty { at: Range<usize> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopKey {
    pub(crate) name: String,
    /// The key itself, with any anchor or tag.
    pub(crate) key: Range<usize>,
    /// Just after the key's `:`; `None` for a flow entry without one (`{a}`).
    pub(crate) colon_end: Option<usize>,
    pub(crate) value: TopValue,
    /// The anchor defined on the value, as an index into [`Layout::anchors`].
    pub(crate) anchor: Option<usize>,
    /// Written as an explicit key (`? key`).
    pub(crate) explicit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopValue {
    /// A scalar, or `[]` in a block mapping: where it is, with its anchor or
    /// tag (empty, just after the `:`, when there is nothing at all).
    Scalar { span: Range<usize> },
    /// A block sequence whose `-` are at column `indent`: each entry from the
    /// start of its `-` line to the end of its last line (line break
    /// included); `head_end` is where the key's line ends (before a comment).
    Sequence {
        indent: usize,
        head_end: usize,
        items: Vec<Range<usize>>,
    },
    /// A flow sequence: its `[` and `]`, and each entry (anchor and tag included).
    FlowSequence {
        open: usize,
        close: usize,
        items: Vec<Range<usize>>,
    },
    /// An alias (`*name`) of a node written elsewhere.
    Alias { span: Range<usize> },
    /// Anything else (a mapping): never edited.
    Other,
}

/// An anchor (`&name`) and its aliases (`*name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Anchor {
    pub(crate) name: String,
    /// Where `&name` is.
    pub(crate) token: usize,
    /// Where each `*name` referring to this definition is.
    pub(crate) aliases: Vec<usize>,
}

impl Layout {
    pub(crate) fn key(&self, name: &str) -> Option<&TopKey> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// Why a change cannot be written as an edit of the file: what is in the
/// way, and what the user can change so that it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsupported {
    /// `<<: *base` at the top level: keys we would edit may live elsewhere.
    MergeKeyAtTop,
    /// `? clusters` followed by `: ...`.
    ExplicitKey { key: &'static str },
    /// `clusters: *all`: the list is written elsewhere, under an anchor.
    AliasedValue { key: &'static str },
    /// `clusters: &all [...]` with `*all` elsewhere: a new entry would show
    /// there too.
    AnchoredValue { key: &'static str, anchor: String },
    /// The text we replace or remove defines an anchor used outside it.
    AnchorUsedElsewhere { anchor: String, line: usize },
    /// The outline reader could not place something it needs (a rare
    /// construct around a value we edit).
    Shape(&'static str),
    /// The edited text did not read back as the document in memory: a bug
    /// of ours, caught before anything is written.
    Unverified,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::MergeKeyAtTop => f.write_str(
                "its top level takes keys from a merge key (`<<: *name`), so the keys to change may \
                 be written elsewhere; write those keys out at the top level instead of the `<<` line",
            ),
            Unsupported::ExplicitKey { key } => write!(
                f,
                "`{key}` is written as an explicit key (`? {key}` on one line, `: ...` on the \
                 next); write it as `{key}: ...`"
            ),
            Unsupported::AliasedValue { key } => write!(
                f,
                "the value of `{key}` is an alias (`*name`) of a node written elsewhere, which a \
                 change here would change too; write the value out under `{key}:` in place of \
                 the alias"
            ),
            Unsupported::AnchoredValue { key, anchor } => write!(
                f,
                "the value of `{key}` defines the anchor `&{anchor}`, and an alias `*{anchor}` \
                 elsewhere would change with it; write that value out in place of the alias, or \
                 remove the anchor"
            ),
            Unsupported::AnchorUsedElsewhere { anchor, line } => write!(
                f,
                "the part to rewrite defines the anchor `&{anchor}`, which the alias `*{anchor}` \
                 at line {line} uses; write that value out in place of the alias (or move the \
                 anchor to a part that is not rewritten)"
            ),
            Unsupported::Shape(what) => write!(
                f,
                "{what}; write that part in plain block style (as `kubectl config view --raw` \
                 prints it)"
            ),
            Unsupported::Unverified => f.write_str(
                "the edit did not read back as intended (a bug of k8s-manager, please report \
                 it); write the file in plain block style (as `kubectl config view --raw` \
                 prints it) and retry",
            ),
        }
    }
}

/// Where each entry of a list comes from, relative to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The entry read at this index, unchanged.
    Kept(usize),
    /// The entry read at this index, changed in place.
    Replaced(usize),
    /// Added.
    New,
}

/// What changed in a document read from a text, relative to that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edits {
    /// For each entry of each named list (in [`Section::ALL`] order), where
    /// it comes from.
    pub(crate) origins: [Vec<Origin>; 3],
    /// How many entries each list had when read.
    original: [usize; 3],
    pub(crate) current_context: bool,
    /// Top-level keys the text does not have, in the order they were added.
    pub(crate) added: Vec<String>,
}

impl Edits {
    /// Nothing changed yet in `root`, as read.
    pub(crate) fn new(root: &Map<String, Value>) -> Self {
        let original = Section::ALL.map(|s| match root.get(s.list_key()) {
            Some(Value::Array(entries)) => entries.len(),
            _ => 0,
        });
        Edits {
            origins: original.map(|n| (0..n).map(Origin::Kept).collect()),
            original,
            current_context: false,
            added: Vec::new(),
        }
    }

    /// The entry at `index` of one list was changed.
    pub(crate) fn replaced(&mut self, section: Section, index: usize) {
        let origin = &mut self.origins[section.index()][index];
        if let Origin::Kept(i) = *origin {
            *origin = Origin::Replaced(i);
        }
    }
}

/// Writes a YAML value in block style (lines ending in `\n`).
pub(crate) type Emit<'a> = &'a dyn Fn(&Value) -> Option<String>;

/// The document's new text: `text` with what `edits` names rewritten in
/// place; see the module documentation. `newline` is the file's line ending.
pub(crate) fn render(
    text: &str,
    layout: &Layout,
    edits: &Edits,
    root: &Map<String, Value>,
    newline: &str,
    emit: Emit,
) -> Result<String, Unsupported> {
    if let Some(unsupported) = &layout.unsupported {
        return Err(unsupported.clone());
    }
    let mut plan = Plan {
        text,
        layout,
        newline,
        emit,
        flow: matches!(layout.root, Root::Flow { .. }),
        changes: Vec::new(),
    };

    for (i, section) in Section::ALL.into_iter().enumerate() {
        let name = section.list_key();
        let origins = &edits.origins[i];
        let unchanged = origins.len() == edits.original[i]
            && origins
                .iter()
                .enumerate()
                .all(|(i, o)| *o == Origin::Kept(i));
        if unchanged {
            continue;
        }
        // A list the text does not have is written with the new keys.
        let Some(key) = layout.key(name) else {
            continue;
        };
        let entries = match root.get(name) {
            Some(Value::Array(entries)) => entries.as_slice(),
            _ => &[],
        };
        let (status, appended) = statuses(origins, entries, edits.original[i])?;
        plan.list(
            key,
            section.list_key(),
            &status,
            &appended,
            entries.is_empty(),
        )?;
    }

    if edits.current_context
        && let Some(key) = layout.key(CURRENT_CONTEXT)
    {
        let value = root.get(CURRENT_CONTEXT).ok_or(Unsupported::Unverified)?;
        plan.current_context(key, value)?;
    }

    let added: Map<String, Value> = edits
        .added
        .iter()
        .filter_map(|name| Some((name.clone(), root.get(name)?.clone())))
        .collect();
    if !added.is_empty() {
        plan.add_keys(&added)?;
    }
    plan.apply()
}

/// What became of each entry read: kept, replaced by a value, or removed;
/// and the entries added at the end.
#[derive(Clone, Copy)]
enum Status<'v> {
    Kept,
    Replaced(&'v Value),
    Removed,
}

fn statuses<'v>(
    origins: &[Origin],
    entries: &'v [Value],
    original: usize,
) -> Result<(Vec<Status<'v>>, Vec<&'v Value>), Unsupported> {
    if origins.len() != entries.len() {
        return Err(Unsupported::Unverified);
    }
    let mut status = vec![Status::Removed; original];
    let mut appended = Vec::new();
    let mut next = 0;
    for (origin, entry) in origins.iter().zip(entries) {
        // Entries read keep their order, and new ones come after them: the
        // merge and remove rules never move an entry.
        let (Origin::Kept(i) | Origin::Replaced(i)) = *origin else {
            appended.push(entry);
            continue;
        };
        if i < next || i >= original || !appended.is_empty() {
            return Err(Unsupported::Unverified);
        }
        status[i] = match origin {
            Origin::Kept(_) => Status::Kept,
            _ => Status::Replaced(entry),
        };
        next = i + 1;
    }
    Ok((status, appended))
}

struct Plan<'a> {
    text: &'a str,
    layout: &'a Layout,
    newline: &'a str,
    emit: Emit<'a>,
    /// Whether the top level is a flow mapping: values are written as JSON.
    flow: bool,
    /// Ranges of the text and what replaces each.
    changes: Vec<(Range<usize>, String)>,
}

impl Plan<'_> {
    fn change(&mut self, range: Range<usize>, with: impl Into<String>) {
        self.changes.push((range, with.into()));
    }

    /// Whether the text in `range` may go: no anchor defined there is used
    /// by an alias outside it.
    fn may_drop(&self, range: Range<usize>) -> Result<(), Unsupported> {
        for anchor in &self.layout.anchors {
            if !range.contains(&anchor.token) {
                continue;
            }
            if let Some(&at) = anchor.aliases.iter().find(|at| !range.contains(at)) {
                return Err(Unsupported::AnchorUsedElsewhere {
                    anchor: printable(&anchor.name),
                    line: line_number(self.text, at),
                });
            }
        }
        Ok(())
    }

    /// Whether the value of `key` may change as a whole (grow or shrink): no
    /// alias elsewhere shows it.
    fn may_change(&self, key: &TopKey, name: &'static str) -> Result<(), Unsupported> {
        if key.explicit {
            return Err(Unsupported::ExplicitKey { key: name });
        }
        match key.anchor.map(|i| &self.layout.anchors[i]) {
            Some(anchor) if !anchor.aliases.is_empty() => Err(Unsupported::AnchoredValue {
                key: name,
                anchor: printable(&anchor.name),
            }),
            _ => Ok(()),
        }
    }

    fn emit(&self, value: &Value) -> Result<String, Unsupported> {
        (self.emit)(value).ok_or(Unsupported::Unverified)
    }

    /// One list's entries replaced, removed and added.
    fn list(
        &mut self,
        key: &TopKey,
        name: &'static str,
        status: &[Status],
        appended: &[&Value],
        now_empty: bool,
    ) -> Result<(), Unsupported> {
        self.may_change(key, name)?;
        match &key.value {
            TopValue::Sequence {
                indent,
                head_end,
                items,
            } => self.block_list(*indent, *head_end, items, status, appended, now_empty),
            TopValue::FlowSequence { open, close, items } => {
                self.flow_list(*open, *close, items, status, appended)
            }
            TopValue::Scalar { span } => self.list_from_nothing(key, span.clone(), appended),
            TopValue::Alias { .. } => Err(Unsupported::AliasedValue { key: name }),
            TopValue::Other => Err(Unsupported::Unverified),
        }
    }

    /// A block sequence: the region from its first entry to the end of its
    /// last written anew from the entries kept (with the comments and blank
    /// lines after each), the entries replaced and the ones added.
    fn block_list(
        &mut self,
        indent: usize,
        head_end: usize,
        items: &[Range<usize>],
        status: &[Status],
        appended: &[&Value],
        now_empty: bool,
    ) -> Result<(), Unsupported> {
        let (Some(first), Some(last)) = (items.first(), items.last()) else {
            return Err(Unsupported::Unverified);
        };
        let text = self.text;
        let mut out = String::new();
        for (i, item) in items.iter().enumerate() {
            // An entry's comments and blank lines up to the next entry stay
            // whatever becomes of it: they may be about the next one.
            let next = items.get(i + 1).map_or(item.end, |r| r.start);
            match status[i] {
                Status::Kept => {
                    out.push_str(&text[item.start..next]);
                    if !out.ends_with('\n') {
                        out.push_str(self.newline);
                    }
                }
                Status::Replaced(entry) => {
                    self.may_drop(item.clone())?;
                    let yaml = self.emit(&Value::Array(vec![entry.clone()]))?;
                    out.push_str(&indented(&yaml, indent, self.newline));
                    out.push_str(&text[item.end..next]);
                }
                Status::Removed => {
                    self.may_drop(item.clone())?;
                    out.push_str(&text[item.end..next]);
                }
            }
        }
        for entry in appended {
            let yaml = self.emit(&Value::Array(vec![(*entry).clone()]))?;
            out.push_str(&indented(&yaml, indent, self.newline));
        }
        if now_empty {
            // `key: []`, with whatever comment the key's line has after it.
            self.change(head_end..head_end, " []");
        }
        let region = first.start..last.end;
        if !text[..region.end].ends_with('\n') {
            // The list ended the file without a line break.
            out.truncate(out.trim_end_matches(['\r', '\n']).len());
        }
        self.change(region, out);
        Ok(())
    }

    /// A flow sequence: entries replaced where they are; removed with one
    /// comma (and the line they filled); added after the last one, on a line
    /// of their own when the entries are one to a line.
    fn flow_list(
        &mut self,
        open: usize,
        close: usize,
        items: &[Range<usize>],
        status: &[Status],
        appended: &[&Value],
    ) -> Result<(), Unsupported> {
        let removed: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(status[i], Status::Removed))
            .collect();
        if !removed.is_empty() && !appended.is_empty() {
            // A merge adds, a remove removes: never both in one list.
            return Err(Unsupported::Unverified);
        }
        for (i, item) in items.iter().enumerate() {
            if let Status::Replaced(entry) = status[i] {
                self.may_drop(item.clone())?;
                self.change(item.clone(), flow_json(entry));
            }
        }
        if !removed.is_empty() {
            self.remove_flow_items(close, items, &removed)?;
        }
        if !appended.is_empty() {
            let values: Vec<Value> = appended.iter().map(|v| (*v).clone()).collect();
            self.append_flow(open, close, items.last().cloned(), &values, |v| {
                FlowItem::Value(v)
            });
        }
        Ok(())
    }

    /// Removes the entries at `removed` (indices into `items`) of a flow
    /// collection: each with the comma after it, those after the last entry
    /// kept with the comma before them. Where comments sit between, only the
    /// entries and their commas go.
    fn remove_flow_items(
        &mut self,
        close: usize,
        items: &[Range<usize>],
        removed: &[usize],
    ) -> Result<(), Unsupported> {
        for &i in removed {
            self.may_drop(items[i].clone())?;
        }
        let text = self.text;
        let n = items.len();
        let comma_between = |i: usize| find_comma(text, items[i].end, items[i + 1].start);
        let trailing = find_comma(text, items[n - 1].end, close);
        let last_kept = (0..n).rev().find(|i| !removed.contains(i));
        let Some(kept) = last_kept else {
            // Nothing left: no comma either (`[,]` is not YAML).
            let end = trailing.map_or(items[n - 1].end, |c| c + 1);
            if !has_comment(&text[items[0].start..end]) {
                self.change(items[0].start..end, "");
                return Ok(());
            }
            // Each with the comma after it.
            for (i, item) in items.iter().enumerate() {
                let comma = match i + 1 < n {
                    true => comma_between(i),
                    false => trailing,
                };
                self.remove_item_keeping_comments(item.clone(), comma);
            }
            return Ok(());
        };
        for &i in removed.iter().filter(|&&i| i < kept) {
            let next = items[i + 1].start;
            if has_comment(&text[items[i].end..next]) {
                self.remove_item_keeping_comments(items[i].clone(), comma_between(i));
            } else {
                self.change(items[i].start..next, "");
            }
        }
        if kept + 1 < n {
            let from = items[kept].end;
            if !has_comment(&text[from..items[n - 1].end]) {
                self.change(from..items[n - 1].end, "");
            } else {
                for (i, item) in items.iter().enumerate().skip(kept + 1) {
                    self.remove_item_keeping_comments(item.clone(), comma_between(i - 1));
                }
            }
        }
        Ok(())
    }

    /// Removes one entry and its comma (if any) but not the
    /// comments around it; the line it filled goes when nothing is left on it.
    fn remove_item_keeping_comments(&mut self, item: Range<usize>, comma: Option<usize>) {
        let text = self.text;
        let start = line_start(text, item.start);
        let end = line_end(text, item.end);
        let rest_blank = text[start..item.start].trim().is_empty()
            && text[item.end..end]
                .char_indices()
                .all(|(i, c)| c.is_whitespace() || Some(item.end + i) == comma);
        let gone = match rest_blank {
            true => start..next_line(text, item.end),
            false => item,
        };
        if let Some(comma) = comma.filter(|c| !gone.contains(c)) {
            self.change(comma..comma + 1, "");
        }
        self.change(gone, "");
    }

    /// Adds entries to a flow collection whose last entry is `last`.
    fn append_flow<T>(
        &mut self,
        open: usize,
        close: usize,
        last: Option<Range<usize>>,
        values: &[T],
        item: impl Fn(&T) -> FlowItem,
    ) {
        let text = self.text;
        let Some(last) = last else {
            let joined: Vec<String> = values.iter().map(|v| item(v).compact()).collect();
            self.change(open + 1..open + 1, joined.join(", "));
            return;
        };
        let trailing_comma = find_comma(text, last.end, close);
        let start = line_start(text, last.start);
        // One entry to a line: the new ones too, indented as the last.
        let own_line = start > open && text[start..last.start].trim().is_empty();
        if own_line {
            let pad = &text[start..last.start];
            let mut out = String::new();
            for (i, value) in values.iter().enumerate() {
                out.push_str(self.newline);
                out.push_str(pad);
                out.push_str(&item(value).pretty(pad, self.newline));
                if trailing_comma.is_some() || i + 1 < values.len() {
                    out.push(',');
                }
            }
            // After the comment that ends the last entry's line, if any.
            let after = trailing_comma.map_or(last.end, |c| c + 1);
            let at = match text[after..close].find('\n') {
                Some(i) => line_end(text, after + i),
                None => after,
            };
            if trailing_comma.is_none() {
                self.change(last.end..last.end, ",");
            }
            self.change(at..at, out);
        } else {
            let mut out = String::new();
            for value in values {
                out.push_str(", ");
                out.push_str(&item(value).compact());
            }
            match trailing_comma {
                // `[a, b,]` becomes `[a, b, c,]`.
                Some(comma) => {
                    let mut moved = out[1..].to_string();
                    moved.push(',');
                    self.change(comma + 1..comma + 1, moved);
                }
                None => self.change(last.end..last.end, out),
            }
        }
    }

    /// A list that is `null`, empty or not written at all (`clusters:`,
    /// `clusters: []`) gets its entries: in block style under the key in a
    /// block mapping, as a JSON list in a flow mapping.
    fn list_from_nothing(
        &mut self,
        key: &TopKey,
        span: Range<usize>,
        entries: &[&Value],
    ) -> Result<(), Unsupported> {
        self.may_drop(span.clone())?;
        let text = self.text;
        let entries: Vec<Value> = entries.iter().map(|v| (*v).clone()).collect();
        if self.flow {
            let list = flow_json(&Value::Array(entries));
            self.set_scalar(key, span, list);
            return Ok(());
        }
        let colon_end = key.colon_end.ok_or(Unsupported::Unverified)?;
        if entries.is_empty() {
            self.change(colon_end..span.end, " []");
            return Ok(());
        }
        let Root::Block { indent, .. } = self.layout.root else {
            return Err(Unsupported::Unverified);
        };
        let yaml = indented(&self.emit(&Value::Array(entries))?, indent, self.newline);
        let yaml = yaml.trim_end_matches(['\r', '\n']);
        let line_end = line_end(text, span.end);
        // The null goes (with the spaces before it); a comment after it, or
        // one before it, stays on the key's line.
        let from = match text[colon_end..span.start].trim().is_empty() {
            true => colon_end,
            false => span.start,
        };
        if text[span.end..line_end].trim().is_empty() {
            self.change(from..line_end, format!("{}{yaml}", self.newline));
        } else {
            self.change(from..span.end, "");
            self.change(line_end..line_end, format!("{}{yaml}", self.newline));
        }
        Ok(())
    }

    /// Writes `with` in place of the scalar at `span`, the value of `key`.
    fn set_scalar(&mut self, key: &TopKey, span: Range<usize>, with: String) {
        if !span.is_empty() {
            let mut with = with;
            if let Some(comment) = header_comment(self.text, &span) {
                with = format!("{with} {comment}");
            }
            // A block scalar (`|`) ends with its last line's break.
            if self.text[..span.end].ends_with('\n') {
                with.push_str(self.newline);
            }
            self.change(span, with);
            return;
        }
        match key.colon_end {
            Some(at) => self.change(at..at, format!(" {with}")),
            None => self.change(key.key.end..key.key.end, format!(": {with}")),
        }
    }

    fn current_context(&mut self, key: &TopKey, value: &Value) -> Result<(), Unsupported> {
        if key.explicit {
            return Err(Unsupported::ExplicitKey {
                key: CURRENT_CONTEXT,
            });
        }
        let span = match &key.value {
            TopValue::Scalar { span } | TopValue::Alias { span } => span.clone(),
            _ => return Err(Unsupported::Unverified),
        };
        self.may_drop(span.clone())?;
        self.may_change(key, CURRENT_CONTEXT)?;
        let scalar = match self.flow {
            true => flow_json(value),
            false => self.emit(value)?.trim_end().to_string(),
        };
        self.set_scalar(key, span, scalar);
        Ok(())
    }

    /// Keys the text does not have yet (a new list, a first
    /// current-context, or everything in an empty file), after the last one.
    fn add_keys(&mut self, added: &Map<String, Value>) -> Result<(), Unsupported> {
        let text = self.text;
        match &self.layout.root {
            Root::Block { indent, end } => {
                let (indent, end) = (*indent, *end);
                let mut out = String::new();
                if end > 0 && !text[..end].ends_with('\n') {
                    out.push_str(self.newline);
                }
                let yaml = self.emit(&Value::Object(added.clone()))?;
                out.push_str(&indented(&yaml, indent, self.newline));
                self.change(end..end, out);
            }
            Root::Flow { open, close, last } => {
                let entries: Vec<(&String, &Value)> = added.iter().collect();
                self.append_flow(*open, *close, last.clone(), &entries, |(k, v)| {
                    FlowItem::Member(k, v)
                });
            }
            Root::Empty { at } => {
                let at = at.clone();
                let yaml = self.emit(&Value::Object(added.clone()))?;
                let yaml = indented(&yaml, 0, self.newline);
                let mut out = String::new();
                if at.is_empty() {
                    // After the comments (or `---`), on a line of its own.
                    if at.start > 0 && !text[..at.start].ends_with('\n') {
                        out.push_str(self.newline);
                    }
                    out.push_str(&yaml);
                } else {
                    // In place of a `null`, whose line already ends; after
                    // `--- `, on a line of its own.
                    let before = &text[line_start(text, at.start)..at.start];
                    if !before.trim().is_empty() {
                        out.push_str(self.newline);
                    }
                    out.push_str(yaml.trim_end_matches(['\r', '\n']));
                }
                self.may_drop(at.clone())?;
                let spaces =
                    text[..at.start].len() - text[..at.start].trim_end_matches([' ', '\t']).len();
                let at = match at.is_empty() {
                    true => at,
                    false => at.start - spaces..at.end,
                };
                self.change(at, out);
            }
        }
        Ok(())
    }

    /// The text with every change made.
    fn apply(mut self) -> Result<String, Unsupported> {
        // Insertions before replacements starting at the same place.
        self.changes
            .sort_by_key(|(range, _)| (range.start, range.end));
        let extra: usize = self.changes.iter().map(|(_, s)| s.len()).sum();
        let mut out = String::with_capacity(self.text.len() + extra);
        let mut at = 0;
        for (range, with) in &self.changes {
            if range.start < at {
                return Err(Unsupported::Unverified);
            }
            out.push_str(&self.text[at..range.start]);
            out.push_str(with);
            at = range.end;
        }
        out.push_str(&self.text[at..]);
        Ok(out)
    }
}

/// An entry of a flow collection to write: a list entry, or a mapping's
/// key and value.
enum FlowItem<'v> {
    Value(&'v Value),
    Member(&'v str, &'v Value),
}

impl FlowItem<'_> {
    fn compact(&self) -> String {
        match self {
            FlowItem::Value(value) => flow_json(value),
            FlowItem::Member(key, value) => format!("{}: {}", json_string(key), flow_json(value)),
        }
    }

    /// Over several lines (pretty JSON), each continued line starting with
    /// `pad`, the indentation of the entry.
    fn pretty(&self, pad: &str, newline: &str) -> String {
        let (prefix, value) = match self {
            FlowItem::Value(value) => (String::new(), *value),
            FlowItem::Member(key, value) => (format!("{}: ", json_string(key)), *value),
        };
        let json = serde_json::to_string_pretty(value).unwrap_or_else(|_| flow_json(value));
        let mut out = prefix;
        for (i, line) in json.lines().enumerate() {
            if i > 0 {
                out.push_str(newline);
                out.push_str(pad);
            }
            out.push_str(line);
        }
        out
    }
}

/// A value as JSON on one line, spaced as people write flow YAML
/// (`{"name": "x", "cluster": {...}}`), so that the fast reader reads it
/// back.
pub(crate) fn flow_json(value: &Value) -> String {
    let mut out = String::new();
    write_flow_json(value, &mut out);
    out
}

fn write_flow_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&json_string(key));
                out.push_str(": ");
                write_flow_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_flow_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `yaml` (lines ending in `\n`) indented by `indent` spaces, with the
/// file's line endings.
pub(crate) fn indented(yaml: &str, indent: usize, newline: &str) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::with_capacity(yaml.len() + 64);
    for line in yaml.lines() {
        if !line.is_empty() {
            out.push_str(&pad);
        }
        out.push_str(line);
        out.push_str(newline);
    }
    out
}

/// The comment on the header line of a block scalar (`key: | # note`),
/// which a value written in its place keeps.
fn header_comment<'t>(text: &'t str, span: &Range<usize>) -> Option<&'t str> {
    let head = &text[span.start..line_end(text, span.start).min(span.end)];
    let header = head.find(['|', '>'])?;
    if head.trim_start().starts_with(['"', '\'']) {
        return None;
    }
    let comment = head[header..].find('#')? + header;
    Some(head[comment..].trim_end())
}

/// Whether a stretch of text between two entries of a flow collection
/// holds a comment (`#` after a space or at a line's start: inside the
/// stretch there is nothing else it could be).
fn has_comment(between: &str) -> bool {
    between.contains('#')
}

/// The comma between two entries of a flow collection, outside comments.
fn find_comma(text: &str, from: usize, to: usize) -> Option<usize> {
    let mut in_comment = false;
    for (i, c) in text[from..to].char_indices() {
        match c {
            '\n' => in_comment = false,
            '#' => in_comment = true,
            ',' if !in_comment => return Some(from + i),
            _ => {}
        }
    }
    None
}

/// Where the line holding `at` starts.
pub(crate) fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Where the line holding `at` ends, before its line break.
pub(crate) fn line_end(text: &str, at: usize) -> usize {
    let b = text.as_bytes();
    match memchr::memchr(b'\n', &b[at..]) {
        Some(i) if at + i > 0 && b[at + i - 1] == b'\r' => at + i - 1,
        Some(i) => at + i,
        None => text.len(),
    }
}

/// Where the line after the one holding `at` starts.
pub(crate) fn next_line(text: &str, at: usize) -> usize {
    memchr::memchr(b'\n', &text.as_bytes()[at..]).map_or(text.len(), |i| at + i + 1)
}

/// The line number (from 1) of an offset, for messages.
fn line_number(text: &str, at: usize) -> usize {
    memchr::memchr_iter(b'\n', &text.as_bytes()[..at.min(text.len())]).count() + 1
}

/// A name from the file, as a message may show it: anchor names are not
/// secrets, but they are the user's text; only plain ones are shown.
fn printable(name: &str) -> String {
    match name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        true => name.to_string(),
        false => "…".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeconfig::document::Kubeconfig;
    use crate::kubeconfig::layout::yaml_options;
    use crate::kubeconfig::samples::{CORPUS, TYPICAL};
    use serde_json::json;
    use std::path::Path;

    /// What the general reader reads (`None`: it refuses the text).
    fn general(text: &str) -> Option<Value> {
        serde_saphyr::from_str_with_options::<Value>(text, yaml_options()).ok()
    }

    /// A text the fast reader lays out.
    fn doc(text: &str) -> Kubeconfig {
        let doc = Kubeconfig::parse(text.as_bytes(), Path::new("t")).unwrap();
        assert!(doc.read_fast(), "not laid out by the fast reader: {text}");
        doc
    }

    /// A text of any shape (laid out by the outline reader when written).
    fn any(text: &str) -> Kubeconfig {
        Kubeconfig::parse(text.as_bytes(), Path::new("t")).unwrap()
    }

    /// What a merge of one entry of each list does.
    fn merge_b(d: &mut Kubeconfig) {
        d.push_entry(
            Section::Cluster,
            entry("b", json!({"cluster": {"server": "x"}})),
        );
        d.push_entry(Section::User, entry("b", json!({"user": {}})));
        d.push_entry(
            Section::Context,
            entry("b", json!({"context": {"cluster": "b", "user": "b"}})),
        );
        d.set_current_context("b");
    }

    /// What a remove of those entries does.
    fn remove_b(d: &mut Kubeconfig) {
        for section in Section::ALL {
            assert_eq!(d.remove_named(section, "b"), 1);
        }
    }

    fn refusal(d: &Kubeconfig) -> String {
        match d.to_bytes(Path::new("t")) {
            Err(crate::kubeconfig::KubeconfigError::Unsupported { reason, .. }) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    /// The text written reads back, with either reader, as the document in memory.
    fn assert_writes_itself(doc: &Kubeconfig) -> String {
        let text = String::from_utf8(doc.to_bytes(Path::new("t")).unwrap()).unwrap();
        let back = Kubeconfig::parse(text.as_bytes(), Path::new("t")).unwrap();
        assert_eq!(back.root(), doc.root(), "written as:\n{text}");
        let read = general(&text).map(|v| match v {
            Value::Null => Value::Object(Map::new()),
            other => other,
        });
        assert_eq!(read, Some(Value::Object(doc.root().clone())), "{text}");
        text
    }

    fn entry(name: &str, body: Value) -> Value {
        let mut map = Map::new();
        map.insert("name".into(), json!(name));
        if let Value::Object(body) = body {
            map.extend(body);
        }
        Value::Object(map)
    }

    #[test]
    fn edits_keep_every_other_line_byte_for_byte() {
        let mut d = doc(TYPICAL);
        d.push_entry(
            Section::Cluster,
            entry("new", json!({"cluster": {"server": "https://n:6443"}})),
        );
        d.push_entry(
            Section::Context,
            entry("new", json!({"context": {"cluster": "new", "user": "new"}})),
        );
        d.replace_entry(
            Section::User,
            1,
            entry("kind-dev", json!({"user": {"token": "yes"}})),
        );
        d.set_current_context("new");
        let text = assert_writes_itself(&d);
        // The comments, the quoting and the flow style of the others are kept.
        for line in [
            "# prod first",
            "    context: {cluster: prod, user: sso, namespace: shop}   # the shop",
            "- name: 'kind-dev'",
            "      args: [get-token, --oidc-issuer-url=https://login.example, \"--x=y z\"]",
        ] {
            assert!(text.contains(line), "{line:?} lost:\n{text}");
        }
        // New entries take the list's own indentation.
        assert!(
            text.contains("  - name: new\n    context:\n      cluster: new\n"),
            "{text}"
        );
        assert!(
            text.contains("- name: kind-dev\n  user:\n    token: \"yes\"\n"),
            "{text}"
        );
        assert!(text.ends_with("current-context: new\n"), "{text}");
        assert!(
            !text.contains("0a1b2c3d4e5f"),
            "the old entry stayed:\n{text}"
        );
    }

    #[test]
    fn removing_what_was_added_gives_back_the_same_bytes() {
        for original in CORPUS.iter().chain([&TYPICAL]) {
            let original = original.trim_start_matches('\u{feff}');
            let mut d = doc(original);
            for section in Section::ALL {
                d.push_entry(section, entry("ours", json!({"x": {"y": [1, "two"]}})));
            }
            let grown = assert_writes_itself(&d);
            let mut d = doc(&grown);
            for section in Section::ALL {
                assert_eq!(d.remove_named(section, "ours"), 1);
            }
            assert_eq!(assert_writes_itself(&d), original);
        }
    }

    #[test]
    fn lists_that_are_null_empty_flow_or_missing() {
        let cases = [
            "clusters: null\nusers: []\ncontexts:\ncurrent-context: \"\"\n",
            "clusters: ~ # none yet\nusers: [] \n",
            "clusters: [{name: a, cluster: {server: s}}]\nkind: Config\n",
            "kind: Config\n",
            "kind: Config",
            "kind: Config\r\nclusters:\r\n- name: a\r\n",
            "clusters:\n- name: a\n  cluster: {}",
        ];
        for text in cases {
            let mut d = any(text);
            d.push_entry(
                Section::Cluster,
                entry("b", json!({"cluster": {"server": "x"}})),
            );
            d.push_entry(Section::User, entry("b", json!({"user": {}})));
            d.set_current_context("b");
            let out = assert_writes_itself(&d);
            if text.contains("\r\n") {
                assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
            }
            assert_eq!(
                d.entries(Section::Cluster).last().unwrap()["name"],
                json!("b")
            );
        }
    }

    /// Random series of the edits a merge or remove makes, on every file
    /// of the corpus: what is written always reads back as the document.
    #[test]
    fn random_edit_series_write_what_is_in_memory() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize % n.max(1)
        };
        let texts = CORPUS
            .iter()
            .chain([&TYPICAL, &"kind: Config\n", &"users: []\n"]);
        for original in texts {
            let original = original.trim_start_matches('\u{feff}');
            for _ in 0..40 {
                let mut d = doc(original);
                for _ in 0..1 + next(6) {
                    let section = Section::ALL[next(3)];
                    let len = d.entries(section).len();
                    let name = format!("n{}", next(3));
                    match next(5) {
                        // Names stay unique, as in any file kubectl loads.
                        0 | 1 if !d.contains(section, &name) => {
                            d.push_entry(section, entry(&name, json!({"v": [next(9)]})))
                        }
                        0..=2 if len > 0 => {
                            let at = next(len);
                            let kept = d.entries(section)[at]["name"].clone();
                            let kept = kept.as_str().unwrap_or_default();
                            d.replace_entry(section, at, entry(kept, json!({"v": next(9)})))
                        }
                        3 if len > 0 => {
                            let victim = d.entries(section)[next(len)]["name"].clone();
                            d.remove_named(section, victim.as_str().unwrap_or_default());
                        }
                        3 => {
                            d.remove_named(section, &name);
                        }
                        _ => d.set_current_context(&name),
                    }
                }
                assert_writes_itself(&d);
            }
        }
    }

    #[test]
    fn emptying_a_list_and_removing_its_last_entry() {
        let text = "clusters:\n- name: a\n- name: b\n- name: c\nusers:\n- name: u\n";
        let mut d = doc(text);
        d.remove_named(Section::Cluster, "c");
        d.remove_named(Section::User, "u");
        let out = assert_writes_itself(&d);
        assert_eq!(out, "clusters:\n- name: a\n- name: b\nusers: []\n");
    }

    #[test]
    fn current_context_is_replaced_where_it_stands() {
        for (text, want) in [
            (
                "current-context: old # mine\nkind: Config\n",
                "current-context: new # mine\nkind: Config\n",
            ),
            (
                "current-context:\nkind: Config\n",
                "current-context: new\nkind: Config\n",
            ),
            ("current-context: ''\n", "current-context: new\n"),
        ] {
            let mut d = doc(text);
            d.set_current_context("new");
            assert_eq!(assert_writes_itself(&d), want);
        }
        let mut d = doc("current-context: old\n");
        d.set_current_context("");
        assert_eq!(assert_writes_itself(&d), "current-context: \"\"\n");
    }

    #[test]
    fn a_comment_on_a_null_list_stays_on_its_line() {
        let mut d = doc("clusters: ~ # none yet\nkind: Config\n");
        merge_b(&mut d);
        let out = assert_writes_itself(&d);
        assert!(
            out.starts_with("clusters: # none yet\n- name: b\n"),
            "{out}"
        );
    }

    #[test]
    fn a_removed_entry_leaves_the_comments_after_it() {
        let text = "clusters:\n- name: b\n  cluster: {server: x}\n# prod, from the wiki\n- name: prod\n  cluster: {server: p}\n";
        let mut d = doc(text);
        d.remove_named(Section::Cluster, "b");
        assert_eq!(
            assert_writes_itself(&d),
            "clusters:\n# prod, from the wiki\n- name: prod\n  cluster: {server: p}\n"
        );
    }

    /// A flow top level (and so JSON) gets JSON, where the entries are.
    #[test]
    fn flow_and_json_files_are_edited_in_their_style() {
        let cases = [
            (
                "{apiVersion: v1, clusters: [{name: a}], current-context: a} # mine\n",
                "{apiVersion: v1, clusters: [{name: a}, {\"name\": \"b\", \"cluster\": {\"server\": \"x\"}}], current-context: \"b\", \"users\": [{\"name\": \"b\", \"user\": {}}], \"contexts\": [{\"name\": \"b\", \"context\": {\"cluster\": \"b\", \"user\": \"b\"}}]} # mine\n",
            ),
            (
                "{\"kind\":\"Config\",\"users\":null}",
                "{\"kind\":\"Config\",\"users\":[{\"name\": \"b\", \"user\": {}}], \"clusters\": [{\"name\": \"b\", \"cluster\": {\"server\": \"x\"}}], \"contexts\": [{\"name\": \"b\", \"context\": {\"cluster\": \"b\", \"user\": \"b\"}}], \"current-context\": \"b\"}",
            ),
            (
                "{\r\n  \"kind\": \"Config\",\r\n  \"clusters\": [\r\n    {\"name\": \"a\"}\r\n  ],\r\n  \"users\": [],\r\n  \"contexts\": [],\r\n  \"current-context\": \"\"\r\n}\r\n",
                "{\r\n  \"kind\": \"Config\",\r\n  \"clusters\": [\r\n    {\"name\": \"a\"},\r\n    {\r\n      \"name\": \"b\",\r\n      \"cluster\": {\r\n        \"server\": \"x\"\r\n      }\r\n    }\r\n  ],\r\n  \"users\": [{\"name\": \"b\", \"user\": {}}],\r\n  \"contexts\": [{\"name\": \"b\", \"context\": {\"cluster\": \"b\", \"user\": \"b\"}}],\r\n  \"current-context\": \"b\"\r\n}\r\n",
            ),
        ];
        for (text, want) in cases {
            let mut d = any(text);
            merge_b(&mut d);
            let out = assert_writes_itself(&d);
            assert_eq!(out, want);
            if text.starts_with("{\"") || text.starts_with("{\r") {
                serde_json::from_str::<Value>(&out).expect("still JSON");
            }
            // And a remove gives the same bytes back, but for current-context
            // (and for lists the merge added, which stay, empty).
            let mut d = any(&out);
            remove_b(&mut d);
            let back = assert_writes_itself(&d);
            if ["clusters", "users", "contexts"]
                .iter()
                .all(|l| text.contains(l))
            {
                let mut d = any(text);
                d.set_current_context("b");
                assert_eq!(back, assert_writes_itself(&d));
            }
        }
    }

    /// Multi-line flow lists, with comments between the entries: a merge
    /// adds after the last entry (and its comment), a remove takes back
    /// exactly that.
    #[test]
    fn flow_lists_over_lines_keep_their_comments() {
        let texts = [
            "clusters: [\n  {name: a}, # first\n  {name: c} # last\n]\ncurrent-context: a\n",
            "clusters: [\n  {name: a},\n  {name: c},\n]\ncurrent-context: a\n",
            "clusters: [{name: a}, {name: c},]\ncurrent-context: a\n",
            "clusters: [ ] # none\ncurrent-context: a\n",
            "clusters: [\n  # nothing yet\n]\ncurrent-context: a\n",
            "clusters:\r\n  [ {name: a},\r\n    {name: c} ]\r\ncurrent-context: a\r\n",
        ];
        for text in texts {
            let mut d = any(text);
            merge_b(&mut d);
            let out = assert_writes_itself(&d);
            for comment in text.lines().filter_map(|l| l.find('#').map(|i| &l[i..])) {
                assert!(out.contains(comment), "{comment:?} lost:\n{out}");
            }
            let mut d = any(&out);
            remove_b(&mut d);
            let back = assert_writes_itself(&d);
            let clusters = |t: &str| t[..t.find("current-context").unwrap()].to_string();
            if !text.contains("[ ]") {
                // (An empty `[ ]` became a block list, and is `[]` now.)
                assert_eq!(clusters(&back), clusters(text), "after merge:\n{out}");
            }
        }
    }

    #[test]
    fn removing_flow_entries_anywhere() {
        let text =
            "clusters: [\n  {name: a}, # a\n  {name: b},\n  {name: c}, {name: d} # c and d\n]\n";
        for name in ["a", "b", "c", "d"] {
            let mut d = any(text);
            assert_eq!(d.remove_named(Section::Cluster, name), 1);
            let out = assert_writes_itself(&d);
            for comment in ["# a", "# c and d"] {
                assert!(out.contains(comment), "{name}: {comment:?} lost:\n{out}");
            }
        }
        for text in [
            "clusters: [{name: b}]\n",
            "clusters: [{name: b},]\n",
            "clusters: [\n  {name: b} # only\n]\n",
        ] {
            let mut d = any(text);
            d.remove_named(Section::Cluster, "b");
            let out = assert_writes_itself(&d);
            assert!(out.contains("clusters: ["), "{out}");
        }
    }

    #[test]
    fn document_markers_directives_and_indentation() {
        let cases = [
            (
                "---\napiVersion: v1\n...\n# after\n",
                "---\napiVersion: v1\n",
                "...\n# after\n",
            ),
            (
                "%YAML 1.1\n--- # mine\napiVersion: v1\n",
                "%YAML 1.1\n--- # mine\napiVersion: v1\n",
                "",
            ),
            (
                "--- !!map\napiVersion: v1\n",
                "--- !!map\napiVersion: v1\n",
                "",
            ),
            (
                "  apiVersion: v1\n  kind: Config\n",
                "  apiVersion: v1\n  kind: Config\n  clusters:\n  - name: b\n",
                "",
            ),
            (
                "apiVersion:\tv1 \t# tabs\n",
                "apiVersion:\tv1 \t# tabs\n",
                "",
            ),
            (
                "\"apiVersion\": v1\n'clusters': []\n",
                "\"apiVersion\": v1\n'clusters':\n- name: b\n",
                "",
            ),
        ];
        for (text, head, tail) in cases {
            let mut d = any(text);
            merge_b(&mut d);
            let out = assert_writes_itself(&d);
            assert!(out.starts_with(head), "{out}");
            assert!(out.ends_with(tail), "{out}");
        }
    }

    #[test]
    fn empty_comment_only_and_null_files_get_the_kubectl_header() {
        for (text, head) in [
            ("", ""),
            ("# mine\n", "# mine\n"),
            ("# mine", "# mine\n"),
            ("---\n", "---\n"),
            ("--- # mine\n...\n", "--- # mine\n"),
            ("null\n", ""),
            ("--- ~\n", "---\n"),
            ("\n\n", "\n\n"),
        ] {
            let mut d = any(text);
            merge_b(&mut d);
            let out = assert_writes_itself(&d);
            assert!(
                out.starts_with(&format!("{head}apiVersion: v1\nkind: Config\n")),
                "{text:?}:\n{out}"
            );
            if text.contains("...") {
                assert!(out.ends_with("...\n"), "{out}");
            }
        }
    }

    #[test]
    fn current_context_in_every_scalar_style() {
        for text in [
            "current-context: 'a' # q\n",
            "current-context: \"a\"\n",
            "current-context: |\n  a\nkind: Config\n",
            "current-context: >-\n  a\n\n# after\nkind: Config\n",
            "current-context: !!str a\n",
            // (A tab takes these out of the fast reader's subset.)
            "current-context: |\n  a\n\nkind:\tConfig\n",
            "current-context: >- # folded\n  a\n  b\nkind:\tConfig\n",
            "{current-context: a}\n",
            "{\"current-context\"}\n",
            "{current-context: }\n",
        ] {
            let mut d = any(text);
            d.set_current_context("b");
            let out = assert_writes_itself(&d);
            assert_eq!(text.contains("\n\n"), out.contains("\n\n"), "{out}");
            for comment in ["# q", "# after", "# folded"] {
                assert_eq!(text.contains(comment), out.contains(comment), "{out}");
            }
        }
    }

    #[test]
    fn anchors_and_aliases_elsewhere_are_kept() {
        // A CA shared by two clusters, a user written once and aliased.
        let text = "clusters:\n- name: a\n  cluster: &ca {server: https://a, certificate-authority-data: QUJD}\n- name: c\n  cluster: *ca\nusers: [&u {name: a, user: {token: t}}]\nx-copy: *u\n";
        let mut d = any(text);
        merge_b(&mut d);
        let out = assert_writes_itself(&d);
        assert!(out.starts_with("clusters:\n- name: a\n  cluster: &ca {server: https://a, certificate-authority-data: QUJD}\n- name: c\n  cluster: *ca\n- name: b\n"), "{out}");
        let mut d = any(&out);
        remove_b(&mut d);
        let back = assert_writes_itself(&d);
        assert!(
            back.starts_with(&text[..text.find("x-copy").unwrap()]),
            "{back}"
        );
    }

    #[test]
    fn what_would_break_or_change_an_alias_is_refused() {
        // Replacing or removing the entry that defines `&ca`.
        let shared =
            "clusters:\n- name: b\n  cluster: &ca {server: https://a}\n- name: c\n  cluster: *ca\n";
        let mut d = any(shared);
        d.remove_named(Section::Cluster, "b");
        let reason = refusal(&d);
        assert!(
            reason.contains("`&ca`") && reason.contains("line 5"),
            "{reason}"
        );
        let mut d = any(shared);
        d.replace_entry(
            Section::Cluster,
            0,
            entry("b", json!({"cluster": {"server": "y"}})),
        );
        refusal(&d);
        // A list that is an alias, or that an alias shows elsewhere.
        let mut d = any("x-all: &all []\nclusters: *all\n");
        merge_b(&mut d);
        assert!(refusal(&d).contains("alias"), "{}", refusal(&d));
        let mut d = any("clusters: &all [{name: a}]\nx-copy: *all\n");
        merge_b(&mut d);
        assert!(refusal(&d).contains("`&all`"));
        // The current context, as anchored and used elsewhere.
        let mut d = any("current-context: &cc a\nx-note: *cc\n");
        d.set_current_context("b");
        refusal(&d);
        // A merge key at the top: the keys to change may be elsewhere.
        let mut d = any("x-base: &base {kind: Config}\n<<: *base\nclusters: []\n");
        merge_b(&mut d);
        assert!(refusal(&d).contains("merge key"));
        // An explicit key.
        let mut d = any("? clusters\n: - name: a\n");
        merge_b(&mut d);
        assert!(refusal(&d).contains("? clusters"));
    }

    /// Random merges and removes on files of every shape: what is written
    /// always reads back as the document, or the change is refused.
    #[test]
    fn random_edit_series_on_other_shapes() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
        };
        let texts = [
            "{clusters: [{name: n0}, {name: n1}], users: [], contexts: null, current-context: n0}",
            "---\nclusters: [\n  {name: n0}, # zero\n  {name: n1}\n]\nusers:\n- &u {name: n2}\n...\n",
            "{\"clusters\": [{\"name\": \"n1\"}], \"users\": [{\"name\": \"n0\"}]}",
            "clusters:\t[ {name: n2} ]\r\nusers:\r\n- name: n1\r\n  user: {}\r\n",
            "# only a comment\n",
        ];
        let (mut written, mut refused) = (0, 0);
        for original in texts {
            for _ in 0..60 {
                let mut d = any(original);
                let merging = next(2) == 0;
                for _ in 0..1 + next(4) {
                    let section = Section::ALL[next(3)];
                    let len = d.entries(section).len();
                    let name = format!("n{}", next(4));
                    match next(4) {
                        0 if merging && !d.contains(section, &name) => {
                            d.push_entry(section, entry(&name, json!({"v": [next(9)]})))
                        }
                        1 if len > 0 => {
                            let at = next(len);
                            let kept = d.entries(section)[at]["name"].clone();
                            let kept = kept.as_str().unwrap_or_default();
                            d.replace_entry(section, at, entry(kept, json!({"v": next(9)})))
                        }
                        2 if !merging => {
                            d.remove_named(section, &name);
                        }
                        _ => d.set_current_context(&name),
                    }
                }
                match d.to_bytes(Path::new("t")) {
                    Ok(_) => {
                        assert_writes_itself(&d);
                        written += 1;
                    }
                    Err(err) => {
                        refused += 1;
                        assert!(
                            !err.to_string().contains("bug"),
                            "{original:?}: {err}\n{d:?}"
                        );
                    }
                }
            }
        }
        assert!(written > 250, "{written} written, {refused} refused");
    }
}
