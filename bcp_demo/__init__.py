"""The synthetic demo dataset: mammogram-like images in the hospital's layout.

It sits beside the core library, not inside it: the product reads real hospital data through
``bcp_core``; this package only writes a stand-in of that layout for demos, tests and
benchmarks (``python -m bcp_core demo-data``).
"""
