//! The model DSL (`.cml` files and inline `fhe_model! { model … }`), parsed
//! with the pest grammar in `dsl.pest` and lowered to the same [`ModelSpec`]
//! as YAML, through the same serde structure and the same checks.
//!
//! Sections (`key { … }`) become mappings, fields (`key: value`) entries,
//! lists sequences; bare words and strings are strings, numbers are numbers.
//! `model Name` sets the spec's `name` (in snake case) and `format` defaults
//! to `cml/v1`. The grammar, with an example per model kind, is in
//! `docs/dsl.md`.
//!
//! ```
//! use cml_runtime::spec::ModelSpec;
//!
//! let spec = ModelSpec::from_dsl_str(r#"
//!     model TinyRegressor {
//!         linear {
//!             estimator: ridge
//!             task: regression
//!             link: identity
//!             features: [age, "body mass"]
//!             coefficients: [[0.5, -1.0e-2]]
//!             intercepts: [3]
//!         }
//!         quantization { input_ranges: [[0, 100], [10, 60]] }
//!     }
//! "#, "tiny.cml").unwrap();
//! assert_eq!(spec.name, "tiny_regressor");
//! assert_eq!(spec.features()[1], "body mass");
//! ```

use std::collections::HashMap;
use std::path::Path;

use pest::iterators::Pair;
use pest::Parser;
use serde_yaml::{Mapping, Value};

use super::{FieldPath, LoadedSpec, Location, ModelSpec, SourceMap, FORMAT_V1};
use crate::error::SpecError;

mod grammar {
    //! The parser pest derives from `dsl.pest`.
    #![allow(missing_docs)]

    #[derive(pest_derive::Parser)]
    #[grammar = "spec/dsl.pest"]
    pub struct DslParser;
}

use grammar::{DslParser, Rule};

/// Model-kind sections written at the top of a DSL model.
const MODEL_KINDS: &[&str] = &["linear", "ensemble", "network"];

/// The DSL grammar, for tools that want to show it.
pub const GRAMMAR: &str = include_str!("dsl.pest");

fn location(pair: &Pair<'_, Rule>) -> Location {
    let (line, column) = pair.as_span().start_pos().line_col();
    Location { line, column }
}

/// `TinyRegressor` → `tiny_regressor`.
pub fn snake_case(ident: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = ident.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || next_lower) && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

struct Lowering<'a> {
    origin: &'a Path,
    nodes: HashMap<FieldPath, Location>,
}

