#!/usr/bin/env python3
"""Train and export tree ensembles (scikit-learn trees/forests, XGBoost) for ``cml``.

Writes ``cml/v1`` specs with a ``model.ensemble`` section (scikit-learn models),
XGBoost's own JSON model files (their spec is produced by the Rust importer),
train/test CSVs with the float reference outputs, and a Python converter from
XGBoost JSON to the spec format (to cross-check the Rust importer).

Sub-commands::

    python tools/export_trees.py bundle   [--out specs] [--fixtures tests/fixtures] [--yaml-dir /tmp]
    python tools/export_trees.py verify   [PATH ...] [--data-dir DIR]
    python tools/export_trees.py convert-xgb MODEL.json --name NAME --train TRAIN.csv [--out X.yaml] ...
    python tools/export_trees.py study    [--specs specs] [--yaml-dir /tmp]

Float semantics of an ``ensemble`` spec (what the Rust side implements and what
``verify`` recomputes independently): each feature is rounded to float32, then
compared with the node threshold (``le``: go left iff ``x <= t``, scikit-learn;
``lt``: go left iff ``x < t``, XGBoost); the reached leaves' values are
aggregated over the trees (``mean`` or ``sum``; for XGBoost multiclass trees
with ``output: k`` add their single value to output ``k``), then ``base_score``
is added.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if not __package__ and HERE not in sys.path:  # run as a script
    sys.path.insert(0, HERE)

try:  # imported as tools.export_trees (e.g. by tools/cml_export)
    from .export_sklearn import (FORMAT, NAME_RE, check_feature_names, fmt_float,
                                 float_list, load_dataset, read_csv, str_list, write_csv,
                                 write_quantization_and_data, yaml_str, _check_keys,
                                 _check_floats)
except ImportError:  # run as a script: tools/ is on sys.path
    from export_sklearn import (FORMAT, NAME_RE, check_feature_names, fmt_float,  # noqa: E402
                                float_list, load_dataset, read_csv, str_list, write_csv,
                                write_quantization_and_data, yaml_str, _check_keys,
                                _check_floats)

XGB_SCORE_RTOL = 1e-5      # XGBoost sums leaves in float32
SK_SCORE_ATOL = 1e-9

ESTIMATORS = {"decision_tree_classifier", "decision_tree_regressor",
              "random_forest_classifier", "random_forest_regressor",
              "xgb_classifier", "xgb_regressor"}
SK_KINDS = {
    "DecisionTreeClassifier": "decision_tree_classifier",
    "DecisionTreeRegressor": "decision_tree_regressor",
    "RandomForestClassifier": "random_forest_classifier",
    "RandomForestRegressor": "random_forest_regressor",
}
TOP_KEYS = {"format", "name", "description", "source", "model", "quantization", "data"}
ENSEMBLE_KEYS = {"estimator", "task", "link", "features", "classes", "comparison",
                 "aggregation", "base_score", "trees"}
ENSEMBLE_REQUIRED = ENSEMBLE_KEYS - {"classes"}
QUANT_KEYS = {"input_bits", "leaf_bits", "input_ranges"}
# Bundled models whose leaves use fewer than the default 8 bits: the forest's
# 20-tree sum at 7 bits keeps the same test accuracy and a narrower output.
LEAF_BITS = {"breast_cancer_forest": 7}


# --------------------------------------------------------------------------
# In-memory ensemble (the spec's model.ensemble section)
# --------------------------------------------------------------------------

class Ensemble:
    """Plain-data ensemble: ``trees`` is a list of ``{"output": k|None, "nodes": [...]}``.

    A node is ``{"feature", "threshold", "left", "right"}`` or ``{"value": [...]}``.
    """

    def __init__(self, estimator, task, link, features, classes, comparison,
                 aggregation, base_score, trees, source):
        self.estimator = estimator
        self.task = task
        self.link = link
        self.features = list(features)
        self.classes = None if classes is None else [str(c) for c in classes]
        self.comparison = comparison
        self.aggregation = aggregation
        self.base_score = [float(b) for b in base_score]
        self.trees = trees
        self.source = source          # (library, version, estimator)

    @property
    def n_outputs(self):
        return len(self.base_score)


def sklearn_to_ensemble(est, feature_names, class_names=None) -> Ensemble:
    """Read a fitted scikit-learn DecisionTree*/RandomForest* into an Ensemble."""
    import sklearn

    sk_name = type(est).__name__
    if sk_name not in SK_KINDS:
        raise ValueError(f"unsupported estimator {sk_name}")
    kind = SK_KINDS[sk_name]
    clf = kind.endswith("classifier")
    estimators = est.estimators_ if hasattr(est, "estimators_") else [est]
    feats = check_feature_names(feature_names, est.n_features_in_)
    if clf:
        if getattr(est, "n_outputs_", 1) != 1:
            raise ValueError("multi-output classifiers are not supported")
        n_out = len(est.classes_)
        classes = class_names if class_names is not None else [str(c) for c in est.classes_]
        if len(classes) != n_out:
            raise ValueError("class names do not match classes_")
    else:
        if getattr(est, "n_outputs_", 1) != 1:
            raise ValueError("multi-output regressors are not supported")
        n_out = 1
        classes = None
    trees = []
    for e in estimators:
        t = e.tree_
        if clf:
            # exactly what DecisionTreeClassifier.predict_proba returns for a leaf
            v = t.value[:, 0, :n_out]
            normalizer = v.sum(axis=1)[:, np.newaxis]
            normalizer[normalizer == 0.0] = 1.0
            v = v / normalizer
        else:
            v = t.value[:, 0, :1]
        nodes = []
        for i in range(t.node_count):
            if t.children_left[i] == -1:
                nodes.append({"value": [float(x) for x in v[i]]})
            else:
                nodes.append({"feature": int(t.feature[i]), "threshold": float(t.threshold[i]),
                              "left": int(t.children_left[i]), "right": int(t.children_right[i])})
        trees.append({"output": None, "nodes": nodes})
    return Ensemble(kind, "classification" if clf else "regression", "identity", feats, classes,
                    "le", "mean", [0.0] * n_out, trees,
                    ("scikit-learn", sklearn.__version__, sk_name))


def _xgb_float(x) -> float:
    """XGBoost stores float32; the JSON text round-trips through float32."""
    return float(np.float32(float(x)))


def xgb_json_to_ensemble(json_path: str, feature_names: Optional[Sequence[str]] = None,
                         class_names: Optional[Sequence[str]] = None) -> Ensemble:
    """Convert an XGBoost (1.6 JSON format) model file to an Ensemble.

    Supported objectives: ``binary:logistic`` (one margin, link sigmoid),
    ``multi:softprob`` / ``multi:softmax`` (one margin per class, link softmax,
    trees carry ``output``), ``reg:squarederror`` (identity).  Leaves store
    their value in ``split_conditions``; node ``i`` is a leaf iff
    ``left_children[i] == -1``.  Base margin: ``logit(base_score)`` for
    ``binary:logistic``, ``base_score`` otherwise.
    """
    with open(json_path) as f:
        j = json.load(f)
    learner = j["learner"]
    obj = learner["objective"]["name"]
    mp = learner["learner_model_param"]
    # "5E-1" (XGBoost 1.x) or a bracketed vector "[5E-1]" / "[1E0,2E0]" (2.x/3.x)
    bases = [float(np.float32(float(v))) for v in
             str(mp["base_score"]).strip().strip("[]").split(",") if v.strip()]
    base = bases[0]
    num_class = int(mp.get("num_class", "0"))
    n_feat = int(mp["num_feature"])
    booster = learner["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise ValueError(f"unsupported booster {booster.get('name')!r}")
    model = booster["model"]
    if int(model["gbtree_model_param"].get("num_parallel_tree", "1")) != 1:
        raise ValueError("num_parallel_tree > 1 is not supported")
    if obj == "binary:logistic":
        kind, task, link, n_out = "xgb_classifier", "classification", "sigmoid", 1
        b = np.float32(base)
        base_margin = [float(np.float32(-np.log(np.float32(1.0) / b - np.float32(1.0))))]
        n_classes = 2
    elif obj in ("multi:softprob", "multi:softmax"):
        kind, task, link, n_out = "xgb_classifier", "classification", "softmax", num_class
        base_margin = bases if len(bases) == num_class else [base] * num_class
        n_classes = num_class
    elif obj == "reg:squarederror":
        kind, task, link, n_out = "xgb_regressor", "regression", "identity", 1
        base_margin = [base]
        n_classes = None
    else:
        raise ValueError(f"unsupported XGBoost objective {obj!r}")
    if feature_names is None:
        feature_names = learner.get("feature_names") or [f"f{i}" for i in range(n_feat)]
    feats = check_feature_names(feature_names, n_feat)
    classes = None
    if task == "classification":
        classes = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
        if len(classes) != n_classes:
            raise ValueError("class names do not match the number of classes")
    tree_info = model["tree_info"]
    trees = []
    for ti, t in enumerate(model["trees"]):
        lc, rc = t["left_children"], t["right_children"]
        si, sc = t["split_indices"], t["split_conditions"]
        # XGBoost sends a missing value (NaN) to the default_left side (0/1 or booleans).
        dl = t.get("default_left") or []
        nodes = []
        for i in range(len(lc)):
            if lc[i] == -1:
                nodes.append({"value": [_xgb_float(sc[i])]})
            else:
                f = int(si[i])
                if not 0 <= f < n_feat:
                    raise ValueError(f"tree {ti} node {i}: feature {f} out of range")
                node = {"feature": f, "threshold": _xgb_float(sc[i]),
                        "left": int(lc[i]), "right": int(rc[i])}
                if i < len(dl):
                    node["missing"] = "left" if int(dl[i]) else "right"
                nodes.append(node)
        trees.append({"output": int(tree_info[ti]) if n_out > 1 else None, "nodes": nodes})
    version = ".".join(str(v) for v in j.get("version", []))
    sk_est = {"xgb_classifier": "XGBClassifier", "xgb_regressor": "XGBRegressor"}[kind]
    return Ensemble(kind, task, link, feats, classes, "lt", "sum", base_margin, trees,
                    ("xgboost", version, sk_est))


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def render_ensemble_spec(ens: Ensemble, *, name: str, description: str, ranges,
                         input_bits: int, data: Optional[Dict[str, str]],
                         leaf_bits: Optional[int] = None) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"spec name {name!r} must match [a-z0-9_]+")
    out = io.StringIO()
    w = out.write
    w(f"format: {FORMAT}\n")
    w(f"name: {name}\n")
    w(f"description: {yaml_str(description)}\n")
    w("source:\n")
    w(f"  library: {yaml_str(ens.source[0])}\n")
    w(f"  version: {yaml_str(ens.source[1])}\n")
    w(f"  estimator: {yaml_str(ens.source[2])}\n")
    w("model:\n")
    w("  ensemble:\n")
    w(f"    estimator: {ens.estimator}\n")
    w(f"    task: {ens.task}\n")
    w(f"    link: {ens.link}\n")
    w(f"    features: {str_list(ens.features)}\n")
    if ens.task == "classification":
        w(f"    classes: {str_list(ens.classes)}\n")
    w(f"    comparison: {ens.comparison}\n")
    w(f"    aggregation: {ens.aggregation}\n")
    w(f"    base_score: {float_list(ens.base_score)}\n")
    w("    trees:\n")
    for t in ens.trees:
        if t.get("output") is not None:
            w(f"      - output: {int(t['output'])}\n")
            w("        nodes:\n")
        else:
            w("      - nodes:\n")
        for n in t["nodes"]:
            if "value" in n:
                w(f"          - {{value: {float_list(n['value'])}}}\n")
            else:
                miss = f", missing: {n['missing']}" if n.get("missing") else ""
                w(f"          - {{feature: {n['feature']}, threshold: {fmt_float(n['threshold'])}, "
                  f"left: {n['left']}, right: {n['right']}{miss}}}\n")
    write_quantization_and_data(w, {"input_bits": input_bits, "leaf_bits": leaf_bits},
                                ranges, data)
    return out.getvalue()


def train_ranges(X_train) -> np.ndarray:
    X = np.asarray(X_train, dtype=np.float64)
    return np.stack([X.min(axis=0), X.max(axis=0)], axis=1)


def xgb_json_to_spec_yaml(json_path: str, *, name: str, description: str, X_train,
                          input_bits: int = 6, feature_names=None, class_names=None,
                          data: Optional[Dict[str, str]] = None) -> str:
    """XGBoost JSON -> ``cml/v1`` YAML text (Python reference for the Rust importer)."""
    ens = xgb_json_to_ensemble(json_path, feature_names, class_names)
    return render_ensemble_spec(ens, name=name, description=description,
                                ranges=train_ranges(X_train), input_bits=input_bits, data=data)


# --------------------------------------------------------------------------
# Loading + validating a spec (independent of the exporters above)
# --------------------------------------------------------------------------

def load_ensemble_spec(path: str) -> dict:
    import yaml

    with open(path) as f:
        spec = yaml.safe_load(f)
    validate_ensemble_spec(spec, path)
    return spec


def validate_ensemble_spec(spec: dict, where: str) -> None:
    _check_keys(spec, TOP_KEYS, TOP_KEYS - {"data"}, where)
    if spec["format"] != FORMAT or not NAME_RE.match(str(spec["name"])):
        raise AssertionError(f"{where}: bad format or name")
    _check_keys(spec["model"], {"ensemble"}, {"ensemble"}, f"{where}: model")
    e = spec["model"]["ensemble"]
    _check_keys(e, ENSEMBLE_KEYS, ENSEMBLE_REQUIRED, f"{where}: model.ensemble")
    if e["estimator"] not in ESTIMATORS:
        raise AssertionError(f"{where}: unknown estimator {e['estimator']!r}")
    if e["task"] not in ("classification", "regression"):
        raise AssertionError(f"{where}: bad task")
    if e["link"] not in ("identity", "sigmoid", "softmax"):
        raise AssertionError(f"{where}: bad link")
    if e["comparison"] not in ("le", "lt") or e["aggregation"] not in ("mean", "sum"):
        raise AssertionError(f"{where}: bad comparison/aggregation")
    nf = len(e["features"])
    m = len(e["base_score"])
    _check_floats(e["base_score"], f"{where}: base_score")
    if e["task"] == "classification":
        k = len(e.get("classes") or [])
        if k < 2:
            raise AssertionError(f"{where}: classifiers need >= 2 classes")
        if m not in (1, k) or (m == 1 and k != 2):
            raise AssertionError(f"{where}: {m} outputs for {k} classes")
    elif "classes" in e or m != 1:
        raise AssertionError(f"{where}: regressors have one output and no classes")
    if not e["trees"]:
        raise AssertionError(f"{where}: no trees")
    for ti, t in enumerate(e["trees"]):
        _check_keys(t, {"nodes", "output"}, {"nodes"}, f"{where}: tree {ti}")
        out = t.get("output")
        if out is not None and not (isinstance(out, int) and 0 <= out < m):
            raise AssertionError(f"{where}: tree {ti}: bad output {out}")
        width = 1 if out is not None else m
        nodes = t["nodes"]
        seen = [0] * len(nodes)
        stack = [0]
        while stack:
            i = stack.pop()
            if not 0 <= i < len(nodes):
                raise AssertionError(f"{where}: tree {ti}: child {i} out of range")
            seen[i] += 1
            if seen[i] > 1:
                raise AssertionError(f"{where}: tree {ti}: node {i} reached twice")
            n = nodes[i]
            if "value" in n:
                _check_keys(n, {"value"}, {"value"}, f"{where}: tree {ti} node {i}")
                if len(n["value"]) != width:
                    raise AssertionError(f"{where}: tree {ti} node {i}: {len(n['value'])} values, want {width}")
                _check_floats(n["value"], f"{where}: tree {ti} node {i}")
            else:
                keys = {"feature", "threshold", "left", "right"}
                _check_keys(n, keys | {"missing"}, keys, f"{where}: tree {ti} node {i}")
                if n.get("missing", "left") not in ("left", "right"):
                    raise AssertionError(f"{where}: tree {ti} node {i}: missing must be left or right")
                if not 0 <= n["feature"] < nf:
                    raise AssertionError(f"{where}: tree {ti} node {i}: feature out of range")
                _check_floats([n["threshold"]], f"{where}: tree {ti} node {i}")
                stack += [n["left"], n["right"]]
        if not all(s == 1 for s in seen):
            raise AssertionError(f"{where}: tree {ti}: unreachable nodes")
    q = spec["quantization"]
    _check_keys(q, QUANT_KEYS, {"input_bits", "input_ranges"}, f"{where}: quantization")
    if not isinstance(q["input_bits"], int) or not 1 <= q["input_bits"] <= 16:
        raise AssertionError(f"{where}: bad input_bits")
    if len(q["input_ranges"]) != nf:
        raise AssertionError(f"{where}: input_ranges length != {nf}")
    for r in q["input_ranges"]:
        _check_floats(r, f"{where}: input_ranges")
        if len(r) != 2 or r[0] > r[1]:
            raise AssertionError(f"{where}: bad input range {r}")
    if "data" in spec:
        _check_keys(spec["data"], {"train", "test"}, set(), f"{where}: data")


# --------------------------------------------------------------------------
# Evaluation (float and quantized)
# --------------------------------------------------------------------------

def leaves_reached(nodes, go_left) -> np.ndarray:
    """Vectorized descent; ``go_left(feature, threshold, rows) -> bool array``."""
    feat = np.array([n.get("feature", -1) for n in nodes])
    thr = np.array([n.get("threshold", 0.0) for n in nodes], dtype=np.float64)
    left = np.array([n.get("left", -1) for n in nodes])
    right = np.array([n.get("right", -1) for n in nodes])
    return feat, thr, left, right


def eval_ensemble(e: dict, X: np.ndarray, decide=None) -> np.ndarray:
    """Scores (n, m) of a spec's ensemble.

    ``decide(feature_index, threshold, x_column_values) -> go-left bool array``;
    the default is the float rule (float32-rounded feature, ``le``/``lt``).
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    m = len(e["base_score"])
    X32 = X.astype(np.float32).astype(np.float64)
    if decide is None:
        if e["comparison"] == "le":
            def decide(f, t, rows):
                return X32[rows, f] <= t
        else:
            def decide(f, t, rows):
                return X32[rows, f] < t
    total = np.zeros((n, m), dtype=np.float64)
    for t in e["trees"]:
        nodes = t["nodes"]
        feat, thr, left, right = leaves_reached(nodes, None)
        cur = np.zeros(n, dtype=np.int64)
        for _ in range(len(nodes)):
            internal = feat[cur] >= 0
            if not internal.any():
                break
            rows = np.nonzero(internal)[0]
            for node in np.unique(cur[rows]):
                r = rows[cur[rows] == node]
                gl = decide(int(feat[node]), float(thr[node]), r)
                cur[r] = np.where(gl, left[node], right[node])
        vals = np.array([nodes[c]["value"] for c in cur], dtype=np.float64)
        if t.get("output") is not None:
            total[:, t["output"]] += vals[:, 0]
        else:
            total += vals
    if e["aggregation"] == "mean":
        total = total / len(e["trees"])
    return total + np.asarray(e["base_score"], dtype=np.float64)


