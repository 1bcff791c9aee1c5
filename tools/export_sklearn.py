#!/usr/bin/env python3
"""Export fitted scikit-learn linear models to ``cml/v1`` spec files.

This tool is the bridge between scikit-learn and the ``cml`` Rust toolkit.
It reads the parameters of a *fitted* linear estimator (optionally wrapped in
a ``Pipeline(StandardScaler, estimator)``) and writes

* ``<name>.yaml``       -- the ``cml/v1`` model spec,
* ``<name>.train.csv``  -- training features + target (optional),
* ``<name>.test.csv``   -- test features + target + the model's raw scores and
  predictions, used by ``cml`` as a float reference (optional).

Sub-commands::

    python tools/export_sklearn.py bundle   [--out specs]
    python tools/export_sklearn.py verify   [specs | spec.yaml ...]
    python tools/export_sklearn.py export   --model m.pkl --train train.csv ...
    python tools/export_sklearn.py selftest

The module can also be imported (run from the repository root)::

    from tools.export_sklearn import export_linear

Floats are written with ``repr(float(x))`` (shortest text that round-trips to
the same IEEE-754 double), with ``.0`` inserted before an exponent when the
mantissa has no decimal point, so that both Rust's ``f64`` parser and YAML
1.1 readers (PyYAML) see the exact same value as a float.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import pickle
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

FORMAT = "cml/v1"
NAME_RE = re.compile(r"^[a-z0-9_]+$")
RESERVED_COLUMNS = {"target", "prediction"}
SCORE_ATOL = 1e-9

# scikit-learn class name -> (spec estimator kind, task)
ESTIMATOR_KINDS: Dict[str, tuple] = {
    "LinearRegression": ("linear_regression", "regression"),
    "Ridge": ("ridge", "regression"),
    "Lasso": ("lasso", "regression"),
    "ElasticNet": ("elastic_net", "regression"),
    "LogisticRegression": ("logistic_regression", "classification"),
    "LinearSVC": ("linear_svc", "classification"),
    "LinearSVR": ("linear_svr", "regression"),
    "PoissonRegressor": ("poisson_regressor", "regression"),
    "GammaRegressor": ("gamma_regressor", "regression"),
    "TweedieRegressor": ("tweedie_regressor", "regression"),
}
GLM_KINDS = {"poisson_regressor", "gamma_regressor", "tweedie_regressor"}
LINKS = {"identity", "sigmoid", "softmax", "exp"}

# Exact key sets accepted by the Rust parser (unknown fields are rejected).
TOP_KEYS = {"format", "name", "description", "source", "model", "quantization", "data"}
TOP_REQUIRED = TOP_KEYS - {"data"}
SOURCE_KEYS = {"library", "version", "estimator"}
LINEAR_KEYS = {"estimator", "task", "link", "features", "classes", "coefficients",
               "intercepts", "standardize"}
LINEAR_REQUIRED = {"estimator", "task", "link", "features", "coefficients", "intercepts"}
STANDARDIZE_KEYS = {"mean", "scale"}
QUANT_KEYS = {"input_bits", "weight_bits", "input_granularity", "weight_scheme", "input_ranges"}
QUANT_REQUIRED = {"input_bits", "weight_bits", "input_ranges"}
DATA_KEYS = {"train", "test"}


# --------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------

def fmt_float(x) -> str:
    """Format a finite float so that it round-trips exactly and reads as a float.

    ``repr`` already gives the shortest round-tripping text; when it uses an
    exponent without a decimal point (``1e-05``) a ``.0`` is inserted
    (``1.0e-05``) because YAML 1.1 resolvers would otherwise read a string.
    """
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"non-finite value {v!r} cannot be exported")
    s = repr(v)
    if "e" in s:
        mant, exp = s.split("e", 1)
        if "." not in mant:
            mant += ".0"
        s = f"{mant}e{exp}"
    return s


def yaml_str(s: str) -> str:
    """Quote ``s`` as a YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(str(s))


def float_list(values) -> str:
    """Render a 1-D sequence of floats as a YAML flow sequence."""
    return "[" + ", ".join(fmt_float(v) for v in values) + "]"


def str_list(values) -> str:
    """Render a sequence of strings as a YAML flow sequence of quoted strings."""
    return "[" + ", ".join(yaml_str(v) for v in values) + "]"


def sanitize_feature_name(name: str) -> str:
    """Make a feature name safe for the CSV header: no commas, quotes or newlines."""
    out = str(name).strip()
    for ch in (",", '"', "\n", "\r"):
        out = out.replace(ch, "_")
    if not out:
        raise ValueError("empty feature name")
    return out


def check_feature_names(names: Sequence[str], n_features: int) -> List[str]:
    """Sanitize feature names and check count, uniqueness and reserved columns."""
    names = [sanitize_feature_name(n) for n in names]
    if len(names) != n_features:
        raise ValueError(f"{len(names)} feature names for {n_features} features")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate feature names: {names}")
    for n in names:
        if n in RESERVED_COLUMNS or re.fullmatch(r"score_\d+", n):
            raise ValueError(f"feature name {n!r} clashes with a reserved CSV column")
    return names


# --------------------------------------------------------------------------
# Reading a fitted estimator
# --------------------------------------------------------------------------

