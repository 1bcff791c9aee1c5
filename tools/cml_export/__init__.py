"""One export step for every estimator cml supports.

From the repository root::

    python -m tools.cml_export MODEL.pkl --train TRAIN.csv [--test TEST.csv] -o SPEC.yaml

or from Python::

    from tools.cml_export import export
    export(model, X_train, "out/my_model.yaml", X_test, y_test, y_train=y_train)

See ``tools/README.md`` ("One export step") for the supported estimators,
how feature names and missing values are handled, and the checks it runs.
"""

from .core import export, export_tables
from .errors import CheckError, ExportError
from .models import SUPPORTED, adapt, load_model

__all__ = ["export", "export_tables", "ExportError", "CheckError", "SUPPORTED", "adapt",
           "load_model"]
