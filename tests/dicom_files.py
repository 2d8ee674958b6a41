"""DICOM files for the tests, written with pydicom in memory: nothing downloaded."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)


def new_dataset(syntax=ExplicitVRLittleEndian) -> Dataset:
    """A mammogram's dataset (file meta, SOP class and instance, modality MG), no pixels yet."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    return ds


def to_bytes(ds: Dataset, *, file_format: bool = True) -> bytes:
    """``ds`` as a file's bytes; without ``file_format``, a bare dataset (no preamble or file
    meta, implicit VR), as some archives export them."""
    buf = io.BytesIO()
    if file_format:
        ds.save_as(buf, enforce_file_format=True)
    else:
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()


def make_dicom(
    arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16, **attrs
) -> bytes:
    """A DICOM file (as bytes) holding ``arr`` with any extra header attributes."""
    ds = new_dataset()
    ds.set_pixel_data(arr, photometric_interpretation=photometric, bits_stored=bits_stored)
    for key, value in attrs.items():
        setattr(ds, key, value)
    return to_bytes(ds)


def ramp(high: int, shape=(20, 16)) -> np.ndarray:
    """A uint16 image rising evenly from 0 to ``high``, row by row."""
    return np.linspace(0, high, shape[0] * shape[1]).reshape(shape).round().astype(np.uint16)


def compressed_junk(syntax) -> bytes:
    """A header claiming compressed pixel data, followed by bytes no codec can read."""
    ds = new_dataset(syntax)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 20, 16, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"not a codestream " * 8])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)