def scores_to_prediction(e: dict, s: np.ndarray) -> np.ndarray:
    if e["task"] == "regression":
        return s[:, 0]
    if s.shape[1] == 1:
        return (s[:, 0] > 0).astype(np.int64)
    return np.argmax(s, axis=1).astype(np.int64)


def resolve_data(spec_path: str, rel: str, data_dir: Optional[str]) -> str:
    p = os.path.join(os.path.dirname(os.path.abspath(spec_path)), rel)
    if os.path.exists(p) or data_dir is None:
        return p
    return os.path.join(data_dir, rel)


def verify_ensemble_spec(path: str, data_dir: Optional[str] = None) -> dict:
    """Recompute the test CSV scores from the spec alone (float32 rule) and compare."""
    spec = load_ensemble_spec(path)
    e = spec["model"]["ensemble"]
    feats = e["features"]
    nf = len(feats)
    m = len(e["base_score"])
    data = spec.get("data") or {}
    res = {"name": spec["name"], "estimator": e["estimator"]}
    ranges = np.asarray(spec["quantization"]["input_ranges"], dtype=np.float64)
    if "train" in data:
        header, train = read_csv(resolve_data(path, data["train"], data_dir))
        if header != feats + ["target"]:
            raise AssertionError(f"{path}: train CSV header mismatch")
        if not (np.array_equal(train[:, :nf].min(axis=0), ranges[:, 0])
                and np.array_equal(train[:, :nf].max(axis=0), ranges[:, 1])):
            raise AssertionError(f"{path}: input_ranges are not the train min/max")
    if "test" not in data:
        return res
    header, test = read_csv(resolve_data(path, data["test"], data_dir))
    expected = feats + ["target"] + [f"score_{i}" for i in range(m)] + ["prediction"]
    if header != expected:
        raise AssertionError(f"{path}: test CSV header {header} != {expected}")
    X, y = test[:, :nf], test[:, nf]
    saved, pred = test[:, nf + 1:nf + 1 + m], test[:, nf + 1 + m]
    s = eval_ensemble(e, X)
    abs_err = np.abs(s - saved)
    if e["aggregation"] == "sum":
        # XGBoost accumulates in float32: relative tolerance (absolute below 1)
        err = float(np.max(abs_err / np.maximum(1.0, np.abs(saved))))
        tol = XGB_SCORE_RTOL
    else:
        err = float(np.max(abs_err))
        tol = SK_SCORE_ATOL
    if not err <= tol:
        bad = int(np.argmax(np.max(abs_err, axis=1)))
        raise AssertionError(f"{path}: score error {err:g} > {tol:g} (row {bad}: {s[bad]} vs {saved[bad]})")
    p = scores_to_prediction(e, s)
    if e["task"] == "classification":
        if not np.array_equal(p, pred.astype(np.int64)):
            raise AssertionError(f"{path}: predictions differ on rows {np.nonzero(p != pred)[0].tolist()}")
        metric = ("accuracy", float(np.mean(pred == y)))
    else:
        if not np.allclose(p, pred, rtol=(tol if e["aggregation"] == "sum" else 0), atol=tol):
            raise AssertionError(f"{path}: regression predictions differ")
        metric = ("r2", r2(y, pred))
    res.update(n_test=len(y), metric=metric, max_err=err, max_abs_err=float(abs_err.max()))
    return res


