"""Shared fixtures for the exporter tests (run from the repository root:
``python -m pytest tools/tests -q``)."""

import csv
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def pytest_configure(config):
    # old library versions warn about newer pandas/numpy; not this project's warnings
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore::FutureWarning")


@pytest.fixture(scope="session")
def repo():
    return REPO


def split(name, frame=True, test_size=0.25):
    """A scikit-learn toy dataset (shipped with scikit-learn), split 75/25."""
    import sklearn.datasets as ds
    from sklearn.model_selection import train_test_split
    b = getattr(ds, f"load_{name}")(as_frame=frame)
    X, y = b.data, b.target
    strat = None if name == "diabetes" else y
    return train_test_split(X, y, test_size=test_size, random_state=0, stratify=strat)


def fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


def run_cli(*args, cwd=REPO):
    """``python -m tools.cml_export ARGS`` from the repository root."""
    env = dict(os.environ)
    env.pop("CML_EXPORT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "tools.cml_export", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def assert_user_error(r, *fragments):
    """Exit status 2, one line on stderr that contains every fragment, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def write_frame_csv(df, path, target=None):
    """Write a DataFrame (and optionally a target column) as CSV, missing values as empty cells."""
    df = df.copy()
    if target is not None:
        df["target"] = list(target)
    df.to_csv(path, index=False, na_rep="")
    return str(path)


def read_csv_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def reference_scores(spec_path):
    """An independent, row-by-row reading of an ensemble spec and its test CSV.

    Returns (scores from the spec, saved score_* columns, saved predictions,
    the spec's ensemble).  It implements the float semantics of docs/trees.md
    plus `precision` and `missing` directly, without the exporter's code.
    """
    import yaml
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    e = spec["model"]["ensemble"]
    header, rows = read_csv_rows(os.path.join(os.path.dirname(spec_path), spec["data"]["test"]))
    idx = [header.index(n) for n in e["features"]]
    m = len(e["base_score"])
    got, saved, preds = [], [], []
    for row in rows:
        x = [None if row[j] == "" else float(row[j]) for j in idx]
        out = [0.0] * m
        for t in e["trees"]:
            nodes = t["nodes"]
            i = 0
            while "value" not in nodes[i]:
                n = nodes[i]
                v = x[n["feature"]]
                if v is None:
                    i = n["left"] if n["missing"] == "left" else n["right"]
                    continue
                if e.get("precision", "single") == "single":
                    v = float(np.float32(v))
                go_left = v <= n["threshold"] if e["comparison"] == "le" else v < n["threshold"]
                i = n["left"] if go_left else n["right"]
            val = nodes[i]["value"]
            if t.get("output") is not None:
                out[t["output"]] += val[0]
            else:
                out = [a + b for a, b in zip(out, val)]
        if e["aggregation"] == "mean":
            out = [a / len(e["trees"]) for a in out]
        got.append([a + b for a, b in zip(out, e["base_score"])])
        saved.append([float(row[header.index(f"score_{k}")]) for k in range(m)])
        preds.append(float(row[header.index("prediction")]))
    return np.array(got), np.array(saved), np.array(preds), e


def reference_predictions(e, scores):
    if e["task"] == "classification":
        if scores.shape[1] == 1:
            return (scores[:, 0] > 0).astype(float)
        return np.argmax(scores, axis=1).astype(float)
    return np.exp(scores[:, 0]) if e["link"] == "exp" else scores[:, 0]


def rel_diff(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))) if a.size else 0.0


__all__ = ["split", "fit", "run_cli", "assert_user_error", "write_frame_csv", "read_csv_rows",
           "reference_scores", "reference_predictions", "rel_diff", "REPO", "math"]
