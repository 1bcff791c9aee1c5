"""The ``model.ensemble`` section: rendering, checking and evaluating it in Python.

An ensemble is a plain dict with the keys of the spec (``estimator``,
``task``, ``link``, ``features``, ``classes``, ``comparison``, ``precision``,
``accepts_missing``, ``aggregation``, ``base_score``, ``trees``); the readers
in :mod:`.models` build it and :func:`evaluate` runs it, whether it comes
from a reader or from a spec read back with PyYAML.

Float semantics (what cml implements): a feature is rounded to float32 first
when ``precision`` is ``single``; a split sends a missing value (NaN) to its
``missing`` side, else left when ``x <= threshold`` (``le``) or ``x <
threshold`` (``lt``); the reached leaves are aggregated per output (``mean``
or ``sum``; a tree with ``output: k`` adds its one value to output ``k``);
``base_score`` is added.
"""

from __future__ import annotations

import io
import math
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import CheckError
from .fmt import FORMAT, NAME_RE, float_list, fmt_float, str_list, write_quantization_and_data, yaml_str
from .fmt import export_sklearn as _sk

ESTIMATORS = {
    "decision_tree_classifier", "decision_tree_regressor",
    "random_forest_classifier", "random_forest_regressor",
    "extra_trees_classifier", "extra_trees_regressor",
    "gradient_boosting_classifier", "gradient_boosting_regressor",
    "hist_gradient_boosting_classifier", "hist_gradient_boosting_regressor",
    "xgb_classifier", "xgb_regressor", "lgbm_classifier", "lgbm_regressor",
}
SINGLE_TREE = {"decision_tree_classifier", "decision_tree_regressor"}
BOOSTED = {e for e in ESTIMATORS
           if e.startswith(("xgb_", "lgbm_", "gradient_boosting_", "hist_gradient_boosting_"))}
TOP_KEYS = {"format", "name", "description", "source", "model", "quantization", "data"}
ENSEMBLE_KEYS = {"estimator", "task", "link", "features", "classes", "comparison", "precision",
                 "accepts_missing", "aggregation", "base_score", "trees"}
ENSEMBLE_REQUIRED = {"estimator", "task", "link", "features", "comparison", "aggregation",
                     "base_score", "trees"}
QUANT_KEYS = {"input_bits", "leaf_bits", "input_ranges"}
MAX_TREE_NODES = 1 << 16
BIG = sys.float_info.max


def finite_threshold(t: float) -> float:
    """An infinite threshold as the largest finite double (the same split for finite inputs).

    scikit-learn and HistGradientBoosting write ``+inf`` for a split that sends
    every value left and only missing values right; cml needs finite numbers.
    """
    t = float(t)
    if t == math.inf:
        return BIG
    if t == -math.inf:
        return -BIG
    return t


def allowed_links(estimator: str, task: str) -> Sequence[str]:
    if estimator in BOOSTED:
        return ("sigmoid", "softmax") if task == "classification" else ("identity", "exp")
    return ("identity",)


def compact(nodes: List[dict]) -> List[dict]:
    """Keep the nodes reachable from node 0, renumbered in their original order."""
    reach, stack = set(), [0]
    while stack:
        i = stack.pop()
        if i in reach:
            continue
        reach.add(i)
        n = nodes[i]
        if "value" not in n:
            stack += [n["left"], n["right"]]
    if len(reach) == len(nodes):
        return nodes
    order = sorted(reach)
    new = {old: k for k, old in enumerate(order)}
    out = []
    for old in order:
        n = dict(nodes[old])
        if "value" not in n:
            n["left"], n["right"] = new[n["left"]], new[n["right"]]
        out.append(n)
    return out


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def render_node(n: dict) -> str:
    if "value" in n:
        return f"{{value: {float_list(n['value'])}}}"
    s = (f"{{feature: {int(n['feature'])}, threshold: {fmt_float(n['threshold'])}, "
         f"left: {int(n['left'])}, right: {int(n['right'])}")
    if n.get("missing") is not None:
        s += f", missing: {n['missing']}"
    return s + "}"


