"""``python -m tools.cml_export MODEL --train TRAIN.csv [--test TEST.csv] -o SPEC.yaml``.

Exit status: 0 written and checked; 2 a problem with the model, the data or
an option (one line on stderr, no traceback); 1 the self-check failed or an
internal error (set ``CML_EXPORT_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Optional, Sequence

from .core import MISSING_MODES, export_tables
from .data import read_csv_table
from .errors import CheckError, ExportError
from .models import SUPPORTED, adapt, load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.cml_export",
        description="Export a fitted model (scikit-learn, XGBoost, LightGBM) to a cml/v1 spec, "
                    "with its train/test CSVs next to it, and check that the spec reproduces "
                    "the library's outputs.",
        epilog="Supported: " + ", ".join(SUPPORTED) + ". MODEL is unpickled: only use files "
               "you trust.")
    p.add_argument("model", metavar="MODEL",
                   help="fitted model: a pickle/joblib file (trusted files only), an XGBoost "
                        ".json/.ubj model or a LightGBM .txt model")
    p.add_argument("--train", required=True, metavar="TRAIN.csv",
                   help="training data: the model's features (matched by name) and, optionally, "
                        "'target' (the labels the model was fitted with)")
    p.add_argument("--test", metavar="TEST.csv",
                   help="test data: features and 'target'; the spec is checked on it")
    p.add_argument("-o", "--out", required=True, metavar="SPEC.yaml",
                   help="the spec to write; <name>.train.csv and <name>.test.csv go next to it")
    p.add_argument("--name", help="spec name [a-z0-9_]+ (default: from the output file name)")
    p.add_argument("--description", help="free text for the spec's description")
    p.add_argument("--classes", metavar="A,B,...",
                   help="class names, comma-separated, in the order of the model's classes_")
    p.add_argument("--input-bits", type=int, metavar="N",
                   help="bits per quantized input (default: 8 for linear models, 6 for trees)")
    p.add_argument("--missing", choices=MISSING_MODES, default="auto",
                   help="features that accept a missing value: auto (those with a missing value "
                        "in the data, the default), none, all")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(args.model)
            adapter = adapt(model)
            train = read_csv_table(args.train)
            test = read_csv_table(args.test) if args.test else None
            classes = None
            if args.classes is not None:
                classes = [c.strip() for c in args.classes.split(",")]
            s = export_tables(adapter, train, args.out, test, name=args.name,
                              description=args.description, classes=classes,
                              input_bits=args.input_bits, missing=args.missing)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: one line unless asked for the traceback
        if os.environ.get("CML_EXPORT_DEBUG"):
            raise
        msg = " ".join(str(e).split())
        print(f"error: internal error: {type(e).__name__}: {msg} "
              "(set CML_EXPORT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    files = [s["spec"], s["train_csv"]] + ([s["test_csv"]] if "test_csv" in s else [])
    what = f"{s['estimator']} ({s['library']} {s['version']})"
    if "trees" in s:
        what += f", {s['trees']} trees"
    if s.get("accepts_missing"):
        what += f", missing values accepted for {len(s['accepts_missing'])} feature(s)"
    line = f"wrote {', '.join(files)}: {what}"
    if "metric" in s:
        line += f"; test {s['metric'][0]} {s['metric'][1]:.4f} on {s['n_test']} rows"
    line += f"; spec matches the library (max relative score difference {s['max_score_error']:.2g})"
    if s.get("ignored_columns"):
        line += ("; ignored the input's " + ", ".join(s["ignored_columns"])
                 + " (recomputed from the model)")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
