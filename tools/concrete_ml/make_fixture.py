#!/usr/bin/env python3
"""Generate ``tests/fixtures/concrete_ml_logreg_breast_cancer.json`` with real Concrete ML.

TOOLING ONLY. The Rust crate and its tests never run this script and never need
Python or Concrete ML: they only read the JSON file it produced, which is
committed. Re-run it only to regenerate or extend the fixture.

What it produces
----------------
A JSON reference of how Concrete ML 1.9 quantizes scikit-learn linear models, so
a Rust test can check that ``cml``'s quantizer yields the very same integers.
The top level is the main case, Concrete ML ``LogisticRegression(n_bits=8,
random_state=0)`` (other arguments default) fitted on scikit-learn's
breast_cancer with ``train_test_split(test_size=0.2, random_state=0,
stratify=y)`` and compiled on ``X_train``. It records:

* the versions used, the float ``coef_`` / ``intercept_`` of the fitted model,
* the input quantizer (one per-tensor quantizer over all of X_train), the
  weight quantizer and the integer weights, the output (matmul) quantizer and
  the integer bias,
* for ``X_test[:20]``: the float inputs, ``quantize_input`` integers, the
  circuit's integer outputs (``fhe_circuit.simulate`` and the clear
  ``_inference``), ``dequantize_output``, ``decision_function``,
  ``predict_proba`` and ``predict``,
* full-test-set accuracies (float scikit-learn model, Concrete ML with
  ``fhe="disable"`` and with ``fhe="simulate"``) and the circuit's maximum
  integer bit-width.

``extra_cases`` holds the same record for three more models: a multiclass
LogisticRegression on iris, a LinearRegression on diabetes, and the exact
coefficients of ``specs/breast_cancer_logreg.yaml`` loaded with
``LogisticRegression.from_sklearn_model``, so that the bundled spec can be
checked against Concrete ML too.

Before writing, the script re-derives every integer with a plain-numpy
re-implementation of the formulas (``reference_quantize`` below) and aborts if
anything differs from what Concrete ML computed.

How to run (from the repository root; needs network access to PyPI once)
------------------------------------------------------------------------
::

    python3 -m venv /tmp/cmlvenv
    /tmp/cmlvenv/bin/pip install concrete-ml==1.9.0 pyyaml
    OMP_NUM_THREADS=1 /tmp/cmlvenv/bin/python tools/concrete_ml/make_fixture.py \
        [--out tests/fixtures/concrete_ml_logreg_breast_cancer.json]

Generated with Python 3.11.7, concrete-ml 1.9.0, concrete-python 2.10.0,
scikit-learn 1.5.0, numpy 1.26.4 (scipy as pulled in by concrete-ml). Other
scipy/BLAS builds can change the fitted float coefficients in the last bits;
the integers are always consistent with the coefficients stored in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "concrete_ml_logreg_breast_cancer.json")
N_SAMPLES = 20


# --------------------------------------------------------------------------
# Independent re-implementation of Concrete ML 1.9's linear-model quantization
# (written from reading concrete/ml/quantization/quantizers.py and
# concrete/ml/sklearn/base.py::SklearnLinearModelMixin). Used as a self-check.
# --------------------------------------------------------------------------
def _params(values: np.ndarray, n_bits: int):
    """Signed, asymmetric, non-narrow min/max quantizer over the whole tensor."""
    rmin = float(np.min(values))
    rmax = float(np.max(values))
    offset = 2 ** (n_bits - 1)
    if rmax - rmin < 1e-6:  # degenerate (constant) tensor
        offset = 0
        if abs(rmax) < 1e-6:
            return dict(rmin=rmin, rmax=rmax, offset=0, scale=1.0, zero_point=int(np.rint(-rmin)))
        return dict(rmin=rmin, rmax=rmax, offset=0, scale=rmax, zero_point=0)
    scale = (rmax - rmin) / (2**n_bits - 1)
    zp = int(np.round((rmax * (-offset) - rmin * (2**n_bits - 1 - offset)) / (rmax - rmin)))
    return dict(rmin=rmin, rmax=rmax, offset=offset, scale=scale, zero_point=zp)


def _quant(values, p, n_bits, clip=True):
    q = np.rint(np.asarray(values, dtype=np.float64) / p["scale"] + p["zero_point"])
    if clip:
        q = np.clip(q, -p["offset"], 2**n_bits - 1 - p["offset"])
    return q.astype(np.int64)


def reference_quantize(coef, intercept, X_calib, X, n_bits=8):
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))  # (n_out, n_feat)
    W = coef.T  # (n_feat, n_out)
    ip = _params(X_calib, n_bits)
    wp = _params(W, n_bits)
    qW = _quant(W, wp, n_bits)
    S = ip["scale"] * wp["scale"]
    Z = ip["zero_point"] * (qW.sum(axis=0, keepdims=True) - W.shape[0] * wp["zero_point"])
    q_bias = np.rint(np.asarray(intercept, dtype=np.float64) / S + Z).astype(np.int64)
    qX = _quant(X, ip, n_bits)
    acc = qX @ qW - wp["zero_point"] * qX.sum(axis=1, keepdims=True) + q_bias
    y = S * (acc - 2.0 * Z)
    return dict(ip=ip, wp=wp, qW=qW, S=S, Z=Z, q_bias=q_bias, qX=qX, acc=acc, y=y)


# --------------------------------------------------------------------------
def _f(x):
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def _i(x):
    return [int(v) for v in np.asarray(x).ravel()]


def _rows_f(a):
    return [[float(v) for v in row] for row in np.atleast_2d(np.asarray(a, dtype=np.float64))]


def _rows_i(a):
    return [[int(v) for v in row] for row in np.atleast_2d(np.asarray(a))]


def _quantizer_dict(q):
    return {
        "granularity": "per_tensor",
        "n_bits": int(q.n_bits),
        "is_signed": bool(q.is_signed),
        "is_symmetric": bool(q.is_symmetric),
        "is_narrow": bool(q.is_narrow),
        "offset": int(q.offset),
        "rmin": float(q.rmin),
        "rmax": float(q.rmax),
        "scale": float(q.scale),
        "zero_point": int(q.zero_point),
        "clip_min": int(-q.offset + (1 if q.is_narrow else 0)),
        "clip_max": int(2**q.n_bits - 1 - q.offset),
        "rounding": "numpy.rint (round half to even) of x / scale + zero_point",
    }


def build_case(name, dataset, model, X_train, X_test, y_test, is_classifier, fitted_how):
    import concrete.ml.common.utils as cml_utils

    assert not cml_utils.QUANT_ROUND_LIKE_ROUND_PBS
    sk = model.sklearn_model
    iq = model.input_quantizers[0]
    wq = model._weight_quantizer
    oq = model.output_quantizers[0]

    circuit = model.compile(X_train)

    Xs = X_test[:N_SAMPLES]
    qX = model.quantize_input(Xs)
    q_inf = model._inference(qX)
    q_sim = np.array([circuit.simulate(row[None, :])[0] for row in qX])
    assert np.array_equal(q_inf, q_sim), f"{name}: simulate != clear _inference"
    y_deq = model.dequantize_output(q_sim)

    ref = reference_quantize(sk.coef_, sk.intercept_, X_train, Xs, n_bits=iq.n_bits)
    checks = [
        ("input scale", ref["ip"]["scale"] == float(iq.scale)),
        ("input zero_point", ref["ip"]["zero_point"] == int(iq.zero_point)),
        ("weight scale", ref["wp"]["scale"] == float(wq.scale)),
        ("weight zero_point", ref["wp"]["zero_point"] == int(wq.zero_point)),
        ("q_weights", np.array_equal(ref["qW"], model._q_weights)),
        ("output scale", ref["S"] == float(oq.scale)),
        ("output zero_point", np.array_equal(2 * ref["Z"], oq.zero_point)),
        ("q_bias", np.array_equal(ref["q_bias"], model._q_bias)),
        ("q_X", np.array_equal(ref["qX"], qX)),
        ("circuit ints", np.array_equal(ref["acc"], q_sim)),
        ("dequant", np.array_equal(ref["y"].reshape(y_deq.shape), y_deq)),
    ]
    bad = [c for c, ok in checks if not ok]
    if bad:
        sys.exit(f"{name}: reference re-implementation disagrees with Concrete ML on {bad}")

    n_feat = X_train.shape[1]
    Z = np.asarray(oq.zero_point) // 2
    case = {
        "name": name,
        "dataset": dataset,
        "split": "train_test_split(X, y, test_size=0.2, random_state=0"
        + (", stratify=y)" if is_classifier else ")"),
        "estimator": f"concrete.ml.sklearn.{type(model).__name__}",
        "fitted": fitted_how,
        "n_features": n_feat,
        "n_outputs": int(model._q_weights.shape[1]),
        "n_train": int(X_train.shape[0]),
        "n_test": int(X_test.shape[0]),
        "coef": _rows_f(sk.coef_),
        "intercept": _f(sk.intercept_),
        "n_bits": {"op_inputs": int(iq.n_bits), "op_weights": int(wq.n_bits)},
        "input_quantizer": _quantizer_dict(iq),
        "weight_quantizer": _quantizer_dict(wq),
        "q_weights": _rows_i(model._q_weights),
        "q_weights_layout": "n_features x n_outputs (coef_.T)",
        "output_quantizer": {
            "scale": float(oq.scale),
            "scale_formula": "input.scale * weight.scale",
            "matmul_zero_point": _i(Z),
            "matmul_zero_point_formula": "input.zero_point * (sum(q_weights, axis=0) - n_features * weight.zero_point)",
            "zero_point": _i(oq.zero_point),
            "zero_point_formula": "2 * matmul_zero_point (used by dequantize_output)",
            "no_clipping": bool(oq.no_clipping),
        },
        "q_bias": _i(model._q_bias),
        "q_bias_formula": "rint(intercept / output.scale + matmul_zero_point), not clipped",
        "circuit_formula": "q_X @ q_weights - weight.zero_point * sum(q_X, axis=1) + q_bias",
        "dequant_formula": "output.scale * (q_y - output.zero_point)",
        "circuit": {"max_integer_bit_width": int(circuit.graph.maximum_integer_bit_width())},
        "samples": {
            "indices": "X_test[:%d]" % N_SAMPLES,
            "x": _rows_f(Xs),
            "q_x": _rows_i(qX),
            "q_y_circuit": _rows_i(q_sim),
            "y_dequantized": _rows_f(y_deq.reshape(len(Xs), -1)),
        },
    }
    smp = case["samples"]
    if is_classifier:
        case["classes"] = _i(model.classes_)
        smp["decision_function"] = _f(model.decision_function(Xs)) if case["n_outputs"] == 1 \
            else _rows_f(model.decision_function(Xs))
        smp["predict_proba"] = _rows_f(model.predict_proba(Xs))
        smp["predict"] = _i(model.predict(Xs))
        smp["predict_simulate"] = _i(model.predict(Xs, fhe="simulate"))
        smp["sklearn_float_predict"] = _i(sk.predict(Xs))
        case["metrics"] = {
            "metric": "accuracy",
            "float_sklearn": float(sk.score(X_test, y_test)),
            "concrete_ml_disable": float(np.mean(model.predict(X_test) == y_test)),
            "concrete_ml_simulate": float(np.mean(model.predict(X_test, fhe="simulate") == y_test)),
        }
    else:
        from sklearn.metrics import r2_score

        smp["predict"] = _f(model.predict(Xs))
        smp["sklearn_float_predict"] = _f(sk.predict(Xs))
        case["metrics"] = {
            "metric": "r2",
            "float_sklearn": float(sk.score(X_test, y_test)),
            "concrete_ml_disable": float(r2_score(y_test, model.predict(X_test))),
            "concrete_ml_simulate": float(r2_score(y_test, model.predict(X_test, fhe="simulate"))),
        }
    return case


def _load_spec_logreg():
    import yaml

    path = os.path.join(REPO, "specs", "breast_cancer_logreg.yaml")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        lin = yaml.safe_load(fh)["model"]["linear"]
    return np.array(lin["coefficients"], dtype=np.float64), np.array(lin["intercepts"], dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    from importlib.metadata import version

    import sklearn.linear_model as skl
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.model_selection import train_test_split
    from concrete.ml.sklearn import LinearRegression, LogisticRegression

    def split(loader, stratify):
        X, y = loader(return_X_y=True)
        return train_test_split(X, y, test_size=0.2, random_state=0, stratify=y if stratify else None)

    # Main case, exactly as requested: default arguments, random_state=0, n_bits=8.
    Xtr, Xte, ytr, yte = split(load_breast_cancer, True)
    m = LogisticRegression(n_bits=8, random_state=0)
    m.fit(Xtr, ytr)
    main_case = build_case("breast_cancer_logreg_default", "sklearn.datasets.load_breast_cancer",
                           m, Xtr, Xte, yte, True,
                           "LogisticRegression(n_bits=8, random_state=0).fit(X_train, y_train)")

    extra = []
    Xtr_i, Xte_i, ytr_i, yte_i = split(load_iris, True)
    m = LogisticRegression(n_bits=8, random_state=0)
    m.fit(Xtr_i, ytr_i)
    extra.append(build_case("iris_logreg_default", "sklearn.datasets.load_iris", m,
                            Xtr_i, Xte_i, yte_i, True,
                            "LogisticRegression(n_bits=8, random_state=0).fit(X_train, y_train)"))

    Xtr_d, Xte_d, ytr_d, yte_d = split(load_diabetes, False)
    m = LinearRegression(n_bits=8)
    m.fit(Xtr_d, ytr_d)
    extra.append(build_case("diabetes_linear_regression", "sklearn.datasets.load_diabetes", m,
                            Xtr_d, Xte_d, yte_d, False, "LinearRegression(n_bits=8).fit(X_train, y_train)"))

    spec = _load_spec_logreg()
    if spec is not None:
        sk = skl.LogisticRegression(max_iter=10000, random_state=0)
        sk.fit(Xtr, ytr)  # sets classes_ etc.; coefficients are then replaced by the spec's
        sk.coef_, sk.intercept_ = spec
        m = LogisticRegression.from_sklearn_model(sk, Xtr, n_bits=8)
        extra.append(build_case("breast_cancer_logreg_spec", "sklearn.datasets.load_breast_cancer", m,
                                Xtr, Xte, yte, True,
                                "LogisticRegression.from_sklearn_model(sklearn model with coef_/intercept_ "
                                "of specs/breast_cancer_logreg.yaml, X_train, n_bits=8)"))

    out = {
        "format": "concrete_ml_linear_fixture/v1",
        "generator": "tools/concrete_ml/make_fixture.py",
        "versions": {p: version(p) for p in
                     ["concrete-ml", "concrete-python", "scikit-learn", "numpy", "scipy"]},
        "python": sys.version.split()[0],
    }
    out.update(main_case)
    out["extra_cases"] = extra
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
