"""The export step: model + data -> spec + CSVs, then the self-check."""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import ensemble as ens
from .data import (Matched, Table, array_targets, column_floats, frame_table, match_columns,
                   output_columns, read_csv_table, table_targets, write_csv)
from .errors import CheckError, ExportError
from .fmt import NAME_RE
from .fmt import export_sklearn as _sk
from .models import Adapter, adapt

SCORE_RTOL = 1e-6
MISSING_MODES = ("auto", "none", "all")


def export(model, X_train, path: str, X_test=None, y_test=None, *, name: Optional[str] = None,
           description: Optional[str] = None, classes: Optional[Sequence[str]] = None,
           input_bits: Optional[int] = None, y_train=None, missing: str = "auto") -> dict:
    """Export a fitted model to the ``cml/v1`` spec ``path``, with its CSVs next to it.

    ``X_train`` / ``X_test``: pandas DataFrames (columns matched with the
    model's feature names, in any order; a ``target`` column is used as the
    labels when ``y_train`` / ``y_test`` is not given) or numpy arrays
    (columns in the model's order).  ``y_*``: labels as the model was fitted
    with (values of ``classes_`` for classifiers).  ``classes``: display
    names for the classes, in ``classes_`` order.  ``missing``: which
    features accept a missing value in the spec: ``"auto"`` (those with a
    missing value in the data), ``"none"`` or ``"all"``.

    Returns a summary dict (paths, estimator, metric on the test data,
    largest score difference found by the self-check).  Raises
    :class:`ExportError` for a problem with the model or the data and
    :class:`CheckError` if the written spec does not reproduce the library.
    """
    adapter = adapt(model)
    train = frame_table(X_train, "X_train")
    test = frame_table(X_test, "X_test") if X_test is not None else None
    return export_tables(adapter, train, path, test, y_train=y_train, y_test=y_test, name=name,
                         description=description, classes=classes, input_bits=input_bits,
                         missing=missing)


def spec_name_from_path(path: str) -> str:
    stem = os.path.basename(path)
    for ext in (".yaml", ".yml"):
        if stem.lower().endswith(ext):
            stem = stem[:-len(ext)]
    stem = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return stem or "model"


def _targets(m: Matched, y, where: str, adapter: Adapter) -> Optional[np.ndarray]:
    if y is not None:
        if m.target_col is not None:
            raise ExportError(f'{m.table.where}: has a "target" column and {where} was given too; '
                              "pass one of them")
        return array_targets(y, where, adapter.task, adapter.classes, m.X.shape[0])
    return table_targets(m, adapter.task, adapter.classes)


def _class_names(adapter: Adapter, classes) -> Optional[List[str]]:
    if adapter.task != "classification":
        if classes is not None:
            raise ExportError("class names were given, but the model is a regressor")
        return None
    if classes is None:
        names = [str(c) for c in adapter.classes]
    else:
        names = [str(c).strip() for c in classes]
        if len(names) != len(adapter.classes):
            raise ExportError(f"{len(names)} class names for {len(adapter.classes)} classes "
                              f"(the model's classes_: {', '.join(str(c) for c in adapter.classes)})")
    for n in names:
        if not n.strip():
            raise ExportError("a class name is empty")
    if len(set(names)) != len(names):
        raise ExportError(f"class names are not distinct: {', '.join(names)}")
    return names


def _ranges(X_train: np.ndarray, X_test: Optional[np.ndarray]) -> np.ndarray:
    """Per-feature [min, max] of the training data, ignoring missing values."""
    out = np.zeros((X_train.shape[1], 2))
    for f in range(X_train.shape[1]):
        col = X_train[:, f]
        col = col[~np.isnan(col)]
        if col.size == 0 and X_test is not None:
            col = X_test[:, f][~np.isnan(X_test[:, f])]
        if col.size:
            out[f] = [col.min(), col.max()]
    return out