@dataclass
class LinearModel:
    """The parameters of a fitted linear model, as they go into the spec."""

    sk_name: str                 # scikit-learn class name of the linear step
    kind: str                    # spec estimator kind
    task: str                    # classification | regression
    link: str                    # identity | sigmoid | softmax | exp
    coef: np.ndarray             # (n_outputs, n_features)
    intercept: np.ndarray        # (n_outputs,)
    classes: Optional[np.ndarray] = None   # estimator.classes_ (classifiers)
    mean: Optional[np.ndarray] = None      # StandardScaler mean (or None)
    scale: Optional[np.ndarray] = None     # StandardScaler scale (or None)
    linear_step: object = field(default=None, repr=False)
    scaler: object = field(default=None, repr=False)

    @property
    def n_features(self) -> int:
        return self.coef.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.coef.shape[0]

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """Apply the clear-text standardization (identity when there is none)."""
        X = np.asarray(X, dtype=np.float64)
        if self.mean is None:
            return X
        return (X - self.mean) / self.scale


def split_pipeline(estimator):
    """Return ``(scaler_or_None, linear_step)`` for an estimator or a Pipeline.

    Accepted: a bare supported estimator, or a Pipeline of exactly
    ``StandardScaler -> supported estimator`` (a one-step Pipeline also works).
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(estimator, Pipeline):
        return None, estimator
    steps = [s for _, s in estimator.steps if s not in (None, "passthrough")]
    if len(steps) == 1:
        return None, steps[0]
    if len(steps) == 2 and isinstance(steps[0], StandardScaler):
        return steps[0], steps[1]
    raise ValueError("only Pipeline(StandardScaler, <linear estimator>) is supported, got "
                     + " -> ".join(type(s).__name__ for s in steps))


def resolve_link(est, kind: str, n_classes: Optional[int]) -> str:
    """Inverse link applied on the client after decryption."""
    if kind == "logistic_regression":
        return "sigmoid" if n_classes == 2 else "softmax"
    if kind == "linear_svc":
        return "identity"
    if kind in ("poisson_regressor", "gamma_regressor"):
        return "exp"
    if kind == "tweedie_regressor":
        link = getattr(est, "link", "auto")
        if link == "auto":
            link = "identity" if est.power <= 0 else "log"
        if link == "log":
            return "exp"
        if link == "identity":
            return "identity"
        raise ValueError(f"unsupported TweedieRegressor link {link!r}")
    return "identity"


def read_linear_model(estimator) -> LinearModel:
    """Extract coefficients, intercepts, link and scaler from a fitted estimator."""
    from sklearn.utils.validation import check_is_fitted

    scaler, est = split_pipeline(estimator)
    sk_name = type(est).__name__
    if sk_name not in ESTIMATOR_KINDS:
        raise ValueError(f"unsupported estimator {sk_name}; supported: "
                         + ", ".join(sorted(ESTIMATOR_KINDS)))
    check_is_fitted(est)
    kind, task = ESTIMATOR_KINDS[sk_name]

    coef = np.asarray(est.coef_, dtype=np.float64)
    if coef.ndim == 1:
        coef = coef.reshape(1, -1)
    if coef.ndim != 2:
        raise ValueError(f"unexpected coef_ shape {coef.shape}")
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)).ravel()
    if intercept.size == 1 and coef.shape[0] > 1:
        intercept = np.full(coef.shape[0], intercept[0])
    if intercept.shape[0] != coef.shape[0]:
        raise ValueError(f"intercept_ shape {intercept.shape} does not match coef_ {coef.shape}")

    classes = None
    n_classes = None
    if task == "classification":
        classes = np.asarray(est.classes_)
        n_classes = len(classes)
        expected_rows = 1 if n_classes == 2 else n_classes
        if coef.shape[0] != expected_rows:
            raise ValueError(f"{sk_name}: {coef.shape[0]} coefficient rows for {n_classes} classes "
                             "(one-vs-rest LogisticRegression is not supported; use multinomial)")
    elif coef.shape[0] != 1:
        raise ValueError(f"{sk_name}: multi-output regression ({coef.shape[0]} outputs) is not supported")

    mean = scale = None
    if scaler is not None:
        check_is_fitted(scaler)
        nf = coef.shape[1]
        mean = (np.zeros(nf) if scaler.mean_ is None or not scaler.with_mean
                else np.asarray(scaler.mean_, dtype=np.float64))
        scale = (np.ones(nf) if scaler.scale_ is None or not scaler.with_std
                 else np.asarray(scaler.scale_, dtype=np.float64))

    return LinearModel(sk_name=sk_name, kind=kind, task=task,
                       link=resolve_link(est, kind, n_classes),
                       coef=coef, intercept=intercept, classes=classes,
                       mean=mean, scale=scale, linear_step=est, scaler=scaler)


def raw_scores(model: LinearModel, X: np.ndarray) -> np.ndarray:
    """The model's raw linear output (before the inverse link), shape (n, n_outputs).

    Classifiers: ``decision_function``.  GLMs: ``_linear_predictor`` (falls back
    to ``X @ coef_ + intercept_``).  Other regressors: ``predict`` (which is
    the linear predictor).  Computed on standardized X for pipelines.
    """
    Xs = np.asarray(X, dtype=np.float64)
    if model.scaler is not None:
        Xs = model.scaler.transform(Xs)
    est = model.linear_step
    if model.task == "classification":
        s = est.decision_function(Xs)
    elif model.kind in GLM_KINDS:
        if hasattr(est, "_linear_predictor"):
            s = est._linear_predictor(Xs)
        else:  # pragma: no cover - older/newer scikit-learn
            s = Xs @ est.coef_ + est.intercept_
    else:
        s = est.predict(Xs)
    s = np.asarray(s, dtype=np.float64)
    return s.reshape(len(Xs), -1)


def class_indices(model: LinearModel, labels) -> np.ndarray:
    """Map class labels (values of ``classes_``) to indices 0..k-1."""
    labels = np.asarray(labels)
    idx = np.searchsorted(model.classes, labels)
    idx = np.clip(idx, 0, len(model.classes) - 1)
    if not np.all(model.classes[idx] == labels):
        raise ValueError("labels not found in estimator.classes_")
    return idx.astype(np.int64)


def predictions(estimator, model: LinearModel, X: np.ndarray) -> np.ndarray:
    """``estimator.predict(X)``: class index for classifiers, float for regressors."""
    p = estimator.predict(np.asarray(X, dtype=np.float64))
    if model.task == "classification":
        return class_indices(model, p)
    return np.asarray(p, dtype=np.float64).ravel()


# --------------------------------------------------------------------------
# Writing spec and data
# --------------------------------------------------------------------------

def sklearn_version() -> str:
    import sklearn
    return sklearn.__version__


def input_ranges(model: LinearModel, X_train: np.ndarray) -> np.ndarray:
    """Per-feature calibration ranges ``[min, max]`` of the (standardized) training data."""
    Xs = model.standardize(X_train)
    return np.stack([Xs.min(axis=0), Xs.max(axis=0)], axis=1)


def render_spec(model: LinearModel, *, name: str, description: str,
                feature_names: Sequence[str], class_names: Optional[Sequence[str]],
                ranges: np.ndarray, input_bits: int, weight_bits: int,
                source_estimator: str, data: Optional[Dict[str, str]]) -> str:
    """Render the ``cml/v1`` YAML text (hand-written for exact float control)."""
    out = io.StringIO()
    w = out.write
    w(f"format: {FORMAT}\n")
    w(f"name: {name}\n")
    w(f"description: {yaml_str(description)}\n")
    w("source:\n")
    w(f"  library: {yaml_str('scikit-learn')}\n")
    w(f"  version: {yaml_str(sklearn_version())}\n")
    w(f"  estimator: {yaml_str(source_estimator)}\n")
    w("model:\n")
    w("  linear:\n")
    w(f"    estimator: {model.kind}\n")
    w(f"    task: {model.task}\n")
    w(f"    link: {model.link}\n")
    w(f"    features: {str_list(feature_names)}\n")
    if model.task == "classification":
        w(f"    classes: {str_list(class_names)}\n")
    w("    coefficients:\n")
    for row in model.coef:
        w(f"      - {float_list(row)}\n")
    w(f"    intercepts: {float_list(model.intercept)}\n")
    if model.mean is not None:
        w("    standardize:\n")
        w(f"      mean: {float_list(model.mean)}\n")
        w(f"      scale: {float_list(model.scale)}\n")
    write_quantization_and_data(w, {"input_bits": input_bits, "weight_bits": weight_bits},
                                ranges, data)
    return out.getvalue()


def write_quantization_and_data(w: Callable[[str], object], bits: Dict[str, Optional[int]],
                                ranges, data: Optional[Dict[str, str]]) -> None:
    """Write the ``quantization`` section (the ``bits`` fields that are set, then the
    calibration ranges) and the optional ``data`` section of a spec."""
    w("quantization:\n")
    for key, value in bits.items():
        if value is not None:
            w(f"  {key}: {int(value)}\n")
    w("  input_ranges:\n")
    for lo, hi in ranges:
        w(f"    - [{fmt_float(lo)}, {fmt_float(hi)}]\n")
    if data:
        w("data:\n")
        for key in ("train", "test"):
            if key in data:
                w(f"  {key}: {yaml_str(data[key])}\n")


def write_csv(path: str, feature_names: Sequence[str], X: np.ndarray, y: np.ndarray,
              task: str, scores: Optional[np.ndarray] = None,
              preds: Optional[np.ndarray] = None) -> None:
    """Write a data CSV: features, ``target``, then (test only) ``score_i`` and ``prediction``."""
    X = np.asarray(X, dtype=np.float64)
    header = list(feature_names) + ["target"]
    if scores is not None:
        header += [f"score_{i}" for i in range(scores.shape[1])]
    if preds is not None:
        header.append("prediction")

    def fmt_target(v):
        return str(int(v)) if task == "classification" else fmt_float(v)

    with open(path, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(header)
        for i in range(X.shape[0]):
            row = [fmt_float(v) for v in X[i]] + [fmt_target(y[i])]
            if scores is not None:
                row += [fmt_float(v) for v in scores[i]]
            if preds is not None:
                row.append(fmt_target(preds[i]))
            wr.writerow(row)


def export_linear(estimator, feature_names: Sequence[str], class_names: Optional[Sequence[str]],
                  X_train, path: str, name: str, description: str, n_bits: int = 8, *,
                  y_train=None, X_test=None, y_test=None,
                  input_bits: Optional[int] = None, weight_bits: Optional[int] = None,
                  source_estimator: Optional[str] = None) -> dict:
    """Write a ``cml/v1`` spec for a fitted linear estimator (or scaler pipeline).

    Parameters
    ----------
    estimator : fitted supported estimator or ``Pipeline(StandardScaler, estimator)``.
    feature_names : one name per input feature (commas/quotes become ``_``).
    class_names : classifiers: one name per entry of ``estimator.classes_``
        (in that order); ``None`` for regressors (or to use ``str(classes_)``).
    X_train : raw training features, used for the quantization calibration ranges
        (after standardization if the estimator is a scaler pipeline).
    path : output spec path (``.yaml``); CSV files go next to it.
    name : spec name, ``[a-z0-9_]+``.
    description : free text.
    n_bits : default for ``input_bits`` and ``weight_bits``.
    y_train, X_test, y_test : optional; when given, ``<name>.train.csv`` (needs
        ``y_train``) and ``<name>.test.csv`` (needs ``y_test``) are written next
        to the spec and referenced from its ``data`` section.  Targets are raw
        labels (mapped to class indices for classifiers).
    input_bits, weight_bits : override ``n_bits`` individually.
    source_estimator : provenance string for ``source.estimator``
        (default: the class name, ``Pipeline(StandardScaler, X)`` for pipelines).

    Returns a summary dict (spec path, csv paths, n_test, task, metric).
    """
    if not NAME_RE.match(name):
        raise ValueError(f"spec name {name!r} must match [a-z0-9_]+")
    model = read_linear_model(estimator)
    X_train = np.asarray(X_train, dtype=np.float64)
    if X_train.ndim != 2 or X_train.shape[1] != model.n_features:
        raise ValueError(f"X_train shape {X_train.shape} does not match {model.n_features} features")
    feature_names = check_feature_names(feature_names, model.n_features)

    if model.task == "classification":
        if class_names is None:
            class_names = [str(c) for c in model.classes]
        class_names = [str(c) for c in class_names]
        if len(class_names) != len(model.classes):
            raise ValueError(f"{len(class_names)} class names for {len(model.classes)} classes")
    else:
        class_names = None

    if source_estimator is None:
        source_estimator = (f"Pipeline(StandardScaler, {model.sk_name})"
                            if model.scaler is not None else model.sk_name)
    input_bits = n_bits if input_bits is None else input_bits
    weight_bits = n_bits if weight_bits is None else weight_bits

    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    summary = {"spec": path, "name": name, "task": model.task, "link": model.link,
               "estimator": source_estimator}
    data = {}

    def target_values(y):
        return class_indices(model, y) if model.task == "classification" \
            else np.asarray(y, dtype=np.float64).ravel()

    if y_train is not None:
        train_name = f"{name}.train.csv"
        write_csv(os.path.join(out_dir, train_name), feature_names, X_train,
                  target_values(y_train), model.task)
        data["train"] = train_name
        summary["train_csv"] = os.path.join(out_dir, train_name)
    if X_test is not None and y_test is not None:
        X_test = np.asarray(X_test, dtype=np.float64)
        if X_test.ndim != 2 or X_test.shape[1] != model.n_features:
            raise ValueError(f"X_test shape {X_test.shape} does not match {model.n_features} features")
        test_name = f"{name}.test.csv"
        scores = raw_scores(model, X_test)
        preds = predictions(estimator, model, X_test)
        write_csv(os.path.join(out_dir, test_name), feature_names, X_test,
                  target_values(y_test), model.task, scores=scores, preds=preds)
        data["test"] = test_name
        summary["test_csv"] = os.path.join(out_dir, test_name)
        summary["n_test"] = int(X_test.shape[0])
        yt = target_values(y_test)
        if model.task == "classification":
            summary["metric"] = ("accuracy", float(np.mean(preds == yt)))
        else:
            from sklearn.metrics import r2_score
            summary["metric"] = ("r2", float(r2_score(yt, preds)))

    text = render_spec(model, name=name, description=description, feature_names=feature_names,
                       class_names=class_names, ranges=input_ranges(model, X_train),
                       input_bits=input_bits, weight_bits=weight_bits,
                       source_estimator=source_estimator, data=data or None)
    with open(path, "w") as f:
        f.write(text)
    check_roundtrip(path, model)
    return summary


def check_roundtrip(path: str, model: LinearModel) -> None:
    """Re-read a written spec and assert the parameters round-trip bit-exactly."""
    spec = load_spec(path)
    lin = spec["model"]["linear"]
    pairs = [(np.asarray(lin["coefficients"], dtype=np.float64), model.coef),
             (np.asarray(lin["intercepts"], dtype=np.float64), model.intercept)]
    if model.mean is not None:
        pairs += [(np.asarray(lin["standardize"]["mean"], dtype=np.float64), model.mean),
                  (np.asarray(lin["standardize"]["scale"], dtype=np.float64), model.scale)]
    for got, want in pairs:
        if got.shape != want.shape or not np.array_equal(got.view(np.uint64), want.view(np.uint64)):
            raise AssertionError(f"{path}: parameters do not round-trip exactly")


# --------------------------------------------------------------------------
# Reading back and verifying
# --------------------------------------------------------------------------

def load_spec(path: str) -> dict:
    """Load a spec with PyYAML and check its structure against the cml/v1 schema."""
    import yaml

    with open(path) as f:
        spec = yaml.safe_load(f)
    validate_spec(spec, path)
    return spec


def _check_keys(obj, allowed, required, where):
    if not isinstance(obj, dict):
        raise AssertionError(f"{where}: expected a mapping")
    unknown = set(obj) - allowed
    missing = required - set(obj)
    if unknown:
        raise AssertionError(f"{where}: unknown fields {sorted(unknown)}")
    if missing:
        raise AssertionError(f"{where}: missing fields {sorted(missing)}")


def _check_floats(values, where):
    for v in values:
        if not isinstance(v, float):
            raise AssertionError(f"{where}: {v!r} is not read as a float")


def validate_spec(spec: dict, where: str = "spec") -> None:
    """Structural checks mirroring the Rust parser (field names, types, shapes)."""
    _check_keys(spec, TOP_KEYS, TOP_REQUIRED, where)
    if spec["format"] != FORMAT:
        raise AssertionError(f"{where}: format must be {FORMAT}")
    if not isinstance(spec["name"], str) or not NAME_RE.match(spec["name"]):
        raise AssertionError(f"{where}: bad name {spec['name']!r}")
    if not isinstance(spec["description"], str):
        raise AssertionError(f"{where}: description must be a string")
    _check_keys(spec["source"], SOURCE_KEYS, SOURCE_KEYS, f"{where}: source")
    for k, v in spec["source"].items():
        if not isinstance(v, str):
            raise AssertionError(f"{where}: source.{k} must be a string")
    _check_keys(spec["model"], {"linear"}, {"linear"}, f"{where}: model")
    lin = spec["model"]["linear"]
    _check_keys(lin, LINEAR_KEYS, LINEAR_REQUIRED, f"{where}: model.linear")
    if lin["estimator"] not in {k for k, _ in ESTIMATOR_KINDS.values()}:
        raise AssertionError(f"{where}: unknown estimator {lin['estimator']!r}")
    if lin["task"] not in ("classification", "regression"):
        raise AssertionError(f"{where}: bad task {lin['task']!r}")
    if lin["link"] not in LINKS:
        raise AssertionError(f"{where}: bad link {lin['link']!r}")
    feats = lin["features"]
    if not all(isinstance(n, str) for n in feats):
        raise AssertionError(f"{where}: feature names must be strings")
    nf = len(feats)
    rows = lin["coefficients"]
    if not rows or any(len(r) != nf for r in rows):
        raise AssertionError(f"{where}: coefficients must be n_outputs x {nf}")
    for r in rows:
        _check_floats(r, f"{where}: coefficients")
    if len(lin["intercepts"]) != len(rows):
        raise AssertionError(f"{where}: intercepts length != coefficient rows")
    _check_floats(lin["intercepts"], f"{where}: intercepts")
    if lin["task"] == "classification":
        classes = lin.get("classes")
        if not classes or not all(isinstance(c, str) for c in classes):
            raise AssertionError(f"{where}: classifiers need string class names")
        if len(rows) != (1 if len(classes) == 2 else len(classes)):
            raise AssertionError(f"{where}: coefficient rows do not match classes")
    elif "classes" in lin:
        raise AssertionError(f"{where}: regressors must not have classes")
    if "standardize" in lin:
        st = lin["standardize"]
        _check_keys(st, STANDARDIZE_KEYS, STANDARDIZE_KEYS, f"{where}: standardize")
        for k in ("mean", "scale"):
            if len(st[k]) != nf:
                raise AssertionError(f"{where}: standardize.{k} length != {nf}")
            _check_floats(st[k], f"{where}: standardize.{k}")
    q = spec["quantization"]
    _check_keys(q, QUANT_KEYS, QUANT_REQUIRED, f"{where}: quantization")
    if q.get("input_granularity", "feature") not in ("feature", "tensor"):
        raise AssertionError(f"{where}: input_granularity must be feature or tensor")
    if q.get("weight_scheme", "symmetric") not in ("symmetric", "asymmetric"):
        raise AssertionError(f"{where}: weight_scheme must be symmetric or asymmetric")
    for k in ("input_bits", "weight_bits"):
        if not isinstance(q[k], int) or not 2 <= q[k] <= 16:
            raise AssertionError(f"{where}: quantization.{k} must be an int in 2..=16")
    expected_ranges = 1 if q.get("input_granularity") == "tensor" else nf
    if len(q["input_ranges"]) != expected_ranges:
        raise AssertionError(f"{where}: input_ranges length != {expected_ranges}")
    for r in q["input_ranges"]:
        if len(r) != 2:
            raise AssertionError(f"{where}: input range {r} is not [min, max]")
        _check_floats(r, f"{where}: input_ranges")
        if r[0] > r[1]:
            raise AssertionError(f"{where}: input range {r} has min > max")
    if "data" in spec:
        _check_keys(spec["data"], DATA_KEYS, set(), f"{where}: data")


def read_csv(path: str) -> tuple:
    """Read a data CSV; return ``(header, float matrix)``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    data = np.array([[float(v) for v in r] for r in rows[1:]], dtype=np.float64)
    return header, data.reshape(len(rows) - 1, len(header))


