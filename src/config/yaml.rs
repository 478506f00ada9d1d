//! Marked YAML tree and a serde `Deserializer` over it.
//!
//! Config files are YAML. `serde_yaml` is deprecated, so we parse with the
//! `yaml-rust2` event parser into our own tree ([`Node`]) where every node
//! remembers its `LINE:COL` ([`Mark`]), and deserialize from that tree with
//! [`from_node`]. Every error ([`YamlError`]) carries the mark of the node at
//! fault; its `message` never contains the location itself.
//!
//! Scalars are typed lazily: the type the visitor asks for decides how a scalar
//! is read, so a plain `502` can be a `u16` or the `String` `"502"`. Only
//! `deserialize_any` (untagged enums, `flatten`, `serde_json::Value`, ...)
//! applies the YAML 1.2 core schema to plain scalars.

use std::collections::HashMap;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, MapAccess, SeqAccess, Unexpected, VariantAccess,
    Visitor,
};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// Maximum nesting depth of sequences/mappings.
const MAX_DEPTH: usize = 128;
/// Maximum number of nodes in a document, counting alias expansions
/// (guards against "billion laughs" alias bombs).
const MAX_NODES: usize = 1_000_000;
/// Scalars longer than this are shortened in error messages.
const MAX_SHOWN_CHARS: usize = 60;

// ---------------------------------------------------------------------------
// Tree
// ---------------------------------------------------------------------------

/// A position in the source text. Both fields are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl Mark {
    pub const fn new(line: usize, col: usize) -> Self {
        Mark { line, col }
    }

    fn from_marker(m: &Marker) -> Self {
        // yaml-rust2: line is 1-based, col is 0-based.
        Mark { line: m.line().max(1), col: m.col() + 1 }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An empty document or an empty plain scalar (e.g. `key:` with no value).
    /// A written `null` / `~` is a plain `Scalar` (typed lazily).
    Null,
    /// Any scalar. `plain` is false for quoted and block (`|`, `>`) scalars,
    /// and for scalars tagged `!!str`.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order. Keys are always `Scalar`s and unique.
    Map(Vec<(Node, Node)>),
}

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

/// An error with the position of the node at fault. `message` contains no location.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub mark: Mark,
    pub message: String,
}

impl YamlError {
    pub fn new(mark: Mark, message: impl Into<String>) -> Self {
        YamlError { mark, message: message.into() }
    }
}

/// Formats as `LINE:COL: message`.
impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mark, self.message)
    }
}

impl std::error::Error for YamlError {}

impl From<ScanError> for YamlError {
    fn from(e: ScanError) -> Self {
        YamlError::new(Mark::from_marker(e.marker()), e.info())
    }
}

impl Node {
    pub fn new(value: Value, mark: Mark) -> Self {
        Node { value, mark }
    }

    /// Map lookup by scalar key. `None` for non-maps and missing keys.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node itself (useful for "unknown key" marks).
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(k, _)| k)
    }

    fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.entries().find(|(k, _)| k.as_str() == Some(key))
    }

    /// Nested lookup: each segment is a map key, or an index when the
    /// current node is a sequence and the segment is a decimal number.
    pub fn path(&self, path: &[&str]) -> Option<&Node> {
        let mut cur = self;
        for seg in path {
            cur = match &cur.value {
                Value::Map(_) => cur.get(seg)?,
                Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The text of a scalar (plain or quoted); `None` for null, sequences and maps.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Map entries in document order; empty for non-maps.
    pub fn entries(&self) -> impl Iterator<Item = (&Node, &Node)> {
        let slice: &[(Node, Node)] = match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        };
        slice.iter().map(|(k, v)| (k, v))
    }

    /// Items of a sequence; empty for non-sequences.
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// `"null"`, `"string"`, `"sequence"` or `"mapping"`, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }

    /// True for `Null` and for the plain scalars `null`, `Null`, `NULL`, `~`.
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::Null => true,
            Value::Scalar { text, plain: true } => is_null_text(text),
            _ => false,
        }
    }

    /// Human description for "found ..." in messages, e.g. `a string "abc"`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Seq(_) => "a sequence".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
            Value::Scalar { text, plain: false } => format!("a string {}", quote(text)),
            Value::Scalar { text, plain: true } => match classify_plain(text) {
                Plain::Null => "null".to_owned(),
                Plain::Bool(b) => format!("a boolean {b}"),
                Plain::Int => format!("an integer {}", shorten(text)),
                Plain::Float => format!("a float {}", shorten(text)),
                Plain::Str => format!("a string {}", quote(text)),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// A sequence or mapping still open while its events arrive: the parser is
/// event-based, the tree is built bottom-up on a stack of these.
enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
        size: usize,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        /// key text -> key mark, for duplicate detection.
        seen: HashMap<String, Mark>,
        pending_key: Option<Node>,
        size: usize,
    },
}

/// Turns parser events into a [`Node`] tree, resolving anchors and aliases
/// and counting nodes so that an alias bomb stops at [`MAX_NODES`].
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    total: usize,
}

