"""Reading fitted models: one adapter per library family.

An adapter knows the model's task, classes, feature names, whether it can
take missing values, how to call the library for raw scores and predictions,
and how to turn the fitted model into a spec section: a
``export_sklearn.LinearModel`` for linear models, an ensemble dict (see
:mod:`.ensemble`) for trees.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from typing import Callable, List, Optional

import numpy as np

from .ensemble import compact, finite_threshold
from .errors import ExportError
from .fmt import export_sklearn as _sk

LINEAR = sorted(_sk.ESTIMATOR_KINDS)
SK_TREES = {
    "DecisionTreeClassifier": "decision_tree_classifier",
    "DecisionTreeRegressor": "decision_tree_regressor",
    "RandomForestClassifier": "random_forest_classifier",
    "RandomForestRegressor": "random_forest_regressor",
    "ExtraTreesClassifier": "extra_trees_classifier",
    "ExtraTreesRegressor": "extra_trees_regressor",
}
SK_GB = {"GradientBoostingClassifier": "gradient_boosting_classifier",
         "GradientBoostingRegressor": "gradient_boosting_regressor"}
SK_HGB = {"HistGradientBoostingClassifier": "hist_gradient_boosting_classifier",
          "HistGradientBoostingRegressor": "hist_gradient_boosting_regressor"}
XGB_WRAPPERS = {"XGBClassifier", "XGBRegressor", "XGBRFClassifier", "XGBRFRegressor"}
LGBM_WRAPPERS = {"LGBMClassifier", "LGBMRegressor"}
SUPPORTED = (LINEAR + ["Pipeline(StandardScaler, <linear model>)"] + list(SK_TREES) + list(SK_GB)
             + list(SK_HGB) + sorted(XGB_WRAPPERS) + ["xgboost.Booster"] + sorted(LGBM_WRAPPERS)
             + ["lightgbm.Booster"])

XGB_IDENTITY = {"reg:squarederror", "reg:linear", "reg:squaredlogerror", "reg:pseudohubererror",
                "reg:absoluteerror", "reg:quantileerror"}
XGB_EXP = {"count:poisson", "reg:gamma", "reg:tweedie"}
XGB_OBJECTIVES = sorted({"binary:logistic", "binary:logitraw", "multi:softprob", "multi:softmax"}
                        | XGB_IDENTITY | XGB_EXP)
LGBM_IDENTITY = {"regression", "regression_l2", "l2", "mean_squared_error", "mse", "rmse",
                 "regression_l1", "l1", "mean_absolute_error", "mae", "huber", "fair",
                 "quantile", "mape", "mean_absolute_percentage_error"}
LGBM_EXP = {"poisson", "gamma", "tweedie"}
LGBM_OBJECTIVES = sorted({"binary", "multiclass", "softmax"} | LGBM_IDENTITY | LGBM_EXP)


def unsupported(model) -> ExportError:
    t = type(model)
    name = t.__name__ if t.__module__.split(".")[0] in ("sklearn", "xgboost", "lightgbm") \
        else f"{t.__module__}.{t.__name__}"
    return ExportError(f"cannot export {name}: supported are " + ", ".join(SUPPORTED))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _labels_to_indices(classes: np.ndarray, labels) -> np.ndarray:
    labels = np.asarray(labels)
    lookup = {}
    for k, c in enumerate(classes):
        lookup.setdefault(c.item() if hasattr(c, "item") else c, k)
    out = np.empty(len(labels), dtype=np.int64)
    for i, v in enumerate(labels):
        key = v.item() if hasattr(v, "item") else v
        if key not in lookup:
            raise ExportError(f"the model predicted {key!r}, which is not in its classes_")
        out[i] = lookup[key]
    return out


class Adapter:
    """Common interface; see the subclasses."""

    library = "scikit-learn"
    family = "ensemble"
    accumulate = "float64"     # how the library sums tree outputs (for the self-check)
    alias: Optional[Callable[[str], str]] = None

    def __init__(self, model, source_estimator: str, task: str, classes, n_features: int,
                 raw_names: Optional[List[str]]):
        self.model = model
        self.source_estimator = source_estimator
        self.task = task
        self.classes = None if classes is None else np.asarray(classes)
        self.n_features = int(n_features)
        self.raw_names = None if raw_names is None else [str(n) for n in raw_names]
        self._supports_missing = None

    # -- the library ---------------------------------------------------------
    @property
    def version(self) -> str:
        import sklearn
        return sklearn.__version__

    def model_input(self, X):
        """``X`` as the library wants it: a DataFrame with the model's names, if it has them."""
        X = np.asarray(X, dtype=np.float64)
        if self.raw_names is None:
            return X
        import pandas as pd
        return pd.DataFrame(X, columns=self.raw_names)

    def scores(self, X) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        raise NotImplementedError

    def build(self):
        raise NotImplementedError

    @property
    def supports_missing(self) -> bool:
        if self._supports_missing is None:
            self._supports_missing = self._probe_missing()
        return self._supports_missing

    def _probe_missing(self) -> bool:
        """Whether the library predicts a row of NaNs (scikit-learn: depends on the version)."""
        X = np.full((1, self.n_features), np.nan)
        try:
            _quiet(self._predict_raw, X)
        except ValueError:
            return False
        return True

    def _predict_raw(self, X):
        return self.model.predict(self.model_input(X))

    def _sk_predict(self, X) -> np.ndarray:
        p = _quiet(self.model.predict, self.model_input(X))
        if self.task == "classification":
            return _labels_to_indices(self.classes, p)
        return np.asarray(p, dtype=np.float64).ravel()