def export_tables(adapter: Adapter, train: Table, path: str, test: Optional[Table] = None, *,
                  y_train=None, y_test=None, name: Optional[str] = None,
                  description: Optional[str] = None, classes=None,
                  input_bits: Optional[int] = None, missing: str = "auto") -> dict:
    """:func:`export` for data already read as tables (the CLI reads CSV files)."""
    if missing not in MISSING_MODES:
        raise ExportError(f"missing must be one of {', '.join(MISSING_MODES)}, not {missing!r}")
    name = spec_name_from_path(path) if name is None else name
    if not NAME_RE.match(name):
        raise ExportError(f"spec name {name!r} must use only a-z, 0-9 and _")
    linear = adapter.family == "linear"
    if input_bits is None:
        input_bits = 8 if linear else 6
    if not isinstance(input_bits, (int, np.integer)) or not 2 <= int(input_bits) <= 16:
        raise ExportError(f"input bits must be an integer from 2 to 16, not {input_bits!r}")
    class_names = _class_names(adapter, classes)

    # -- data, matched with the model's features --------------------------------
    mtr = match_columns(train, adapter.raw_names, adapter.n_features, adapter.alias)
    mte = None
    if test is not None:
        mte = match_columns(test, adapter.raw_names, adapter.n_features, adapter.alias,
                            names_if_unnamed=mtr.names if adapter.raw_names is None else None)
    try:
        feature_names = _sk.check_feature_names(mtr.names, adapter.n_features)
    except ValueError as e:
        raise ExportError(f"cannot use the model's feature names: {e}") from None
    ytr = _targets(mtr, y_train, "y_train", adapter)
    yte = None
    if mte is not None:
        yte = _targets(mte, y_test, "y_test", adapter)
        if yte is None:
            raise ExportError(f'{test.where}: no "target" column (the test data needs its true '
                              "labels: cml run compares with them)")
    elif y_test is not None:
        raise ExportError("y_test was given without X_test")

    # -- missing values ---------------------------------------------------------
    parts = [m for m in (mtr, mte) if m is not None]
    nan_feats = sorted({int(f) for m in parts for f in np.flatnonzero(np.isnan(m.X).any(axis=0))})
    est = adapter.source_estimator
    if nan_feats and (linear or not adapter.supports_missing):
        for m in parts:
            hit = m.first_nan()
            if hit:
                raise ExportError(m.nan_message(*hit, f"and {est} cannot take missing values"))
    if missing == "none" and nan_feats:
        for m in parts:
            hit = m.first_nan()
            if hit:
                raise ExportError(m.nan_message(*hit, "but missing values were turned off "
                                                "(--missing none)"))
    if missing == "all":
        if linear or not adapter.supports_missing:
            raise ExportError(f"{est} cannot take missing values, so --missing all is not possible")
        accepts = list(range(adapter.n_features))
    else:
        accepts = nan_feats

    # -- the library's outputs --------------------------------------------------
    X_check = mte.X if mte is not None else mtr.X
    lib_scores = adapter.scores(X_check)
    lib_preds = adapter.predict(X_check)

    # -- write ------------------------------------------------------------------
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    data: Dict[str, str] = {}
    summary = {"spec": path, "name": name, "library": adapter.library,
               "version": adapter.version, "estimator": est, "task": adapter.task,
               "features": feature_names,
               "ignored_columns": sorted({c for t in (train, test) if t is not None
                                          for c in output_columns(t)})}
    train_csv = os.path.join(out_dir, f"{name}.train.csv")
    write_csv(train_csv, feature_names, mtr.X, ytr, adapter.task)
    data["train"] = os.path.relpath(train_csv, out_dir)
    summary["train_csv"] = train_csv
    if mte is not None:
        test_csv = os.path.join(out_dir, f"{name}.test.csv")
        write_csv(test_csv, feature_names, mte.X, yte, adapter.task,
                  scores=lib_scores, preds=lib_preds)
        data["test"] = os.path.relpath(test_csv, out_dir)
        summary["test_csv"] = test_csv
        summary["n_test"] = int(mte.X.shape[0])
        if adapter.task == "classification":
            summary["metric"] = ("accuracy", float(np.mean(lib_preds == yte)))
        else:
            ss_tot = float(np.sum((yte - yte.mean()) ** 2))
            r2 = 1.0 - float(np.sum((yte - lib_preds) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
            summary["metric"] = ("r2", r2)
    if description is None:
        description = f"{est} ({adapter.library} {adapter.version}), exported by tools/cml_export"
    source = (adapter.library, adapter.version, est)
    if linear:
        lm = adapter.build()
        text = _sk.render_spec(lm, name=name, description=description, feature_names=feature_names,
                               class_names=class_names, ranges=_sk.input_ranges(lm, mtr.X),
                               input_bits=int(input_bits), weight_bits=8, source_estimator=est,
                               data=data or None)
        summary["link"] = lm.link
        summary["accepts_missing"] = []
    else:
        e = adapter.build()
        e["features"] = feature_names
        e["classes"] = class_names
        e["accepts_missing"] = [feature_names[f] for f in accepts]
        text = ens.render_ensemble_spec(e, name=name, description=description, source=source,
                                        ranges=_ranges(mtr.X, mte.X if mte is not None else None),
                                        input_bits=int(input_bits), data=data or None)
        summary["link"] = e["link"]
        summary["accepts_missing"] = e["accepts_missing"]
        summary["trees"] = len(e["trees"])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)

    # -- self-check -------------------------------------------------------------
    try:
        if linear:
            _sk.check_roundtrip(path, adapter.build())
        if mte is not None:
            err = check_spec(path, adapter)
        else:
            err = check_spec(path, adapter, X=mtr.X, scores=lib_scores, preds=lib_preds)
    except (CheckError, AssertionError) as exc:
        try:
            os.remove(path)
        except OSError:
            pass
        raise CheckError(f"{path}: self-check failed, spec removed: {exc}") from None
    summary["max_score_error"] = err
    return summary


def _read_back(path: str, spec: dict, features: List[str]):
    """The test CSV written next to the spec: features, saved scores and predictions."""
    rel = (spec.get("data") or {}).get("test")
    csv_path = os.path.join(os.path.dirname(os.path.abspath(path)), rel)
    t = read_csv_table(csv_path)
    cols = t.columns
    for n in features + ["score_0", "prediction"]:
        if n not in cols:
            raise CheckError(f"{csv_path}: no column {n!r}")
    m_out = sum(1 for c in cols if re.fullmatch(r"score_\d+", c))
    X = np.stack([column_floats(t, cols.index(n), n) for n in features], axis=1)
    S = np.stack([column_floats(t, cols.index(f"score_{k}"), f"score_{k}") for k in range(m_out)],
                 axis=1)
    P = column_floats(t, cols.index("prediction"), "prediction")
    return X, S, P


def check_spec(path: str, adapter: Adapter, X=None, scores=None, preds=None) -> float:
    """Reload the spec, evaluate it on the test CSV (or on ``X``) and compare with the library.

    Scores must agree to 1e-6 relative (to ``max(1, |score|)``); class
    predictions exactly; regression predictions to 1e-6 relative after the
    inverse link.  Returns the largest relative score difference.
    """
    import yaml
    with open(path) as f:
        spec = yaml.safe_load(f)
    if adapter.family == "linear":
        try:
            _sk.validate_spec(spec, path)
        except AssertionError as exc:
            raise CheckError(str(exc)) from None
        sec = spec["model"]["linear"]
    else:
        ens.validate_ensemble_spec(spec, path)
        sec = spec["model"]["ensemble"]
    features = sec["features"]
    if X is None:
        X, scores, preds = _read_back(path, spec, features)
        where = "test row"
    else:
        where = "train row"
    if adapter.family == "linear":
        coef = np.asarray(sec["coefficients"], dtype=np.float64)
        icpt = np.asarray(sec["intercepts"], dtype=np.float64)
        Xs = X
        if "standardize" in sec:
            Xs = (X - np.asarray(sec["standardize"]["mean"])) / np.asarray(sec["standardize"]["scale"])
        got = Xs @ coef.T + icpt
    else:
        got = ens.evaluate(sec, X, accumulate=adapter.accumulate)
    want = np.asarray(scores, dtype=np.float64)
    if got.shape != want.shape:
        raise CheckError(f"the spec has {got.shape[1]} output(s), the library {want.shape[1]}")
    rel = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    rel[np.isnan(rel)] = np.inf
    if rel.size and rel.max() > SCORE_RTOL:
        r, k = np.unravel_index(int(np.argmax(rel)), rel.shape)
        raise CheckError(f"{where} {r}: score_{k} is {got[r, k]!r} from the spec but "
                         f"{want[r, k]!r} from {adapter.library} (more than {SCORE_RTOL:g} relative)")
    p_spec = ens.predictions(sec["task"], sec["link"], got)
    p_lib = np.asarray(preds)
    if sec["task"] == "classification":
        bad = p_spec != p_lib.astype(np.int64)
    else:
        scale = np.maximum(1.0, np.abs(got[:, 0])) if sec["link"] == "exp" else 1.0
        bad = ~(np.abs(p_spec - p_lib) <= SCORE_RTOL * scale * np.maximum(1.0, np.abs(p_lib)))
    if bad.any():
        r = int(np.argmax(bad))
        raise CheckError(f"{where} {r}: the spec predicts {p_spec[r]!r}, {adapter.library} "
                         f"predicts {p_lib[r]!r}")
    return float(rel.max()) if rel.size else 0.0