impl Builder {
    fn count(&mut self, n: usize, mark: Mark) -> Result<(), YamlError> {
        self.total = self.total.saturating_add(n);
        if self.total > MAX_NODES {
            return Err(YamlError::new(
                mark,
                format!("document too large (more than {MAX_NODES} nodes after alias expansion)"),
            ));
        }
        Ok(())
    }

    /// A node (of `size` nodes in total) is complete: register its anchor and
    /// attach it to its parent.
    fn complete(&mut self, node: Node, size: usize, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { mark, items, size: s, .. }) => {
                // Block collections are reported by the parser at a position
                // after their first child's start; use the earlier one.
                if items.is_empty() {
                    *mark = earliest(*mark, node.mark);
                }
                items.push(node);
                *s += size;
            }
            Some(Frame::Map { mark, entries, seen, pending_key, size: s, .. }) => {
                *s += size;
                match pending_key.take() {
                    Some(key) => entries.push((key, node)),
                    None => {
                        let text = match &node.value {
                            Value::Scalar { text, .. } => text,
                            _ => {
                                return Err(YamlError::new(
                                    node.mark,
                                    format!("mapping keys must be scalars, found {}", node.describe()),
                                ))
                            }
                        };
                        if let Some(first) = seen.get(text.as_str()) {
                            return Err(YamlError::new(
                                node.mark,
                                format!(
                                    "duplicate key {} (first defined at line {}, column {})",
                                    quote(text),
                                    first.line,
                                    first.col
                                ),
                            ));
                        }
                        if entries.is_empty() {
                            *mark = earliest(*mark, node.mark);
                        }
                        seen.insert(text.clone(), node.mark);
                        *pending_key = Some(node);
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame, mark: Mark) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError::new(mark, format!("nesting too deep (more than {MAX_DEPTH} levels)")));
        }
        self.count(1, mark)?;
        self.stack.push(frame);
        Ok(())
    }
}

fn earliest(a: Mark, b: Mark) -> Mark {
    if (b.line, b.col) < (a.line, a.col) {
        b
    } else {
        a
    }
}

fn is_str_tag(tag: &Option<Tag>) -> bool {
    matches!(tag, Some(t) if t.suffix == "str" && (t.handle == "tag:yaml.org,2002:" || t.handle == "!!"))
}

/// Parse one YAML document into a marked tree.
///
/// Empty input (or only comments) gives `Node { Null, 1:1 }`. Syntax errors,
/// duplicate keys (mark of the second key), non-scalar keys and more than one
/// document are errors. Aliases are resolved: an alias node is a clone of the
/// anchored node that keeps the alias's own mark.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder { stack: Vec::new(), anchors: HashMap::new(), root: None, total: 0 };
    let mut documents = 0usize;
    loop {
        let (event, marker) = parser.next_token()?;
        let mark = Mark::from_marker(&marker);
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::new(mark, "multiple YAML documents in one file are not supported"));
                }
            }
            Event::Alias(id) => {
                let (node, size) = match b.anchors.get(&id) {
                    Some((node, size)) => (node.clone(), *size),
                    None => {
                        return Err(YamlError::new(mark, "alias refers to a node that contains it (recursive alias)"))
                    }
                };
                b.count(size, mark)?;
                b.complete(Node::new(node.value, mark), size, 0)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain && !is_str_tag(&tag);
                let mut mark = mark;
                let value = if plain && text.is_empty() {
                    // The parser reports an empty value at the *next* token,
                    // often on a later line; as a map value, use its key's mark.
                    if let Some(Frame::Map { pending_key: Some(key), .. }) = b.stack.last() {
                        mark = key.mark;
                    }
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                b.count(1, mark)?;
                b.complete(Node::new(value, mark), 1, anchor)?;
            }
            Event::SequenceStart(anchor, _) => b.push(Frame::Seq { mark, anchor, items: Vec::new(), size: 1 }, mark)?,
            Event::MappingStart(anchor, _) => b.push(
                Frame::Map { mark, anchor, entries: Vec::new(), seen: HashMap::new(), pending_key: None, size: 1 },
                mark,
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, size, anchor) = match b.stack.pop() {
                    Some(Frame::Seq { mark, anchor, items, size }) => {
                        (Node::new(Value::Seq(items), mark), size, anchor)
                    }
                    Some(Frame::Map { mark, anchor, entries, size, .. }) => {
                        (Node::new(Value::Map(entries), mark), size, anchor)
                    }
                    None => return Err(YamlError::new(mark, "unbalanced collection end")),
                };
                b.complete(node, size, anchor)?;
            }
        }
    }
    Ok(b.root.unwrap_or_else(|| Node::new(Value::Null, Mark::new(1, 1))))
}

// ---------------------------------------------------------------------------
// Scalar typing (YAML 1.2 core schema)
// ---------------------------------------------------------------------------

/// What a plain scalar is under the YAML 1.2 core schema, for `deserialize_any`
/// (everywhere else the visitor decides the type).
enum Plain {
    Null,
    Bool(bool),
    Int,
    Float,
    Str,
}

