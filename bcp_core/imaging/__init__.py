"""One image file to one network input: decoding (JPG, PNG, TIFF, DICOM) and preparation."""