def r2(y, p) -> float:
    y = np.asarray(y, dtype=np.float64)
    return 1.0 - float(np.sum((y - p) ** 2)) / float(np.sum((y - y.mean()) ** 2))


class Quantizer:
    """Per-feature unsigned uniform quantizer over the train range."""

    def __init__(self, lo, hi, n_bits):
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.qmax = 2 ** n_bits - 1
        span = self.hi - self.lo
        self.scale = np.where(span > 0, span / self.qmax, 1.0)
        self.zp = np.rint(-self.lo / self.scale)

    def quant(self, X):
        return np.clip(np.rint(X / self.scale + self.zp), 0, self.qmax)

    def dequant_f(self, f, q):
        return self.scale[f] * (q - self.zp[f])

    def q_threshold(self, f, t, comparison):
        """Largest grid code that goes left (-1: none goes left)."""
        codes = np.arange(self.qmax + 1, dtype=np.float64)
        d = self.dequant_f(f, codes)
        left = d <= t if comparison == "le" else d < t
        return int(np.nonzero(left)[0].max()) if left.any() else -1


def eval_quantized(e: dict, X, ranges, n_bits) -> np.ndarray:
    qz = Quantizer(ranges[:, 0], ranges[:, 1], n_bits)
    Q = qz.quant(np.asarray(X, dtype=np.float64))
    le = e["comparison"] == "le"

    def decide(f, t, rows):
        d = qz.dequant_f(f, Q[rows, f])
        return d <= t if le else d < t
    return eval_ensemble(e, X, decide)


