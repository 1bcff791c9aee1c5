#!/usr/bin/env python3
"""Write the XGBoost / LightGBM model files that the Rust importers are tested on.

Each run writes the models of whichever of ``xgboost`` / ``lightgbm`` is
installed in the running Python into ``<out>/<lib>-<version>/`` (for example
``tests/fixtures/import/xgboost-2.1.4/``), together with test CSVs that hold the
library's own raw scores and predictions, then re-loads every saved file with
the library and checks that it reproduces the CSV. Run it once per virtual
environment (one library version each)::

    python tools/make_import_fixtures.py --out tests/fixtures/import

Other modes (these need only the standard library)::

    python tools/make_import_fixtures.py --out tests/fixtures/import --malformed
        # tests/fixtures/import/malformed/: hand-broken files derived from the
        # newest xgboost-*/ and lightgbm-*/ directories present
    python tools/make_import_fixtures.py --out tests/fixtures/import --readme
        # tests/fixtures/import/README.md, from every directory's manifest.json

Data comes from the repository's CSVs (``specs/``), so feature names match the
bundled specs: binary = breast cancer (``specs/breast_cancer_xgb.*.csv``),
multiclass = iris (``specs/iris_tree.*.csv``), regression = diabetes
(``specs/diabetes_xgb.*.csv``). Feature columns are every column except
``target``, ``prediction`` and ``score_*``, in header order.

Test CSV layout: the feature columns (model order), ``target``,
``score_0`` .. ``score_{k-1}`` (the library's raw margins: XGBoost
``output_margin=True``, LightGBM ``raw_score=True``), ``prediction`` (class
index for classifiers, the library's ``predict`` for regressors). Missing
cells are empty; floats are ``repr(float(x))``. At most ``TEST_ROWS`` rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import re
import struct
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

TEST_ROWS = 40
MISSING_SEED = 20250917    # random.Random: same mask in every Python 3 / library version
MISSING_RATE = 0.15
SEED = 0
MAX_MODEL_BYTES = 300 * 1024

DATA = {
    # model family -> (csv stem under the repo, task)
    "binary": ("specs/breast_cancer_xgb", "binary"),
    "multiclass": ("specs/iris_tree", "multiclass"),
    "regression": ("specs/diabetes_xgb", "regression"),
}
CAT_SOURCE = "petal width (cm)"          # iris column turned into a category
CAT_NAME = "petal width band"
CAT_LEVELS = ["narrow", "medium", "wide"]  # < 0.8, < 1.75, otherwise


# ----------------------------------------------------------------- data

def read_data_csv(path):
    """Return (feature names, rows of float features (NaN for empty), targets as float)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    feats = [i for i, c in enumerate(header)
             if c not in ("target", "prediction") and not c.startswith("score_")]
    t = header.index("target")
    X = [[float(r[i]) if r[i] != "" else math.nan for i in feats] for r in rows[1:]]
    y = [float(r[t]) for r in rows[1:]]
    return [header[i] for i in feats], X, y


def load(family):
    stem, task = DATA[family]
    names, Xtr, ytr = read_data_csv(os.path.join(REPO, stem + ".train.csv"))
    names2, Xte, yte = read_data_csv(os.path.join(REPO, stem + ".test.csv"))
    assert names == names2, (names, names2)
    if task != "regression":
        ytr = [int(v) for v in ytr]
        yte = [int(v) for v in yte]
    return {"names": names, "Xtr": Xtr, "ytr": ytr, "Xte": Xte, "yte": yte,
            "task": task, "source": stem}


def with_missing(d):
    """A copy of ``d`` with ~MISSING_RATE of the train, then test, feature cells set to NaN."""
    rng = random.Random(MISSING_SEED)
    out = dict(d)
    for key in ("Xtr", "Xte"):
        out[key] = [[math.nan if rng.random() < MISSING_RATE else v for v in row]
                    for row in d[key]]
    out["source"] = None
    return out


def band(w):
    return CAT_LEVELS[0] if w < 0.8 else CAT_LEVELS[1] if w < 1.75 else CAT_LEVELS[2]


def fmt(v):
    v = float(v)
    return "" if math.isnan(v) else repr(v)


