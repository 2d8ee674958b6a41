"""Serve the dashboard with its server-side guards: ``streamlit run serve.py`` (``make run``).

``streamlit_app.py`` is the app; this wraps it in :class:`dashboard.server.ServerGuard`, which
checks every request and websocket before Streamlit sees it (host names against DNS
rebinding, the metrics endpoint, the upload size). Running ``streamlit run streamlit_app.py``
directly works too, without these guards.
"""

import streamlit as st
from starlette.middleware import Middleware

from bcp_core.quiet import import_tensorflow_quietly
from dashboard.server import ServerGuard

import_tensorflow_quietly()  # once, at start: no TensorFlow start-up lines in the terminal

app = st.App("streamlit_app.py", middleware=[Middleware(ServerGuard)])
