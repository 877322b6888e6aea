//! Where the parts a merge edits sit in a kubeconfig of any shape YAML
//! allows: what [`super::layout`]'s fast reader steps aside on (flow style
//! and JSON, `---` and `...`, directives, anchors and aliases, tags, tabs,
//! quoted keys, an indented top level, comments anywhere, empty and
//! comment-only files). It reads the positions the YAML parser itself gives
//! (the parser of the general reader, so both see the same document), and
//! where every anchor and alias is, so that [`super::edit`] can refuse an
//! edit that would break or change an alias.
//!
//! Only called when a change is to be written: reading a file that does not
//! change costs no second pass.

use std::collections::HashMap;
use std::ops::Range;

use serde_saphyr::granit_parser::{
    Event, Options, Parser, ScalarStyle, Span, StrInput, StructureStyle,
};

use super::edit::{Anchor, Layout, Root, TopKey, TopValue, Unsupported, line_start, next_line};
use super::section::{CURRENT_CONTEXT, Section};

/// The layout of `text`, a single YAML document the general reader has
/// read (anything else is an [`Unsupported::Shape`]).
pub(crate) fn read(text: &str) -> Result<Layout, Unsupported> {
    let mut options = Options::default();
    options.emit_anchor_events = true;
    options.emit_comments = false;
    let mut reader = Reader {
        text,
        events: Parser::new_from_str_with_options(text, options).peekable(),
        anchors: Vec::new(),
        ids: HashMap::new(),
        last_end: 0,
    };
    let (event, ..) = reader.next()?;
    if !matches!(event, Event::StreamStart) {
        return Err(UNREADABLE);
    }
    let token = reader.next()?;
    match token.0 {
        // Nothing but comments, or nothing at all.
        Event::StreamEnd => {
            return Ok(Layout {
                root: Root::Empty {
                    at: text.len()..text.len(),
                },
                keys: Vec::new(),
                anchors: Vec::new(),
                unsupported: None,
            });
        }
        Event::DocumentStart(..) => {}
        _ => return Err(UNREADABLE),
    }
    let token = reader.next()?;
    let root = reader.node(token, 0)?;
    let (event, end, ..) = reader.next()?;
    if !matches!(event, Event::DocumentEnd) {
        return Err(UNREADABLE);
    }
    // New keys go before an explicit `...`.
    let end = if end.is_empty() {
        text.len()
    } else {
        end.start
    };

    let mut unsupported = None;
    let mut keys = Vec::new();
    let root = match root.kind {
        Kind::Map {
            flow,
            open,
            close,
            entries,
        } => {
            let block = !flow;
            let layout_root = match flow {
                false => {
                    let first = entries.first().map_or(0, |(k, _)| k.span.start);
                    Root::Block {
                        indent: first - line_start(text, first),
                        end,
                    }
                }
                true => Root::Flow {
                    open,
                    close,
                    last: entries.last().map(|(k, v)| k.span.start..v.span.end),
                },
            };
            for (key, value) in entries {
                let Kind::Scalar {
                    value: name, style, ..
                } = &key.kind
                else {
                    continue;
                };
                if name == "<<" && *style == ScalarStyle::Plain {
                    unsupported = Some(Unsupported::MergeKeyAtTop);
                }
                let ours =
                    Section::ALL.iter().any(|s| s.list_key() == name) || name == CURRENT_CONTEXT;
                if ours {
                    keys.push(reader.top_key(name.clone(), key.span.clone(), value, block)?);
                }
            }
            layout_root
        }
        Kind::Scalar { .. } if root.span.is_empty() => Root::Empty { at: end..end },
        Kind::Scalar { .. } => Root::Empty { at: root.span },
        _ => return Err(Unsupported::Shape("the top level is not a mapping")),
    };
    Ok(Layout {
        root,
        keys,
        anchors: reader.anchors,
        unsupported,
    })
}

/// The parser refused what the general reader read: cannot happen, as
/// both are the same parser; refused all the same.
const UNREADABLE: Unsupported = Unsupported::Shape("the YAML parser could not place its parts");

/// A parser event, where it is, its span, and where the token before it ended.
type Token<'a> = (Event<'a>, Range<usize>, Span, usize);

struct Reader<'a> {
    text: &'a str,
    events: std::iter::Peekable<Parser<'a, StrInput<'a>>>,
    anchors: Vec<Anchor>,
    /// The parser's anchor ids, as indices into `anchors`.
    ids: HashMap<usize, usize>,
    /// Where the last token read ends.
    last_end: usize,
}

