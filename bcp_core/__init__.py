"""Breast cancer prediction core library: data matching, training, evaluation, prediction.

The library knows nothing of Streamlit; the dashboard pages and the CLI are thin layers over it.
"""

__version__ = "0.1.0"
