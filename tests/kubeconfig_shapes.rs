//! The user's kubeconfig, whatever its shape: kubeconfigs generated from the
//! dimensions a file can vary in (document markers, anchors and aliases, flow
//! and block style at each level, CRLF, a byte order mark, tabs, comments in
//! every position, quoting, empty and comment-only files), each judged by
//! upstream kubectl. For every file kubectl reads, a merge of our entries
//! either
//! - edits it in place: every comment still there in order, every entry of
//!   the user's as kubectl saw it plus ours, the file's form kept, and a
//!   remove gives back what kubectl saw before (the very bytes, when the
//!   merge added no list or key); or
//! - is refused, only for the shapes a merge cannot edit without changing
//!   what is not ours (an alias of what it rewrites, a merge key at the top),
//!   with a message saying what to change, the file byte for byte and mtime
//!   as it was, and nothing left beside it.
//!
//! Never is a file rewritten whole. Included by `kubeconfig_kubectl.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_manager::kubeconfig::{
    HostKubeconfig, Kubeconfig, KubeconfigError, MergeOptions, RemoveOptions, merge_into_host,
    remove_from_host,
};
use serde_json::Value;

use crate::support::upstream_kubectl;

const OURS: &str = "docker-desktop";

/// How many files are generated; each is read by kubectl up to three times
/// (about a minute in all on two cores).
const SHAPES: usize = 320;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markers {
    None,
    Start,
    StartWithComment,
    End,
    StartAndEnd,
    Directive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Block,
    /// The whole top level indented by two spaces.
    Indented,
    /// `{...}` on one line.
    Flow,
    /// `{...}` over several lines, an entry to a line.
    FlowLines,
    /// Pretty JSON, as `kubectl config view -o json` prints it.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// `-` at the key's column.
    Block,
    /// `-` two columns in.
    BlockIndented,
    Flow,
    FlowLines,
    Empty,
    Null,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Block,
    /// A block entry whose body is a flow mapping (`cluster: {...}`).
    BlockFlowBody,
    Flow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchors {
    None,
    /// A CA written once and aliased in the second cluster.
    SharedCa,
    /// The first user anchored, and aliased under an unknown key.
    AliasedEntry,
    /// Our stale cluster anchored and aliased elsewhere: refused.
    InOurs,
    /// The clusters list anchored and aliased elsewhere: refused.
    AliasedList,
    /// `<<: *base` at the top level: refused.
    MergeKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Plain,
    Single,
    Double,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    Set,
    Empty,
    Null,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Full,
    Nothing,
    CommentsOnly,
    MarkerOnly,
    NullDocument,
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    content: Content,
    crlf: bool,
    bom: bool,
    markers: Markers,
    top: Top,
    lists: [List; 3],
    entries: Entry,
    anchors: Anchors,
    comments: bool,
    tabs: bool,
    quoting: Quoting,
    current: Current,
    stale_ours: bool,
}

impl Shape {
    /// The shapes a merge must refuse.
    fn refused(&self) -> bool {
        self.content == Content::Full
            && matches!(
                self.anchors,
                Anchors::InOurs | Anchors::AliasedList | Anchors::MergeKey
            )
    }

    fn flow_top(&self) -> bool {
        matches!(self.top, Top::Flow | Top::FlowLines | Top::Json)
    }
}

/// A fixed sequence of choices, so that a failure is reproducible.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.roll(from.len())]
    }

    fn coin(&mut self) -> bool {
        self.roll(2) == 0
    }
}