def _sk_names(model) -> Optional[List[str]]:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _check_fitted(model, what: str):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise ExportError(f"cannot export an unfitted {what}: fit it first") from None
    except TypeError:
        raise ExportError(f"cannot export {what}: it is not a scikit-learn estimator") from None


# --------------------------------------------------------------------------
# scikit-learn linear models (via tools/export_sklearn.py)
# --------------------------------------------------------------------------

class LinearAdapter(Adapter):
    family = "linear"

    def __init__(self, model):
        scaler, est = _split_pipeline(model)
        _check_fitted(est, type(est).__name__)
        try:
            lm = _sk.read_linear_model(model)
        except ValueError as e:
            raise ExportError(f"cannot export {type(est).__name__}: {e}") from None
        self.linear = lm
        src = f"Pipeline(StandardScaler, {lm.sk_name})" if lm.scaler is not None else lm.sk_name
        super().__init__(model, src, lm.task, lm.classes, lm.n_features, _sk_names(model))

    def _probe_missing(self) -> bool:
        return False

    def scores(self, X):
        return _quiet(_sk.raw_scores, self.linear, np.asarray(X, dtype=np.float64))

    def predict(self, X):
        return self._sk_predict(X)

    def build(self):
        return self.linear


def _split_pipeline(model):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    if not isinstance(model, Pipeline):
        return None, model
    steps = [s for _, s in model.steps if s not in (None, "passthrough")]
    if len(steps) == 1:
        return None, steps[0]
    if len(steps) == 2 and isinstance(steps[0], StandardScaler) and \
            type(steps[1]).__name__ in _sk.ESTIMATOR_KINDS:
        return steps[0], steps[1]
    raise ExportError("cannot export Pipeline(" + ", ".join(type(s).__name__ for s in steps)
                      + "): only Pipeline(StandardScaler, <linear model>) is supported "
                      "(and one-step pipelines)")


# --------------------------------------------------------------------------
# scikit-learn trees and forests
# --------------------------------------------------------------------------

def _sk_tree_nodes(tree, leaf_value, with_missing: bool) -> List[dict]:
    nodes = []
    has_missing = with_missing and hasattr(tree, "missing_go_to_left")
    for i in range(tree.node_count):
        if tree.children_left[i] == -1:
            nodes.append({"value": leaf_value(i)})
        else:
            n = {"feature": int(tree.feature[i]), "threshold": finite_threshold(tree.threshold[i]),
                 "left": int(tree.children_left[i]), "right": int(tree.children_right[i])}
            if has_missing:
                n["missing"] = "left" if tree.missing_go_to_left[i] else "right"
            nodes.append(n)
    return compact(nodes)


