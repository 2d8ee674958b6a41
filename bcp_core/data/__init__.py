"""The hospital's data: workbooks, the image index, the UniqueKey join, balance, split, privacy.

Pure pandas and file-system code; nothing here decodes an image or imports TensorFlow.
"""