fn generate(dice: &mut Dice) -> Shape {
    let mut shape = Shape {
        content: dice.pick(&[
            Content::Full,
            Content::Full,
            Content::Full,
            Content::Full,
            Content::Full,
            Content::Full,
            Content::Full,
            Content::Nothing,
            Content::CommentsOnly,
            Content::MarkerOnly,
            Content::NullDocument,
        ]),
        crlf: dice.coin(),
        bom: dice.roll(4) == 0,
        markers: dice.pick(&[
            Markers::None,
            Markers::None,
            Markers::Start,
            Markers::StartWithComment,
            Markers::End,
            Markers::StartAndEnd,
            Markers::Directive,
        ]),
        top: dice.pick(&[
            Top::Block,
            Top::Block,
            Top::Indented,
            Top::Flow,
            Top::FlowLines,
            Top::Json,
        ]),
        lists: [(); 3].map(|_| {
            dice.pick(&[
                List::Block,
                List::Block,
                List::BlockIndented,
                List::Flow,
                List::FlowLines,
                List::FlowLines,
                List::Empty,
                List::Null,
                List::Absent,
            ])
        }),
        entries: dice.pick(&[Entry::Block, Entry::BlockFlowBody, Entry::Flow]),
        anchors: dice.pick(&[
            Anchors::None,
            Anchors::None,
            Anchors::None,
            Anchors::SharedCa,
            Anchors::SharedCa,
            Anchors::AliasedEntry,
            Anchors::AliasedEntry,
            Anchors::InOurs,
            Anchors::AliasedList,
            Anchors::MergeKey,
        ]),
        comments: dice.roll(3) != 0,
        tabs: dice.roll(3) == 0,
        quoting: dice.pick(&[
            Quoting::Plain,
            Quoting::Single,
            Quoting::Double,
            Quoting::Mixed,
        ]),
        current: dice.pick(&[
            Current::Set,
            Current::Set,
            Current::Empty,
            Current::Null,
            Current::Absent,
        ]),
        stale_ours: dice.roll(3) == 0,
    };
    // What the dimensions cannot combine into.
    if shape.flow_top() {
        for list in &mut shape.lists {
            *list = match *list {
                List::Block => List::Flow,
                List::BlockIndented => List::FlowLines,
                other => other,
            };
        }
        shape.entries = Entry::Flow;
    }
    if shape.top == Top::Json {
        shape.markers = Markers::None;
        shape.anchors = Anchors::None;
        shape.comments = false;
        shape.quoting = Quoting::Double;
        for list in &mut shape.lists {
            if *list == List::Flow {
                *list = List::FlowLines;
            }
        }
    }
    if matches!(shape.lists[0], List::Empty | List::Null | List::Absent)
        && matches!(
            shape.anchors,
            Anchors::SharedCa | Anchors::InOurs | Anchors::AliasedList
        )
    {
        shape.lists[0] = List::Block;
    }
    if matches!(shape.lists[1], List::Empty | List::Null | List::Absent)
        && shape.anchors == Anchors::AliasedEntry
    {
        shape.lists[1] = List::Flow;
    }
    if shape.anchors == Anchors::InOurs {
        shape.stale_ours = true;
    }
    shape
}

/// A node of a generated kubeconfig.
#[derive(Clone)]
enum Node {
    Scalar(String),
    /// A scalar written as it is (an alias, `null`).
    Raw(String),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

fn scalar(s: &str) -> Node {
    Node::Scalar(s.to_string())
}

fn map(entries: Vec<(&str, Node)>) -> Node {
    Node::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The generated file, and the comments it holds, in order.
struct Written {
    text: String,
    comments: Vec<String>,
}

struct Writer<'s> {
    shape: &'s Shape,
    dice: Dice,
    out: String,
    comments: Vec<String>,
    /// Writing a stale entry of ours: a merge replaces it whole, comments
    /// inside it included, so none is written there.
    in_ours: bool,
}

impl Writer<'_> {
    /// A comment of its own (each is unique), when the shape has comments.
    fn comment(&mut self) -> Option<String> {
        if !self.shape.comments || self.in_ours || self.dice.roll(3) == 0 {
            return None;
        }
        let comment = format!("# c{} note", self.comments.len());
        self.comments.push(comment.clone());
        Some(comment)
    }

    fn own_line_comment(&mut self, indent: usize) {
        if let Some(comment) = self.comment() {
            let _ = writeln!(self.out, "{}{comment}", " ".repeat(indent));
        }
    }

    /// The end of a line: a trailing comment maybe, and the line break.
    fn end_line(&mut self) {
        if let Some(comment) = self.comment() {
            let gap = if self.shape.tabs { " \t" } else { "  " };
            let _ = write!(self.out, "{gap}{comment}");
        }
        self.out.push('\n');
    }

