//! YAML path → `file:line:column` index, built with a position-reporting YAML event parser.
//!
//! serde_yaml values carry no positions, so the pipeline text is parsed a second time with
//! `yaml-rust2`'s event parser. Every key and value is recorded under its YAML path
//! (`stages.train.params.lr`, `stages.a.outs[0]`); duplicate keys are recorded with both places.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A place in a source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Byte offset of the first character.
    pub offset: usize,
    /// Length in bytes of the highlighted text (at least 1).
    pub len: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

/// Where a key was written twice in one mapping.
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// Path of the mapping holding the key (`stages`).
    pub parent: String,
    /// The repeated key.
    pub key: String,
    /// First occurrence.
    pub first: Pos,
    /// Repeated occurrence.
    pub second: Pos,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: Option<Pos>,
    value: Option<Pos>,
}

/// Positions of every key and value of one YAML document, by YAML path.
#[derive(Debug, Default, Clone)]
pub struct PositionIndex {
    entries: HashMap<String, Entry>,
    duplicates: Vec<Duplicate>,
}

/// Joins a child key onto a YAML path.
#[must_use]
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a sequence index onto a YAML path.
#[must_use]
pub fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

impl PositionIndex {
    /// Indexes `text`. A text the event parser rejects yields an empty index (serde_yaml reports
    /// the syntax error itself).
    #[must_use]
    pub fn build(text: &str) -> Self {
        let mut receiver = Receiver {
            lines: LineTable::new(text),
            text,
            stack: Vec::new(),
            index: PositionIndex::default(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut receiver, false).is_err() {
            return PositionIndex::default();
        }
        receiver.index
    }

    /// Keys written twice in one mapping, in document order.
    #[must_use]
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Position of the key `path` names (its last segment), if written.
    #[must_use]
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.entries.get(path).and_then(|e| e.key)
    }

    /// Position of the value at `path`, if written.
    #[must_use]
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.entries.get(path).and_then(|e| e.value.or(e.key))
    }

    /// Best position for `path`: the key or value asked for, else the nearest written ancestor.
    #[must_use]
    pub fn locate(&self, path: &str, prefer_key: bool) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.get(p) {
                let found = if prefer_key {
                    e.key.or(e.value)
                } else {
                    e.value.or(e.key)
                };
                if found.is_some() {
                    return found;
                }
            }
            p = parent_path(p)?;
        }
    }
}

/// The parent of a YAML path (`a.b[0]` → `a.b`, `a.b` → `a`, `a` → ``), or `None` at the root.
#[must_use]
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return Some(&path[..i]);
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

struct LineTable {
    starts: Vec<usize>,
}

impl LineTable {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineTable { starts }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Pos)>,
        seen: HashMap<String, Pos>,
        dup_paths: HashSet<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Receiver<'a> {
    lines: LineTable,
    text: &'a str,
    stack: Vec<Frame>,
    index: PositionIndex,
}

