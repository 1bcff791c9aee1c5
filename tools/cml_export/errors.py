"""Errors of the exporter.

``ExportError`` is a problem with what the user gave us (the model, the data,
an option).  Its message is one line that names the file, line and column
when there is one; the CLI prints it and exits with status 2.

``CheckError`` is raised when the written spec, evaluated in Python, does not
reproduce the library's own outputs.  That is an exporter bug or a model
feature it does not understand, never the user's data; the CLI exits with
status 1.
"""


class ExportError(ValueError):
    """A one-line, user-facing problem with the model, the data or an option."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


class CheckError(AssertionError):
    """The written spec does not reproduce the library's outputs."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