class SkTreeAdapter(Adapter):
    def __init__(self, model, name):
        _check_fitted(model, name)
        self.kind = SK_TREES[name]
        clf = self.kind.endswith("classifier")
        if getattr(model, "n_outputs_", 1) != 1:
            raise ExportError(f"cannot export {name} with {model.n_outputs_} outputs: "
                              "multi-output models are not supported")
        super().__init__(model, name, "classification" if clf else "regression",
                         model.classes_ if clf else None, model.n_features_in_, _sk_names(model))

    def scores(self, X):
        Xi = self.model_input(X)
        if self.task == "classification":
            return np.asarray(_quiet(self.model.predict_proba, Xi), dtype=np.float64)
        return np.asarray(_quiet(self.model.predict, Xi), dtype=np.float64).reshape(-1, 1)

    def predict(self, X):
        return self._sk_predict(X)

    def build(self):
        m = self.model
        clf = self.task == "classification"
        ests = m.estimators_ if hasattr(m, "estimators_") else [m]
        n_out = len(self.classes) if clf else 1
        trees = []
        for est in ests:
            t = est.tree_
            if clf:
                # exactly what DecisionTreeClassifier.predict_proba returns for a leaf
                v = t.value[:, 0, :n_out]
                norm = v.sum(axis=1)[:, np.newaxis]
                norm[norm == 0.0] = 1.0
                v = v / norm
            else:
                v = t.value[:, 0, :1]
            trees.append({"nodes": _sk_tree_nodes(t, lambda i, v=v: [float(x) for x in v[i]],
                                                  self.supports_missing)})
        return {"estimator": self.kind, "task": self.task, "link": "identity",
                "comparison": "le", "precision": "single", "aggregation": "mean",
                "base_score": [0.0] * n_out, "trees": trees}


class GBAdapter(Adapter):
    def __init__(self, model, name):
        _check_fitted(model, name)
        self.kind = SK_GB[name]
        clf = self.kind.endswith("classifier")
        loss = getattr(model, "loss", None)
        if clf and loss == "exponential":
            raise ExportError(f'cannot export {name}(loss="exponential"): its probabilities are '
                              'not a sigmoid of the margin; use loss="log_loss"')
        init = model.init_
        if not (isinstance(init, str) and init == "zero") and \
                type(init).__name__ not in ("DummyClassifier", "DummyRegressor"):
            raise ExportError(f"cannot export {name} with init={type(init).__name__}(): only the "
                              'default prior and init="zero" give a constant base score')
        super().__init__(model, name, "classification" if clf else "regression",
                         model.classes_ if clf else None, model.n_features_in_, _sk_names(model))

    def _probe_missing(self) -> bool:
        return False  # GradientBoosting* refuses NaN in every scikit-learn version

    def scores(self, X):
        Xi = self.model_input(X)
        if self.task == "classification":
            s = _quiet(self.model.decision_function, Xi)
        else:
            s = _quiet(self.model.predict, Xi)
        return np.asarray(s, dtype=np.float64).reshape(len(X), -1)

    def predict(self, X):
        return self._sk_predict(X)

    def build(self):
        m = self.model
        est = m.estimators_
        K = est.shape[1]
        lr = float(m.learning_rate)
        X0 = np.zeros((1, self.n_features), dtype=np.float32)
        if isinstance(m.init_, str):
            base = np.zeros(K)
        else:
            base = np.asarray(_quiet(m._raw_predict_init, X0), dtype=np.float64).reshape(-1)
        trees = []
        for i in range(est.shape[0]):
            for k in range(K):
                t = est[i, k].tree_
                vals = t.value[:, 0, 0]
                tr = {"nodes": _sk_tree_nodes(t, lambda j, vals=vals: [float(lr * vals[j])], False)}
                if K > 1:
                    tr = {"output": k, **tr}
                trees.append(tr)
        clf = self.task == "classification"
        link = ("sigmoid" if K == 1 else "softmax") if clf else "identity"
        return {"estimator": self.kind, "task": self.task, "link": link, "comparison": "le",
                "precision": "single", "aggregation": "sum",
                "base_score": [float(b) for b in base], "trees": trees}


