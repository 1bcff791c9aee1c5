#!/usr/bin/env python3
"""Train the bundled PyTorch networks and export them to ONNX for ``cml``.

The ``.onnx`` files and CSVs this writes are committed, so neither CI nor the
Rust build ever needs Python; this script is only for regenerating them.

Sub-commands (run from the repository root)::

    python tools/export_torch.py bundle [--out specs] [--fixtures tests/fixtures] [--weights-dir DIR]
    python tools/export_torch.py verify [--specs specs] [--fixtures tests/fixtures]
    python tools/export_torch.py dynamo [--weights DIR/digits_mlp.npz | --retrain] [--fixtures tests/fixtures]

``bundle`` (venv with ``tools/requirements-nn.txt``: torch 2.3.1, Concrete ML
1.9's pin) trains three networks on scikit-learn digits and writes, for each
``<name>``, ``specs/<name>.onnx`` (TorchScript exporter, opset 14, dynamic batch
axis, input ``input``, output ``output``), ``specs/<name>.train.csv``
(features, ``target``) and ``specs/<name>.test.csv`` (features, ``target``,
``score_0..score_9`` = logits computed by onnxruntime on the exported file with
float32 inputs, ``prediction`` = argmax). It also saves the trained weights as
``.npz`` in ``--weights-dir`` (default: a ``cml-nn-weights`` folder in the
system temp directory) for ``dynamo``, then runs ``verify``.

``dynamo`` (a second venv with a recent torch + onnxscript, see
``tools/requirements-dynamo.txt``) loads the ``digits_mlp`` weights saved by
``bundle`` (or, with ``--retrain``, retrains it with the current torch) and
exports it with the dynamo exporter (opset 18, weights inline) to
``tests/fixtures/digits_mlp_dynamo.onnx`` plus ``digits_mlp_dynamo.test.csv``
(first 40 test rows, scores from onnxruntime on that file).

``verify`` re-runs onnxruntime on each committed ``.onnx`` with the features of
its test CSV and fails if any score differs by more than 1e-5 from the saved
``score_*`` or if ``prediction`` is not their argmax.

Data: ``load_digits``, ``X = X / 16``, ``train_test_split(test_size=0.2,
random_state=0, stratify=y)``. Features are named as scikit-learn does,
``pixel_0_0`` .. ``pixel_7_7`` (row-major, which is also the (C, H, W)
flattening of the 1x8x8 image the CNN reads). Every net is trained with
``torch.manual_seed(0)`` just before it is built, Adam (lr 1e-2), batch 64,
mini-batches from ``torch.randperm`` with a ``Generator`` seeded 0, on one
thread with deterministic algorithms: re-running gives identical files.
``digits_mlp`` is trained exactly as ``train_mlp`` in the side-by-side
benchmark against Concrete ML (shared/bench/side_by_side.py), so both use the
same weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from export_sklearn import read_csv, write_csv  # noqa: E402

N_CLASSES = 10
SCORE_ATOL = 1e-5
OPSET = 14
DYNAMO_OPSET = 18
DYNAMO_ROWS = 40
DEFAULT_WEIGHTS_DIR = os.path.join(tempfile.gettempdir(), "cml-nn-weights")
NETS = ("digits_mlp", "digits_cnn", "digits_resnet")
# name: (epochs, input shape per sample, description)
TRAINING = {
    "digits_mlp": (60, (64,), "Linear(64,32) -> ReLU -> Linear(32,10)"),
    "digits_cnn": (80, (1, 8, 8),
                   "Conv2d(1,8,3) -> ReLU -> AvgPool2d(2) -> Conv2d(8,16,3) -> ReLU -> Flatten -> Linear(16,10)"),
    "digits_resnet": (60, (64,),
                      "h = SiLU(Linear(64,32)(x)); r = GELU(h + Linear(32,32)(h)); Linear(32,10)(r)"),
}


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def digits_split():
    """Return ``(Xtr, Xte, ytr, yte, feature_names)``; X is float64 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    return Xtr, Xte, ytr, yte, [str(f) for f in bunch.feature_names]


# --------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------

def _torch():
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def build_net(name: str):
    """Build the (untrained) network ``name``; call ``torch.manual_seed(0)`` first."""
    torch = _torch()
    nn = torch.nn
    if name == "digits_mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    if name == "digits_cnn":
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AvgPool2d(2),
                             nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 10))
    if name == "digits_resnet":
        class ResidualMLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(64, 32)
                self.act1 = nn.SiLU()
                self.fc2 = nn.Linear(32, 32)
                self.act2 = nn.GELU()  # exact (erf) form
                self.out = nn.Linear(32, 10)

            def forward(self, x):
                h = self.act1(self.fc1(x))
                r = self.act2(h + self.fc2(h))
                return self.out(r)

        return ResidualMLP()
    raise ValueError(f"unknown network {name!r}")