def write_data_csv(path, names, X, y, task, scores=None, preds=None):
    header = list(names) + ["target"]
    if scores is not None:
        header += [f"score_{j}" for j in range(len(scores[0]))] + ["prediction"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for i, row in enumerate(X):
            line = [fmt(v) for v in row]
            line.append(str(int(y[i])) if task != "regression" else fmt(y[i]))
            if scores is not None:
                line += [repr(float(s)) for s in scores[i]]
                line.append(str(int(preds[i])) if task != "regression" else repr(float(preds[i])))
            w.writerow(line)


def read_scores_csv(path):
    """Read a written test CSV back: (names, X with NaN, scores (n, k), predictions)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    t = header.index("target")
    sc = [i for i, c in enumerate(header) if c.startswith("score_")]
    p = header.index("prediction")
    X = [[float(v) if v != "" else math.nan for v in r[:t]] for r in rows[1:]]
    S = [[float(r[i]) for i in sc] for r in rows[1:]]
    P = [float(r[p]) for r in rows[1:]]
    return header[:t], X, S, P


def dist_versions(names):
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


class Recorder:
    """Collects what a run wrote, for manifest.json (and from it README.md)."""

    def __init__(self, outdir, lib, version):
        self.outdir = outdir
        self.manifest = {
            "library": lib, "version": version,
            "python": platform.python_version(),
            "packages": dist_versions(["xgboost", "xgboost-cpu", "lightgbm", "numpy", "pandas",
                                       "scikit-learn", "scipy"]),
            "models": [], "skipped": [],
        }

    def model(self, **kw):
        self.manifest["models"].append(kw)

    def skip(self, name, why):
        self.manifest["skipped"].append({"name": name, "why": why})

    def save(self):
        for m in self.manifest["models"]:
            m["sizes"] = {f: os.path.getsize(os.path.join(self.outdir, f)) for f in m["files"]}
        with open(os.path.join(self.outdir, "manifest.json"), "w") as f:
            json.dump(self.manifest, f, indent=1, sort_keys=True)
            f.write("\n")


def head(d, n=TEST_ROWS):
    return d["Xte"][:n], d["yte"][:n]


def check_size(path):
    size = os.path.getsize(path)
    if size > MAX_MODEL_BYTES:
        raise SystemExit(f"{path}: {size} bytes, over {MAX_MODEL_BYTES}")


def compare(label, got, want, rtol=0.0):
    """Fail unless got == want elementwise (within rtol); return the max abs difference."""
    worst = 0.0
    for g_row, w_row in zip(got, want):
        for g, w in zip(g_row, w_row):
            diff = abs(float(g) - float(w))
            worst = max(worst, diff)
            if diff > rtol * max(1.0, abs(float(w))):
                raise SystemExit(f"{label}: {g!r} != {w!r}")
    if len(got) != len(want):
        raise SystemExit(f"{label}: {len(got)} rows != {len(want)}")
    return worst


# ----------------------------------------------------------------- XGBoost

def xgb_make(outdir, rec):
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    ver = xgb.__version__
    major = int(ver.split(".")[0])
    common = dict(n_estimators=8, max_depth=3, learning_rate=0.3, random_state=SEED, n_jobs=1)

    def frame(names, X):
        return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=names)

    models = [
        ("binary", "binary", lambda: xgb.XGBClassifier(objective="binary:logistic", **common),
         "XGBClassifier(objective='binary:logistic')"),
        ("multiclass", "multiclass",
         lambda: xgb.XGBClassifier(objective="multi:softprob", **common),
         "XGBClassifier(objective='multi:softprob')"),
        ("regression", "regression",
         lambda: xgb.XGBRegressor(objective="reg:squarederror", **common),
         "XGBRegressor(objective='reg:squarederror')"),
    ]
    if major >= 2:
        models += [
            ("multiclass_vector_leaf", "multiclass",
             lambda: xgb.XGBClassifier(objective="multi:softprob", tree_method="hist",
                                       multi_strategy="multi_output_tree", **common),
             "XGBClassifier(objective='multi:softprob', tree_method='hist', "
             "multi_strategy='multi_output_tree')"),
            ("forest", "binary",
             lambda: xgb.XGBClassifier(objective="binary:logistic", num_parallel_tree=3,
                                       subsample=0.8, colsample_bynode=0.8,
                                       **dict(common, n_estimators=3)),
             "XGBClassifier(objective='binary:logistic', n_estimators=3, num_parallel_tree=3, "
             "subsample=0.8, colsample_bynode=0.8): 3 rounds x 3 parallel trees = 9 trees"),
            ("missing", "missing", lambda: xgb.XGBClassifier(objective="binary:logistic", **common),
             "XGBClassifier(objective='binary:logistic') on breast cancer with ~15% NaN cells"),
        ]
    else:
        rec.skip("multiclass_vector_leaf", "multi_strategy='multi_output_tree' needs XGBoost 2.0+")
        for name in ("forest", "missing", "categorical"):
            rec.skip(name, "made for XGBoost 2.x and 3.x only (by design of this fixture set)")
    if major >= 3:
        models.append(
            ("poisson", "regression",
             lambda: xgb.XGBRegressor(objective="count:poisson", **common),
             "XGBRegressor(objective='count:poisson')"))
    else:
        rec.skip("poisson", "made for XGBoost 3.x only (by design of this fixture set)")

    params_of = lambda m: {k: v for k, v in m.get_params().items()  # noqa: E731
                           if k in ("objective", "n_estimators", "max_depth", "learning_rate",
                                    "random_state", "tree_method", "multi_strategy",
                                    "num_parallel_tree", "subsample", "colsample_bynode",
                                    "enable_categorical", "max_cat_to_onehot") and v is not None}

    for name, family, ctor, desc in models:
        d = with_missing(load("binary")) if family == "missing" else load(family)
        task = d["task"]
        model = ctor()
        model.fit(frame(d["names"], d["Xtr"]), np.asarray(d["ytr"]))
        files = []
        for ext in ("json", "ubj"):
            path = os.path.join(outdir, f"{name}.{ext}")
            model.save_model(path)
            check_size(path)
            files.append(f"{name}.{ext}")
        Xte, yte = head(d)
        Xf = frame(d["names"], Xte)
        margin = np.asarray(model.predict(Xf, output_margin=True))
        margin = margin.reshape(len(Xte), -1)
        pred = np.asarray(model.predict(Xf))
        if family == "missing":
            write_data_csv(os.path.join(outdir, f"{name}.train.csv"), d["names"], d["Xtr"],
                           d["ytr"], task)
            files.append(f"{name}.train.csv")
        write_data_csv(os.path.join(outdir, f"{name}.test.csv"), d["names"], Xte, yte, task,
                       margin.tolist(), pred.tolist())
        files.append(f"{name}.test.csv")
        rec.model(name=name, estimator=desc, params=params_of(model), task=task,
                  train=(d["source"] + ".train.csv") if d["source"] else f"{name}.train.csv",
                  test_source=(d["source"] + ".test.csv") if d["source"]
                  else f"{name}.test.csv (first {TEST_ROWS} rows of the masked test split)",
                  outputs=margin.shape[1], trees=_xgb_num_trees(outdir, name),
                  features=list(model.get_booster().feature_names or []), files=files)

    if major >= 2:
        d = load("multiclass")
        X = frame(d["names"], d["Xtr"])
        X[CAT_NAME] = pd.Categorical([band(w) for w in X[CAT_SOURCE]], categories=CAT_LEVELS)
        X = X.drop(columns=[CAT_SOURCE])
        model = xgb.XGBClassifier(objective="multi:softprob", tree_method="hist",
                                  enable_categorical=True, max_cat_to_onehot=1, **common)
        model.fit(X, np.asarray(d["ytr"]))
        files = []
        for ext in ("json", "ubj"):
            path = os.path.join(outdir, f"categorical.{ext}")
            model.save_model(path)
            check_size(path)
            files.append(f"categorical.{ext}")
        rec.model(name="categorical",
                  estimator="XGBClassifier(objective='multi:softprob', tree_method='hist', "
                            "enable_categorical=True, max_cat_to_onehot=1) on iris with "
                            f"'{CAT_SOURCE}' replaced by the pandas category column "
                            f"'{CAT_NAME}' {CAT_LEVELS} (< 0.8, < 1.75, else); "
                            "for the importer to refuse, no CSV",
                  params=params_of(model), task="multiclass",
                  train="specs/iris_tree.train.csv (transformed)", test_source=None,
                  outputs=3, trees=_xgb_num_trees(outdir, "categorical"),
                  features=list(X.columns), files=files)
        _xgb_cat_check(outdir, model, X)
    xgb_verify(outdir, rec)


def _xgb_num_trees(outdir, name):
    """num_trees as the saved JSON states it (get_dump cannot dump multi-target trees in 2.x)."""
    with open(os.path.join(outdir, f"{name}.json")) as f:
        model = json.load(f)["learner"]["gradient_booster"]["model"]
    return int(model["gbtree_model_param"]["num_trees"])


def _xgb_cat_check(outdir, model, X):
    import numpy as np
    import xgboost as xgb
    want = model.predict(X, output_margin=True)
    for ext in ("json", "ubj"):
        bst = xgb.Booster()
        bst.load_model(os.path.join(outdir, f"categorical.{ext}"))
        got = bst.predict(xgb.DMatrix(X, enable_categorical=True), output_margin=True)
        worst = compare(f"categorical.{ext}", np.asarray(got).tolist(), np.asarray(want).tolist())
        print(f"  verify categorical.{ext}: train rows max |diff| {worst}")


def xgb_verify(outdir, rec):
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    for m in rec.manifest["models"]:
        if m["name"] == "categorical":
            continue
        names, X, S, P = read_scores_csv(os.path.join(outdir, f"{m['name']}.test.csv"))
        dm = xgb.DMatrix(pd.DataFrame(np.asarray(X, dtype=np.float64), columns=names),
                         missing=np.nan)
        for ext in ("json", "ubj"):
            bst = xgb.Booster()
            bst.load_model(os.path.join(outdir, f"{m['name']}.{ext}"))
            assert list(bst.feature_names) == names, (bst.feature_names, names)
            margin = np.asarray(bst.predict(dm, output_margin=True)).reshape(len(X), -1)
            worst = compare(f"{m['name']}.{ext} scores", margin.tolist(), S)
            out = np.asarray(bst.predict(dm))
            if m["task"] == "binary":
                pred = (out > 0.5).astype(int)
            elif m["task"] == "multiclass":
                pred = out.reshape(len(X), -1).argmax(axis=1)
            else:
                pred = out
            compare(f"{m['name']}.{ext} prediction", [[v] for v in pred.tolist()],
                    [[v] for v in P])
            print(f"  verify {m['name']}.{ext}: {len(X)} rows, scores max |diff| {worst}, "
                  "predictions equal")


# ----------------------------------------------------------------- LightGBM

def lgb_make(outdir, rec):
    import numpy as np
    import lightgbm as lgb
    import pandas as pd

    def frame(names, X):
        return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=names)

    common = dict(n_estimators=8, num_leaves=8, max_depth=3, min_child_samples=5,
                  learning_rate=0.1, random_state=SEED, n_jobs=1, verbose=-1)
    models = [
        ("binary", "binary", lambda: lgb.LGBMClassifier(**common), "LGBMClassifier()"),
        ("multiclass", "multiclass", lambda: lgb.LGBMClassifier(**common), "LGBMClassifier()"),
        ("regression", "regression", lambda: lgb.LGBMRegressor(**common), "LGBMRegressor()"),
        ("missing", "missing", lambda: lgb.LGBMClassifier(**common),
         "LGBMClassifier() on breast cancer with ~15% NaN cells (use_missing default)"),
    ]
    keep = ("objective", "n_estimators", "num_leaves", "max_depth", "min_child_samples",
            "learning_rate", "random_state", "min_data_per_group", "cat_smooth")
    for name, family, ctor, desc in models:
        d = with_missing(load("binary")) if family == "missing" else load(family)
        task = d["task"]
        model = ctor()
        model.fit(frame(d["names"], d["Xtr"]), np.asarray(d["ytr"]))
        path = os.path.join(outdir, f"{name}.txt")
        model.booster_.save_model(path)
        check_size(path)
        files = [f"{name}.txt"]
        Xte, yte = head(d)
        Xa = frame(d["names"], Xte)
        raw = np.asarray(model.predict(Xa, raw_score=True)).reshape(len(Xte), -1)
        pred = np.asarray(model.predict(Xa))
        if family == "missing":
            write_data_csv(os.path.join(outdir, f"{name}.train.csv"), d["names"], d["Xtr"],
                           d["ytr"], task)
            files.append(f"{name}.train.csv")
        write_data_csv(os.path.join(outdir, f"{name}.test.csv"), d["names"], Xte, yte, task,
                       raw.tolist(), pred.tolist())
        files.append(f"{name}.test.csv")
        rec.model(name=name, estimator=desc,
                  params={k: v for k, v in model.get_params().items() if k in keep},
                  task=task,
                  train=(d["source"] + ".train.csv") if d["source"] else f"{name}.train.csv",
                  test_source=(d["source"] + ".test.csv") if d["source"]
                  else f"{name}.test.csv (first {TEST_ROWS} rows of the masked test split)",
                  outputs=raw.shape[1], trees=model.booster_.num_trees(),
                  features=list(model.booster_.feature_name()), files=files)

    d = load("multiclass")
    X = frame(d["names"], d["Xtr"])
    X[CAT_SOURCE] = [CAT_LEVELS.index(band(w)) for w in X[CAT_SOURCE]]
    X = X.rename(columns={CAT_SOURCE: CAT_NAME})
    model = lgb.LGBMClassifier(min_data_per_group=5, cat_smooth=1.0, **common)
    model.fit(X, np.asarray(d["ytr"]), categorical_feature=[CAT_NAME])
    path = os.path.join(outdir, "categorical.txt")
    model.booster_.save_model(path)
    check_size(path)
    with open(path) as f:
        text = f.read()
    n_cat = sum(int(v) for v in re.findall(r"^num_cat=(\d+)$", text, re.M))
    if n_cat == 0:
        raise SystemExit("categorical.txt: no categorical split was learned")
    rec.model(name="categorical",
              estimator="LGBMClassifier(min_data_per_group=5, cat_smooth=1.0) on iris with "
                        f"'{CAT_SOURCE}' replaced by integer codes 0/1/2 of {CAT_LEVELS} "
                        f"(< 0.8, < 1.75, else), fit(categorical_feature=['{CAT_NAME}']); "
                        "for the importer to refuse, no CSV",
              params={k: v for k, v in model.get_params().items() if k in keep},
              task="multiclass", train="specs/iris_tree.train.csv (transformed)",
              test_source=None, outputs=3, trees=model.booster_.num_trees(),
              features=list(model.booster_.feature_name()), files=["categorical.txt"],
              categorical_splits=n_cat)
    want = model.predict(X, raw_score=True)
    got = lgb.Booster(model_file=path).predict(X, raw_score=True)
    worst = compare("categorical.txt", np.asarray(got).tolist(), np.asarray(want).tolist())
    print(f"  verify categorical.txt: train rows max |diff| {worst}")
    lgb_verify(outdir, rec)


def lgb_verify(outdir, rec):
    import numpy as np
    import lightgbm as lgb
    for m in rec.manifest["models"]:
        if m["name"] == "categorical":
            continue
        names, X, S, P = read_scores_csv(os.path.join(outdir, f"{m['name']}.test.csv"))
        bst = lgb.Booster(model_file=os.path.join(outdir, f"{m['name']}.txt"))
        Xa = np.asarray(X, dtype=np.float64)   # by position: the model renamed the features
        raw = np.asarray(bst.predict(Xa, raw_score=True)).reshape(len(X), -1)
        worst = compare(f"{m['name']}.txt scores", raw.tolist(), S)
        out = np.asarray(bst.predict(Xa))
        if m["task"] == "binary":
            pred = (out > 0.5).astype(int)
        elif m["task"] == "multiclass":
            pred = out.reshape(len(X), -1).argmax(axis=1)
        else:
            pred = out
        compare(f"{m['name']}.txt prediction", [[v] for v in pred.tolist()], [[v] for v in P])
        print(f"  verify {m['name']}.txt: {len(X)} rows, scores max |diff| {worst}, "
              "predictions equal")


# ----------------------------------------------------------------- malformed files

def _version_key(dirname):
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-]", dirname.split("-", 1)[1]))


def _newest(out, lib):
    dirs = [d for d in os.listdir(out) if d.startswith(lib + "-") and
            os.path.isdir(os.path.join(out, d))]
    if not dirs:
        raise SystemExit(f"no {lib}-* directory under {out}: make the fixtures first")
    return max(dirs, key=_version_key)


def _ubj_first_count(b, key=None):
    """Offset and length of the count of the first container written with '#' in UBJSON ``b``
    (with ``key``: of the first array held under that object key).

    Walks XGBoost's UBJSON (objects with untagged keys, optimized typed arrays);
    returns (offset of the count's type marker, bytes of marker + integer, the object key
    that holds the container).
    """
    ints = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8}
    sizes = dict(ints)
    sizes.update({b"d": 4, b"D": 8, b"T": 0, b"F": 0, b"Z": 0, b"C": 1})

    keys = []    # object keys met so far; the last one names the counted container

    class Found(Exception):
        pass

    def read_int(p):
        t = b[p:p + 1]
        n = ints[t]
        fmtc = {1: ">b" if t == b"i" else ">B", 2: ">h", 4: ">i", 8: ">q"}[n]
        return struct.unpack(fmtc, b[p + 1:p + 1 + n])[0], p + 1 + n

    def value(p, t=None):
        """Skip one value at p (its marker is t when the container is typed); return the end."""
        if t is None:
            t, p = b[p:p + 1], p + 1
        if t in sizes:
            return p + sizes[t]
        if t in (b"S", b"H"):
            n, p = read_int(p)
            return p + n
        if t in (b"[", b"{"):
            typ = None
            if b[p:p + 1] == b"$":
                typ, p = b[p + 1:p + 2], p + 2
            if b[p:p + 1] == b"#":
                if key is None or (keys and keys[-1] == key and t == b"["):
                    raise Found(p + 1)
                n, p = read_int(p + 1)
                for _ in range(n):
                    if t == b"{":
                        k, p = read_int(p)
                        keys.append(b[p:p + k].decode())
                        p += k
                    p = value(p, typ)
                return p
            close = b"]" if t == b"[" else b"}"
            while b[p:p + 1] != close:
                if t == b"{":
                    n, p = read_int(p)
                    keys.append(b[p:p + n].decode())
                    p += n
                p = value(p, typ)
            return p + 1
        raise SystemExit(f"unexpected UBJSON marker {t!r} at {p - 1}")

    try:
        value(0)
    except Found as e:
        off = e.args[0]
        _, end = read_int(off)
        return off, end - off, (keys[-1] if keys else None)
    raise SystemExit("no counted container in the UBJSON file")


def _ubj_count_value(b, off):
    fmtc = {"i": ">b", "U": ">B", "I": ">h", "l": ">i", "L": ">q"}[chr(b[off])]
    return struct.unpack(fmtc, b[off + 1:off + 1 + struct.calcsize(fmtc)])[0]


def _first_array(text, key):
    """(start, end) of the first ``"key":[...]`` array body in compact XGBoost JSON."""
    m = re.search(r'"%s":\[([^\]]*)\]' % re.escape(key), text)
    if not m:
        raise SystemExit(f"no {key} array")
    return m.start(1), m.end(1)


def _replace_item(text, key, index, new):
    s, e = _first_array(text, key)
    items = text[s:e].split(",")
    items[index] = new
    return text[:s] + ",".join(items) + text[e:]


def make_malformed(out):
    xdir, ldir = _newest(out, "xgboost"), _newest(out, "lightgbm")
    mdir = os.path.join(out, "malformed")
    os.makedirs(mdir, exist_ok=True)
    with open(os.path.join(out, xdir, "binary.json")) as f:
        js = f.read()
    with open(os.path.join(out, xdir, "binary.ubj"), "rb") as f:
        ubj = f.read()
    with open(os.path.join(out, ldir, "binary.txt")) as f:
        lt = f.read()
    made = []

    def write(name, data, what):
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(os.path.join(mdir, name), mode) as f:
            f.write(data)
        made.append({"file": name, "what": what})

    src_j, src_u, src_l = f"{xdir}/binary.json", f"{xdir}/binary.ubj", f"{ldir}/binary.txt"
    write("xgb_truncated.json", js[:len(js) // 2],
          f"first {len(js) // 2} of the {len(js)} bytes of {src_j}: ends inside the document")
    write("xgb_truncated.ubj", ubj[:len(ubj) // 2],
          f"first {len(ubj) // 2} of the {len(ubj)} bytes of {src_u}: ends inside the document")

    off, n, key = _ubj_first_count(ubj)
    huge = ubj[:off] + b"L" + struct.pack(">q", 1 << 62) + ubj[off + n:]
    write("xgb_huge_count.ubj", huge,
          f"{src_u} with the count of its first counted container ('#' at byte {off - 1}, "
          f"originally '{chr(ubj[off])}' {_ubj_count_value(ubj, off)}: the array under key "
          f"`{key}`) replaced by int64 2^62 "
          "('L' 40 00 00 00 00 00 00 00); the other bytes are unchanged, so a reader must "
          "reject the count before allocating")

    off, n, key = _ubj_first_count(ubj, key="split_conditions")
    huge = ubj[:off] + b"L" + struct.pack(">q", 1 << 62) + ubj[off + n:]
    write("xgb_huge_typed_count.ubj", huge,
          f"{src_u} with the count of the typed array trees[0].{key} ('${chr(ubj[off - 2])}#' "
          f"at byte {off - 3}, originally '{chr(ubj[off])}' {_ubj_count_value(ubj, off)}) "
          "replaced by int64 2^62; a reader must not reserve count x element-size bytes "
          "up front")

    s, e = _first_array(js, "split_conditions")
    write("xgb_wrong_type.json", js[:s - 1] + json.dumps("[" + js[s:e] + "]") + js[e + 1:],
          f"{src_j} with trees[0].split_conditions a JSON string holding the array text "
          "instead of an array of numbers")

    s, e = _first_array(js, "left_children")
    lefts = [int(v) for v in js[s:e].split(",")]
    node = 1 if lefts[1] != -1 else 0
    write("xgb_cycle.json", _replace_item(js, "left_children", node, "0"),
          f"{src_j} with trees[0].left_children[{node}] = 0 (was {lefts[node]}): node {node} "
          "points back to the root, so the tree has a cycle")

    s, e = _first_array(js, "split_indices")
    write("xgb_feature_out_of_range.json", _replace_item(js, "split_indices", 0, "999"),
          f"{src_j} with trees[0].split_indices[0] = 999 (was {js[s:e].split(',')[0]}); "
          "the model has 30 features")

    s, e = _first_array(js, "split_conditions")
    write("xgb_nan_threshold.json", _replace_item(js, "split_conditions", 0, "NaN"),
          f"{src_j} with trees[0].split_conditions[0] = NaN (was {js[s:e].split(',')[0]}), "
          "written as the bare token NaN, the way XGBoost's JSON writer writes a NaN float "
          "and its reader accepts it")

    t1 = lt.index("Tree=1\n")
    th = lt.index("threshold=", t1)
    cut = th + (lt.index("\n", th) - th) // 2
    write("lgb_truncated.txt", lt[:cut],
          f"{src_l} cut at character {cut}, in the middle of the threshold= line of Tree=1")

    t0 = lt.index("Tree=0\n")
    m = re.compile(r"^num_leaves=(\d+)$", re.M).search(lt, t0)
    leaves = int(m.group(1))
    write("lgb_num_leaves_mismatch.txt",
          lt[:m.start(1)] + str(leaves + 2) + lt[m.end(1):],
          f"{src_l} with Tree=0's num_leaves={leaves + 2} while its arrays still hold "
          f"{leaves} leaves ({leaves - 1} splits)")

    with open(os.path.join(mdir, "manifest.json"), "w") as f:
        json.dump({"sources": [xdir, ldir], "files": made}, f, indent=1)
        f.write("\n")
    for m in made:
        print(f"  {m['file']}: {m['what']}")
    return made


# ----------------------------------------------------------------- README

README_HEAD = """\
# Importer fixtures: real XGBoost and LightGBM model files

Generated by `tools/make_import_fixtures.py` (do not edit the model files by
hand; regenerate them). One directory per library version, each written by
that version itself:

```sh
python -m venv /work/venv-fx-NAME
/work/venv-fx-NAME/bin/pip install <the pins listed per directory below>
/work/venv-fx-NAME/bin/python tools/make_import_fixtures.py --out tests/fixtures/import
# once, after the library directories exist (standard library only):
python3 tools/make_import_fixtures.py --out tests/fixtures/import --malformed
python3 tools/make_import_fixtures.py --out tests/fixtures/import --readme
```

Each run detects whether `xgboost` and/or `lightgbm` is importable, writes
`<lib>-<version>/`, then reloads every saved model file with the same library
and checks that it reproduces the test CSV (scores bit for bit, predictions
equal). `manifest.json` in each directory records the versions and parameters.

## Data and CSV layout

- `binary`, `forest`: breast cancer, `specs/breast_cancer_xgb.train.csv` /
  `.test.csv` (30 features, target 0/1).
- `multiclass`, `multiclass_vector_leaf`: iris, `specs/iris_tree.train.csv` /
  `.test.csv` (4 features, target = class index 0..2).
- `regression`, `poisson`: diabetes, `specs/diabetes_xgb.train.csv` / `.test.csv`
  (10 features, float target).
- `missing`: breast cancer with about 15 %% of the train and of the test feature
  cells set to NaN (Python `random.Random(%(seed)d)`, one draw per cell, train
  row-major then test row-major, NaN where the draw is < %(rate)s): its own
  `missing.train.csv` (all train rows) and `missing.test.csv`; the masks are
  the same in every directory.
- `categorical`: iris with `petal width (cm)` replaced by a categorical column
  `petal width band` (`narrow` < 0.8 <= `medium` < 1.75 <= `wide`); only the
  model file, for testing that the importer refuses categorical splits.

`<model>.test.csv`: the feature columns in the model's order, `target`,
`score_0` .. `score_{k-1}` = the library's raw margins (XGBoost
`predict(X, output_margin=True)`, LightGBM `predict(X, raw_score=True)`; k = 1
for binary and regression, 3 for iris), then `prediction` (classifiers: class
index from the library's `predict`; regressors: the library's `predict`, after
its inverse link, e.g. exp for `count:poisson`). The first %(rows)d rows of the
test split; missing cells are empty; floats are `repr(float(x))`. XGBoost
margins are float32 values written as the shortest double repr.

