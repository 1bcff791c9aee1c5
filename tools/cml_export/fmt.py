"""Formatting helpers shared with ``tools/export_sklearn.py`` (imported from it)."""

try:  # tools.cml_export, run from the repository root
    from .. import export_sklearn as _sk
except ImportError:  # pragma: no cover - tools/ itself on sys.path
    import export_sklearn as _sk  # type: ignore

fmt_float = _sk.fmt_float
yaml_str = _sk.yaml_str
float_list = _sk.float_list
str_list = _sk.str_list
sanitize_feature_name = _sk.sanitize_feature_name
write_quantization_and_data = _sk.write_quantization_and_data
NAME_RE = _sk.NAME_RE
FORMAT = _sk.FORMAT
RESERVED_COLUMNS = _sk.RESERVED_COLUMNS
export_sklearn = _sk

__all__ = ["fmt_float", "yaml_str", "float_list", "str_list", "sanitize_feature_name",
           "write_quantization_and_data", "NAME_RE", "FORMAT", "RESERVED_COLUMNS",
           "export_sklearn"]
