//! Source positions of YAML nodes, keyed by field path.
//!
//! serde gives values without positions, so after a spec deserializes we still
//! need to say *where* a semantically wrong field sits. [`SourceMap`] walks the
//! YAML event stream once and records the start of every node under the same
//! path syntax that [`FieldPath`] prints (`model.linear.coefficients[0][3]`).

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a spec source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path to a field of a spec, printed as `model.linear.coefficients[0][3]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The empty path (the document root).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// Parses the textual form produced by `Display` (and by `serde_path_to_error`).
    pub fn parse(text: &str) -> Self {
        let mut segments = Vec::new();
        for part in text.split('.') {
            if part.is_empty() || part == "?" {
                continue;
            }
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_owned()));
            }
            while let Some(end) = rest.find(']') {
                if let Ok(i) = rest[1..end].parse() {
                    segments.push(Segment::Index(i));
                }
                rest = &rest[end + 1..];
            }
        }
        Self(segments)
    }

    /// Whether this is the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Start positions of every node of a YAML document, by field path.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    nodes: HashMap<FieldPath, Location>,
}

impl SourceMap {
    /// Indexes `source`. A document that does not even scan yields an empty map:
    /// the deserializer reports that error with its own position.
    pub fn build(source: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self {
            nodes: builder.nodes,
        }
    }

    /// A map from already known positions (the DSL's).
    pub fn from_nodes(nodes: HashMap<FieldPath, Location>) -> Self {
        Self { nodes }
    }

    /// The position of `path`, or of its nearest ancestor that exists.
    pub fn locate(&self, path: &FieldPath) -> Option<Location> {
        let mut probe = path.clone();
        loop {
            if let Some(loc) = self.nodes.get(&probe) {
                return Some(*loc);
            }
            probe.0.pop()?;
        }
    }
}

enum Frame {
    Map {
        path: FieldPath,
        key: Option<String>,
    },
    Seq {
        path: FieldPath,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<FieldPath, Location>,
    root_seen: bool,
}

impl Builder {
    /// The path of the node that starts now, advancing the parent's cursor.
    /// `None` when the node is a mapping key.
    fn next_node_path(&mut self, scalar: Option<&str>) -> Option<FieldPath> {
        match self.stack.last_mut() {
            None => {
                if self.root_seen {
                    return None;
                }
                self.root_seen = true;
                Some(FieldPath::root())
            }
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(path.key(&k)),
                None => {
                    // This node is a key. Non-scalar keys get a placeholder.
                    *key = Some(scalar.unwrap_or("?").to_owned());
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let loc = Location {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.next_node_path(Some(&value)) {
                    self.nodes.entry(path).or_insert(loc);
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_node_path(Some("*")) {
                    self.nodes.entry(path).or_insert(loc);
                }
            }
            Event::SequenceStart(..) => {
                let path = self.next_node_path(None).unwrap_or_default();
                self.nodes.entry(path.clone()).or_insert(loc);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingStart(..) => {
                let path = self.next_node_path(None).unwrap_or_default();
                self.nodes.entry(path.clone()).or_insert(loc);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_fields() {
        let src = "a: 1\nb:\n  c: [1, 2,\n    3]\n  d:\n    - x: 5\n";
        let map = SourceMap::build(src);
        let at = |p: &str| map.locate(&FieldPath::parse(p)).unwrap();
        assert_eq!(at("a"), Location { line: 1, column: 4 });
        assert_eq!(at("b.c[2]"), Location { line: 4, column: 5 });
        assert_eq!(
            at("b.d[0].x"),
            Location {
                line: 6,
                column: 10
            }
        );
        // Missing leaves fall back to their parent.
        assert_eq!(at("b.d[0].y"), at("b.d[0]"));
    }

    #[test]
    fn path_round_trips() {
        let p = FieldPath::root()
            .key("model")
            .key("linear")
            .key("w")
            .index(0)
            .index(3);
        assert_eq!(p.to_string(), "model.linear.w[0][3]");
        assert_eq!(FieldPath::parse(&p.to_string()), p);
    }
}