def tree_stats(e: dict, ranges, n_bits=6) -> dict:
    qz = Quantizer(ranges[:, 0], ranges[:, 1], n_bits)
    internal = leaves = 0
    pairs, qpairs, feats_used = set(), set(), set()
    trivial = 0
    max_depth = 0
    for t in e["trees"]:
        nodes = t["nodes"]
        stack = [(0, 0)]
        while stack:
            i, d = stack.pop()
            n = nodes[i]
            max_depth = max(max_depth, d)
            if "value" in n:
                leaves += 1
                continue
            internal += 1
            f, th = n["feature"], n["threshold"]
            pairs.add((f, th))
            feats_used.add(f)
            qt = qz.q_threshold(f, th, e["comparison"])
            qpairs.add((f, qt))
            if qt < 0 or qt >= qz.qmax:
                trivial += 1
            stack += [(n["left"], d + 1), (n["right"], d + 1)]
    return {"trees": len(e["trees"]), "internal": internal, "leaves": leaves,
            "pairs": len(pairs), "qpairs6": len(qpairs), "trivial6": trivial,
            "features_used": len(feats_used), "max_depth": max_depth}


# --------------------------------------------------------------------------
# Bundle
# --------------------------------------------------------------------------

def split(X, y, task):
    from sklearn.model_selection import train_test_split
    if task == "classification":
        return train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    return train_test_split(X, y, test_size=0.2, random_state=0)