    fn quoted(&mut self, s: &str) -> String {
        if s == "<<" {
            // Quoted, it would be a key like any other, not a merge key.
            return s.to_string();
        }
        let style = match self.shape.quoting {
            Quoting::Mixed => self
                .dice
                .pick(&[Quoting::Plain, Quoting::Single, Quoting::Double]),
            other => other,
        };
        match style {
            Quoting::Plain if plain_safe(s) => s.to_string(),
            Quoting::Single if !s.is_empty() => format!("'{}'", s.replace('\'', "''")),
            _ => Value::String(s.to_string()).to_string(),
        }
    }

    fn colon(&self) -> &'static str {
        if self.shape.tabs { ":\t" } else { ": " }
    }

    /// A node in flow style (JSON when the shape is JSON).
    fn flow(&mut self, node: &Node) -> String {
        match node {
            Node::Scalar(s) => self.quoted(s),
            Node::Raw(raw) => raw.clone(),
            Node::Map(entries) => {
                let mut parts = Vec::new();
                for (k, v) in entries {
                    let k = self.quoted(k);
                    let v = self.flow(v);
                    parts.push(format!("{k}: {v}"));
                }
                format!("{{{}}}", parts.join(", "))
            }
            Node::Seq(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.flow(i)).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// A list over several lines, an entry to a line, indented by `indent`.
    fn flow_lines(&mut self, items: &[Node], indent: usize) {
        let pad = if self.shape.tabs && self.shape.top == Top::Json {
            "\t".repeat(indent / 2 + 1)
        } else {
            " ".repeat(indent + 2)
        };
        self.out.push('[');
        self.out.push('\n');
        for (i, item) in items.iter().enumerate() {
            if self.shape.top != Top::Json {
                self.own_line_comment(indent + 2);
            }
            let text = self.flow(item);
            let _ = write!(self.out, "{pad}{text}");
            if i + 1 < items.len() {
                self.out.push(',');
            }
            if self.shape.top == Top::Json {
                self.out.push('\n');
            } else {
                self.end_line();
            }
        }
        let _ = write!(self.out, "{}]", " ".repeat(indent));
    }

    /// A block mapping at `indent`; `first_inline` when its first key
    /// follows a `- ` already written.
    fn block_map(&mut self, entries: &[(String, Node)], indent: usize, first_inline: bool) {
        for (i, (key, value)) in entries.iter().enumerate() {
            if !(first_inline && i == 0) {
                self.own_line_comment(indent);
                self.out.push_str(&" ".repeat(indent));
            }
            let key = self.quoted(key);
            self.out.push_str(&key);
            self.value(value, indent, &key);
        }
    }

    /// What follows a key in a block mapping.
    fn value(&mut self, value: &Node, indent: usize, key: &str) {
        match value {
            Node::Scalar(_) | Node::Raw(_) => {
                let text = self.flow(value);
                let _ = write!(self.out, "{}{text}", self.colon());
                self.end_line();
            }
            Node::Map(entries) => {
                let body_flow = self.shape.entries == Entry::BlockFlowBody && indent > 0;
                if body_flow || entries.is_empty() {
                    let text = self.flow(value);
                    let _ = write!(self.out, "{}{text}", self.colon());
                    self.end_line();
                } else {
                    self.out.push(':');
                    self.end_line();
                    self.block_map(entries, indent + 2, false);
                }
            }
            Node::Seq(items) => {
                let style = self.list_style(key);
                match style {
                    List::Block | List::BlockIndented if !items.is_empty() => {
                        self.out.push(':');
                        self.end_line();
                        let dash = indent + usize::from(style == List::BlockIndented) * 2;
                        for item in items {
                            self.own_line_comment(dash);
                            let _ = write!(self.out, "{}- ", " ".repeat(dash));
                            self.in_ours = is_ours(item);
                            self.entry(item, dash + 2);
                            self.in_ours = false;
                        }
                    }
                    List::FlowLines if !items.is_empty() => {
                        let _ = write!(self.out, "{}", self.colon());
                        self.flow_lines(items, indent);
                        self.end_line();
                    }
                    _ => {
                        let text = self.flow(value);
                        let _ = write!(self.out, "{}{text}", self.colon());
                        self.end_line();
                    }
                }
            }
        }
    }

    /// One entry of a block list, its `- ` written.
    fn entry(&mut self, item: &Node, indent: usize) {
        match item {
            Node::Map(entries) if self.shape.entries != Entry::Flow => {
                self.block_map(entries, indent, true)
            }
            Node::Raw(anchored) if anchored.starts_with('&') => {
                // `&name` on the `-` line, the entry below it.
                let (anchor, rest) = anchored.split_once(' ').unwrap();
                let _ = writeln!(self.out, "{anchor}");
                let _ = write!(self.out, "{}{rest}", " ".repeat(indent));
                self.end_line();
            }
            other => {
                let text = self.flow(other);
                self.out.push_str(&text);
                self.end_line();
            }
        }
    }

    fn list_style(&self, key: &str) -> List {
        let key = key.trim_matches(['"', '\'']);
        match key {
            "clusters" => self.shape.lists[0],
            "users" => self.shape.lists[1],
            "contexts" => self.shape.lists[2],
            _ => List::Flow,
        }
    }
}

fn is_ours(node: &Node) -> bool {
    matches!(node, Node::Map(entries) if entries.iter().any(|(k, v)| k == "name" && matches!(v, Node::Scalar(s) if s == OURS)))
}

/// Whether a string reads as itself unquoted, in block and flow style.
fn plain_safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains([',', '[', ']', '{', '}', '\''])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        )
}

