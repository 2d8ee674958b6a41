"""The one exception type for mistakes a user can make (bad paths, files, settings).

Its message is a complete sentence that says what is wrong and what to do; the CLI prints it
without a traceback and the pages show it with ``st.error``. Programming errors stay ordinary
exceptions so that they are never disguised as user mistakes.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, explained in one sentence."""
