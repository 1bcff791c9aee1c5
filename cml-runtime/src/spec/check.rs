//! Semantic checks run on every spec after it deserializes.
//!
//! Each failure names the field path and, through the [`SourceMap`](super::SourceMap),
//! the line and column of the offending node.

use super::{FieldPath, Granularity, LinearSpec, LoadedSpec, ModelKind, Task, FORMAT_V1};
use crate::error::{SpecError, SpecProblem};

/// Inclusive range of bit counts accepted for inputs and weights.
pub const BITS_RANGE: std::ops::RangeInclusive<u8> = 2..=16;

struct Checker<'a> {
    loaded: &'a LoadedSpec,
}

impl Checker<'_> {
    fn fail(&self, path: FieldPath, problem: SpecProblem) -> SpecError {
        SpecError::Invalid {
            file: self.loaded.origin.clone(),
            location: self.loaded.source_map.locate(&path),
            path,
            problem,
        }
    }

    fn finite(&self, path: FieldPath, value: f64) -> Result<(), SpecError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(self.fail(path, SpecProblem::NotFinite(value)))
        }
    }

    fn len(&self, path: FieldPath, found: usize, expected: usize) -> Result<(), SpecError> {
        if found == expected {
            Ok(())
        } else {
            Err(self.fail(path, SpecProblem::Length { expected, found }))
        }
    }

    fn names(
        &self,
        path: FieldPath,
        names: &[String],
        what: &'static str,
    ) -> Result<(), SpecError> {
        if names.is_empty() {
            return Err(self.fail(path, SpecProblem::Empty(what)));
        }
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(self.fail(path.index(i), SpecProblem::Empty(what)));
            }
            if names[..i].contains(name) {
                return Err(self.fail(path.index(i), SpecProblem::Duplicate(name.clone())));
            }
        }
        Ok(())
    }
}

/// Checks a deserialized spec.
pub(crate) fn check(loaded: &LoadedSpec) -> Result<(), SpecError> {
    let c = Checker { loaded };
    let spec = &loaded.spec;
    let root = FieldPath::root();

    if spec.format != FORMAT_V1 {
        return Err(c.fail(root.key("format"), SpecProblem::Format(spec.format.clone())));
    }
    let name_ok = !spec.name.is_empty()
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(c.fail(root.key("name"), SpecProblem::Name(spec.name.clone())));
    }

    let n_features = match &spec.model {
        ModelKind::Linear(linear) => {
            check_linear(&c, &root.key("model").key("linear"), linear)?;
            linear.features.len()
        }
    };

    let q = &spec.quantization;
    let qpath = root.key("quantization");
    for (field, bits) in [("input_bits", q.input_bits), ("weight_bits", q.weight_bits)] {
        if !BITS_RANGE.contains(&bits) {
            return Err(c.fail(
                qpath.key(field),
                SpecProblem::Bits {
                    found: bits,
                    min: *BITS_RANGE.start(),
                    max: *BITS_RANGE.end(),
                },
            ));
        }
    }
    if let Some(ranges) = &q.input_ranges {
        let rpath = qpath.key("input_ranges");
        let expected = match q.input_granularity {
            Granularity::Feature => n_features,
            Granularity::Tensor => 1,
        };
        c.len(rpath.clone(), ranges.len(), expected)?;
        for (i, [lo, hi]) in ranges.iter().copied().enumerate() {
            c.finite(rpath.index(i).index(0), lo)?;
            c.finite(rpath.index(i).index(1), hi)?;
            if lo > hi {
                return Err(c.fail(rpath.index(i), SpecProblem::Range { lo, hi }));
            }
        }
    }
    Ok(())
}

fn check_linear(c: &Checker<'_>, path: &FieldPath, linear: &LinearSpec) -> Result<(), SpecError> {
    let expected_task = linear.estimator.task();
    if linear.task != expected_task {
        return Err(c.fail(
            path.key("task"),
            SpecProblem::Task {
                estimator: format!("{:?}", linear.estimator),
                expected: expected_task,
            },
        ));
    }
    if !linear.estimator.allowed_links().contains(&linear.link) {
        return Err(c.fail(
            path.key("link"),
            SpecProblem::Link {
                link: linear.link.name(),
                estimator: format!("{:?}", linear.estimator),
            },
        ));
    }
    c.names(path.key("features"), &linear.features, "feature name")?;
    let n_features = linear.features.len();

    let rows = linear.coefficients.len();
    if rows == 0 {
        return Err(c.fail(
            path.key("coefficients"),
            SpecProblem::Empty("coefficient row"),
        ));
    }
    match (&linear.classes, linear.task) {
        (Some(classes), Task::Classification) => {
            c.names(path.key("classes"), classes, "class name")?;
            if classes.len() < 2 {
                return Err(c.fail(
                    path.key("classes"),
                    SpecProblem::Length {
                        expected: 2,
                        found: classes.len(),
                    },
                ));
            }
            let expected_rows = if classes.len() == 2 { 1 } else { classes.len() };
            c.len(path.key("coefficients"), rows, expected_rows)?;
            let expected_link_rows = match linear.link {
                super::Link::Sigmoid => Some(1),
                super::Link::Softmax => Some(classes.len().max(3)),
                _ => None,
            };
            if let Some(expected) = expected_link_rows {
                if rows != expected {
                    return Err(c.fail(
                        path.key("link"),
                        SpecProblem::Link {
                            link: linear.link.name(),
                            estimator: format!("{} classes", classes.len()),
                        },
                    ));
                }
            }
        }
        (None, Task::Classification) => {
            return Err(c.fail(path.key("classes"), SpecProblem::Missing("classes")));
        }
        (Some(_), Task::Regression) => {
            return Err(c.fail(path.key("classes"), SpecProblem::Unexpected("classes")));
        }
        (None, Task::Regression) => {
            // Several outputs would need a multi-output decoder; refuse
            // rather than silently predict from the first row.
            c.len(path.key("coefficients"), rows, 1)?;
        }
    }
    for (r, row) in linear.coefficients.iter().enumerate() {
        let rpath = path.key("coefficients").index(r);
        c.len(rpath.clone(), row.len(), n_features)?;
        for (j, w) in row.iter().enumerate() {
            c.finite(rpath.index(j), *w)?;
        }
    }
    c.len(path.key("intercepts"), linear.intercepts.len(), rows)?;
    for (r, b) in linear.intercepts.iter().enumerate() {
        c.finite(path.key("intercepts").index(r), *b)?;
    }
    if let Some(std) = &linear.standardize {
        let spath = path.key("standardize");
        c.len(spath.key("mean"), std.mean.len(), n_features)?;
        c.len(spath.key("scale"), std.scale.len(), n_features)?;
        for (j, m) in std.mean.iter().enumerate() {
            c.finite(spath.key("mean").index(j), *m)?;
        }
        for (j, s) in std.scale.iter().enumerate() {
            c.finite(spath.key("scale").index(j), *s)?;
            if *s <= 0.0 {
                return Err(c.fail(spath.key("scale").index(j), SpecProblem::NotPositive(*s)));
            }
        }
    }
    Ok(())
}
