#!/usr/bin/env python3
"""Train the bundled boosted models that go through cml's Rust importers.

Writes, under ``specs/``, the library's own model file and the CSVs (test
CSVs hold the library's raw margins as ``score_*`` and its predictions);
the spec itself is then written by ``cml import`` (the command below prints
it), so the bundled spec is exactly what a user gets from the model file:

- ``breast_cancer_xgb_missing``: XGBoost 3 ``XGBClassifier`` (10 trees,
  depth 3) on breast cancer with ~15% of the train and test feature cells
  missing (empty), saved as UBJSON (``.xgb.ubj``). Run in a venv with
  ``xgboost-cpu==3.2.0`` (see ``tests/fixtures/import/README.md``).
- ``iris_lgbm``: LightGBM 4 ``LGBMClassifier`` (5 iterations x 3 classes,
  4 leaves) on iris, saved with ``booster_.save_model`` (``.lgbm.txt``).
  Run in a venv with ``lightgbm==4.7.0``.

Usage (from the repository root, once per venv)::

    python tools/export_boosted.py xgboost
    python tools/export_boosted.py lightgbm

Then::

    cargo run --release -- import specs/breast_cancer_xgb_missing.xgb.ubj \\
        --train specs/breast_cancer_xgb_missing.train.csv \\
        --test specs/breast_cancer_xgb_missing.test.csv \\
        --classes malignant,benign -o specs/breast_cancer_xgb_missing.yaml
    cargo run --release -- import specs/iris_lgbm.lgbm.txt \\
        --train specs/iris_lgbm.train.csv --test specs/iris_lgbm.test.csv \\
        --classes setosa,versicolor,virginica -o specs/iris_lgbm.yaml
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from make_import_fixtures import REPO, load, with_missing, write_data_csv  # noqa: E402


def frame(names, X):
    import numpy as np
    import pandas as pd
    return pd.DataFrame(np.array(X, dtype=np.float64), columns=names)


def xgboost_missing():
    import numpy as np
    import xgboost as xgb
    d = with_missing(load("binary"))
    name = "breast_cancer_xgb_missing"
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3,
                              tree_method="hist", random_state=0, n_jobs=1)
    model.fit(frame(d["names"], d["Xtr"]), np.array(d["ytr"]))
    path = os.path.join(REPO, "specs", f"{name}.xgb.ubj")
    model.save_model(path)
    Xte = frame(d["names"], d["Xte"])
    margins = model.predict(Xte, output_margin=True).reshape(len(d["Xte"]), -1)
    preds = model.predict(Xte)
    write_data_csv(os.path.join(REPO, "specs", f"{name}.train.csv"), d["names"], d["Xtr"],
                   d["ytr"], "binary")
    write_data_csv(os.path.join(REPO, "specs", f"{name}.test.csv"), d["names"], d["Xte"],
                   d["yte"], "binary", margins.tolist(), preds.tolist())
    print(f"{name}: xgboost {xgb.__version__}, test accuracy "
          f"{float(np.mean(preds == np.array(d['yte']))):.4f}")


def lightgbm_iris():
    import lightgbm as lgb
    import numpy as np
    d = load("multiclass")
    name = "iris_lgbm"
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, max_depth=2, learning_rate=0.3,
                               min_child_samples=5, random_state=0, n_jobs=1, verbose=-1)
    model.fit(frame(d["names"], d["Xtr"]), np.array(d["ytr"]))
    path = os.path.join(REPO, "specs", f"{name}.lgbm.txt")
    model.booster_.save_model(path)
    Xte = frame(d["names"], d["Xte"])
    margins = model.predict(Xte, raw_score=True)
    preds = model.predict(Xte)
    write_data_csv(os.path.join(REPO, "specs", f"{name}.train.csv"), d["names"], d["Xtr"],
                   d["ytr"], "multiclass")
    write_data_csv(os.path.join(REPO, "specs", f"{name}.test.csv"), d["names"], d["Xte"],
                   d["yte"], "multiclass", margins.tolist(), preds.tolist())
    print(f"{name}: lightgbm {lgb.__version__}, test accuracy "
          f"{float(np.mean(preds == np.array(d['yte']))):.4f}")


def main(argv):
    if argv[1:] == ["xgboost"]:
        xgboost_missing()
    elif argv[1:] == ["lightgbm"]:
        lightgbm_iris()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