/// The user's entries: two of each, and maybe stale ones of ours.
fn document(shape: &Shape) -> Vec<(String, Node)> {
    let ca = "QUJDREVGR0g=";
    let cluster = |name: &str, server: &str, ca: Node| {
        map(vec![
            ("name", scalar(name)),
            (
                "cluster",
                map(vec![
                    ("server", scalar(server)),
                    ("certificate-authority-data", ca),
                ]),
            ),
        ])
    };
    let (first_ca, second_ca) = match shape.anchors {
        Anchors::SharedCa => (Node::Raw(format!("&ca {ca}")), Node::Raw("*ca".into())),
        _ => (scalar(ca), scalar("SUpLTE1OT1A=")),
    };
    let mut clusters = vec![
        cluster("prod", "https://prod.example.com:6443", first_ca),
        cluster("dev-1", "https://10.0.0.7:443", second_ca),
    ];
    let user = |name: &str, token: &str| {
        map(vec![
            ("name", scalar(name)),
            ("user", map(vec![("token", scalar(token))])),
        ])
    };
    let mut users = vec![user("prod-admin", "t0ken-prod"), user("dev", "t0ken-dev")];
    let context = |name: &str, cluster: &str, user: &str| {
        map(vec![
            ("name", scalar(name)),
            (
                "context",
                map(vec![
                    ("cluster", scalar(cluster)),
                    ("user", scalar(user)),
                    ("namespace", scalar("shop")),
                ]),
            ),
        ])
    };
    let mut contexts = vec![
        context("prod", "prod", "prod-admin"),
        context("dev", "dev-1", "dev"),
    ];
    if shape.stale_ours {
        let body = map(vec![("server", scalar("https://127.0.0.1:6443"))]);
        let body = match shape.anchors {
            Anchors::InOurs => Node::Raw("&dd {server: https://127.0.0.1:6443}".to_string()),
            _ => body,
        };
        clusters.push(Node::Map(vec![
            ("name".into(), scalar(OURS)),
            ("cluster".into(), body),
        ]));
        users.push(user(OURS, "old-token"));
        contexts.push(context(OURS, OURS, OURS));
    }
    if shape.anchors == Anchors::AliasedEntry {
        // `&u` on the first user: `- &u {...}` in any list style.
        let flow = {
            let mut w = Writer {
                shape,
                dice: Dice(1),
                out: String::new(),
                comments: Vec::new(),
                in_ours: false,
            };
            w.flow(&users[0])
        };
        users[0] = Node::Raw(format!("&u {flow}"));
    }
    let list = |items: Vec<Node>, style: List| match style {
        List::Absent => None,
        List::Null => Some(Node::Raw("null".into())),
        List::Empty => Some(Node::Seq(Vec::new())),
        _ => Some(Node::Seq(items)),
    };
    let mut top: Vec<(String, Node)> = Vec::new();
    let mut push = |k: &str, v: Node| top.push((k.to_string(), v));
    push("apiVersion", scalar("v1"));
    push("kind", scalar("Config"));
    push("preferences", Node::Map(Vec::new()));
    let clusters = list(clusters, shape.lists[0]).map(|c| match (shape.anchors, c) {
        (Anchors::AliasedList, Node::Seq(items)) => {
            let w = &mut Writer {
                shape,
                dice: Dice(2),
                out: String::new(),
                comments: Vec::new(),
                in_ours: false,
            };
            Node::Raw(format!("&cl {}", w.flow(&Node::Seq(items))))
        }
        (_, c) => c,
    });
    if let Some(clusters) = clusters {
        push("clusters", clusters);
    }
    if let Some(users) = list(users, shape.lists[1]) {
        push("users", users);
    }
    if let Some(contexts) = list(contexts, shape.lists[2]) {
        push("contexts", contexts);
    }
    match shape.current {
        Current::Set => push("current-context", scalar("prod")),
        Current::Empty => push("current-context", scalar("")),
        Current::Null => push("current-context", Node::Raw("null".into())),
        Current::Absent => {}
    }
    match shape.anchors {
        Anchors::AliasedEntry => push("x-users-backup", Node::Seq(vec![Node::Raw("*u".into())])),
        Anchors::InOurs => push("x-ours-backup", Node::Raw("*dd".into())),
        Anchors::AliasedList => push("x-clusters-backup", Node::Raw("*cl".into())),
        Anchors::MergeKey => {
            top.insert(
                0,
                (
                    "x-base".into(),
                    Node::Raw("&base {x-from-base: merged}".into()),
                ),
            );
            top.push(("<<".into(), Node::Raw("*base".into())));
        }
        _ => {}
    }
    top
}