impl Lowering<'_> {
    fn error(&self, path: FieldPath, location: Location, message: String) -> SpecError {
        SpecError::Syntax {
            file: self.origin.to_path_buf(),
            location: Some(location),
            path,
            message,
        }
    }

    fn block(&mut self, pair: Pair<'_, Rule>, path: &FieldPath) -> Result<Mapping, SpecError> {
        let mut map = Mapping::new();
        for entry in pair.into_inner() {
            let item = entry.into_inner().next().expect("entry holds one item");
            let rule = item.as_rule();
            let mut parts = item.into_inner();
            let key_pair = parts.next().expect("items start with a key");
            let key = key_pair.as_str().to_owned();
            // The model kind sits at the top of the DSL, under `model` in the spec.
            let child = if path.is_root() && MODEL_KINDS.contains(&key.as_str()) {
                path.key("model").key(&key)
            } else {
                path.key(&key)
            };
            if map.contains_key(key.as_str()) {
                return Err(self.error(
                    child,
                    location(&key_pair),
                    format!("duplicate field `{key}`"),
                ));
            }
            self.nodes.insert(child.clone(), location(&key_pair));
            let body = parts.next().expect("items have a body");
            let value = match rule {
                Rule::section => Value::Mapping(self.block(body, &child)?),
                _ => self.value(body, &child)?,
            };
            map.insert(Value::String(key), value);
        }
        Ok(map)
    }

    fn value(&mut self, pair: Pair<'_, Rule>, path: &FieldPath) -> Result<Value, SpecError> {
        // A field's value, not its key, is what an error about it points at.
        self.nodes.insert(path.clone(), location(&pair));
        Ok(match pair.as_rule() {
            Rule::list => {
                let mut items = Vec::new();
                for (i, item) in pair.into_inner().enumerate() {
                    let child = path.index(i);
                    self.nodes.insert(child.clone(), location(&item));
                    items.push(self.value(item, &child)?);
                }
                Value::Sequence(items)
            }
            Rule::number => {
                let text = pair.as_str();
                let integral = text.bytes().all(|b| b.is_ascii_digit() || b == b'-');
                match (integral, text.parse::<i64>()) {
                    (true, Ok(i)) => Value::Number(i.into()),
                    _ => {
                        let f = match text {
                            "inf" => f64::INFINITY,
                            "-inf" => f64::NEG_INFINITY,
                            "nan" | "-nan" => f64::NAN,
                            _ => text.parse::<f64>().map_err(|e| {
                                self.error(path.clone(), location(&pair), e.to_string())
                            })?,
                        };
                        Value::Number(f.into())
                    }
                }
            }
            Rule::string => {
                let raw = pair.into_inner().next().map_or("", |p| p.as_str());
                Value::String(unescape(raw))
            }
            Rule::block => Value::Mapping(self.block(pair, path)?),
            // Bare `true` / `false` are booleans (a string of that text is
            // written quoted).
            _ => match pair.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                word => Value::String(word.to_owned()),
            },
        })
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses DSL source into the spec's YAML value tree and node positions.
fn lower(source: &str, origin: &Path) -> Result<(Value, SourceMap), SpecError> {
    let mut pairs = DslParser::parse(Rule::file, source).map_err(|e| {
        let (line, column) = match e.line_col {
            pest::error::LineColLocation::Pos(p) | pest::error::LineColLocation::Span(p, _) => p,
        };
        SpecError::Syntax {
            file: origin.to_path_buf(),
            location: Some(Location { line, column }),
            path: FieldPath::root(),
            message: describe(&e.variant),
        }
    })?;
    let file = pairs.next().expect("the file rule matched");
    let model = file.into_inner().next().expect("a file holds one model");
    let model_loc = location(&model);
    let mut inner = model.into_inner();
    let name = inner.next().expect("model name").as_str();
    let block = inner.next().expect("model block");
    let mut lowering = Lowering {
        origin,
        nodes: HashMap::new(),
    };
    lowering.nodes.insert(FieldPath::root(), model_loc);
    let mut map = lowering.block(block, &FieldPath::root())?;
    let mut kinds = Mapping::new();
    for kind in MODEL_KINDS {
        if let Some(v) = map.remove(*kind) {
            kinds.insert((*kind).into(), v);
        }
    }
    if !kinds.is_empty() {
        map.insert("model".into(), Value::Mapping(kinds));
    }
    if !map.contains_key("format") {
        map.insert("format".into(), FORMAT_V1.into());
    }
    if !map.contains_key("name") {
        map.insert("name".into(), snake_case(name).into());
        lowering
            .nodes
            .insert(FieldPath::root().key("name"), model_loc);
    }
    Ok((Value::Mapping(map), SourceMap::from_nodes(lowering.nodes)))
}

fn describe(variant: &pest::error::ErrorVariant<Rule>) -> String {
    match variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let names: Vec<&str> = positives
                .iter()
                .map(|r| match r {
                    Rule::model => "`model`",
                    Rule::block => "`{`",
                    Rule::entry | Rule::section | Rule::field | Rule::key => "a field name",
                    Rule::list => "a list",
                    Rule::number => "a number",
                    Rule::string => "a string",
                    Rule::word | Rule::ident => "a name",
                    Rule::EOI => "the end of the file",
                    _ => "something else",
                })
                .collect();
            let mut names = names;
            // After a name, pest only lists the section's `{`; a field's `:`
            // is just as expected there.
            if names == ["`{`"] {
                names = vec!["`:`", "`{`"];
            }
            names.dedup();
            if names.is_empty() {
                "syntax error".into()
            } else {
                format!("syntax error: expected {}", names.join(" or "))
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    }
}

impl ModelSpec {
    /// Parses and checks a DSL spec. `origin` names the source in errors.
    pub fn from_dsl_str(source: &str, origin: impl AsRef<Path>) -> Result<Self, SpecError> {
        Self::load_dsl_str(source, origin).map(|l| l.spec)
    }