def inverse_link(link: str, s: np.ndarray) -> np.ndarray:
    """Apply the spec's inverse link to raw scores (n, m)."""
    if link == "identity":
        return s
    if link == "exp":
        return np.exp(s)
    if link == "sigmoid":
        return 1.0 / (1.0 + np.exp(-s))
    if link == "softmax":
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(link)


def verify_spec(path: str) -> dict:
    """Recompute scores from a spec and its test CSV and compare with the saved ones.

    Checks: schema; CSV columns; ``score = standardize(X) @ coef.T + intercept``
    within ``1e-9`` (absolute); predictions consistent with the scores (argmax /
    sign for classifiers, inverse link for regressors); training data (if any)
    lies inside ``input_ranges``.  Returns ``{name, task, n_test, metric, max_abs_err}``.
    """
    spec = load_spec(path)
    lin = spec["model"]["linear"]
    feats = lin["features"]
    nf = len(feats)
    coef = np.asarray(lin["coefficients"], dtype=np.float64)
    intercept = np.asarray(lin["intercepts"], dtype=np.float64)
    m = coef.shape[0]
    base = os.path.dirname(os.path.abspath(path))
    data = spec.get("data") or {}

    def standardize(X):
        if "standardize" in lin:
            return (X - np.asarray(lin["standardize"]["mean"])) / np.asarray(lin["standardize"]["scale"])
        return X

    ranges = np.asarray(spec["quantization"]["input_ranges"], dtype=np.float64)
    if "train" in data:
        header, train = read_csv(os.path.join(base, data["train"]))
        if header != feats + ["target"]:
            raise AssertionError(f"{path}: train CSV header mismatch")
        Xs = standardize(train[:, :nf])
        if not (np.array_equal(Xs.min(axis=0), ranges[:, 0]) and np.array_equal(Xs.max(axis=0), ranges[:, 1])):
            raise AssertionError(f"{path}: input_ranges are not the train min/max")

    result = {"name": spec["name"], "task": lin["task"], "estimator": spec["source"]["estimator"]}
    if "test" not in data:
        return result
    header, test = read_csv(os.path.join(base, data["test"]))
    expected = feats + ["target"] + [f"score_{i}" for i in range(m)] + ["prediction"]
    if header != expected:
        raise AssertionError(f"{path}: test CSV header {header} != {expected}")
    X = test[:, :nf]
    y = test[:, nf]
    saved = test[:, nf + 1:nf + 1 + m]
    pred = test[:, nf + 1 + m]
    scores = standardize(X) @ coef.T + intercept
    err = float(np.max(np.abs(scores - saved)))
    if not err <= SCORE_ATOL:
        raise AssertionError(f"{path}: recomputed scores differ by {err:g} (> {SCORE_ATOL:g})")

    if lin["task"] == "classification":
        k = len(lin["classes"])
        recomputed = (saved[:, 0] > 0).astype(np.int64) if m == 1 else np.argmax(saved, axis=1)
        if not np.array_equal(recomputed, pred.astype(np.int64)):
            raise AssertionError(f"{path}: predictions disagree with decision scores")
        if not np.all((y >= 0) & (y < k) & (y == np.round(y))):
            raise AssertionError(f"{path}: targets are not class indices 0..{k - 1}")
        metric = ("accuracy", float(np.mean(pred == y)))
    else:
        mean_pred = inverse_link(lin["link"], saved)[:, 0]
        if not np.allclose(mean_pred, pred, rtol=1e-9, atol=1e-9):
            raise AssertionError(f"{path}: predictions disagree with inverse_link(scores)")
        ss_res = float(np.sum((y - pred) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        metric = ("r2", 1.0 - ss_res / ss_tot)
    result.update(n_test=int(X.shape[0]), metric=metric, max_abs_err=err)
    return result


# --------------------------------------------------------------------------
# Bundled models
# --------------------------------------------------------------------------

@dataclass
class BundleEntry:
    """One bundled model: dataset, estimator factory, description."""

    name: str
    dataset: str                          # load_<dataset> in sklearn.datasets
    make: Callable[[], object]
    description: str
    task: str


def _bundle_entries() -> List[BundleEntry]:
    from sklearn.linear_model import (LinearRegression, LogisticRegression,
                                      PoissonRegressor, Ridge)
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return [
        BundleEntry("breast_cancer_logreg", "breast_cancer",
                    lambda: LogisticRegression(max_iter=10000, random_state=0),
                    "LogisticRegression on scikit-learn breast_cancer (raw features)",
                    "classification"),
        BundleEntry("iris_logreg", "iris",
                    lambda: LogisticRegression(max_iter=10000, random_state=0),
                    "Multinomial LogisticRegression on scikit-learn iris (3 classes, raw features)",
                    "classification"),
        BundleEntry("diabetes_ridge", "diabetes",
                    lambda: Ridge(alpha=1.0, random_state=0),
                    "Ridge(alpha=1.0) on scikit-learn diabetes (load_diabetes default scaled features)",
                    "regression"),
        BundleEntry("breast_cancer_linear_svc", "breast_cancer",
                    lambda: Pipeline([("scaler", StandardScaler()),
                                      ("svc", LinearSVC(random_state=0, dual="auto", max_iter=100000))]),
                    "Pipeline(StandardScaler, LinearSVC) on scikit-learn breast_cancer "
                    "(standardization applied in clear on the client)",
                    "classification"),
        BundleEntry("diabetes_poisson", "diabetes",
                    lambda: PoissonRegressor(alpha=1e-3, solver="newton-cholesky", max_iter=1000),
                    "PoissonRegressor(alpha=1e-3, log link) on scikit-learn diabetes "
                    "(load_diabetes default scaled features)",
                    "regression"),
        BundleEntry("diabetes_linear_regression", "diabetes",
                    lambda: LinearRegression(),
                    "LinearRegression on scikit-learn diabetes (load_diabetes default scaled features)",
                    "regression"),
    ]


def load_dataset(name: str):
    """Return ``(X, y, feature_names, class_names_or_None)`` for a sklearn toy dataset."""
    import sklearn.datasets as ds

    bunch = getattr(ds, f"load_{name}")()
    class_names = [str(c) for c in bunch.target_names] if hasattr(bunch, "target_names") else None
    return (np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target),
            [str(f) for f in bunch.feature_names], class_names)


def fit_quietly(estimator, X, y) -> List[str]:
    """Fit ``estimator``; return the text of any warnings raised while fitting."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(X, y)
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def build_bundle(out_dir: str) -> List[dict]:
    """Train every bundled model and write spec + CSVs + README.md into ``out_dir``."""
    from sklearn.model_selection import train_test_split

    os.makedirs(out_dir, exist_ok=True)
    summaries = []
    for entry in _bundle_entries():
        X, y, feats, classes = load_dataset(entry.dataset)
        if entry.task == "classification":
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
        else:
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
            classes = None
        est = entry.make()
        warns = fit_quietly(est, Xtr, ytr)
        s = export_linear(est, feats, classes, Xtr, os.path.join(out_dir, f"{entry.name}.yaml"),
                          entry.name, entry.description, 8,
                          y_train=ytr, X_test=Xte, y_test=yte)
        s["dataset"] = entry.dataset
        s["n_train"] = int(Xtr.shape[0])
        s["n_features"] = int(X.shape[1])
        s["warnings"] = warns
        s["params"] = " ".join(repr(est).split())
        summaries.append(s)
        metric, value = s["metric"]
        print(f"{entry.name}: {metric}={value:.4f} n_test={s['n_test']}"
              + (f" WARNINGS: {warns}" if warns else ""))
    write_bundle_readme(os.path.join(out_dir, "README.md"), summaries)
    return summaries


def write_bundle_readme(path: str, summaries: List[dict]) -> None:
    """Write the table of bundled specs (``specs/README.md``)."""
    lines = [
        "# Bundled model specs",
        "",
        "Generated by `python tools/export_sklearn.py bundle` "
        f"(scikit-learn {sklearn_version()}, numpy {np.__version__}); "
        "do not edit by hand. See `tools/README.md` for the spec format.",
        "",
        "Each model has `<name>.yaml` (the `cml/v1` spec), `<name>.train.csv` "
        "(features + `target`) and `<name>.test.csv` (features + `target` + "
        "`score_*` raw linear outputs + `prediction` from scikit-learn).",
        "Splits: `train_test_split(test_size=0.2, random_state=0)`, stratified for classifiers.",
        "The metric is the float (unencrypted) scikit-learn model on the test split: "
        "accuracy for classifiers, R² for regressors.",
        "",
        "| spec | dataset | estimator | link | features | n_train | n_test | float test metric |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for s in summaries:
        metric, value = s["metric"]
        label = "accuracy" if metric == "accuracy" else "R²"
        lines.append(f"| `{s['name']}` | {s['dataset']} | `{s['params']}` | {s['link']} "
                     f"| {s['n_features']} | {s['n_train']} | {s['n_test']} | {label} {value:.4f} |")
    lines.append("")
    warned = [s for s in summaries if s["warnings"]]
    if warned:
        lines.append("Warnings raised while fitting:")
        lines.append("")
        for s in warned:
            for w in s["warnings"]:
                lines.append(f"- `{s['name']}`: {w}")
    else:
        lines.append("No warnings (convergence or otherwise) were raised while fitting.")
    lines.append("")
    text = "\n".join(lines)
    # keep the tree-model section written by tools/export_trees.py, if any
    begin, end = "<!-- export_trees.py: begin -->", "<!-- export_trees.py: end -->"
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if begin in old and end in old:
            text += "\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
    with open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------
# Self-test over every supported estimator
# --------------------------------------------------------------------------

def selftest() -> None:
    """Export and verify every supported estimator (bare and in a scaler Pipeline)."""
    from sklearn.linear_model import (ElasticNet, GammaRegressor, Lasso, LinearRegression,
                                      LogisticRegression, PoissonRegressor, Ridge,
                                      TweedieRegressor)
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC, LinearSVR

    cases = [
        ("breast_cancer", LogisticRegression(max_iter=10000), "sigmoid"),
        ("iris", LogisticRegression(max_iter=10000), "softmax"),
        ("iris", LinearSVC(random_state=0, dual="auto", max_iter=100000), "identity"),
        ("breast_cancer", LinearSVC(random_state=0, dual="auto", max_iter=100000), "identity"),
        ("diabetes", LinearRegression(), "identity"),
        ("diabetes", Ridge(alpha=0.5), "identity"),
        ("diabetes", Lasso(alpha=0.01, random_state=0, max_iter=100000), "identity"),
        ("diabetes", ElasticNet(alpha=0.001, random_state=0, max_iter=100000), "identity"),
        ("diabetes", LinearSVR(random_state=0, dual="auto", max_iter=100000), "identity"),
        ("diabetes", PoissonRegressor(alpha=1e-3, max_iter=1000), "exp"),
        ("diabetes", GammaRegressor(alpha=1e-3, max_iter=1000), "exp"),
        ("diabetes", TweedieRegressor(power=1.5, alpha=1e-3, max_iter=1000), "exp"),
        ("diabetes", TweedieRegressor(power=0.0, alpha=1e-3, max_iter=1000), "identity"),
        ("diabetes", TweedieRegressor(power=1.5, link="identity", alpha=1e-3, max_iter=1000), "identity"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (dsname, est, link) in enumerate(cases):
            for wrap in (False, True):
                X, y, feats, classes = load_dataset(dsname)
                clf = dsname != "diabetes"
                Xtr, Xte, ytr, yte = train_test_split(
                    X, y, test_size=0.2, random_state=0, stratify=y if clf else None)
                from sklearn.base import clone
                model = make_pipeline(StandardScaler(), clone(est)) if wrap else clone(est)
                warns = fit_quietly(model, Xtr, ytr)
                name = f"case_{i}_{'pipe' if wrap else 'bare'}"
                path = os.path.join(tmp, name + ".yaml")
                export_linear(model, feats, classes if clf else None, Xtr, path, name,
                              f"selftest {type(est).__name__}", 8,
                              y_train=ytr, X_test=Xte, y_test=yte)
                r = verify_spec(path)
                got_link = load_spec(path)["model"]["linear"]["link"]
                assert got_link == link, (name, got_link, link)
                print(f"ok {name:16s} {type(est).__name__:18s} link={got_link:8s} "
                      f"{r['metric'][0]}={r['metric'][1]:.4f} max_err={r['max_abs_err']:.2e}"
                      + (f" ({len(warns)} fit warning(s): {warns[0][:60]})" if warns else ""))
        # string names that YAML 1.1 would otherwise reinterpret
        X, y, _, _ = load_dataset("breast_cancer")
        model = LogisticRegression(max_iter=10000).fit(X[:, :3], y)
        path = os.path.join(tmp, "tricky.yaml")
        export_linear(model, ["yes", "1.5", "a, b"], ["no", "null"], X[:, :3], path,
                      "tricky", "quoting", 8, y_train=y, X_test=X[:, :3], y_test=y)
        lin = load_spec(path)["model"]["linear"]
        assert lin["features"] == ["yes", "1.5", "a_ b"] and lin["classes"] == ["no", "null"]
        verify_spec(path)
        print("ok tricky names")
    print("selftest passed")


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def spec_paths(args: Sequence[str]) -> List[str]:
    """Expand directories into their ``*.yaml`` files (sorted)."""
    out = []
    for a in args:
        if os.path.isdir(a):
            for f in sorted(os.listdir(a)):
                if not f.endswith(".yaml"):
                    continue
                path = os.path.join(a, f)
                with open(path) as fh:
                    text = fh.read()
                if "\n  ensemble:" in text or "\n  network:" in text:
                    # tree spec: checked by tools/export_trees.py verify;
                    # network spec: by tools/export_torch.py verify
                    continue
                out.append(path)
        else:
            out.append(a)
    return out


def cmd_bundle(args) -> int:
    summaries = build_bundle(args.out)
    for s in summaries:
        r = verify_spec(s["spec"])
        print(f"verified {r['name']}: max |score err| = {r['max_abs_err']:.3g}")
    return 0


def cmd_verify(args) -> int:
    paths = spec_paths(args.paths)
    if not paths:
        print("no spec files found", file=sys.stderr)
        return 1
    failed = 0
    for p in paths:
        try:
            r = verify_spec(p)
        except Exception as e:  # report every failing spec, then fail
            failed += 1
            print(f"FAIL {p}: {e}")
            continue
        if "metric" in r:
            print(f"ok {r['name']}: n_test={r['n_test']} {r['metric'][0]}={r['metric'][1]:.4f} "
                  f"max |score err|={r['max_abs_err']:.3g}")
        else:
            print(f"ok {r['name']}: (no test data)")
    return 1 if failed else 0


def cmd_export(args) -> int:
    with open(args.model, "rb") as f:
        estimator = pickle.load(f)  # only load pickles you trust
    header, train = read_csv(args.train)
    if header[-1] != "target":
        raise SystemExit("train CSV must end with a 'target' column")
    feats = header[:-1]
    model = read_linear_model(estimator)
    classes = None
    if model.task == "classification":
        classes = args.class_names.split(",") if args.class_names else None

    def labels(col):
        # CSV targets are class indices for classifiers: map back to labels
        if model.task == "classification":
            return model.classes[col.astype(np.int64)]
        return col

    kwargs = dict(y_train=labels(train[:, -1]))
    if args.test:
        th, test = read_csv(args.test)
        if th[:len(feats) + 1] != feats + ["target"]:
            raise SystemExit("test CSV must have the train CSV's feature columns then 'target'")
        kwargs.update(X_test=test[:, :len(feats)], y_test=labels(test[:, len(feats)]))
    s = export_linear(estimator, feats, classes, train[:, :-1], args.out, args.name,
                      args.description, args.n_bits, **kwargs)
    print(f"wrote {s['spec']}" + (f" ({s['metric'][0]}={s['metric'][1]:.4f})" if "metric" in s else ""))
    return 0


def cmd_selftest(args) -> int:
    selftest()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_specs = os.path.join(os.path.dirname(here), "specs")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bundle", help="train and write all bundled models")
    b.add_argument("--out", default=default_specs, help="output directory (default: repo specs/)")
    b.set_defaults(func=cmd_bundle)

    v = sub.add_parser("verify", help="recompute test scores from specs and compare")
    v.add_argument("paths", nargs="*", default=[default_specs],
                   help="spec files or directories (default: repo specs/)")
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("export", help="export a pickled fitted estimator")
    e.add_argument("--model", required=True, help="pickle of a fitted estimator (trusted input only)")
    e.add_argument("--train", required=True,
                   help="train CSV: feature columns then 'target' (class index for classifiers)")
    e.add_argument("--test", help="optional test CSV with the same columns")
    e.add_argument("--name", required=True, help="spec name [a-z0-9_]+")
    e.add_argument("--description", default="", help="free-text description")
    e.add_argument("--class-names", help="comma-separated class names (classifiers)")
    e.add_argument("--n-bits", type=int, default=8, help="input and weight bits (default 8)")
    e.add_argument("--out", required=True, help="output spec path (.yaml)")
    e.set_defaults(func=cmd_export)

    t = sub.add_parser("selftest", help="export + verify every supported estimator in a temp dir")
    t.set_defaults(func=cmd_selftest)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
