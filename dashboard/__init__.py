"""Streamlit glue shared by the pages: session keys, the sidebar, cached loaders.

Kept apart from ``bcp_core`` (which never imports streamlit) and from ``pages/`` (which stay thin).
"""