def train_net(name: str, Xtr: np.ndarray, ytr: np.ndarray):
    """Train ``name``; for ``digits_mlp`` this is side_by_side.py's ``train_mlp``."""
    torch = _torch()
    epochs, shape, _ = TRAINING[name]
    torch.manual_seed(0)
    net = build_net(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    Xt, yt = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(ytr, dtype=torch.long)
    Xt = Xt.reshape((len(Xt),) + shape)
    for _ in range(epochs):
        perm = torch.randperm(len(Xt), generator=g)
        for i in range(0, len(Xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()
    return net.eval()


def torch_logits(net, name: str, X: np.ndarray) -> np.ndarray:
    torch = _torch()
    shape = TRAINING[name][1]
    with torch.no_grad():
        x = torch.tensor(X, dtype=torch.float32).reshape((len(X),) + shape)
        return net(x).numpy()


def save_weights(net, path: str) -> None:
    np.savez(path, **{k: v.detach().cpu().numpy() for k, v in net.state_dict().items()})


def load_weights(net, path: str) -> None:
    torch = _torch()
    with np.load(path) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------

def ort_logits(onnx_path: str, X: np.ndarray) -> np.ndarray:
    """Run the ONNX file on float32 ``X`` (reshaped to the graph input's rank)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    rest = list(inp.shape[1:])
    if not all(isinstance(d, int) for d in rest):
        raise ValueError(f"{onnx_path}: non-static input dims {inp.shape}")
    x = np.asarray(X, dtype=np.float32).reshape([len(X)] + rest)
    (out,) = sess.run(None, {inp.name: x})
    return np.asarray(out)


def graph_summary(onnx_path: str) -> dict:
    """Check the model and return its op types, opset and I/O shapes."""
    import onnx

    m = onnx.load(onnx_path)
    onnx.checker.check_model(m, full_check=True)

    def shape(v):
        return [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]

    ops = []
    for n in m.graph.node:
        if n.op_type not in ops:
            ops.append(n.op_type)
    return {
        "ops": ops,
        "n_nodes": len(m.graph.node),
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "inputs": {v.name: shape(v) for v in m.graph.input},
        "outputs": {v.name: shape(v) for v in m.graph.output},
        "external_data": any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer),
        "producer": f"{m.producer_name} {m.producer_version}",
    }


def export_torchscript(net, name: str, path: str) -> None:
    torch = _torch()
    dummy = torch.zeros((1,) + TRAINING[name][1], dtype=torch.float32)
    torch.onnx.export(net, dummy, path, opset_version=OPSET, input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      do_constant_folding=True)


def write_test_csv(path, feature_names, X, y, scores) -> None:
    write_csv(path, feature_names, X, y, "classification", scores=scores,
              preds=np.argmax(scores, axis=1))


# --------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------

def bundle(out_dir: str, fixtures_dir: str, weights_dir: str) -> list:
    import torch

    Xtr, Xte, ytr, yte, features = digits_split()
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(weights_dir, exist_ok=True)
    rows = []
    for name in NETS:
        net = train_net(name, Xtr, ytr)
        onnx_path = os.path.join(out_dir, f"{name}.onnx")
        export_torchscript(net, name, onnx_path)
        save_weights(net, os.path.join(weights_dir, f"{name}.npz"))
        scores = ort_logits(onnx_path, Xte)
        diff = float(np.max(np.abs(scores - torch_logits(net, name, Xte))))
        write_csv(os.path.join(out_dir, f"{name}.train.csv"), features, Xtr, ytr, "classification")
        write_test_csv(os.path.join(out_dir, f"{name}.test.csv"), features, Xte, yte, scores)
        acc = float(np.mean(np.argmax(scores, axis=1) == yte))
        s = graph_summary(onnx_path)
        n_params = sum(p.numel() for p in net.parameters())
        rows.append((name, acc, s, n_params))
        print(f"{name}: float test accuracy {acc:.4f} ({len(yte)} rows), {n_params} parameters, "
              f"max |torch - onnxruntime| = {diff:.2e}")
        print(f"  {TRAINING[name][2]}")
        print(f"  {onnx_path}: opset {s['opset']}, inputs {s['inputs']}, outputs {s['outputs']}")
        print(f"  ops: {' '.join(s['ops'])}")
    print(f"torch {torch.__version__}; weights saved in {weights_dir}")
    verify(out_dir, fixtures_dir)
    return rows


def dynamo(weights: str | None, fixtures_dir: str) -> None:
    import torch

    Xtr, Xte, ytr, yte, features = digits_split()
    name = "digits_mlp"
    if weights:
        torch.manual_seed(0)
        net = build_net(name)
        load_weights(net, weights)
        net.eval()
    else:
        print("--retrain: training digits_mlp with this torch (weights may differ from specs/)")
        net = train_net(name, Xtr, ytr)
    os.makedirs(fixtures_dir, exist_ok=True)
    path = os.path.join(fixtures_dir, "digits_mlp_dynamo.onnx")
    dummy = torch.zeros((2, 64), dtype=torch.float32)
    batch = torch.export.Dim("batch")
    prog = torch.onnx.export(net, (dummy,), dynamo=True, opset_version=DYNAMO_OPSET,
                             input_names=["input"], output_names=["output"],
                             dynamic_shapes=({0: batch},), external_data=False)
    prog.save(path, external_data=False)
    data_file = path + ".data"
    if os.path.exists(data_file):
        raise RuntimeError(f"{data_file} written: weights must be inline")
    X, y = Xte[:DYNAMO_ROWS], yte[:DYNAMO_ROWS]
    scores = ort_logits(path, X)
    diff = float(np.max(np.abs(scores - torch_logits(net, name, X))))
    write_test_csv(os.path.join(fixtures_dir, "digits_mlp_dynamo.test.csv"), features, X, y, scores)
    s = graph_summary(path)
    bundled = os.path.join(REPO, "specs", "digits_mlp.test.csv")
    if os.path.exists(bundled):
        _, d = read_csv(bundled)
        ref = d[:DYNAMO_ROWS, 65:65 + N_CLASSES]
        print(f"max |dynamo - specs/digits_mlp.test.csv scores| over {DYNAMO_ROWS} rows: "
              f"{float(np.max(np.abs(scores - ref))):.2e}")
    import onnxscript
    print(f"torch {torch.__version__}, onnxscript {onnxscript.__version__}; max |torch - onnxruntime| = {diff:.2e}")
    print(f"{path}: opset {s['opset']}, inputs {s['inputs']}, outputs {s['outputs']}, "
          f"external data {s['external_data']}")
    print(f"  ops: {' '.join(s['ops'])}")
    verify_file(path, os.path.join(fixtures_dir, "digits_mlp_dynamo.test.csv"))


def verify_file(onnx_path: str, test_csv: str) -> float:
    header, d = read_csv(test_csv)
    score_cols = [i for i, h in enumerate(header) if h.startswith("score_")]
    ti = header.index("target")
    pi = header.index("prediction")
    X = d[:, :ti]
    if ti != 64 or header[0] != "pixel_0_0" or header[63] != "pixel_7_7":
        raise AssertionError(f"{test_csv}: expected 64 pixel_* feature columns")
    if [header[i] for i in score_cols] != [f"score_{k}" for k in range(N_CLASSES)]:
        raise AssertionError(f"{test_csv}: expected score_0..score_9")
    saved = d[:, score_cols]
    got = ort_logits(onnx_path, X).astype(np.float64)
    err = float(np.max(np.abs(got - saved)))
    if err > SCORE_ATOL:
        raise AssertionError(f"{onnx_path}: scores differ from {test_csv} by {err:.3e} > {SCORE_ATOL}")
    if not np.array_equal(d[:, pi].astype(int), np.argmax(saved, axis=1)):
        raise AssertionError(f"{test_csv}: prediction is not argmax of the scores")
    acc = float(np.mean(d[:, pi] == d[:, ti]))
    print(f"verify {onnx_path}: {len(d)} rows, max |score diff| {err:.2e}, accuracy {acc:.4f}: ok")
    return err


def verify(specs_dir: str, fixtures_dir: str) -> None:
    for name in NETS:
        path = os.path.join(specs_dir, f"{name}.onnx")
        graph_summary(path)
        verify_file(path, os.path.join(specs_dir, f"{name}.test.csv"))
        h, _ = read_csv(os.path.join(specs_dir, f"{name}.train.csv"))
        if h[-1] != "target" or len(h) != 65:
            raise AssertionError(f"{name}.train.csv: expected 64 features + target")
    fx = os.path.join(fixtures_dir, "digits_mlp_dynamo.onnx")
    if os.path.exists(fx):
        graph_summary(fx)
        verify_file(fx, os.path.join(fixtures_dir, "digits_mlp_dynamo.test.csv"))
    else:
        print(f"({fx} not found; skipped)")
    print("verify: all ok")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="train, export and verify the bundled networks")
    b.add_argument("--out", default=os.path.join(REPO, "specs"))
    b.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"))
    b.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR)
    v = sub.add_parser("verify", help="re-run onnxruntime on the committed ONNX files")
    v.add_argument("--specs", default=os.path.join(REPO, "specs"))
    v.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"))
    d = sub.add_parser("dynamo", help="export digits_mlp with the dynamo exporter (test fixture)")
    d.add_argument("--weights", default=os.path.join(DEFAULT_WEIGHTS_DIR, "digits_mlp.npz"),
                   help="digits_mlp.npz saved by bundle (default: %(default)s)")
    d.add_argument("--retrain", action="store_true",
                   help="retrain digits_mlp with this torch instead (weights may differ from specs/)")
    d.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"))
    a = ap.parse_args(argv)
    if a.cmd == "bundle":
        bundle(a.out, a.fixtures, a.weights_dir)
    elif a.cmd == "verify":
        verify(a.specs, a.fixtures)
    else:
        if not a.retrain and not os.path.exists(a.weights):
            ap.error(f"{a.weights} not found: run `bundle` first (torch 2.3.1 venv) or pass --retrain")
        dynamo(None if a.retrain else a.weights, a.fixtures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