SK_BUNDLE = [
    ("breast_cancer_tree", "breast_cancer", "DecisionTreeClassifier", dict(max_depth=5),
     "DecisionTreeClassifier (max_depth=5) on scikit-learn breast_cancer"),
    ("breast_cancer_forest", "breast_cancer", "RandomForestClassifier",
     dict(n_estimators=20, max_depth=4),
     "RandomForestClassifier (n_estimators=20, max_depth=4) on scikit-learn breast_cancer"),
    ("iris_tree", "iris", "DecisionTreeClassifier", dict(max_depth=4),
     "DecisionTreeClassifier (max_depth=4) on scikit-learn iris"),
    ("diabetes_tree", "diabetes", "DecisionTreeRegressor", dict(max_depth=5),
     "DecisionTreeRegressor (max_depth=5) on scikit-learn diabetes (load_diabetes default scaled features)"),
]

XGB_BUNDLE = [
    # name, dataset, class, params, description, json dir key
    ("breast_cancer_xgb", "breast_cancer", "XGBClassifier", dict(n_estimators=20, max_depth=3),
     "XGBClassifier (n_estimators=20, max_depth=3) on scikit-learn breast_cancer", "specs"),
    ("diabetes_xgb", "diabetes", "XGBRegressor", dict(n_estimators=20, max_depth=3),
     "XGBRegressor (n_estimators=20, max_depth=3) on scikit-learn diabetes "
     "(load_diabetes default scaled features)", "specs"),
    ("xgb_iris_multiclass", "iris", "XGBClassifier", dict(n_estimators=3, max_depth=2),
     "XGBClassifier (n_estimators=3, max_depth=2) on scikit-learn iris (importer test fixture)",
     "fixtures"),
]