def render_ensemble_spec(e: dict, *, name: str, description: str, source: Sequence[str],
                         ranges, input_bits: int, data: Optional[Dict[str, str]]) -> str:
    """The whole ``cml/v1`` YAML text of an ensemble spec."""
    out = io.StringIO()
    w = out.write
    w(f"format: {FORMAT}\n")
    w(f"name: {name}\n")
    w(f"description: {yaml_str(description)}\n")
    w("source:\n")
    w(f"  library: {yaml_str(source[0])}\n")
    w(f"  version: {yaml_str(source[1])}\n")
    w(f"  estimator: {yaml_str(source[2])}\n")
    w("model:\n")
    w("  ensemble:\n")
    w(f"    estimator: {e['estimator']}\n")
    w(f"    task: {e['task']}\n")
    w(f"    link: {e['link']}\n")
    w(f"    features: {str_list(e['features'])}\n")
    if e["task"] == "classification":
        w(f"    classes: {str_list(e['classes'])}\n")
    w(f"    comparison: {e['comparison']}\n")
    w(f"    precision: {e.get('precision', 'single')}\n")
    if e.get("accepts_missing"):
        w(f"    accepts_missing: {str_list(e['accepts_missing'])}\n")
    w(f"    aggregation: {e['aggregation']}\n")
    w(f"    base_score: {float_list(e['base_score'])}\n")
    w("    trees:\n")
    for t in e["trees"]:
        if t.get("output") is not None:
            w(f"      - output: {int(t['output'])}\n")
            w("        nodes:\n")
        else:
            w("      - nodes:\n")
        for n in t["nodes"]:
            w(f"          - {render_node(n)}\n")
    write_quantization_and_data(w, {"input_bits": input_bits}, ranges, data)
    return out.getvalue()


# --------------------------------------------------------------------------
# Checking a spec read back (mirrors cml's spec/check.rs for ensembles)
# --------------------------------------------------------------------------

def _fail(where: str, msg: str):
    raise CheckError(f"{where}: {msg}")