Column names: the CSV headers use the repository's feature names. XGBoost
stores them unchanged; LightGBM replaces spaces (`mean radius` ->
`mean_radius`, `sepal length (cm)` -> `sepal_length_(cm)`) in the model's
`feature_names=` line, so match LightGBM features by position (see each
directory's `manifest.json` for the stored names).
"""


NOTES_MARKER = "<!-- hand-written notes below: kept when --readme regenerates the part above -->\n"


def make_readme(out):
    lines = [README_HEAD % {"seed": MISSING_SEED, "rate": MISSING_RATE, "rows": TEST_ROWS}]
    dirs = sorted((d for d in os.listdir(out)
                   if os.path.isfile(os.path.join(out, d, "manifest.json")) and d != "malformed"),
                  key=lambda d: (d.split("-")[0], _version_key(d)))
    for d in dirs:
        with open(os.path.join(out, d, "manifest.json")) as f:
            man = json.load(f)
        pk = man["packages"]
        lib = man["library"]
        pins = []
        if lib == "xgboost":
            pins.append(f"xgboost-cpu=={pk['xgboost-cpu']}" if "xgboost-cpu" in pk
                        else f"xgboost=={pk['xgboost']}")
        else:
            pins.append(f"lightgbm=={pk['lightgbm']}")
        pins += [f"{n}=={pk[n]}" for n in ("numpy", "scipy", "scikit-learn", "pandas") if n in pk]
        lines.append(f"## `{d}/`\n")
        lines.append(f"{lib} {man['version']}, Python {man['python']}:\n")
        lines.append("```sh\npip install " + " ".join(f'"{p}"' for p in pins) + "\n```\n")
        lines.append("| model | estimator | trees | outputs | files (bytes) |")
        lines.append("|---|---|---|---|---|")
        for m in man["models"]:
            files = ", ".join(f"`{f}` ({m['sizes'][f]})" for f in m["files"])
            train = ("" if m["name"] in ("missing", "categorical")
                     else f"; trained on `{m['train']}`")
            params = json.dumps(m["params"], sort_keys=True)
            lines.append(f"| `{m['name']}` | {m['estimator']}{train}; params `{params}` "
                         f"| {m['trees']} | {m['outputs']} | {files} |")
        lines.append("")
        for s in man["skipped"]:
            lines.append(f"- not made: `{s['name']}`: {s['why']}")
        if man["skipped"]:
            lines.append("")
        ext = ("`<model>.json` = `save_model(\"x.json\")`, `<model>.ubj` = `save_model(\"x.ubj\")` "
               "(same model, UBJSON)") if lib == "xgboost" else \
            "`<model>.txt` = `booster_.save_model(\"x.txt\")`"
        lines.append(f"Files: {ext}; `<model>.test.csv` as above.\n")
    mpath = os.path.join(out, "malformed", "manifest.json")
    if os.path.isfile(mpath):
        with open(mpath) as f:
            mm = json.load(f)
        lines.append("## `malformed/`\n")
        lines.append("Hand-broken files (written by `--malformed`, derived from "
                     f"`{mm['sources'][0]}/binary.*` and `{mm['sources'][1]}/binary.txt`); "
                     "an importer must reject each with an error, never panic, loop or "
                     "allocate without bound:\n")
        lines.append("| file | what is wrong |")
        lines.append("|---|---|")
        for m in mm["files"]:
            lines.append(f"| `{m['file']}` | {m['what']} |")
        lines.append("")
    # Hand-written notes after NOTES_MARKER in an existing README are kept.
    path = os.path.join(out, "README.md")
    kept = ""
    if os.path.isfile(path):
        with open(path) as f:
            old = f.read()
        if NOTES_MARKER in old:
            kept = old[old.index(NOTES_MARKER) + len(NOTES_MARKER):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + NOTES_MARKER + (kept or "\n"))
    print(f"wrote {os.path.join(out, 'README.md')}")


# ----------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "import"))
    ap.add_argument("--malformed", action="store_true",
                    help="write <out>/malformed/ from the newest library directories")
    ap.add_argument("--readme", action="store_true", help="write <out>/README.md")
    args = ap.parse_args(argv)
    out = args.out
    if args.malformed or args.readme:
        if args.malformed:
            make_malformed(out)
        if args.readme:
            make_readme(out)
        return 0
    done = 0
    for lib, maker in (("xgboost", xgb_make), ("lightgbm", lgb_make)):
        try:
            mod = __import__(lib)
        except ImportError:
            continue
        outdir = os.path.join(out, f"{lib}-{mod.__version__}")
        os.makedirs(outdir, exist_ok=True)
        print(f"{lib} {mod.__version__} -> {outdir}")
        rec = Recorder(outdir, lib, mod.__version__)
        maker(outdir, rec)
        rec.save()
        done += 1
    if not done:
        print("neither xgboost nor lightgbm is installed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