def build_bundle(out_dir: str, fixtures_dir: str, yaml_dir: str, input_bits: int = 6) -> List[dict]:
    import sklearn.ensemble
    import sklearn.tree

    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(fixtures_dir, exist_ok=True)
    os.makedirs(yaml_dir, exist_ok=True)
    out = []
    for name, ds, cls, params, desc in SK_BUNDLE:
        X, y, feats, classes = load_dataset(ds)
        task = "regression" if ds == "diabetes" else "classification"
        Xtr, Xte, ytr, yte = split(X, y, task)
        mod = sklearn.tree if cls.startswith("Decision") else sklearn.ensemble
        est = getattr(mod, cls)(random_state=0, **params).fit(Xtr, ytr)
        ens = sklearn_to_ensemble(est, feats, classes if task == "classification" else None)
        if task == "classification":
            scores = est.predict_proba(Xte)
            preds = np.searchsorted(est.classes_, est.predict(Xte))
            ytr_i, yte_i = np.searchsorted(est.classes_, ytr), np.searchsorted(est.classes_, yte)
        else:
            scores = est.predict(Xte).reshape(-1, 1)
            preds = est.predict(Xte)
            ytr_i, yte_i = ytr.astype(float), yte.astype(float)
        write_csv(os.path.join(out_dir, f"{name}.train.csv"), ens.features, Xtr, ytr_i, task)
        write_csv(os.path.join(out_dir, f"{name}.test.csv"), ens.features, Xte, yte_i, task,
                  scores=scores, preds=preds)
        text = render_ensemble_spec(ens, name=name, description=desc, ranges=train_ranges(Xtr),
                                    input_bits=input_bits, leaf_bits=LEAF_BITS.get(name),
                                    data={"train": f"{name}.train.csv", "test": f"{name}.test.csv"})
        spec_path = os.path.join(out_dir, f"{name}.yaml")
        with open(spec_path, "w") as f:
            f.write(text)
        out.append({"name": name, "dataset": ds, "spec": spec_path, "data_dir": None,
                    "params": " ".join(repr(est).split()), "task": task,
                    "n_train": len(ytr), "n_test": len(yte), "n_features": X.shape[1]})
        print(f"wrote {spec_path}")
    out += build_xgb(out_dir, fixtures_dir, yaml_dir, input_bits)
    return out


def build_xgb(out_dir, fixtures_dir, yaml_dir, input_bits) -> List[dict]:
    import pandas as pd
    import xgboost

    out = []
    for name, ds, cls, params, desc, where in XGB_BUNDLE:
        X, y, feats, classes = load_dataset(ds)
        task = "regression" if ds == "diabetes" else "classification"
        feats = check_feature_names(feats, X.shape[1])
        Xtr, Xte, ytr, yte = split(X, y, task)
        dtr, dte = pd.DataFrame(Xtr, columns=feats), pd.DataFrame(Xte, columns=feats)
        est = getattr(xgboost, cls)(random_state=0, **params)
        est.fit(dtr, ytr)
        d = out_dir if where == "specs" else fixtures_dir
        json_name = f"{name}.xgb.json" if where == "specs" else f"{name}.json"
        json_path = os.path.join(d, json_name)
        est.save_model(json_path)
        margins = np.asarray(est.predict(dte, output_margin=True), dtype=np.float64)
        margins = margins.reshape(len(Xte), -1)
        if task == "classification":
            preds = np.asarray(est.predict(dte)).astype(np.int64)
            ytr_i, yte_i = ytr.astype(np.int64), yte.astype(np.int64)
        else:
            preds = np.asarray(est.predict(dte), dtype=np.float64)
            ytr_i, yte_i = ytr.astype(float), yte.astype(float)
        data = {"test": f"{name}.test.csv"}
        if where == "specs":
            write_csv(os.path.join(d, f"{name}.train.csv"), feats, Xtr, ytr_i, task)
            data = {"train": f"{name}.train.csv", "test": f"{name}.test.csv"}
        write_csv(os.path.join(d, f"{name}.test.csv"), feats, Xte, yte_i, task,
                  scores=margins, preds=preds)
        text = xgb_json_to_spec_yaml(json_path, name=name, description=desc, X_train=Xtr,
                                     input_bits=input_bits,
                                     class_names=classes if task == "classification" else None,
                                     data=data)
        yaml_path = os.path.join(yaml_dir, f"{name}.py.yaml")
        with open(yaml_path, "w") as f:
            f.write(text)
        print(f"wrote {json_path}, {yaml_path}")
        out.append({"name": name, "dataset": ds, "spec": yaml_path, "data_dir": d,
                    "params": f"xgboost.{cls}(" + ", ".join(f"{k}={v}" for k, v in params.items())
                              + ", random_state=0)",
                    "task": task, "xgb": True,
                    "json": json_path, "n_train": len(ytr), "n_test": len(yte),
                    "n_features": X.shape[1]})
    return out