def validate_ensemble_spec(spec: dict, where: str) -> None:
    """Structural checks of an ensemble spec as PyYAML reads it back."""
    try:
        _sk._check_keys(spec, TOP_KEYS, {"format", "name", "model"}, where)
        if spec["format"] != FORMAT or not NAME_RE.match(str(spec["name"])):
            _fail(where, "bad format or name")
        _sk._check_keys(spec["model"], {"ensemble"}, {"ensemble"}, f"{where}: model")
        e = spec["model"]["ensemble"]
        _sk._check_keys(e, ENSEMBLE_KEYS, ENSEMBLE_REQUIRED, f"{where}: model.ensemble")
        _sk._check_floats(e["base_score"], f"{where}: base_score")
    except AssertionError as exc:
        raise CheckError(str(exc)) from None
    if e["estimator"] not in ESTIMATORS:
        _fail(where, f"unknown estimator {e['estimator']!r}")
    task = e["task"]
    if task != ("classification" if e["estimator"].endswith("classifier") else "regression"):
        _fail(where, "task does not match the estimator")
    if e["link"] not in allowed_links(e["estimator"], task):
        _fail(where, f"link {e['link']!r} is not valid for {e['estimator']}")
    if e["comparison"] not in ("le", "lt") or e["aggregation"] not in ("mean", "sum"):
        _fail(where, "bad comparison or aggregation")
    if e.get("precision", "single") not in ("single", "double"):
        _fail(where, "bad precision")
    feats = e["features"]
    if not feats or not all(isinstance(f, str) and f.strip() for f in feats) \
            or len(set(feats)) != len(feats):
        _fail(where, "features must be distinct non-empty strings")
    nf = len(feats)
    m = len(e["base_score"])
    if task == "classification":
        classes = e.get("classes") or []
        k = len(classes)
        if k < 2 or not all(isinstance(c, str) and c.strip() for c in classes) \
                or len(set(classes)) != k:
            _fail(where, "classifiers need >= 2 distinct class names")
        if e["link"] == "sigmoid" and (k != 2 or m != 1):
            _fail(where, "sigmoid needs 2 classes and 1 output")
        if e["link"] != "sigmoid" and m != k:
            _fail(where, f"{m} outputs for {k} classes")
    elif "classes" in e or m != 1:
        _fail(where, "regressors have one output and no classes")
    accepts = e.get("accepts_missing") or []
    if len(set(accepts)) != len(accepts) or not set(accepts) <= set(feats):
        _fail(where, "accepts_missing must list distinct feature names")
    missing_ok = {feats.index(a) for a in accepts}
    if not e["trees"]:
        _fail(where, "no trees")
    if e["estimator"] in SINGLE_TREE and len(e["trees"]) != 1:
        _fail(where, "a single-tree estimator needs exactly one tree")
    for ti, t in enumerate(e["trees"]):
        try:
            _sk._check_keys(t, {"nodes", "output"}, {"nodes"}, f"{where}: tree {ti}")
        except AssertionError as exc:
            raise CheckError(str(exc)) from None
        out = t.get("output")
        if out is not None and not (isinstance(out, int) and 0 <= out < m):
            _fail(where, f"tree {ti}: bad output {out}")
        width = 1 if out is not None else m
        nodes = t["nodes"]
        if not nodes or len(nodes) > MAX_TREE_NODES:
            _fail(where, f"tree {ti}: {len(nodes)} nodes")
        parents = [None] * len(nodes)
        for i, n in enumerate(nodes):
            w = f"tree {ti} node {i}"
            if "value" in n:
                if set(n) != {"value"} or len(n["value"]) != width:
                    _fail(where, f"{w}: a leaf has only value, {width} number(s)")
                for v in n["value"]:
                    if not isinstance(v, float) or not math.isfinite(v):
                        _fail(where, f"{w}: leaf value {v!r} is not a finite float")
                continue
            keys = set(n)
            if not {"feature", "threshold", "left", "right"} <= keys <= \
                    {"feature", "threshold", "left", "right", "missing"}:
                _fail(where, f"{w}: bad split fields {sorted(keys)}")
            if not isinstance(n["feature"], int) or not 0 <= n["feature"] < nf:
                _fail(where, f"{w}: feature out of range")
            if not isinstance(n["threshold"], float) or not math.isfinite(n["threshold"]):
                _fail(where, f"{w}: threshold {n['threshold']!r} is not a finite float")
            if n.get("missing", "left") not in ("left", "right"):
                _fail(where, f"{w}: missing must be left or right")
            if n["feature"] in missing_ok and "missing" not in n:
                _fail(where, f"{w}: feature {feats[n['feature']]!r} accepts missing values, "
                      "so the split needs a missing side")
            for c in (n["left"], n["right"]):
                if not isinstance(c, int) or not 0 < c < len(nodes) or c == i:
                    _fail(where, f"{w}: bad child {c}")
                if parents[c] is not None:
                    _fail(where, f"{w}: node {c} has two parents")
                parents[c] = i
        seen, stack = set(), [0]
        while stack:
            i = stack.pop()
            if i in seen:
                _fail(where, f"tree {ti}: cycle at node {i}")
            seen.add(i)
            if "value" not in nodes[i]:
                stack += [nodes[i]["left"], nodes[i]["right"]]
        if len(seen) != len(nodes):
            _fail(where, f"tree {ti}: unreachable nodes")
    q = spec.get("quantization") or {}
    try:
        _sk._check_keys(q, QUANT_KEYS, set(), f"{where}: quantization")
    except AssertionError as exc:
        raise CheckError(str(exc)) from None
    if "input_ranges" in q:
        if len(q["input_ranges"]) != nf:
            _fail(where, f"input_ranges length != {nf}")
        for r in q["input_ranges"]:
            if len(r) != 2 or not all(isinstance(v, float) and math.isfinite(v) for v in r) \
                    or r[0] > r[1]:
                _fail(where, f"bad input range {r}")
    if "data" in spec:
        try:
            _sk._check_keys(spec["data"], {"train", "test"}, set(), f"{where}: data")
        except AssertionError as exc:
            raise CheckError(str(exc)) from None


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def _tree_arrays(nodes):
    n = len(nodes)
    feat = np.full(n, -1, dtype=np.int64)
    thr = np.zeros(n, dtype=np.float64)
    left = np.zeros(n, dtype=np.int64)
    right = np.zeros(n, dtype=np.int64)
    miss = np.full(n, -1, dtype=np.int64)     # 1 left, 0 right, -1 undefined
    for i, nd in enumerate(nodes):
        if "value" in nd:
            continue
        feat[i] = nd["feature"]
        thr[i] = nd["threshold"]
        left[i] = nd["left"]
        right[i] = nd["right"]
        if nd.get("missing") is not None:
            miss[i] = 1 if nd["missing"] == "left" else 0
    return feat, thr, left, right, miss


