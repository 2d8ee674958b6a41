"""The one-pass image index and path resolution."""

from __future__ import annotations

import os

import pytest

from bcp_core.data import index as image_index
from bcp_core.data.keys import normalise_file_name
from bcp_core.errors import UserError
from tests.conftest import write_jpeg


def test_index_walks_the_tree_once(tmp_path, monkeypatch):
    for i in range(3):
        write_jpeg(tmp_path / f"batch_{i}" / f"F{i}.jpg")
    calls = []
    real = os.scandir
    monkeypatch.setattr(image_index.os, "scandir", lambda p: calls.append(p) or real(p))
    index = image_index.build_index(tmp_path)
    assert index.n_files == 3
    assert len(calls) == 4  # the root and its three folders, each read once
    for i in range(3):
        assert index.resolve(f"F{i}")[0] == f"batch_{i}/F{i}.jpg"
    assert len(calls) == 4  # lookups read nothing


def test_index_ignores_non_images_and_hidden_folders(tmp_path):
    write_jpeg(tmp_path / "a" / "F1.JPG")
    (tmp_path / "a" / "notes.txt").write_text("x")
    write_jpeg(tmp_path / ".trash" / "F2.jpg")
    index = image_index.build_index(tmp_path)
    assert index.all_relpaths() == {"a/F1.JPG"}


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("C:\\Users\\x\\cancer\\Sub B\\FILE0001.jpg", "sub_b/FILE0001.jpg"),
        ("C:\\Users\\x\\CANCER\\sub-a\\FILE0001.jpg", "sub_a/FILE0001.jpg"),
        ("/mnt/share/cancer/sub_a/file0001.jpg", "sub_a/FILE0001.jpg"),
    ],
)
def test_windows_and_posix_hints_break_ties(tmp_path, hint, expected):
    write_jpeg(tmp_path / "sub_a" / "FILE0001.jpg")
    write_jpeg(tmp_path / "sub_b" / "FILE0001.jpg")
    index = image_index.build_index(tmp_path)
    assert index.resolve("FILE0001.jpg", hint) == (expected, 2)


def test_unresolvable_tie_returns_none_and_the_count(tmp_path):
    write_jpeg(tmp_path / "a" / "F.jpg")
    write_jpeg(tmp_path / "b" / "F.jpg")
    assert image_index.build_index(tmp_path).resolve("F", "D:\\other\\F.jpg") == (None, 2)


def test_non_ascii_names(tmp_path):
    write_jpeg(tmp_path / "Mamografi Verilerı" / "Kanser Ç" / "GÖRÜNTÜ1.jpg")
    index = image_index.build_index(tmp_path)
    expected = "Mamografi Verilerı/Kanser Ç/GÖRÜNTÜ1.jpg"
    assert index.resolve("GÖRÜNTÜ1.jpg")[0] == expected
    assert index.resolve("görüntü1")[0] == expected  # upper() folds non-ASCII letters too


@pytest.mark.parametrize(
    ("name", "key", "join_key"),
    [
        (" file0004.JPG ", "FILE0004", "FILE0004"),
        ("görüntü1.jpeg", "GÖRÜNTÜ1", "GÖRÜNTÜ1"),
        ("Go\u0308ru\u0308ntu\u03081.jpg", "GÖRÜNTÜ1", "GÖRÜNTÜ1"),  # decomposed (macOS)
        ("1.2.840.5", "1.2.840.5", "1.2.840.5"),
        ("FILE0004 .jpg", "FILE0004", "FILE0004 "),  # the lookup drops the inner space too
    ],
)
def test_stem_key_is_the_join_file_name_rule(name, key, join_key):
    assert image_index.stem_key(name) == key
    assert normalise_file_name(name)[0] == join_key


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="Image folder not found"):
        image_index.build_index(tmp_path / "nope")


def test_find_class_folders_tolerates_spelling(tmp_path):
    (tmp_path / "non cancer").mkdir()
    (tmp_path / "CANCER").mkdir()
    (tmp_path / "other").mkdir()
    cancer, non_cancer = image_index.find_class_folders(tmp_path)
    assert (cancer.name, non_cancer.name) == ("CANCER", "non cancer")
