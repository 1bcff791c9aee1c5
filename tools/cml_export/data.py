"""Reading the user's data (CSV files, DataFrames, arrays) and writing the spec's CSVs.

Every problem in the data is an :class:`ExportError` whose one-line message
names the file (or ``X_train`` / ``X_test`` / ``y_train`` / ``y_test``), the
line (CSV: 1-based, the header is line 1; arrays: the 0-based row) and the
column.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ExportError
from .fmt import fmt_float

# Cells read as a missing value (the same set as cml's data.rs).  The
# exporter itself writes a missing value as an empty cell.
MISSING_CELLS = {"", "NaN", "nan", "NA", "null"}
TARGET = "target"


def _quote(s) -> str:
    return '"' + str(s).replace('"', '\\"') + '"'


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(_quote(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} in all)"
    return shown


class Table:
    """A rectangular table of raw cells with names, and where each row came from.

    ``cells[i][j]`` is a raw value: a string for CSV files, any Python/numpy
    scalar for DataFrames and arrays.  ``named`` is False for a bare numpy
    array (its columns are taken in order).
    """

    def __init__(self, where: str, columns: List[str], cells, *, lines: Optional[List[int]] = None,
                 named: bool = True, numeric: Optional[np.ndarray] = None):
        self.where = where
        self.columns = columns
        self.cells = cells            # list of rows (CSV) or 2-D object array, or None if numeric
        self.lines = lines
        self.named = named
        self.numeric = numeric        # float64 matrix when every column is already numeric

    @property
    def n_rows(self) -> int:
        if self.numeric is not None:
            return self.numeric.shape[0]
        return len(self.cells)

    def loc(self, i: int) -> str:
        """Where row ``i`` is: ``file.csv:17`` or ``X_train row 16``."""
        if self.lines is not None:
            return f"{self.where}:{self.lines[i]}"
        return f"{self.where} row {i}"

    def raw(self, i: int, j: int):
        if self.numeric is not None:
            return self.numeric[i, j]
        return self.cells[i][j]

    def column_values(self, j: int) -> list:
        if self.numeric is not None:
            return list(self.numeric[:, j])
        return [row[j] for row in self.cells]


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def read_csv_table(path: str) -> Table:
    """Read a CSV file (header row, comma separated) into a :class:`Table`."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise ExportError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise ExportError(f"{path}: the file is empty (a header row is needed)")
            columns = [h.strip() for h in header]
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(columns):
                    raise ExportError(f"{path}:{reader.line_num}: {len(row)} fields, "
                                      f"but the header has {len(columns)}")
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise ExportError(f"{path}:{reader.line_num}: {e}") from None
        except UnicodeDecodeError as e:
            raise ExportError(f"{path}: not UTF-8 text ({e.reason})") from None
    for j, c in enumerate(columns):
        if not c:
            raise ExportError(f"{path}: column {j + 1} has no name in the header "
                              "(an index column? write DataFrames with to_csv(index=False))")
    return Table(path, columns, rows, lines=lines)