def leaves(e: dict, X: np.ndarray, tree: dict) -> np.ndarray:
    """Index of the leaf each row of ``X`` reaches in ``tree`` (float semantics of the spec)."""
    X = np.asarray(X, dtype=np.float64)
    if e.get("precision", "single") == "single":
        X = X.astype(np.float32).astype(np.float64)
    nodes = tree["nodes"]
    feat, thr, left, right, miss = _tree_arrays(nodes)
    rows = np.arange(X.shape[0])
    cur = np.zeros(X.shape[0], dtype=np.int64)
    le = e["comparison"] == "le"
    for _ in range(len(nodes)):
        f = feat[cur]
        internal = f >= 0
        if not internal.any():
            break
        x = X[rows, np.where(internal, f, 0)]
        t = thr[cur]
        nan = np.isnan(x) & internal
        if nan.any():
            bad = nan & (miss[cur] < 0)
            if bad.any():
                r = int(np.argmax(bad))
                raise CheckError(f"row {r}: feature {e['features'][f[r]]!r} is missing, but "
                                 f"split {cur[r]} has no missing side")
        with np.errstate(invalid="ignore"):
            go_left = np.where(nan, miss[cur] == 1, (x <= t) if le else (x < t))
        cur = np.where(internal, np.where(go_left, left[cur], right[cur]), cur)
    return cur


def evaluate(e: dict, X: np.ndarray, accumulate: str = "float64") -> np.ndarray:
    """Scores (n, n_outputs): aggregated leaves plus ``base_score``.

    ``accumulate="float32"`` sums in single precision starting from the base
    score, as XGBoost does (for comparing with its margins); the default sums
    in double.  The two differ only by rounding.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    base = np.asarray(e["base_score"], dtype=np.float64)
    m = len(base)
    f32 = accumulate == "float32"
    if e["aggregation"] == "sum":
        total = np.tile(base.astype(np.float32) if f32 else base, (n, 1))
    else:
        total = np.zeros((n, m), dtype=np.float64)
    for t in e["trees"]:
        cur = leaves(e, X, t)
        width = 1 if t.get("output") is not None else m
        values = np.asarray([nd.get("value", [0.0] * width) for nd in t["nodes"]], dtype=np.float64)
        vals = values[cur]
        if f32:
            vals = vals.astype(np.float32)
        if t.get("output") is not None:
            o = int(t["output"])
            total[:, o] = total[:, o] + vals[:, 0]
        else:
            total = total + vals
    total = total.astype(np.float64)
    if e["aggregation"] == "mean":
        total = total / len(e["trees"]) + base
    return total


def predictions(task: str, link: str, scores: np.ndarray) -> np.ndarray:
    """cml's decision rule: class 1 iff the one score > 0, argmax, or the inverse link."""
    if task == "classification":
        if scores.shape[1] == 1:
            return (scores[:, 0] > 0).astype(np.int64)
        return np.argmax(scores, axis=1).astype(np.int64)
    s = scores[:, 0]
    return np.exp(s) if link == "exp" else s