fn is_null_text(t: &str) -> bool {
    matches!(t, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool_core(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn classify_plain(t: &str) -> Plain {
    if is_null_text(t) {
        Plain::Null
    } else if let Some(b) = parse_bool_core(t) {
        Plain::Bool(b)
    } else if parse_int(t).is_some() {
        Plain::Int
    } else if parse_float(t).is_some() {
        Plain::Float
    } else {
        Plain::Str
    }
}

/// Integer syntax: optional sign, then decimal digits, `0x` hex or `0o` octal.
/// Returns `None` if `t` is not an integer; `Some((negative, None))` if the
/// magnitude does not fit in `u128`.
fn parse_int(t: &str) -> Option<(bool, Option<u128>)> {
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (digits, radix) = if let Some(h) = rest.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = rest.strip_prefix("0o") {
        (o, 8)
    } else {
        (rest, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some((neg, u128::from_str_radix(digits, radix).ok()))
}

/// Float syntax of the core schema (which also matches integers in decimal).
fn parse_float(t: &str) -> Option<f64> {
    match t {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    t.parse::<f64>().ok()
}

fn int_to_i128(neg: bool, mag: u128) -> Option<i128> {
    if neg {
        if mag == 1u128 << 127 {
            Some(i128::MIN)
        } else {
            i128::try_from(mag).ok().map(|m| -m)
        }
    } else {
        i128::try_from(mag).ok()
    }
}

fn shorten(t: &str) -> String {
    if t.chars().count() > MAX_SHOWN_CHARS {
        let mut s: String = t.chars().take(MAX_SHOWN_CHARS - 3).collect();
        s.push_str("...");
        s
    } else {
        t.to_owned()
    }
}

fn quote(t: &str) -> String {
    format!("{:?}", shorten(t))
}

// ---------------------------------------------------------------------------
// Deserializer error
// ---------------------------------------------------------------------------

/// Internal error type: the mark is filled in by the innermost node that sees it.
#[derive(Debug)]
struct DeError {
    mark: Option<Mark>,
    message: String,
}

impl DeError {
    fn at(mark: Mark, message: impl Into<String>) -> Self {
        DeError { mark: Some(mark), message: message.into() }
    }

    fn expected(node: &Node, what: &str) -> Self {
        DeError::at(node.mark, format!("expected {what}, found {}", node.describe()))
    }

    fn or_mark(mut self, mark: Mark) -> Self {
        if self.mark.is_none() {
            self.mark = Some(mark);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

fn describe_unexpected(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Bool(b) => format!("a boolean {b}"),
        Unexpected::Unsigned(n) => format!("an integer {n}"),
        Unexpected::Signed(n) => format!("an integer {n}"),
        Unexpected::Float(x) => format!("a float {x}"),
        Unexpected::Char(c) => format!("a character {c:?}"),
        Unexpected::Str(s) => format!("a string {}", quote(s)),
        Unexpected::Bytes(_) => "a byte array".to_owned(),
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Option => "an optional value".to_owned(),
        Unexpected::NewtypeStruct => "a newtype struct".to_owned(),
        Unexpected::Seq => "a sequence".to_owned(),
        Unexpected::Map => "a mapping".to_owned(),
        Unexpected::Enum => "an enum".to_owned(),
        Unexpected::UnitVariant => "a unit variant".to_owned(),
        Unexpected::NewtypeVariant => "a newtype variant".to_owned(),
        Unexpected::TupleVariant => "a tuple variant".to_owned(),
        Unexpected::StructVariant => "a struct variant".to_owned(),
        Unexpected::Other(o) => (*o).to_owned(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { mark: None, message: msg.to_string() }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        de::Error::custom(format_args!("expected {exp}, found {}", describe_unexpected(&unexp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        de::Error::custom(format_args!("invalid value: expected {exp}, found {}", describe_unexpected(&unexp)))
    }
}

/// Run `f`; an error without a mark gets `mark`.
fn marked<T>(mark: Mark, f: impl FnOnce() -> Result<T, DeError>) -> Result<T, DeError> {
    f().map_err(|e| e.or_mark(mark))
}

// ---------------------------------------------------------------------------
// Deserializer
// ---------------------------------------------------------------------------

/// Deserialize any `T` from a node. Errors carry the mark of the innermost
/// node at fault.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, YamlError> {
    T::deserialize(NodeDeserializer(node))
        .map_err(|e| YamlError { mark: e.mark.unwrap_or(node.mark), message: e.message })
}

/// `parse` + `from_node`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    from_node(&parse(text)?)
}

/// The serde `Deserializer` over one [`Node`]: errors get the node's mark, so
/// every message can name the line and column at fault.
struct NodeDeserializer<'a>(&'a Node);

impl<'a> NodeDeserializer<'a> {
    /// Scalar text (plain or quoted), or a type error mentioning `what`.
    fn scalar(&self, what: &str) -> Result<&'a str, DeError> {
        match &self.0.value {
            Value::Scalar { text, .. } => Ok(text),
            _ => Err(DeError::expected(self.0, what)),
        }
    }

    fn int<T>(&self, ty: &str, min: &dyn fmt::Display, max: &dyn fmt::Display) -> Result<T, DeError>
    where
        T: TryFrom<i128> + TryFrom<u128>,
    {
        let what = format!("an integer ({ty})");
        let text = self.scalar(&what)?;
        let (neg, mag) = parse_int(text).ok_or_else(|| DeError::expected(self.0, &what))?;
        let value = mag.and_then(|mag| {
            if neg && mag != 0 {
                int_to_i128(true, mag).and_then(|v| T::try_from(v).ok())
            } else {
                T::try_from(mag).ok()
            }
        });
        value.ok_or_else(|| {
            DeError::at(self.0.mark, format!("{} is out of range for {ty} ({min}..={max})", shorten(text)))
        })
    }

    fn float(&self, ty: &str) -> Result<f64, DeError> {
        let what = format!("a number ({ty})");
        let text = self.scalar(&what)?;
        if let Some(x) = parse_float(text) {
            return Ok(x);
        }
        match parse_int(text) {
            #[allow(clippy::cast_precision_loss)]
            Some((neg, Some(mag))) => Ok(if neg { -(mag as f64) } else { mag as f64 }),
            _ => Err(DeError::expected(self.0, &what)),
        }
    }

    fn visit_seq_items<'de, V: Visitor<'de>>(items: &'a [Node], visitor: V) -> Result<V::Value, DeError> {
        let mut acc = SeqAcc { iter: items.iter(), consumed: 0 };
        let value = visitor.visit_seq(&mut acc)?;
        if let Some(extra) = acc.iter.next() {
            return Err(DeError::at(
                extra.mark,
                format!("too many elements: expected {}, found {}", acc.consumed, items.len()),
            ));
        }
        Ok(value)
    }

    fn visit_map_entries<'de, V: Visitor<'de>>(entries: &'a [(Node, Node)], visitor: V) -> Result<V::Value, DeError> {
        let mut acc = MapAcc { iter: entries.iter(), value: None };
        let value = visitor.visit_map(&mut acc)?;
        if let Some((k, _)) = acc.iter.next() {
            return Err(DeError::at(k.mark, "unexpected extra mapping entry"));
        }
        Ok(value)
    }
}

macro_rules! de_int {
    ($($method:ident => $visit:ident: $ty:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            marked(self.0.mark, || {
                let v: $ty = self.int(stringify!($ty), &<$ty>::MIN, &<$ty>::MAX)?;
                visitor.$visit(v)
            })
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        marked(node.mark, || match &node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, plain: false } => visitor.visit_str(text),
            Value::Scalar { text, plain: true } => match classify_plain(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int => match parse_int(text) {
                    Some((false, Some(m))) => match u64::try_from(m) {
                        Ok(v) => visitor.visit_u64(v),
                        Err(_) => visitor.visit_u128(m),
                    },
                    Some((true, Some(m))) => match int_to_i128(true, m) {
                        Some(v) => match i64::try_from(v) {
                            Ok(v) => visitor.visit_i64(v),
                            Err(_) => visitor.visit_i128(v),
                        },
                        None => visitor.visit_str(text),
                    },
                    _ => visitor.visit_str(text),
                },
                Plain::Float => match parse_float(text) {
                    Some(x) => visitor.visit_f64(x),
                    None => visitor.visit_str(text),
                },
                Plain::Str => visitor.visit_str(text),
            },
            Value::Seq(items) => Self::visit_seq_items(items, visitor),
            Value::Map(entries) => Self::visit_map_entries(entries, visitor),
        })
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || {
            let text = self.scalar("a boolean")?;
            if text.eq_ignore_ascii_case("true") {
                visitor.visit_bool(true)
            } else if text.eq_ignore_ascii_case("false") {
                visitor.visit_bool(false)
            } else {
                Err(DeError::expected(self.0, "a boolean (true or false)"))
            }
        })
    }

    de_int! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || {
            #[allow(clippy::cast_possible_truncation)]
            let x = self.float("f32")? as f32;
            visitor.visit_f32(x)
        })
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || visitor.visit_f64(self.float("f64")?))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || {
            let text = self.scalar("a single character")?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => visitor.visit_char(c),
                _ => Err(DeError::expected(self.0, "a single character")),
            }
        })
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || visitor.visit_str(self.scalar("a string")?))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::at(self.0.mark, "byte arrays are not supported in YAML config"))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        marked(node.mark, || {
            if node.is_null() {
                visitor.visit_none()
            } else {
                visitor.visit_some(NodeDeserializer(node))
            }
        })
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || {
            if self.0.is_null() {
                visitor.visit_unit()
            } else {
                Err(DeError::expected(self.0, "null"))
            }
        })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        marked(node.mark, || visitor.visit_newtype_struct(NodeDeserializer(node)))
    }

    /// An empty value (`key:` with nothing after it) counts as an empty sequence.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        marked(node.mark, || match &node.value {
            Value::Seq(items) => Self::visit_seq_items(items, visitor),
            Value::Null => Self::visit_seq_items(&[], visitor),
            _ => Err(DeError::expected(node, "a sequence")),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    /// An empty value (`key:` with nothing after it) counts as an empty mapping,
    /// so a section whose keys are all commented out gets its defaults.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        marked(node.mark, || match &node.value {
            Value::Map(entries) => Self::visit_map_entries(entries, visitor),
            Value::Null => Self::visit_map_entries(&[], visitor),
            _ => Err(DeError::expected(node, "a mapping")),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.0;
        marked(node.mark, || match &node.value {
            Value::Scalar { .. } => visitor.visit_enum(EnumAcc { variant: node, value: None }),
            Value::Map(entries) if entries.len() == 1 => {
                visitor.visit_enum(EnumAcc { variant: &entries[0].0, value: Some(&entries[0].1) })
            }
            Value::Map(entries) => Err(DeError::at(
                node.mark,
                format!(
                    "expected a mapping with exactly one key (the variant name), found a mapping with {} keys",
                    entries.len()
                ),
            )),
            _ => Err(DeError::expected(node, "a variant name or a single-key mapping `variant: value`")),
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        marked(self.0.mark, || visitor.visit_str(self.scalar("a name")?))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// serde's view of a YAML sequence, item by item.
struct SeqAcc<'a> {
    iter: std::slice::Iter<'a, Node>,
    consumed: usize,
}

impl<'de> SeqAccess<'de> for SeqAcc<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(node) => {
                self.consumed += 1;
                marked(node.mark, || seed.deserialize(NodeDeserializer(node))).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// serde's view of a YAML mapping, key then value.
struct MapAcc<'a> {
    iter: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> MapAccess<'de> for MapAcc<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                marked(key.mark, || seed.deserialize(NodeDeserializer(key))).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DeError> {
        let node =
            self.value.take().ok_or_else(|| <DeError as de::Error>::custom("next_value called before next_key"))?;
        marked(node.mark, || seed.deserialize(NodeDeserializer(node)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// serde's view of an enum written as a bare `variant` or as `{variant: value}`.
struct EnumAcc<'a> {
    /// The scalar naming the variant (the node itself, or the single key).
    variant: &'a Node,
    /// The variant's content in the `{variant: value}` form.
    value: Option<&'a Node>,
}

impl<'de, 'a> EnumAccess<'de> for EnumAcc<'a> {
    type Error = DeError;
    type Variant = VariantAcc<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, VariantAcc<'a>), DeError> {
        let variant = self.variant;
        let v = marked(variant.mark, || seed.deserialize(NodeDeserializer(variant)))?;
        Ok((v, VariantAcc { variant, value: self.value }))
    }
}

/// The content of the variant chosen through [`EnumAcc`].
struct VariantAcc<'a> {
    variant: &'a Node,
    value: Option<&'a Node>,
}

impl<'a> VariantAcc<'a> {
    fn value(&self) -> Result<&'a Node, DeError> {
        self.value.ok_or_else(|| {
            let name = self.variant.as_str().unwrap_or("variant");
            DeError::at(
                self.variant.mark,
                format!("variant `{name}` needs a value; write it as a mapping `{name}: ...`"),
            )
        })
    }
}