impl Receiver<'_> {
    fn pos(&self, mark: Marker, len_chars: usize) -> Pos {
        let line = mark.line().max(1);
        let start = self
            .lines
            .starts
            .get(line - 1)
            .copied()
            .unwrap_or(self.text.len());
        let rest = &self.text[start..];
        let mut chars = rest.char_indices().skip(mark.col());
        let offset = chars.next().map_or(rest.len(), |(i, _)| i) + start;
        let end = self.text[offset..]
            .char_indices()
            .nth(len_chars.max(1))
            .map_or(self.text.len(), |(i, _)| offset + i);
        Pos {
            offset,
            len: (end - offset).max(1),
            line,
            col: mark.col() + 1,
        }
    }

    /// Path (and key position) for the value about to be read in the current frame.
    fn value_path(&mut self) -> Option<(String, Option<Pos>)> {
        match self.stack.last_mut()? {
            Frame::Map { path, key, .. } => {
                let (k, kpos) = key.take()?;
                Some((child(path, &k), Some(kpos)))
            }
            Frame::Seq { path, next } => {
                let p = item(path, *next);
                *next += 1;
                Some((p, None))
            }
        }
    }

    fn record(&mut self, path: String, key: Option<Pos>, value: Option<Pos>) {
        let e = self.index.entries.entry(path).or_default();
        if e.key.is_none() {
            e.key = key;
        }
        if e.value.is_none() {
            e.value = value;
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Receiver<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, ..) => {
                let quotes = usize::from(matches!(
                    style,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
                )) * 2;
                let block = matches!(style, TScalarStyle::Literal | TScalarStyle::Folded);
                let len = if block {
                    1
                } else {
                    value.chars().count() + quotes
                };
                let pos = self.pos(mark, len);
                if self.expecting_key() {
                    let Some(Frame::Map {
                        path,
                        key,
                        seen,
                        dup_paths,
                    }) = self.stack.last_mut()
                    else {
                        return;
                    };
                    if let Some(first) = seen.get(&value).copied() {
                        let parent = path.clone();
                        dup_paths.insert(value.clone());
                        self.index.duplicates.push(Duplicate {
                            parent,
                            key: value.clone(),
                            first,
                            second: pos,
                        });
                    } else {
                        seen.insert(value.clone(), pos);
                    }
                    *key = Some((value, pos));
                } else if let Some((path, kpos)) = self.value_path() {
                    self.record(path, kpos, Some(pos));
                }
            }
            Event::Alias(_) => {
                if self.expecting_key() {
                    let pos = self.pos(mark, 1);
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(("*alias".to_owned(), pos));
                    }
                } else if let Some((path, kpos)) = self.value_path() {
                    let pos = self.pos(mark, 1);
                    self.record(path, kpos, Some(pos));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                let (path, kpos) = if self.stack.is_empty() {
                    (String::new(), None)
                } else if self.expecting_key() {
                    // A complex (collection) key: index its contents under a placeholder.
                    let pos = self.pos(mark, 1);
                    if let Some(Frame::Map { path, key, .. }) = self.stack.last_mut() {
                        *key = Some(("?".to_owned(), pos));
                        (child(path, "?"), Some(pos))
                    } else {
                        return;
                    }
                } else {
                    match self.value_path() {
                        Some(v) => v,
                        None => return,
                    }
                };
                // Block collections report odd start marks: keep the key's position when there
                // is one, the collection's own mark otherwise (sequence items, the root).
                let vpos = if kpos.is_some() {
                    None
                } else {
                    Some(self.pos(mark, 1))
                };
                self.record(path.clone(), kpos, vpos);
                self.stack.push(if is_map {
                    Frame::Map {
                        path,
                        key: None,
                        seen: HashMap::new(),
                        dup_paths: HashSet::new(),
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "name: x\nstages:\n  a:\n    kind: \"command\"\n    outs: [o1, o2]\n  é: 1\n  a: 2\n";

    #[test]
    fn keys_and_values_are_located() {
        let idx = PositionIndex::build(DOC);
        let kind = idx.value("stages.a.kind").unwrap();
        assert_eq!((kind.line, kind.col), (4, 11));
        assert_eq!(&DOC[kind.offset..kind.offset + kind.len], "\"command\"");
        let k = idx.key("stages.a.kind").unwrap();
        assert_eq!(&DOC[k.offset..k.offset + k.len], "kind");
        let o = idx.value("stages.a.outs[1]").unwrap();
        assert_eq!(&DOC[o.offset..o.offset + o.len], "o2");
        // Multi-byte keys: columns count characters, offsets count bytes.
        let e = idx.value("stages.é").unwrap();
        assert_eq!((e.line, e.col), (6, 6));
        assert_eq!(&DOC[e.offset..e.offset + e.len], "1");
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let idx = PositionIndex::build(DOC);
        let p = idx.locate("stages.a.params.lr", true).unwrap();
        assert_eq!(&DOC[p.offset..p.offset + p.len], "a");
        assert_eq!(p.line, 3);
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_places() {
        let idx = PositionIndex::build(DOC);
        let d = &idx.duplicates()[0];
        assert_eq!((d.parent.as_str(), d.key.as_str()), ("stages", "a"));
        assert_eq!((d.first.line, d.second.line), (3, 7));
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[3]"), Some("a.b"));
        assert_eq!(parent_path("a.b"), Some("a"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }
}