def frame_table(X, where: str) -> Table:
    """Wrap a pandas DataFrame, a numpy array or a list of rows as a :class:`Table`."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the requirements
        pd = None
    if pd is not None and isinstance(X, pd.Series):
        X = X.to_frame()
    if pd is not None and isinstance(X, pd.DataFrame):
        columns = [str(c).strip() for c in X.columns]
        for j, c in enumerate(X.columns):
            dt = X.dtypes.iloc[j]
            if isinstance(dt, pd.CategoricalDtype):
                raise ExportError(f'{where}: column "{c}" is categorical; '
                                  "cml supports numeric features only")
        numeric = None
        if all(pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)
               for dt in X.dtypes):
            try:
                numeric = X.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                numeric = None
        if numeric is not None:
            return Table(where, columns, None, numeric=numeric)
        cells = X.astype(object).to_numpy()
        cells = [[None if (v is pd.NA or v is pd.NaT) else v for v in row] for row in cells]
        return Table(where, columns, cells)
    arr = np.asarray(X)
    if arr.ndim == 1:
        raise ExportError(f"{where}: expected a 2-D table (rows x features), got a 1-D array "
                          "(use X.reshape(-1, 1) for a single feature)")
    if arr.ndim != 2:
        raise ExportError(f"{where}: expected a 2-D table, got shape {arr.shape}")
    columns = [f"x{j}" for j in range(arr.shape[1])]
    if arr.dtype.kind in "biuf":
        return Table(where, columns, None, named=False, numeric=arr.astype(np.float64))
    return Table(where, columns, arr.tolist(), named=False)


def parse_number(v) -> Tuple[Optional[float], Optional[str]]:
    """``(value, None)``; ``(nan, None)`` for a missing value; ``(None, problem)``."""
    if v is None:
        return math.nan, None
    if isinstance(v, (bool, np.bool_)):
        return float(v), None
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isinf(x):
            return None, "is not a finite number"
        return x, None
    s = str(v).strip()
    if s in MISSING_CELLS:
        return math.nan, None
    if "_" in s:
        return None, "is not a number"
    try:
        x = float(s)
    except ValueError:
        return None, "is not a number"
    if math.isnan(x):
        return math.nan, None
    if math.isinf(x):
        return None, "is not a finite number"
    return x, None


def _show(v) -> str:
    return _quote("" if v is None else str(v))


def column_floats(table: Table, j: int, name: str) -> np.ndarray:
    """Column ``j`` as float64, NaN for missing values; a bad cell is an ExportError."""
    if table.numeric is not None:
        col = table.numeric[:, j].astype(np.float64)
        bad = np.isinf(col)
        if bad.any():
            i = int(np.argmax(bad))
            raise ExportError(f'{table.loc(i)}: column "{name}": {_show(col[i])} is not a finite number')
        return col
    out = np.empty(table.n_rows, dtype=np.float64)
    for i in range(table.n_rows):
        v = table.raw(i, j)
        x, problem = parse_number(v)
        if problem is not None:
            raise ExportError(f'{table.loc(i)}: column "{name}": {_show(v)} {problem}')
        out[i] = x
    return out


def describe_missing(table: Table, i: int, j: int) -> str:
    """``empty cell`` or ``"NaN" (a missing value)`` for the cell at (i, j)."""
    v = table.raw(i, j)
    if table.lines is not None:
        s = "" if v is None else str(v).strip()
        return "empty cell" if s == "" else f"{_show(s)} (a missing value)"
    return "missing value (NaN)"


# --------------------------------------------------------------------------
# Matching columns with the model's features
# --------------------------------------------------------------------------

def is_output_column(name: str) -> bool:
    """``score_<i>`` and ``prediction``: a model's saved outputs in cml's CSV format.

    The exporter recomputes them from the model, so in its input they are
    skipped (and reported), never read as features."""
    return name == "prediction" or re.fullmatch(r"score_\d+", name) is not None


def output_columns(table: Table) -> List[str]:
    return [c for c in table.columns if table.named and is_output_column(c)]


class Matched:
    """A table's feature matrix in the model's order, and its target column."""

    def __init__(self, table: Table, X: np.ndarray, feature_cols: List[int], target_col: Optional[int],
                 names: List[str]):
        self.table = table
        self.X = X
        self.feature_cols = feature_cols   # table column of each model feature
        self.target_col = target_col
        self.names = names                 # feature names (model's, or the data's when it has none)

    def first_nan(self, features: Optional[Sequence[int]] = None) -> Optional[Tuple[int, int]]:
        """(row, feature) of the first missing value (row-major), optionally among ``features``."""
        mask = np.isnan(self.X)
        if features is not None:
            keep = np.zeros(self.X.shape[1], dtype=bool)
            keep[list(features)] = True
            mask &= keep[np.newaxis, :]
        if not mask.any():
            return None
        i = int(np.argmax(mask.any(axis=1)))
        f = int(np.argmax(mask[i]))
        return i, f

    def nan_message(self, i: int, f: int, why: str) -> str:
        j = self.feature_cols[f]
        return (f'{self.table.loc(i)}: column "{self.table.columns[j]}": '
                f"{describe_missing(self.table, i, j)}, {why}")


def match_columns(table: Table, model_names: Optional[Sequence[str]], n_features: int,
                  alias: Optional[Callable[[str], str]] = None,
                  names_if_unnamed: Optional[Sequence[str]] = None) -> Matched:
    """Find the model's features in ``table`` by name (or by position without names).

    ``model_names``: the model's feature names, or None when it was fitted
    without names (then the table's non-``target`` columns are taken in
    order, and their count must match).  ``alias`` maps a data column name to
    the name the library would give it (LightGBM replaces spaces by ``_``).
    ``names_if_unnamed``: names to use when neither the model nor the table
    has any (the train table's names, for the test table).
    """
    where = table.where
    cols = table.columns
    if table.named:
        seen = {}
        for j, c in enumerate(cols):
            if c in seen:
                raise ExportError(f'{where}: column "{c}" appears twice '
                                  f"(columns {seen[c] + 1} and {j + 1})")
            seen[c] = j
    target_col = cols.index(TARGET) if (table.named and TARGET in cols) else None

    if model_names is None or not table.named:
        if table.named:
            feature_cols = [j for j in range(len(cols))
                            if j != target_col and not is_output_column(cols[j])]
        else:
            feature_cols = list(range(len(cols)))
        if len(feature_cols) != n_features:
            how = ("the model has no feature names, so the columns other than "
                   f'"{TARGET}" are its features, in order' if table.named
                   else "an array's columns are the model's features, in order")
            raise ExportError(f"{where}: {len(feature_cols)} feature columns, but the model "
                              f"takes {n_features} ({how})")
        if model_names is not None:
            names = list(model_names)
        elif table.named:
            names = [cols[j] for j in feature_cols]
            if names_if_unnamed is not None and list(names_if_unnamed) != names:
                # the train data named the features: match by those names
                return match_columns(table, names_if_unnamed, n_features)
        elif names_if_unnamed is not None:
            names = list(names_if_unnamed)
        else:
            names = [f"x{j}" for j in range(n_features)]
    else:
        names = list(model_names)
        lookup = {}
        for j, c in enumerate(cols):
            lookup.setdefault(c, j)
        if alias is not None:
            for j, c in enumerate(cols):
                lookup.setdefault(alias(c), j)
        feature_cols = []
        for n in names:
            j = lookup.get(n)
            if j is None:
                j = lookup.get(str(n).strip())
            if j is None:
                used = set(lookup.get(m, -1) for m in names) | {target_col}
                unknown = [c for k, c in enumerate(cols)
                           if k not in used and not is_output_column(c)]
                extra = (f"; the file has {_short_list(unknown, 3)}, which the model does not know"
                         if unknown else "")
                raise ExportError(f'{where}: no column "{n}" (a feature of the model){extra}')
            feature_cols.append(j)
        if len(set(feature_cols)) != len(feature_cols):
            dup = next(j for j in feature_cols if feature_cols.count(j) > 1)
            raise ExportError(f'{where}: column "{cols[dup]}" matches two of the model\'s features')
        for j, c in enumerate(cols):
            if j not in feature_cols and j != target_col and not is_output_column(c):
                raise ExportError(f'{where}: column "{c}" is not a feature of the model '
                                  f'(nor "{TARGET}"); remove it. The model\'s features: '
                                  f"{_short_list(names)}")
        # The spec names features as the data does (as `cml import` does): a
        # LightGBM model fitted on "mean radius" calls it "mean_radius".
        names = [cols[j] for j in feature_cols]
    X = np.empty((table.n_rows, len(feature_cols)), dtype=np.float64)
    for f, j in enumerate(feature_cols):
        X[:, f] = column_floats(table, j, cols[j])
    return Matched(table, X, feature_cols, target_col, [str(n) for n in names])


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

def _class_key(v):
    if isinstance(v, (bool, np.bool_)):
        return ("b", bool(v))
    if isinstance(v, numbers.Number):
        return ("n", float(v))
    return ("s", str(v).strip())


def _value_keys(v):
    if isinstance(v, str):
        s = v.strip()
        keys = [("s", s)]
        try:
            keys.insert(0, ("n", float(s)))
        except ValueError:
            pass
        return keys
    return [_class_key(v), ("s", str(v).strip())]


def target_values(values: list, loc: Callable[[int], str], column: str, task: str,
                  classes: Optional[np.ndarray]) -> np.ndarray:
    """Class indices (classifiers) or floats (regressors) for raw target values.

    Classifier labels are matched with ``classes_`` (``1`` matches the class
    ``1`` or ``"1"``).  For classes that are not numbers, a column of
    integers ``0..k-1`` only (the format the exporter writes) is read as class
    indices.
    """
    where = f'column "{column}"'
    n = len(values)
    if task == "regression":
        out = np.empty(n, dtype=np.float64)
        for i, v in enumerate(values):
            x, problem = parse_number(v)
            if problem is not None:
                raise ExportError(f"{loc(i)}: {where}: {_show(v)} {problem} (the model is a regressor)")
            if math.isnan(x):
                raise ExportError(f"{loc(i)}: {where}: missing target value")
            out[i] = x
        return out
    keys = {}
    for k, c in enumerate(classes):
        keys.setdefault(_class_key(c), k)
    for k, c in enumerate(classes):
        keys.setdefault(("s", str(c).strip()), k)
    out = np.empty(n, dtype=np.int64)
    failed = None
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or \
                (isinstance(v, str) and v.strip() in MISSING_CELLS):
            raise ExportError(f"{loc(i)}: {where}: missing target value (a class label is needed)")
        for key in _value_keys(v):
            if key in keys:
                out[i] = keys[key]
                break
        else:
            if failed is None:
                failed = i
    if failed is None:
        return out
    numeric_classes = all(_class_key(c)[0] == "n" for c in classes)
    if not numeric_classes:
        # the exporter's own CSVs hold class indices: accept a column of indices only
        idx = []
        for v in values:
            x, problem = parse_number(v)
            if problem is not None or math.isnan(x) or x != int(x) or not 0 <= x < len(classes):
                idx = None
                break
            idx.append(int(x))
        if idx is not None:
            return np.asarray(idx, dtype=np.int64)
    shown = _short_list([str(c) for c in classes])
    raise ExportError(f"{loc(failed)}: {where}: {_show(values[failed])} is not one of the "
                      f"model's classes ({shown})")


def table_targets(m: Matched, task: str, classes) -> Optional[np.ndarray]:
    if m.target_col is None:
        return None
    t = m.table
    return target_values(t.column_values(m.target_col), t.loc, TARGET, task, classes)


def array_targets(y, where: str, task: str, classes, n_rows: int) -> np.ndarray:
    try:
        import pandas as pd
        if isinstance(y, (pd.Series, pd.DataFrame)):
            y = y.to_numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(y, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ExportError(f"{where}: expected one target per row, got shape {arr.shape}")
    if len(arr) != n_rows:
        raise ExportError(f"{where}: {len(arr)} targets for {n_rows} rows")
    return target_values(list(arr), lambda i: f"{where}[{i}]", TARGET, task, classes)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def write_csv(path: str, names: Sequence[str], X: np.ndarray, y: Optional[np.ndarray], task: str,
              scores: Optional[np.ndarray] = None, preds: Optional[np.ndarray] = None) -> None:
    """Features (empty cell for a missing value), ``target``, ``score_*``, ``prediction``."""
    X = np.asarray(X, dtype=np.float64)
    header = list(names)
    if y is not None:
        header.append(TARGET)
    if scores is not None:
        header += [f"score_{i}" for i in range(scores.shape[1])]
    if preds is not None:
        header.append("prediction")

    def fmt_target(v):
        return str(int(v)) if task == "classification" else fmt_float(v)

    def fmt_feature(v):
        return "" if math.isnan(v) else fmt_float(v)

    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(header)
        for i in range(X.shape[0]):
            row = [fmt_feature(v) for v in X[i]]
            if y is not None:
                row.append(fmt_target(y[i]))
            if scores is not None:
                row += [fmt_float(v) for v in scores[i]]
            if preds is not None:
                row.append(fmt_target(preds[i]))
            wr.writerow(row)
    os.replace(tmp, path)