fn write_shape(shape: &Shape, seed: u64) -> Written {
    let mut w = Writer {
        shape,
        dice: Dice(seed | 1),
        out: String::new(),
        comments: Vec::new(),
        in_ours: false,
    };
    match shape.content {
        Content::Nothing => {}
        Content::CommentsOnly => {
            w.out.push_str("# only a comment\n# and another\n");
            w.comments
                .extend(["# only a comment".into(), "# and another".into()]);
        }
        Content::MarkerOnly => {
            w.out.push_str("---\n");
            w.own_line_comment(0);
        }
        Content::NullDocument => {
            w.own_line_comment(0);
            w.out.push_str("null\n");
        }
        Content::Full => write_full(&mut w),
    }
    let mut text = w.out;
    if shape.crlf {
        text = text.replace('\n', "\r\n");
    }
    Written {
        text,
        comments: w.comments,
    }
}

fn write_full(w: &mut Writer) {
    let shape = *w.shape;
    let top = document(&shape);
    match shape.markers {
        Markers::Directive => w.out.push_str("%YAML 1.1\n---\n"),
        Markers::Start | Markers::StartAndEnd => w.out.push_str("---\n"),
        Markers::StartWithComment => {
            w.out.push_str("---");
            match w.comment() {
                Some(c) => {
                    let _ = writeln!(w.out, " {c}");
                }
                None => w.out.push('\n'),
            }
        }
        _ => {}
    }
    w.own_line_comment(0);
    match shape.top {
        Top::Block => w.block_map(&top, 0, false),
        Top::Indented => w.block_map(&top, 2, false),
        Top::Flow => {
            let text = w.flow(&Node::Map(top));
            w.out.push_str(&text);
            w.end_line();
        }
        Top::FlowLines | Top::Json => {
            let json = shape.top == Top::Json;
            let pad = if shape.tabs && json { "\t" } else { "  " };
            w.out.push_str("{\n");
            for (i, (k, v)) in top.iter().enumerate() {
                if !json {
                    w.own_line_comment(2);
                }
                let key = w.quoted(k);
                let _ = write!(w.out, "{pad}{key}: ");
                match v {
                    Node::Seq(items) if !items.is_empty() && w.list_style(k) == List::FlowLines => {
                        w.flow_lines(items, 2)
                    }
                    _ => {
                        let text = w.flow(v);
                        w.out.push_str(&text);
                    }
                }
                if i + 1 < top.len() {
                    w.out.push(',');
                }
                if json {
                    w.out.push('\n');
                } else {
                    w.end_line();
                }
            }
            w.out.push('}');
            if json {
                w.out.push('\n');
            } else {
                w.end_line();
            }
        }
    }
    if matches!(shape.markers, Markers::End | Markers::StartAndEnd) {
        w.out.push_str("...\n");
    }
    w.own_line_comment(0);
}