# --------------------------------------------------------------------------
# Study
# --------------------------------------------------------------------------

STUDY_BITS = (4, 5, 6, 7, 8)


def study_spec(path: str, data_dir: Optional[str] = None) -> dict:
    spec = load_ensemble_spec(path)
    e = spec["model"]["ensemble"]
    nf = len(e["features"])
    m = len(e["base_score"])
    data = spec["data"]
    _, test = read_csv(resolve_data(path, data["test"], data_dir))
    _, train = read_csv(resolve_data(path, data["train"], data_dir))
    ranges = train_ranges(train[:, :nf])
    X, y = test[:, :nf], test[:, nf]
    reg = e["task"] == "regression"

    def metric(s):
        p = scores_to_prediction(e, s)
        return r2(y, p) if reg else float(np.mean(p == y))

    row = {"name": spec["name"], "metric": "R²" if reg else "acc",
           "float": metric(eval_ensemble(e, X))}
    flips = {}
    p_float = scores_to_prediction(e, eval_ensemble(e, X))
    for b in STUDY_BITS:
        s = eval_quantized(e, X, ranges, b)
        row[b] = metric(s)
        p = scores_to_prediction(e, s)
        flips[b] = (int(np.sum(p != p_float)) if not reg
                    else float(np.max(np.abs(p - p_float))))
    row["changed"] = flips
    row.update(tree_stats(e, ranges, 6))
    row["m"] = m
    return row


def print_study(rows: List[dict]) -> str:
    lines = ["| model | metric | float | " + " | ".join(f"{b} bits" for b in STUDY_BITS) + " |",
             "|---|---|---:|" + "---:|" * len(STUDY_BITS)]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['metric']} | {r['float']:.4f} | "
                     + " | ".join(f"{r[b]:.4f}" for b in STUDY_BITS) + " |")
    lines += ["", "Test predictions that differ from the float model "
              "(classifiers: count; regressors: max |Δ prediction|):", "",
              "| model | " + " | ".join(f"{b} bits" for b in STUDY_BITS) + " |",
              "|---|" + "---:|" * len(STUDY_BITS)]
    for r in rows:
        lines.append(f"| `{r['name']}` | " + " | ".join(
            (f"{r['changed'][b]}" if isinstance(r['changed'][b], int) else f"{r['changed'][b]:.3g}")
            for b in STUDY_BITS) + " |")
    lines += ["", "| model | trees | internal nodes | leaves | distinct (feature, threshold) "
              "| distinct (feature, q-threshold) @6 bits | constant splits @6 bits | features used | max depth |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['trees']} | {r['internal']} | {r['leaves']} | {r['pairs']} "
                     f"| {r['qpairs6']} | {r['trivial6']} | {r['features_used']} | {r['max_depth']} |")
    text = "\n".join(lines)
    print(text)
    return text


# --------------------------------------------------------------------------
# README section in specs/README.md
# --------------------------------------------------------------------------

BEGIN = "<!-- export_trees.py: begin -->"
END = "<!-- export_trees.py: end -->"