    /// Parses and checks a DSL spec, keeping its origin and node positions.
    pub fn load_dsl_str(source: &str, origin: impl AsRef<Path>) -> Result<LoadedSpec, SpecError> {
        let origin = origin.as_ref();
        let (value, source_map) = lower(source, origin)?;
        let spec = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = FieldPath::parse(&err.path().to_string());
            let message = super::clean_serde_message(&err.inner().to_string(), &path);
            SpecError::Syntax {
                file: origin.to_path_buf(),
                location: source_map.locate(&path),
                path,
                message,
            }
        })?;
        let loaded = LoadedSpec {
            spec,
            origin: origin.to_path_buf(),
            source_map,
        };
        super::check::check(&loaded)?;
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Iris"), "iris");
        assert_eq!(snake_case("BreastCancer"), "breast_cancer");
        assert_eq!(snake_case("XGBModel2"), "xgb_model2");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let err = ModelSpec::from_dsl_str("model X {\n  linear {\n    task: : \n  }\n}", "x.cml")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("x.cml:3:11:"), "{msg}");
        assert!(msg.contains("expected"), "{msg}");
    }

    #[test]
    fn semantic_errors_point_at_the_field() {
        let src = "model X {\n linear {\n  estimator: ridge\n  task: regression\n  link: identity\n  features: [a]\n  coefficients: [[1.0, 2.0]]\n  intercepts: [0]\n }\n}";
        let err = ModelSpec::from_dsl_str(src, "x.cml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.cml:7:18: field `model.linear.coefficients[0]`: expected 1 element, found 2"
        );
        // Unknown fields too.
        let err = ModelSpec::from_dsl_str(&src.replace("link:", "lnk:"), "x.cml").unwrap_err();
        assert!(err.to_string().contains("unknown field `lnk`"), "{err}");
    }
}

#[cfg(test)]
mod doc_examples {
    use super::*;

    /// The examples of `docs/dsl.md` load (the doc says so).
    #[test]
    fn docs_dsl_examples_load() {
        let doc = include_str!("../../../docs/dsl.md");
        let mut found = 0;
        for block in doc.split("```text\n").skip(1) {
            let source = block.split("```").next().unwrap();
            ModelSpec::from_dsl_str(source, "docs/dsl.md")
                .unwrap_or_else(|e| panic!("{e}\n{source}"));
            found += 1;
        }
        assert_eq!(found, 5);
    }
}

/// Writes a spec in the DSL (the inverse of [`ModelSpec::from_dsl_str`]).
fn write_value(out: &mut String, value: &Value, indent: usize) {
    let pad = "    ".repeat(indent);
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                match v {
                    Value::Mapping(_) => {
                        out.push_str(&format!("{pad}{key} {{\n"));
                        write_value(out, v, indent + 1);
                        out.push_str(&format!("{pad}}}\n"));
                    }
                    _ => {
                        out.push_str(&format!("{pad}{key}: "));
                        write_scalar(out, v);
                        out.push('\n');
                    }
                }
            }
        }
        other => write_scalar(out, other),
    }
}

fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Mapping(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k.as_str().unwrap_or_default());
                out.push_str(if v.is_mapping() { " " } else { ": " });
                write_scalar(out, v);
            }
            out.push('}');
        }
        Value::Sequence(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_scalar(out, item);
            }
            out.push(']');
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                // `{:?}` prints the shortest text that reads back to the same bits.
                let text = format!("{f:?}");
                out.push_str(&text);
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => {
            let bare = !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && !matches!(s.as_str(), "inf" | "nan" | "true" | "false");
            if bare {
                out.push_str(s);
            } else {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        _ => out.push(c),
                    }
                }
                out.push('"');
            }
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => out.push_str("\"\""),
    }
}

impl ModelSpec {
    /// The spec in the DSL, under the model name `model_name`. Reading it back
    /// with [`ModelSpec::from_dsl_str`] gives this spec again.
    pub fn to_dsl(&self, model_name: &str) -> String {
        let mut value = serde_yaml::to_value(self).unwrap_or(Value::Null);
        if let Value::Mapping(map) = &mut value {
            // `model: {linear: …}` is written as a top-level `linear { … }`.
            if let Some(Value::Mapping(kinds)) = map.remove("model") {
                for (k, v) in kinds {
                    map.insert(k, v);
                }
            }
            map.remove("format");
        }
        let mut out = format!("model {model_name} {{\n");
        write_value(&mut out, &value, 1);
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    /// Every bundled YAML spec survives YAML → DSL → spec unchanged, and the
    /// bundled `.cml` file is exactly what the writer produces for its YAML.
    #[test]
    fn bundled_specs_round_trip_through_the_dsl() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let spec = ModelSpec::load(&path).unwrap().spec;
                let dsl = spec.to_dsl("Model");
                let back = ModelSpec::from_dsl_str(&dsl, "round-trip.cml")
                    .unwrap_or_else(|e| panic!("{e}\n{dsl}"));
                assert_eq!(back, spec, "{}", path.display());
                count += 1;
            }
        }
        assert!(count >= 5);
        let yaml = ModelSpec::load(dir.join("iris_logreg.yaml")).unwrap().spec;
        let cml = std::fs::read_to_string(dir.join("iris_logreg.cml")).unwrap();
        assert_eq!(cml, yaml.to_dsl("IrisLogreg"));
        assert_eq!(
            ModelSpec::load(dir.join("iris_logreg.cml")).unwrap().spec,
            yaml
        );
    }
}