fn kubectl_view(file: &Path) -> Option<Value> {
    let out = Command::new(upstream_kubectl())
        .args(["config", "view", "--raw", "-o", "json"])
        .env("KUBECONFIG", file)
        .output()
        .expect("kubectl runs");
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
}

fn by_name(view: &Value, list: &str) -> BTreeMap<String, Value> {
    view[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| (item["name"].as_str().unwrap().to_string(), item.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn without_ours(mut entries: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    entries.remove(OURS);
    entries
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The text of a file as written, without a byte order mark.
fn text_of(bytes: &[u8]) -> String {
    String::from_utf8(
        bytes
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(bytes)
            .to_vec(),
    )
    .unwrap()
}

fn assert_comments_in_order(name: &str, comments: &[String], text: &str) {
    let mut from = 0;
    for comment in comments {
        match text[from..].find(comment.as_str()) {
            Some(i) => from += i + comment.len(),
            None => panic!("{name}: {comment:?} lost or moved before another:\n{text}"),
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    generated: usize,
    kubectl_refuses: usize,
    merged: usize,
    refused: usize,
    same_bytes_after_remove: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.generated += other.generated;
        self.kubectl_refuses += other.kubectl_refuses;
        self.merged += other.merged;
        self.refused += other.refused;
        self.same_bytes_after_remove += other.same_bytes_after_remove;
    }
}

fn check(
    case: usize,
    shape: &Shape,
    written: &Written,
    ours: &Kubeconfig,
    ours_view: &Value,
    tally: &mut Tally,
) {
    tally.generated += 1;
    let name = format!("shape {case} {shape:?}");
    // In memory where there is a tmpfs: every merge and remove fsyncs, and
    // the test is about shapes, not disks.
    let shm = Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .unwrap();
    let file = dir.path().join("config");
    let mut bytes = Vec::new();
    if shape.bom {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    bytes.extend_from_slice(written.text.as_bytes());
    fs::write(&file, &bytes).unwrap();
    let Some(before) = kubectl_view(&file) else {
        // Not a kubeconfig kubectl reads: not ours to judge.
        tally.kubectl_refuses += 1;
        return;
    };
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let dest = HostKubeconfig::from_files(vec![file.clone()]).unwrap();

    match merge_into_host(ours, &dest, &MergeOptions::default()) {
        Err(err) => {
            tally.refused += 1;
            assert!(shape.refused(), "{name}: refused\n{err}\n{}", written.text);
            assert!(
                matches!(err, KubeconfigError::Unsupported { .. }),
                "{name}: {err}"
            );
            let said = err.to_string();
            for words in [file.to_str().unwrap(), "left untouched", "write"] {
                assert!(said.contains(words), "{name}: {words:?} not in: {said}");
            }
            assert_eq!(fs::read(&file).unwrap(), bytes, "{name}: bytes");
            assert_eq!(
                fs::metadata(&file).unwrap().modified().unwrap(),
                mtime,
                "{name}: mtime"
            );
            assert_eq!(names_in(dir.path()), ["config"], "{name}");
        }
        Ok(report) => {
            tally.merged += 1;
            assert!(
                !shape.refused(),
                "{name}: merged a shape to refuse:\n{}",
                written.text
            );
            assert!(report.written, "{name}");
            let merged = fs::read(&file).unwrap();
            let text = text_of(&merged);
            let after = kubectl_view(&file)
                .unwrap_or_else(|| panic!("{name}: kubectl cannot read the merge:\n{text}"));
            for list in ["clusters", "users", "contexts"] {
                assert_eq!(
                    without_ours(by_name(&after, list)),
                    without_ours(by_name(&before, list)),
                    "{name}: the user's {list}:\n{text}"
                );
                assert_eq!(
                    by_name(&after, list).get(OURS),
                    by_name(ours_view, list).get(OURS),
                    "{name}: our {list} entry:\n{text}"
                );
            }
            for key in ["preferences", "extensions", "kind", "apiVersion"] {
                assert_eq!(after.get(key), before.get(key), "{name}: {key}");
            }
            let had = before["current-context"].as_str().unwrap_or_default();
            let want = if had.is_empty() { OURS } else { had };
            assert_eq!(after["current-context"], want, "{name}:\n{text}");
            assert_comments_in_order(&name, &written.comments, &text);
            // The file's form.
            assert_eq!(
                merged.starts_with(b"\xEF\xBB\xBF"),
                shape.bom,
                "{name}: BOM"
            );
            let lf = text.matches('\n').count();
            let crlf = text.matches("\r\n").count();
            if shape.crlf && written.text.contains('\n') {
                assert_eq!(crlf, lf, "{name}: every line CRLF:\n{text:?}");
            } else if !shape.crlf {
                assert_eq!(crlf, 0, "{name}: no CRLF");
            }
            if shape.content == Content::Full && shape.top == Top::Json {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{name}: no longer JSON ({e}):\n{text}"));
            }

            // The remove takes back what the merge added.
            remove_from_host(&dest, OURS, &RemoveOptions::default()).unwrap();
            let removed = kubectl_view(&file).unwrap();
            let mut want = before.clone();
            for list in ["clusters", "users", "contexts"] {
                let kept: Vec<Value> = without_ours(by_name(&before, list)).into_values().collect();
                let got: Vec<Value> = by_name(&removed, list).into_values().collect();
                assert_eq!(got, kept, "{name}: {list} after remove");
                want[list] = removed[list].clone();
            }
            if had == OURS {
                want["current-context"] = Value::String(String::new());
            }
            assert_eq!(removed, want, "{name}: after remove");
            let lists_written = shape.lists.iter().all(|l| {
                matches!(
                    l,
                    List::Block | List::BlockIndented | List::Flow | List::FlowLines
                )
            });
            if shape.content == Content::Full
                && lists_written
                && !had.is_empty()
                && !shape.stale_ours
            {
                assert_eq!(
                    text_of(&fs::read(&file).unwrap()),
                    written.text,
                    "{name}: merge + remove gives back the same bytes"
                );
                tally.same_bytes_after_remove += 1;
            }
        }
    }
}

#[test]
fn every_shape_is_edited_in_place_or_refused_untouched() {
    let started = std::time::Instant::now();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubeconfig");
    let ours_file: PathBuf = fixtures.join("ours-docker-desktop.yaml");
    let ours = Kubeconfig::load(&ours_file).unwrap();
    let ours_view = kubectl_view(&ours_file).unwrap();
    let mut dice = Dice(0x5EED_CAFE_F00D_0001);
    let mut seen = BTreeMap::<String, usize>::new();
    let cases: Vec<(Shape, Written)> = (0..SHAPES)
        .map(|_| {
            let shape = generate(&mut dice);
            let written = write_shape(&shape, dice.roll(1 << 30) as u64);
            for dimension in [
                format!("{:?}", shape.content),
                format!("{:?}", shape.markers),
                format!("{:?}", shape.top),
                format!("{:?}", shape.entries),
                format!("{:?}", shape.anchors),
                format!("{:?}", shape.quoting),
                format!("current {:?}", shape.current),
                format!("crlf {}", shape.crlf),
                format!("bom {}", shape.bom),
                format!("tabs {}", shape.tabs),
                format!("comments {}", shape.comments),
            ]
            .into_iter()
            .chain(shape.lists.iter().map(|l| format!("list {l:?}")))
            {
                *seen.entry(dimension).or_default() += 1;
            }
            (shape, written)
        })
        .collect();
    // Two at a time: most of the time is kubectl's.
    let tally = std::sync::Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (cases, tally, ours, ours_view) = (&cases, &tally, &ours, &ours_view);
            scope.spawn(move || {
                for (case, (shape, written)) in cases.iter().enumerate().skip(worker).step_by(2) {
                    let mut mine = Tally::default();
                    check(case, shape, written, ours, ours_view, &mut mine);
                    tally.lock().unwrap().add(&mine);
                }
            });
        }
    });
    let tally = tally.into_inner().unwrap();
    eprintln!(
        "{tally:?} in {:?}\ndimension values covered: {seen:?}",
        started.elapsed()
    );
    assert_eq!(tally.generated, SHAPES, "{tally:?}");
    assert!(tally.merged >= SHAPES / 2, "{tally:?}");
    assert!(tally.refused >= 20, "{tally:?}");
    assert!(tally.same_bytes_after_remove >= 8, "{tally:?}");
    assert!(tally.kubectl_refuses < SHAPES / 10, "{tally:?}");
}
