"""What training and prediction on Ray share: the install hint and the connection to a cluster.

Ray is an optional extra (``requirements-scale.txt``): this module never imports it; its
callers (:mod:`bcp_core.model.ray_train`, :mod:`bcp_core.inference.ray_predict`) import it
inside their functions and hand the module in.
"""

from __future__ import annotations

import contextlib
import logging
import os

#: How a refusal for want of Ray ends: what to install.
SCALE_HINT = "install the scale extra: pip install -r requirements-scale.txt"


@contextlib.contextmanager
def ray_connection(ray, address: str | None):
    """The Ray cluster for a run: the one this process is connected to, else ``address``
    (``auto`` or ``HOST:PORT``), else a new one on this machine, stopped after the run."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ notes, not for users
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()