/// A node: from its first property (anchor, tag) to its end.
struct Node {
    span: Range<usize>,
    /// Its anchor and tag, when it has any.
    props: Option<Range<usize>>,
    anchor: Option<usize>,
    kind: Kind,
}

enum Kind {
    Scalar {
        value: String,
        style: ScalarStyle,
    },
    Seq {
        flow: bool,
        open: usize,
        close: usize,
        items: Vec<Range<usize>>,
    },
    Map {
        flow: bool,
        open: usize,
        close: usize,
        entries: Vec<(Node, Node)>,
    },
    Alias,
}

fn offsets(span: &Span) -> Result<Range<usize>, Unsupported> {
    match (span.start.byte_offset(), span.end.byte_offset()) {
        (Some(start), Some(end)) if start <= end => Ok(start..end),
        _ => Err(UNREADABLE),
    }
}

fn cover(a: Option<Range<usize>>, b: Range<usize>) -> Range<usize> {
    match a {
        Some(a) => a.start.min(b.start)..a.end.max(b.end),
        None => b,
    }
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<Token<'a>, Unsupported> {
        let (event, span) = match self.events.next() {
            Some(Ok(next)) => next,
            _ => return Err(UNREADABLE),
        };
        let at = offsets(&span)?;
        let before = self.last_end;
        self.last_end = self.last_end.max(at.end);
        Ok((event, at, span, before))
    }

    /// The node starting with `token`; at depth 0 and 1 (the top level and
    /// its values), with its entries.
    fn node(&mut self, token: Token<'a>, depth: usize) -> Result<Node, Unsupported> {
        let (event, at, span, before) = token;
        let mut props: Option<Range<usize>> = None;
        let mut anchor = None;
        if let Some(Ok((Event::Anchor(..), _))) = self.events.peek() {
            let (Event::Anchor(id, name), token, ..) = self.next()? else {
                return Err(UNREADABLE);
            };
            self.ids.insert(id, self.anchors.len());
            anchor = Some(self.anchors.len());
            self.anchors.push(Anchor {
                name: name.into_owned(),
                token: token.start,
                aliases: Vec::new(),
            });
            props = Some(cover(props, token));
        }
        if let Some(tag) = span.tag_span() {
            props = Some(cover(props, offsets(&tag)?));
        }
        let collect = depth <= 1;
        let (span, kind) = match event {
            Event::Scalar(value, style, ..) => {
                let (mut start, mut end) = (at.start, at.end);
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    // Its span is its content: the header (`|-`) is before;
                    // the blank lines after its last line are not its text.
                    let from = props.as_ref().map_or(before, |p| p.end.max(before));
                    start = self.block_header(from, at.start)?;
                    let last = start + self.text[start..end].trim_end().len();
                    end = next_line(self.text, last).min(end);
                }
                let span = match &props {
                    Some(p) if at.is_empty() => p.clone(),
                    _ => cover(props.clone(), start..end),
                };
                let value = value.into_owned();
                (span, Kind::Scalar { value, style })
            }
            Event::SequenceStart(style, ..) => {
                let flow = style == StructureStyle::Flow;
                let mut items = Vec::new();
                let mut end = at.end;
                loop {
                    let token = self.next()?;
                    if let Event::SequenceEnd = token.0 {
                        let close = token.1.start;
                        if flow {
                            end = token.1.end;
                        }
                        break (
                            cover(props.clone(), at.start..end),
                            Kind::Seq {
                                flow,
                                open: at.start,
                                close,
                                items,
                            },
                        );
                    }
                    let item = self.node(token, depth + 1)?;
                    end = end.max(item.span.end);
                    if collect {
                        items.push(item.span);
                    }
                }
            }
            Event::MappingStart(style, ..) => {
                let flow = style == StructureStyle::Flow;
                let mut entries = Vec::new();
                let mut end = at.end;
                loop {
                    let token = self.next()?;
                    if let Event::MappingEnd = token.0 {
                        let close = token.1.start;
                        if flow {
                            end = token.1.end;
                        }
                        break (
                            cover(props.clone(), at.start..end),
                            Kind::Map {
                                flow,
                                open: at.start,
                                close,
                                entries,
                            },
                        );
                    }
                    let key = self.node(token, depth + 1)?;
                    let token = self.next()?;
                    let value = self.node(token, depth + 1)?;
                    end = end.max(value.span.end).max(key.span.end);
                    if depth == 0 {
                        entries.push((key, value));
                    }
                }
            }
            Event::Alias(id) => {
                if let Some(&i) = self.ids.get(&id) {
                    self.anchors[i].aliases.push(at.start);
                }
                (at, Kind::Alias)
            }
            _ => return Err(UNREADABLE),
        };
        Ok(Node {
            span,
            props,
            anchor,
            kind,
        })
    }

    /// Where the header (`|`, `>-`, ...) of a block scalar whose content
    /// starts at `content` is: the first thing after `from` that is not a
    /// space, a comment or an indicator (`:`, `-`, `?`).
    fn block_header(&self, from: usize, content: usize) -> Result<usize, Unsupported> {
        let b = self.text.as_bytes();
        let mut i = from;
        while i < content {
            match b[i] {
                b' ' | b'\t' | b'\r' | b'\n' => i += 1,
                b'#' => i = next_line(self.text, i),
                b':' | b'-' | b'?' => i += 1,
                b'|' | b'>' => return Ok(i),
                _ => break,
            }
        }
        Err(Unsupported::Shape(
            "the header of a block scalar (`|`, `>`) could not be placed",
        ))
    }

    /// One of the keys a merge edits, and where its value sits.
    fn top_key(
        &self,
        name: String,
        key: Range<usize>,
        value: Node,
        block: bool,
    ) -> Result<TopKey, Unsupported> {
        let text = self.text;
        let b = text.as_bytes();
        let mut i = key.end;
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        let colon_end = (b.get(i) == Some(&b':')).then_some(i + 1);
        let explicit = text[line_start(text, key.start)..key.start]
            .trim_end_matches([' ', '\t'])
            .ends_with('?');
        let after_key = colon_end.unwrap_or(key.end);
        let value_kind = match value.kind {
            // Never edited (see `Unsupported::ExplicitKey`).
            _ if explicit => TopValue::Other,
            Kind::Scalar { .. } if value.span.is_empty() && value.props.is_none() => {
                TopValue::Scalar {
                    span: after_key..after_key,
                }
            }
            Kind::Scalar { .. } => TopValue::Scalar {
                span: value.span.clone(),
            },
            // `[]` in a block mapping becomes a block list, but not when it
            // holds a comment.
            Kind::Seq { flow: true, .. }
                if block
                    && seq_is_empty(&value.kind)
                    && !text[value.span.clone()].contains('#') =>
            {
                TopValue::Scalar {
                    span: value.span.clone(),
                }
            }
            Kind::Seq {
                flow: true,
                open,
                close,
                items,
            } => TopValue::FlowSequence { open, close, items },
            Kind::Seq {
                flow: false, items, ..
            } => {
                let from = value
                    .props
                    .as_ref()
                    .map_or(after_key, |p| p.end.max(after_key));
                let head_end = from;
                let (indent, items) = self.block_items(from, &items)?;
                TopValue::Sequence {
                    indent,
                    head_end,
                    items,
                }
            }
            Kind::Alias => TopValue::Alias {
                span: value.span.clone(),
            },
            Kind::Map { .. } => TopValue::Other,
        };
        Ok(TopKey {
            name,
            key,
            colon_end,
            value: value_kind,
            anchor: value.anchor,
            explicit,
        })
    }

    /// The entries of a block sequence as whole lines: from the start of
    /// each `-` line to the end of the entry's last line; and the column of
    /// the `-`. `from` is where the text before the first `-` ends.
    fn block_items(
        &self,
        mut from: usize,
        nodes: &[Range<usize>],
    ) -> Result<(usize, Vec<Range<usize>>), Unsupported> {
        const MISPLACED: Unsupported =
            Unsupported::Shape("an entry of a list does not start its own line");
        let text = self.text;
        let b = text.as_bytes();
        let mut indent = None;
        let mut items = Vec::with_capacity(nodes.len());
        for node in nodes {
            // Between two entries there are only spaces, comments and the `-`.
            let mut dash = None;
            let mut i = from;
            while i < node.start {
                match b[i] {
                    b' ' | b'\t' | b'\r' | b'\n' => i += 1,
                    b'#' => i = next_line(text, i).min(node.start),
                    b'-' if dash.is_none() => {
                        dash = Some(i);
                        i += 1;
                    }
                    _ => return Err(MISPLACED),
                }
            }
            let dash = dash.ok_or(MISPLACED)?;
            let start = line_start(text, dash);
            if !b[start..dash].iter().all(|&c| c == b' ') {
                return Err(MISPLACED);
            }
            let column = dash - start;
            if *indent.get_or_insert(column) != column {
                return Err(MISPLACED);
            }
            let end = match text[..node.end].ends_with('\n') {
                true => node.end,
                false => next_line(text, node.end),
            };
            items.push(start..end);
            from = node.end;
        }
        Ok((indent.unwrap_or(0), items))
    }
}

fn seq_is_empty(kind: &Kind) -> bool {
    matches!(kind, Kind::Seq { items, .. } if items.is_empty())
}