def update_specs_readme(path: str, entries: List[dict], verified: Dict[str, dict]) -> None:
    import sklearn
    import xgboost

    lines = [BEGIN, "", "## Tree models", "",
             f"Generated by `python tools/export_trees.py bundle` (scikit-learn {sklearn.__version__}, "
             f"xgboost {xgboost.__version__}, numpy {np.__version__}); do not edit by hand. "
             "Same splits and CSV layout as above; for classifiers `score_*` is `predict_proba` "
             "(scikit-learn) or the margin `predict(output_margin=True)` (XGBoost), for "
             "regressors the prediction. Specs use `input_bits: 6`.",
             "The XGBoost models ship as XGBoost's own JSON (`<name>.xgb.json`); their `cml/v1` "
             "spec is produced by the Rust importer: `cargo run --release -- import "
             "specs/<name>.xgb.json --name <name> --train specs/<name>.train.csv --test "
             "specs/<name>.test.csv [--classes malignant,benign] -o specs/<name>.yaml`.", "",
             "| file(s) | dataset | estimator | features | n_train | n_test | float test metric |",
             "|---|---|---|---:|---:|---:|---|"]
    for en in entries:
        if en["name"] == "xgb_iris_multiclass":
            continue
        files = (f"`{en['name']}.xgb.json`" if en.get("xgb") else f"`{en['name']}.yaml`") \
            + f", `{en['name']}.train.csv`, `{en['name']}.test.csv`"
        mname, v = verified[en["name"]]["metric"]
        label = "accuracy" if mname == "accuracy" else "R²"
        lines.append(f"| {files} | {en['dataset']} | `{en['params']}` | {en['n_features']} "
                     f"| {en['n_train']} | {en['n_test']} | {label} {v:.4f} |")
    lines += ["", END, ""]
    block = "\n".join(lines)
    text = open(path).read() if os.path.exists(path) else ""
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + block.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def default_paths(specs_dir, yaml_dir):
    paths = []
    for n, _, _, _, _ in SK_BUNDLE:
        paths.append((os.path.join(specs_dir, f"{n}.yaml"), None))
    for n, _, _, _, _, where in XGB_BUNDLE:
        d = specs_dir if where == "specs" else os.path.join(REPO, "tests", "fixtures")
        paths.append((os.path.join(yaml_dir, f"{n}.py.yaml"), d))
    return paths


def run_verify(pairs) -> (int, Dict[str, dict]):
    failed = 0
    results = {}
    for p, d in pairs:
        try:
            r = verify_ensemble_spec(p, d)
        except Exception as exc:
            failed += 1
            print(f"FAIL {p}: {exc}")
            continue
        results[r["name"]] = r
        if "metric" in r:
            print(f"ok {r['name']}: n_test={r['n_test']} {r['metric'][0]}={r['metric'][1]:.4f} "
                  f"max score err={r['max_err']:.3g} (abs {r['max_abs_err']:.3g})")
        else:
            print(f"ok {r['name']}: (no test data)")
    return failed, results


def main(argv=None) -> int:
    specs_dir = os.path.join(REPO, "specs")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="train + write every bundled tree model, then verify and study")
    b.add_argument("--out", default=specs_dir)
    b.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"))
    b.add_argument("--yaml-dir", default="/tmp", help="where the Python-converted XGBoost YAMLs go")
    b.add_argument("--input-bits", type=int, default=6)
    v = sub.add_parser("verify", help="recompute test scores from ensemble specs")
    v.add_argument("paths", nargs="*")
    v.add_argument("--data-dir", help="where to look for CSVs not found next to a spec")
    v.add_argument("--yaml-dir", default="/tmp")
    c = sub.add_parser("convert-xgb", help="XGBoost JSON -> cml/v1 YAML (reference for the Rust importer)")
    c.add_argument("model")
    c.add_argument("--name", required=True)
    c.add_argument("--train", required=True, help="train CSV (features + target): input ranges")
    c.add_argument("--test", help="test CSV name to list in data:")
    c.add_argument("--description", default="")
    c.add_argument("--class-names")
    c.add_argument("--input-bits", type=int, default=6)
    c.add_argument("--out")
    s = sub.add_parser("study", help="float vs quantized accuracy + node counts")
    s.add_argument("--specs", default=specs_dir)
    s.add_argument("--yaml-dir", default="/tmp")
    s.add_argument("--md", help="also write the tables to this markdown file")
    args = p.parse_args(argv)

    if args.cmd == "bundle":
        entries = build_bundle(args.out, args.fixtures, args.yaml_dir, args.input_bits)
        failed, res = run_verify([(e["spec"], e["data_dir"]) for e in entries])
        if failed:
            return 1
        if os.path.abspath(args.out) == os.path.abspath(specs_dir):
            update_specs_readme(os.path.join(args.out, "README.md"), entries, res)
        print_study([study_spec(e["spec"], e["data_dir"]) for e in entries
                     if e["name"] != "xgb_iris_multiclass"])
        return 0
    if args.cmd == "verify":
        pairs = []
        for q in args.paths:
            if os.path.isdir(q):  # every tree spec in the directory
                for f in sorted(os.listdir(q)):
                    path = os.path.join(q, f)
                    if f.endswith(".yaml") and "\n  ensemble:" in open(path).read():
                        pairs.append((path, args.data_dir))
            else:
                pairs.append((q, args.data_dir))
        if not args.paths:
            pairs = default_paths(specs_dir, args.yaml_dir)
        failed, _ = run_verify(pairs)
        return 1 if failed else 0
    if args.cmd == "convert-xgb":
        header, train = read_csv(args.train)
        nf = len(header) - 1
        data = {"train": os.path.basename(args.train)}
        if args.test:
            data["test"] = os.path.basename(args.test)
        text = xgb_json_to_spec_yaml(args.model, name=args.name, description=args.description,
                                     X_train=train[:, :nf], input_bits=args.input_bits,
                                     feature_names=header[:nf],
                                     class_names=args.class_names.split(",") if args.class_names else None,
                                     data=data)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.cmd == "study":
        rows = [study_spec(p_, d) for p_, d in default_paths(args.specs, args.yaml_dir)
                if "xgb_iris_multiclass" not in p_]
        text = print_study(rows)
        if args.md:
            with open(args.md, "w") as f:
                f.write(text + "\n")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