impl<'de> VariantAccess<'de> for VariantAcc<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Some(v) if !v.is_null() => Err(DeError::at(
                v.mark,
                format!(
                    "variant `{}` takes no value, found {}",
                    self.variant.as_str().unwrap_or("variant"),
                    v.describe()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let node = self.value()?;
        marked(node.mark, || seed.deserialize(NodeDeserializer(node)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(NodeDeserializer(self.value()?), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(NodeDeserializer(self.value()?), visitor)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn m(line: usize, col: usize) -> Mark {
        Mark::new(line, col)
    }

    fn err<T: DeserializeOwned + fmt::Debug>(text: &str) -> YamlError {
        match from_str::<T>(text) {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
        #[serde(default)]
        name: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Middle {
        inner: Inner,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        middle: Middle,
    }

    #[test]
    fn nested_value_mark() {
        let text = "middle:\n  inner:\n    port: abc\n";
        let e = err::<Outer>(text);
        assert_eq!(e.mark, m(3, 11));
        assert_eq!(e.message, "expected an integer (u16), found a string \"abc\"");
        assert_eq!(e.to_string(), "3:11: expected an integer (u16), found a string \"abc\"");
    }

    #[test]
    fn type_mismatch_message() {
        let e = err::<Outer>("middle: abc\n");
        assert_eq!(e.mark, m(1, 9));
        assert_eq!(e.message, "expected a mapping, found a string \"abc\"");
        let e = err::<Outer>("middle:\n  inner: [1]\n");
        assert_eq!(e.mark, m(2, 10));
        assert_eq!(e.message, "expected a mapping, found a sequence");
        let e = err::<Inner>("port: [1]\n");
        assert_eq!((e.mark, e.message.as_str()), (m(1, 7), "expected an integer (u16), found a sequence"));
    }

    #[test]
    fn unknown_field_points_at_key() {
        let text = "middle:\n  inner:\n    port: 1\n    bogus: 2\n";
        let e = err::<Outer>(text);
        assert_eq!(e.mark, m(4, 5));
        assert!(e.message.starts_with("unknown field `bogus`"), "{}", e.message);
        assert!(!e.message.contains("line"), "{}", e.message);
    }

    #[test]
    fn missing_field_marks_enclosing_map() {
        let e = err::<Outer>("middle:\n  inner:\n    name: x\n");
        assert_eq!(e.mark, m(3, 5));
        assert_eq!(e.message, "missing field `port`");
        // An empty section is an empty map: still reports the missing field there.
        let e = err::<Outer>("middle:\n  inner:\n");
        assert_eq!((e.mark, e.message.as_str()), (m(2, 3), "missing field `port`"));
    }

    #[test]
    fn integer_ranges() {
        let e = err::<Outer>("middle:\n  inner:\n    port: 70000\n");
        assert_eq!(e.mark, m(3, 11));
        assert_eq!(e.message, "70000 is out of range for u16 (0..=65535)");
        let e = err::<Inner>("port: -1\n");
        assert_eq!(e.message, "-1 is out of range for u16 (0..=65535)");
        let e = err::<Inner>("port: 99999999999999999999999999999999999999999\n");
        assert!(e.message.ends_with("is out of range for u16 (0..=65535)"), "{}", e.message);
        assert_eq!(from_str::<Inner>("port: 0x1F90\n").unwrap().port, 8080);
        assert_eq!(from_str::<Inner>("port: \"8080\"\n").unwrap().port, 8080);
        assert_eq!(from_str::<i8>("-128").unwrap(), -128);
        assert_eq!(from_str::<i8>("0o17").unwrap(), 15);
        assert_eq!(from_str::<i128>("-170141183460469231731687303715884105728").unwrap(), i128::MIN);
        assert_eq!(from_str::<u128>("340282366920938463463374607431768211455").unwrap(), u128::MAX);
        assert_eq!(err::<i8>("128").message, "128 is out of range for i8 (-128..=127)");
        assert_eq!(err::<u8>("1.5").message, "expected an integer (u8), found a float 1.5");
    }

    #[test]
    fn floats_and_bools() {
        assert_eq!(from_str::<f64>("1.5e3").unwrap(), 1500.0);
        assert_eq!(from_str::<f64>("7").unwrap(), 7.0);
        assert_eq!(from_str::<f64>("-0x10").unwrap(), -16.0);
        assert_eq!(from_str::<f32>(".5").unwrap(), 0.5);
        assert_eq!(from_str::<f64>("-.inf").unwrap(), f64::NEG_INFINITY);
        assert!(from_str::<f64>(".nan").unwrap().is_nan());
        assert_eq!(err::<f64>("fast").message, "expected a number (f64), found a string \"fast\"");
        assert!(from_str::<bool>("True").unwrap());
        assert!(!from_str::<bool>("FALSE").unwrap());
        assert_eq!(err::<bool>("yes").message, "expected a boolean (true or false), found a string \"yes\"");
        assert_eq!(from_str::<char>("x").unwrap(), 'x');
    }

    #[test]
    fn plain_number_into_string() {
        #[derive(Debug, Deserialize)]
        struct S {
            code: String,
            delay: String,
            quoted: String,
            flag: String,
        }
        let s: S = from_str("code: 502\ndelay: 80ms\nquoted: \"80ms\"\nflag: true\n").unwrap();
        assert_eq!(s.code, "502");
        assert_eq!(s.delay, "80ms");
        assert_eq!(s.quoted, "80ms");
        assert_eq!(s.flag, "true");
        let e = err::<S>("code:\n");
        assert_eq!((e.mark, e.message.as_str()), (m(1, 1), "expected a string, found null"));
    }

    #[test]
    fn duplicate_keys() {
        let e = parse("a: 1\nb:\n  c: 1\n  c: 2\n").unwrap_err();
        assert_eq!(e.mark, m(4, 3));
        assert_eq!(e.message, "duplicate key \"c\" (first defined at line 3, column 3)");
        // Quoted and plain spellings of the same key collide too.
        assert_eq!(parse("a: 1\n'a': 2\n").unwrap_err().mark, m(2, 1));
    }

    #[test]
    fn non_scalar_key() {
        let e = parse("? [a, b]\n: 1\n").unwrap_err();
        assert_eq!(e.mark, m(1, 3));
        assert_eq!(e.message, "mapping keys must be scalars, found a sequence");
    }

    #[test]
    fn alias_resolution() {
        let text = "base: &b\n  port: 1\n  name: x\nother: *b\n";
        let root = parse(text).unwrap();
        let base = root.get("base").unwrap();
        let other = root.get("other").unwrap();
        assert_eq!(other.value, base.value);
        assert_eq!(base.mark, m(2, 3));
        assert_eq!(other.mark, m(4, 8));
        let map: BTreeMap<String, Inner> = from_node(&root).unwrap();
        assert_eq!(map["other"], Inner { port: 1, name: "x".into() });
        // Scalar aliases.
        let root = parse("a: &p 502\nb: *p\n").unwrap();
        assert_eq!(root.get("b").unwrap().as_str(), Some("502"));
        // Errors inside an alias point at the alias.
        let e = err::<BTreeMap<String, u8>>("a: &p 300\nb: *p\n");
        assert_eq!(e.mark, m(1, 7));
        let e = err::<BTreeMap<String, Inner>>("a: &p [1]\nb: *p\n");
        assert_eq!(e.mark, m(1, 7));
        let e = parse("a: &x [*x]\n").unwrap_err();
        assert_eq!(e.mark.line, 1);
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Mode {
        Off,
        Fixed(u32),
        Range { lo: u32, hi: u32 },
        Pair(u8, u8),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct WithMode {
        mode: Mode,
    }

    #[test]
    fn enums() {
        let w = |t: &str| from_str::<WithMode>(t).unwrap().mode;
        assert_eq!(w("mode: off\n"), Mode::Off);
        assert_eq!(w("mode: 'off'\n"), Mode::Off);
        assert_eq!(w("mode: {off: ~}\n"), Mode::Off);
        assert_eq!(w("mode:\n  fixed: 5\n"), Mode::Fixed(5));
        assert_eq!(w("mode: {range: {lo: 1, hi: 2}}\n"), Mode::Range { lo: 1, hi: 2 });
        assert_eq!(w("mode:\n  pair: [1, 2]\n"), Mode::Pair(1, 2));

        let e = err::<WithMode>("mode: bogus\n");
        assert_eq!(e.mark, m(1, 7));
        assert!(e.message.starts_with("unknown variant `bogus`, expected one of"), "{}", e.message);
        let e = err::<WithMode>("mode:\n  bogus: 1\n");
        assert_eq!(e.mark, m(2, 3));
        assert!(e.message.starts_with("unknown variant `bogus`"), "{}", e.message);

        let e = err::<WithMode>("mode: fixed\n");
        assert_eq!(e.mark, m(1, 7));
        assert_eq!(e.message, "variant `fixed` needs a value; write it as a mapping `fixed: ...`");
        let e = err::<WithMode>("mode:\n  fixed: x\n");
        assert_eq!((e.mark, e.message.as_str()), (m(2, 10), "expected an integer (u32), found a string \"x\""));
        let e = err::<WithMode>("mode:\n  range: {lo: 1, hi: 2, x: 3}\n");
        assert_eq!(e.mark, m(2, 25));
        let e = err::<WithMode>("mode: {off: 1, fixed: 2}\n");
        assert_eq!(e.mark, m(1, 7));
        let e = err::<WithMode>("mode: {off: 1}\n");
        assert_eq!((e.mark, e.message.as_str()), (m(1, 13), "variant `off` takes no value, found an integer 1"));
    }

    #[test]
    fn options() {
        #[derive(Debug, Deserialize)]
        struct O {
            a: Option<u16>,
            b: Option<u16>,
            c: Option<u16>,
            d: Option<String>,
            e: Option<String>,
            f: Option<String>,
        }
        let o: O = from_str("a: 5\nb: null\nc:\nd: ~\nf: \"null\"\n").unwrap();
        assert_eq!((o.a, o.b, o.c), (Some(5), None, None));
        assert_eq!((o.d, o.e, o.f), (None, None, Some("null".to_owned())));
        let e = err::<O>("a: x\n");
        assert_eq!(e.mark, m(1, 4));
    }

    #[test]
    fn sequences() {
        assert_eq!(from_str::<Vec<u16>>("[1, 2, 3]").unwrap(), vec![1, 2, 3]);
        assert_eq!(from_str::<Vec<u16>>("- 1\n- 2\n").unwrap(), vec![1, 2]);
        let e = err::<Vec<u16>>("- 1\n- 2\n- 70000\n");
        assert_eq!(e.mark, m(3, 3));
        let e = err::<Vec<u16>>("a: 1\n");
        assert_eq!(e.message, "expected a sequence, found a mapping");
        assert_eq!(from_str::<(u8, String)>("[1, x]").unwrap(), (1, "x".to_owned()));
        let e = err::<(u8, u8)>("[1, 2, 3]");
        assert_eq!((e.mark, e.message.as_str()), (m(1, 8), "too many elements: expected 2, found 3"));
        let e = err::<(u8, u8)>("[1]");
        assert_eq!(e.mark, m(1, 1));
        #[derive(Debug, Deserialize)]
        struct L {
            items: Vec<String>,
        }
        assert!(from_str::<L>("items:\n").unwrap().items.is_empty());
    }

    #[test]
    fn map_of_structs() {
        let text = "cam1:\n  port: 1\ncam2:\n  port: 2\n  name: two\n";
        let map: BTreeMap<String, Inner> = from_str(text).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["cam1"], Inner { port: 1, name: String::new() });
        assert_eq!(map["cam2"], Inner { port: 2, name: "two".into() });
        let e = err::<BTreeMap<String, Inner>>("cam1:\n  port: 1\ncam2:\n  port: 1\n  nme: two\n");
        assert_eq!(e.mark, m(5, 3));
        let keyed: BTreeMap<u16, String> = from_str("80: http\n443: https\n").unwrap();
        assert_eq!(keyed[&443], "https");
        let e = err::<BTreeMap<u16, String>>("80: http\nabc: x\n");
        assert_eq!(e.mark, m(2, 1));
    }

    #[test]
    fn serde_default() {
        fn default_port() -> u16 {
            1502
        }
        #[derive(Debug, Deserialize, PartialEq, Default)]
        #[serde(default, deny_unknown_fields)]
        struct D {
            port: u16,
            name: String,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Top {
            #[serde(default)]
            d: D,
            #[serde(default = "default_port")]
            p: u16,
        }
        let t: Top = from_str("d:\n  name: x\n").unwrap();
        assert_eq!(t.d, D { port: 0, name: "x".into() });
        assert_eq!(t.p, 1502);
        let t: Top = from_str("").unwrap();
        assert_eq!(t.d, D::default());
        let t: Top = from_str("d:\n  # all commented out\np: 7\n").unwrap();
        assert_eq!((t.d, t.p), (D::default(), 7));
    }

    #[test]
    fn value_errors_without_mark_get_value_mark() {
        #[derive(Debug, Deserialize)]
        #[serde(try_from = "u16")]
        struct Even(#[allow(dead_code)] u16);
        impl TryFrom<u16> for Even {
            type Error = String;
            fn try_from(v: u16) -> Result<Self, String> {
                if v % 2 == 0 {
                    Ok(Even(v))
                } else {
                    Err(format!("{v} is odd"))
                }
            }
        }
        #[derive(Debug, Deserialize)]
        struct E {
            #[allow(dead_code)]
            a: Even,
        }
        let e = err::<E>("\na:   3\n");
        assert_eq!((e.mark, e.message.as_str()), (m(2, 6), "3 is odd"));
    }

    #[test]
    fn deserialize_any_core_schema() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Any {
            Unit(()),
            B(bool),
            I(i64),
            U(u64),
            F(f64),
            S(String),
        }
        let v: Vec<Any> = from_str("[~, true, -5, 0x10, 1.5, .inf, abc, '502', 502]").unwrap();
        assert_eq!(
            v,
            vec![
                Any::Unit(()),
                Any::B(true),
                Any::I(-5),
                Any::I(16),
                Any::F(1.5),
                Any::F(f64::INFINITY),
                Any::S("abc".into()),
                Any::S("502".into()),
                Any::I(502),
            ]
        );
    }

    #[test]
    fn newtype_and_unit() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Ms(u64);
        assert_eq!(from_str::<Ms>("80").unwrap(), Ms(80));
        from_str::<()>("~").unwrap();
        assert_eq!(err::<()>("1").message, "expected null, found an integer 1");
        assert!(err::<Vec<u8>>("- 1\n- x\n").message.contains("u8"));
    }

    #[test]
    fn syntax_error_mark() {
        let e = parse("a: 1\nb: c: d\n").unwrap_err();
        assert_eq!(e.mark, m(2, 5));
        assert_eq!(e.message, "mapping values are not allowed in this context");
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.mark.line >= 2, "{e}");
        let e = parse("a:\n  - x\n  b: 1\n").unwrap_err();
        assert_eq!(e.mark.line, 3);
        let e = parse("a: \"open\n").unwrap_err();
        assert!(e.mark.line >= 1);
    }

    #[test]
    fn multiple_documents() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.mark, m(2, 1));
        assert!(e.message.contains("multiple YAML documents"));
        assert!(parse("---\na: 1\n...\n").is_ok());
    }

    #[test]
    fn empty_document() {
        assert_eq!(parse("").unwrap(), Node::new(Value::Null, m(1, 1)));
        assert_eq!(parse("# nothing\n\n").unwrap(), Node::new(Value::Null, m(1, 1)));
        assert_eq!(parse("---\n").unwrap().value, Value::Null);
        assert_eq!(from_str::<Option<u8>>("").unwrap(), None);
    }

    #[test]
    fn node_helpers() {
        let root = parse("a:\n  b:\n    - x\n    - {c: 'q'}\nn:\n").unwrap();
        assert_eq!(root.kind_name(), "mapping");
        assert_eq!(root.get("a").unwrap().kind_name(), "mapping");
        assert_eq!(root.path(&["a", "b"]).unwrap().kind_name(), "sequence");
        assert_eq!(root.path(&["a", "b", "0"]).unwrap().as_str(), Some("x"));
        assert_eq!(root.path(&["a", "b", "1", "c"]).unwrap().mark, m(4, 11));
        assert!(root.path(&["a", "b", "2"]).is_none());
        assert!(root.path(&["a", "x"]).is_none());
        assert_eq!(root.path(&[]), Some(&root));
        assert_eq!(root.key_node("n").unwrap().mark, m(5, 1));
        assert_eq!(root.get("n").unwrap().kind_name(), "null");
        assert_eq!(root.path(&["a", "b", "1", "c"]).unwrap().kind_name(), "string");
        let keys: Vec<_> = root.entries().filter_map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "n"]);
        assert_eq!(root.get("a").unwrap().get("b").unwrap().entries().count(), 0);
        assert_eq!(root.get("a").unwrap().get("b").unwrap().items().len(), 2);
        let q = root.path(&["a", "b", "1", "c"]).unwrap();
        assert_eq!(q.value, Value::Scalar { text: "q".into(), plain: false });
        // `!!str` forces a string.
        let t = parse("v: !!str 5\n").unwrap();
        assert_eq!(t.get("v").unwrap().value, Value::Scalar { text: "5".into(), plain: false });
    }

    #[test]
    fn limits() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().message.contains("nesting too deep"));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, c) in "bcdefgh".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            bomb.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("too large"));
    }
}
