"""Import TensorFlow without its start-up lines on the terminal.

TensorFlow's C++ core prints "oneDNN custom operations are on" and an absl notice twice per
process while it is imported, before any log-level setting is read (``TF_CPP_MIN_LOG_LEVEL``
hides the CPU-instruction lines, not these). The entry points (``python -m bcp_core`` and
``serve.py``) import it once through :func:`import_tensorflow_quietly`; every later import
finds it loaded. A failing import still raises, with its message.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration (C++ writes bypass sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and Keras) with their start-up lines silenced."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # an explicit setting wins
    with stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