class HGBAdapter(Adapter):
    def __init__(self, model, name):
        _check_fitted(model, name)
        self.kind = SK_HGB[name]
        clf = self.kind.endswith("classifier")
        names = _sk_names(model)
        cat = getattr(model, "is_categorical_", None)
        if cat is not None and np.any(cat):
            j = int(np.flatnonzero(cat)[0])
            fname = names[j] if names else f"x{j}"
            raise ExportError(f'cannot export {name}: feature "{fname}" is categorical; '
                              "cml supports numeric features only")
        super().__init__(model, name, "classification" if clf else "regression",
                         model.classes_ if clf else None, model.n_features_in_, names)

    def _probe_missing(self) -> bool:
        return True

    def scores(self, X):
        s = _quiet(self.model._raw_predict, self.model_input(X))
        return np.asarray(s, dtype=np.float64).reshape(len(X), -1)

    def predict(self, X):
        return self._sk_predict(X)

    def build(self):
        m = self.model
        K = int(m.n_trees_per_iteration_)
        base = np.asarray(m._baseline_prediction, dtype=np.float64).reshape(-1)
        if base.size == 1 and K > 1:
            base = np.full(K, base[0])
        trees = []
        for it in m._predictors:
            for k, p in enumerate(it):
                nodes = []
                for i, n in enumerate(p.nodes):
                    if n["is_leaf"]:
                        nodes.append({"value": [float(n["value"])]})
                        continue
                    if n["is_categorical"]:
                        f = int(n["feature_idx"])
                        fname = self.raw_names[f] if self.raw_names else f"x{f}"
                        raise ExportError(f'cannot export {type(m).__name__}: feature "{fname}" '
                                          "has categorical splits")
                    nodes.append({"feature": int(n["feature_idx"]),
                                  "threshold": finite_threshold(n["num_threshold"]),
                                  "left": int(n["left"]), "right": int(n["right"]),
                                  "missing": "left" if n["missing_go_to_left"] else "right"})
                tr = {"nodes": compact(nodes)}
                if K > 1:
                    tr = {"output": k, **tr}
                trees.append(tr)
        if self.task == "classification":
            link = "sigmoid" if K == 1 else "softmax"
        else:
            loss = str(getattr(m, "loss", ""))
            lname = type(getattr(m, "_loss", None)).__name__
            link = "exp" if loss in ("poisson", "gamma") or "Poisson" in lname or "Gamma" in lname \
                else "identity"
        return {"estimator": self.kind, "task": self.task, "link": link, "comparison": "le",
                "precision": "double", "aggregation": "sum",
                "base_score": [float(b) for b in base], "trees": trees}


# --------------------------------------------------------------------------
# XGBoost
# --------------------------------------------------------------------------

def parse_base_score(text) -> List[float]:
    """XGBoost's ``base_score``: ``"5E-1"`` (1.x) or ``"[5E-1]"`` / ``"[1.2E0,3.4E-1]"`` (2.x/3.x),
    as the exact float32 values."""
    s = str(text).strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    parts = [p.strip() for p in s.split(",") if p.strip()]
    if not parts:
        raise ExportError(f"cannot read XGBoost base_score {text!r}")
    try:
        return [float(np.float32(float(p))) for p in parts]
    except ValueError:
        raise ExportError(f"cannot read XGBoost base_score {text!r}") from None


def xgb_booster_json(booster) -> dict:
    """The booster's own JSON model (``save_raw("json")``, or ``save_model`` on old versions)."""
    try:
        raw = booster.save_raw(raw_format="json")
        text = bytes(raw).decode("utf-8")
    except TypeError:  # pragma: no cover - XGBoost without raw_format
        with tempfile.TemporaryDirectory() as tmp:
            p = os.path.join(tmp, "model.json")
            booster.save_model(p)
            with open(p, encoding="utf-8") as f:
                text = f.read()
    return json.loads(text)


def _f32(x) -> float:
    return float(np.float32(float(x)))


