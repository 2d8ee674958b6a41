"""Audit log (admins): the last entries of who did what, when; no patient IDs are recorded."""

import pandas as pd
import streamlit as st

from bcp_core import audit, settings
from bcp_core.access import Action
from bcp_core.errors import UserError
from dashboard.auth import require
from dashboard.shared import show_error

require(Action.READ_AUDIT, "The audit log needs the admin role.")
st.title("Audit log")
rows = st.number_input("Entries", 10, 1000, 50, 10, key="audit_rows")
try:
    events = audit.last_events(settings.audit_log(), int(rows))
except UserError as exc:
    show_error(exc)
    st.stop()
st.caption(
    f"The last {len(events)} entries, newest first, from the server's audit log "
    "(BCP_AUDIT_LOG): sign-ins, unmasking, data roots, training runs, thresholds, downloads."
)
if events:
    st.dataframe(pd.DataFrame(events).astype(str), hide_index=True, key="audit_table")