class XGBAdapter(Adapter):
    library = "xgboost"
    comparison = "lt"
    accumulate = "float32"   # XGBoost sums margins in float32, from the base score

    def __init__(self, model, name):
        import xgboost as xgb
        self.wrapper = None if isinstance(model, xgb.Booster) else model
        if self.wrapper is not None:
            try:
                booster = model.get_booster()
            except Exception:  # NotFittedError (a ValueError / XGBoostError)
                raise ExportError(f"cannot export an unfitted {name}: fit it first") from None
            miss = getattr(model, "missing", np.nan)
            if miss is not None and not (isinstance(miss, float) and math.isnan(miss)):
                raise ExportError(f"cannot export {name}(missing={miss!r}): only missing=nan is "
                                  "supported (cml's missing value is an empty cell)")
        else:
            booster = model
        self.booster = booster
        self.json = xgb_booster_json(booster)
        learner = self.json["learner"]
        self.objective = learner["objective"]["name"]
        mp = learner["learner_model_param"]
        self.num_class = int(mp.get("num_class", "0") or 0)
        self.num_target = int(mp.get("num_target", "1") or 1)
        n_features = int(mp["num_feature"])
        names = booster.feature_names
        types = booster.feature_types or learner.get("feature_types") or []
        for j, t in enumerate(types):
            if t == "c":
                fname = names[j] if names else f"f{j}"
                raise ExportError(f'cannot export {name}: feature "{fname}" is categorical '
                                  "(enable_categorical); cml supports numeric features only")
        obj = self.objective
        if obj in ("binary:logistic", "binary:logitraw"):
            task, n_classes = "classification", 2
        elif obj in ("multi:softprob", "multi:softmax"):
            task, n_classes = "classification", self.num_class
        elif obj in XGB_IDENTITY or obj in XGB_EXP:
            task, n_classes = "regression", None
            if self.num_target > 1:
                raise ExportError(f"cannot export {name} with {self.num_target} targets: "
                                  "multi-output regression is not supported")
        else:
            raise ExportError(f"cannot export {name} with objective {obj!r}: supported are "
                              + ", ".join(XGB_OBJECTIVES))
        if self.wrapper is not None and task == "classification" and not hasattr(model, "classes_"):
            raise ExportError(f"cannot export {name} with objective {obj!r}: a classification "
                              "objective needs XGBClassifier")
        classes = None
        if task == "classification":
            classes = getattr(self.wrapper, "classes_", None) if self.wrapper is not None else None
            if classes is None:
                classes = np.arange(n_classes)
        src = name if self.wrapper is not None else "Booster"
        super().__init__(model, src, task, classes, n_features, names)

    @property
    def version(self) -> str:
        import xgboost
        return xgboost.__version__

    def _probe_missing(self) -> bool:
        return True

    def _dmatrix(self, X):
        import xgboost as xgb
        return xgb.DMatrix(self.model_input(X))

    def scores(self, X):
        if self.wrapper is not None:
            s = _quiet(self.wrapper.predict, self.model_input(X), output_margin=True)
        else:
            s = _quiet(self.booster.predict, self._dmatrix(X), output_margin=True)
        return np.asarray(s, dtype=np.float64).reshape(len(X), -1)

    def predict(self, X):
        if self.wrapper is not None:
            return self._sk_predict(X)
        if self.task == "classification":
            from .ensemble import predictions
            return predictions("classification", "", self.scores(X))
        return np.asarray(_quiet(self.booster.predict, self._dmatrix(X)), dtype=np.float64).ravel()

    def _n_rounds(self) -> Optional[int]:
        """The boosting rounds the scikit-learn wrapper predicts with (early stopping)."""
        if self.wrapper is None:
            return None
        best = self.booster.attr("best_iteration")
        return None if best is None else int(best) + 1

    def build(self):
        learner = self.json["learner"]
        gb = learner["gradient_booster"]
        name = self.source_estimator
        if gb.get("name") != "gbtree":
            raise ExportError(f"cannot export {name} with booster={gb.get('name')!r}: "
                              "only gbtree is supported")
        model = gb["model"]
        trees_json = model["trees"]
        tree_info = model["tree_info"]
        rounds = self._n_rounds()
        if rounds is not None:
            if "iteration_indptr" in model:
                end = int(model["iteration_indptr"][min(rounds, len(model["iteration_indptr"]) - 1)])
            else:
                total = self.booster.num_boosted_rounds()
                end = rounds * (len(trees_json) // max(total, 1))
            trees_json, tree_info = trees_json[:end], tree_info[:end]
        obj = self.objective
        n_out = self.num_class if obj.startswith("multi:") else 1
        base = parse_base_score(learner["learner_model_param"]["base_score"])
        if len(base) == 1:
            base = base * n_out
        if len(base) != n_out:
            raise ExportError(f"cannot read XGBoost base_score: {len(base)} values for {n_out} outputs")
        if obj == "binary:logistic":
            b = np.float32(base[0])
            if not 0 < b < 1:
                raise ExportError(f"XGBoost base_score {float(b)} is not a probability")
            base = [float(np.float32(-np.log(np.float32(1.0) / b - np.float32(1.0))))]
            link = "sigmoid"
        elif obj == "binary:logitraw":
            link = "sigmoid"
        elif obj.startswith("multi:"):
            link = "softmax"
        elif obj in XGB_EXP:
            base = [float(np.float32(np.log(np.float32(b)))) for b in base]
            link = "exp"
        else:
            link = "identity"
        names = self.raw_names
        trees = []
        for ti, t in enumerate(trees_json):
            lc, rc = t["left_children"], t["right_children"]
            si, sc = t["split_indices"], t["split_conditions"]
            dl = t.get("default_left") or [0] * len(lc)
            st = t.get("split_type") or [0] * len(lc)
            size = int((t.get("tree_param") or {}).get("size_leaf_vector", "1") or 1)
            vector = size > 1
            if vector and size != n_out:
                raise ExportError(f"cannot export {name}: tree {ti} has {size}-value leaves "
                                  f"for {n_out} outputs")
            leaf_w = t.get("leaf_weights")
            base_w = t.get("base_weights")
            nodes = []
            for i in range(len(lc)):
                if lc[i] == -1:
                    if vector:
                        if leaf_w is not None:
                            vals = leaf_w[int(rc[i]) * size:(int(rc[i]) + 1) * size]
                        else:
                            vals = (base_w or [])[i * size:(i + 1) * size]
                        if len(vals) != size:
                            raise ExportError(f"cannot read the vector leaves of tree {ti} "
                                              f"(XGBoost {self.version})")
                        nodes.append({"value": [_f32(v) for v in vals]})
                    else:
                        nodes.append({"value": [_f32(sc[i])]})
                    continue
                f = int(si[i])
                if int(st[i]) != 0:
                    fname = names[f] if names else f"f{f}"
                    raise ExportError(f'cannot export {name}: feature "{fname}" has categorical '
                                      "splits; cml supports numeric features only")
                nodes.append({"feature": f, "threshold": finite_threshold(_f32(sc[i])),
                              "left": int(lc[i]), "right": int(rc[i]),
                              "missing": "left" if int(dl[i]) else "right"})
            tr = {"nodes": compact(nodes)}
            if n_out > 1 and not vector:
                tr = {"output": int(tree_info[ti]), **tr}
            trees.append(tr)
        if not trees:
            raise ExportError(f"cannot export {name}: the model has no trees")
        return {"estimator": "xgb_classifier" if self.task == "classification" else "xgb_regressor",
                "task": self.task, "link": link, "comparison": "lt", "precision": "single",
                "aggregation": "sum", "base_score": base, "trees": trees}


# --------------------------------------------------------------------------
# LightGBM
# --------------------------------------------------------------------------

def _lgbm_objective(text: str):
    parts = str(text).split()
    name = parts[0] if parts else ""
    params = {}
    for p in parts[1:]:
        if ":" in p:
            k, v = p.split(":", 1)
            params[k] = v
    return name, params


class LGBMAdapter(Adapter):
    library = "lightgbm"
    alias = staticmethod(lambda c: c.replace(" ", "_"))

    def __init__(self, model, name):
        import lightgbm as lgb
        self.wrapper = None if isinstance(model, lgb.Booster) else model
        if self.wrapper is not None:
            try:
                booster = model.booster_
            except Exception:  # LGBMNotFittedError
                raise ExportError(f"cannot export an unfitted {name}: fit it first") from None
        else:
            booster = model
        self.booster = booster
        self.dump = booster.dump_model()
        d = self.dump
        names = list(d.get("feature_names") or booster.feature_name())
        n_features = int(d.get("max_feature_idx", len(names) - 1)) + 1
        infos = d.get("feature_infos") or {}
        for j, n in enumerate(names):
            info = infos.get(n) if isinstance(infos, dict) else None
            # {"min_value", "max_value", "values"}: "values" lists the categories of a
            # categorical feature (text models: "[min:max]" or "1:2:3")
            if (isinstance(info, dict) and info.get("values")) or \
                    (isinstance(info, str) and info not in ("none", "") and not info.startswith("[")):
                raise ExportError(f'cannot export {name}: feature "{n}" is categorical; '
                                  "cml supports numeric features only")
        if d.get("pandas_categorical"):
            raise ExportError(f"cannot export {name}: it was fitted with pandas categorical "
                              "columns; cml supports numeric features only")
        if d.get("average_output"):
            raise ExportError(f'cannot export {name}(boosting_type="rf"): averaged outputs are '
                              "not supported")
        obj, params = _lgbm_objective(d.get("objective", ""))
        self.obj = obj
        if obj == "binary":
            if float(params.get("sigmoid", "1")) != 1.0:
                raise ExportError(f"cannot export {name} with sigmoid={params['sigmoid']}: "
                                  "only sigmoid=1 is supported")
            task, n_classes, link = "classification", 2, "sigmoid"
        elif obj in ("multiclass", "softmax"):
            task, n_classes, link = "classification", int(d.get("num_class", 0)), "softmax"
        elif obj in LGBM_IDENTITY:
            task, n_classes, link = "regression", None, "identity"
        elif obj in LGBM_EXP:
            task, n_classes, link = "regression", None, "exp"
        else:
            raise ExportError(f"cannot export {name} with objective {obj!r}: supported are "
                              + ", ".join(LGBM_OBJECTIVES))
        self.link = link
        classes = None
        if task == "classification":
            classes = getattr(self.wrapper, "classes_", None) if self.wrapper is not None else None
            if classes is None:
                classes = np.arange(n_classes)
        if names == [f"Column_{i}" for i in range(len(names))]:
            names = None   # fitted without names: LightGBM made these up
        src = name if self.wrapper is not None else "Booster"
        super().__init__(model, src, task, classes, n_features, names)

    @property
    def version(self) -> str:
        import lightgbm
        return lightgbm.__version__

    def _probe_missing(self) -> bool:
        return True

    def scores(self, X):
        if self.wrapper is not None:
            s = _quiet(self.wrapper.predict, self.model_input(X), raw_score=True)
        else:
            s = _quiet(self.booster.predict, self.model_input(X), raw_score=True)
        return np.asarray(s, dtype=np.float64).reshape(len(X), -1)

    def predict(self, X):
        if self.wrapper is not None:
            return self._sk_predict(X)
        if self.task == "classification":
            from .ensemble import predictions
            return predictions("classification", "", self.scores(X))
        return np.asarray(_quiet(self.booster.predict, self.model_input(X)), dtype=np.float64).ravel()

    def build(self):
        d = self.dump
        name = self.source_estimator
        names = d.get("feature_names") or []
        ntpi = int(d.get("num_tree_per_iteration", 1))
        n_out = len(self.classes) if (self.task == "classification" and self.link == "softmax") else 1
        if n_out != ntpi:
            raise ExportError(f"cannot export {name}: {ntpi} trees per iteration for {n_out} outputs")
        trees = []
        for ti, tinfo in enumerate(d["tree_info"]):
            nodes = self._flatten(tinfo["tree_structure"], names, name)
            tr = {"nodes": compact(nodes)}
            if n_out > 1:
                tr = {"output": ti % ntpi, **tr}
            trees.append(tr)
        if not trees:
            raise ExportError(f"cannot export {name}: the model has no trees")
        return {"estimator": "lgbm_classifier" if self.task == "classification" else "lgbm_regressor",
                "task": self.task, "link": self.link, "comparison": "le", "precision": "double",
                "aggregation": "sum", "base_score": [0.0] * n_out, "trees": trees}

    @staticmethod
    def _flatten(root: dict, names, name) -> List[dict]:
        nodes: List[Optional[dict]] = []
        stack = [(root, None, None)]      # (node, parent index, side)
        while stack:
            n, parent, side = stack.pop()
            i = len(nodes)
            nodes.append(None)
            if parent is not None:
                nodes[parent][side] = i
            if "leaf_value" in n:
                if "leaf_coeff" in n or "leaf_features" in n:
                    raise ExportError(f"cannot export {name}: linear_tree leaves are not supported")
                nodes[i] = {"value": [float(n["leaf_value"])]}
                continue
            f = int(n["split_feature"])
            fname = names[f] if f < len(names) else f"Column_{f}"
            if n.get("decision_type", "<=") != "<=":
                raise ExportError(f'cannot export {name}: feature "{fname}" has categorical splits; '
                                  "cml supports numeric features only")
            thr = float(n["threshold"])
            mt = n.get("missing_type", "None")
            if mt == "NaN":
                miss = "left" if n.get("default_left") else "right"
            elif mt == "None":
                miss = "left" if 0.0 <= thr else "right"   # LightGBM reads NaN as 0.0 here
            else:
                raise ExportError(f'cannot export {name}: the split on feature "{fname}" treats '
                                  f"zeros as missing (missing_type {mt}, from zero_as_missing=True); "
                                  "cml cannot represent it")
            nodes[i] = {"feature": f, "threshold": finite_threshold(thr), "left": -1, "right": -1,
                        "missing": miss}
            # preorder: left subtree first
            stack.append((n["right_child"], i, "right"))
            stack.append((n["left_child"], i, "left"))
        return nodes


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------

def adapt(model) -> Adapter:
    """The adapter for a fitted model, or an ExportError naming what is supported."""
    t = type(model)
    name = t.__name__
    top = t.__module__.split(".")[0]
    if top == "sklearn":
        from sklearn.pipeline import Pipeline
        if isinstance(model, Pipeline):
            scaler, est = _split_pipeline(model)
            if scaler is None:
                if type(est).__name__ in _sk.ESTIMATOR_KINDS:
                    return LinearAdapter(model)
                inner = adapt(est)
                if inner.raw_names is None:
                    inner.raw_names = _sk_names(model)
                return inner
            return LinearAdapter(model)
        if name in _sk.ESTIMATOR_KINDS:
            return LinearAdapter(model)
        if name in SK_TREES:
            return SkTreeAdapter(model, name)
        if name in SK_GB:
            return GBAdapter(model, name)
        if name in SK_HGB:
            return HGBAdapter(model, name)
    if top == "xgboost" and (name in XGB_WRAPPERS or name == "Booster"):
        return XGBAdapter(model, name)
    if top == "lightgbm" and (name in LGBM_WRAPPERS or name == "Booster"):
        return LGBMAdapter(model, name)
    raise unsupported(model)


def load_model(path: str):
    """Load a model file: a pickle/joblib file (only load files you trust!), an XGBoost
    ``.json``/``.ubj`` model, or a LightGBM text model (``.txt``)."""
    if not os.path.exists(path):
        raise ExportError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".json", ".ubj"):
            import xgboost as xgb
            b = xgb.Booster()
            b.load_model(path)
            return b
        if ext == ".txt":
            import lightgbm as lgb
            return lgb.Booster(model_file=path)
        try:
            import joblib
            return _quiet(joblib.load, path)
        except ImportError:  # pragma: no cover - joblib comes with scikit-learn
            import pickle
            with open(path, "rb") as f:
                return _quiet(pickle.load, f)
    except ExportError:
        raise
    except ModuleNotFoundError as e:
        raise ExportError(f"cannot load {path}: it needs the module {e.name!r}, which is not "
                          "installed") from None
    except Exception as e:  # unpickling can raise almost anything
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ExportError(f"cannot load {path}: {type(e).__name__}: {msg[:300]}") from None
