"""Which folders the dashboard may read as data roots, and how it shows their paths.

Threat rows 3, 4, 16 and 17: whoever opens the dashboard must not make the server read, list or
reveal its other folders. Real folders and real symlinks in ``tmp_path``.
"""

from __future__ import annotations

import os

import pytest

from bcp_core import settings
from bcp_core.cli import main
from bcp_core.data.datasource import check_data_root, data_root_signature, read_data_root
from bcp_core.data.roots import allowed_roots, display_path, hide_root, resolve_data_root
from bcp_core.errors import UserError

NOT_ALLOWED = "That folder is not an allowed data root: choose hospital or a folder inside it"


@pytest.fixture
def layout(tmp_path):
    """An allowed folder ``hospital`` (with a sub-folder) beside another dataset and a secret."""
    allowed = tmp_path / "srv" / "hospital"
    (allowed / "2024").mkdir(parents=True)
    other = tmp_path / "srv" / "other_study"
    other.mkdir()
    (other / "datacombined.xlsx").write_text("x")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("x")
    return allowed, other, secret


def test_the_allowed_folder_and_folders_inside_it_are_read(layout):
    allowed, _, _ = layout
    roots = allowed_roots([allowed])
    assert resolve_data_root("hospital", roots) == allowed.resolve()
    assert resolve_data_root("hospital/2024", roots) == allowed.resolve() / "2024"
    assert resolve_data_root(" hospital/./2024/ ", roots) == allowed.resolve() / "2024"


def test_absolute_paths_are_refused_alike_inside_and_outside_the_allowed_folder(layout):
    """Security row 14: accepting the allowed folder's real path told where it is."""
    allowed, other, _ = layout
    roots = allowed_roots([allowed])
    answers = set()
    for typed in (str(allowed), str(allowed / "2024"), str(other), "/nonexistent/x"):
        with pytest.raises(UserError) as refused:
            resolve_data_root(typed, roots)
        answers.add(str(refused.value))
    assert len(answers) == 1  # one sentence for all: nothing to learn from the difference


@pytest.mark.parametrize("typed", ["/", "/etc", "/root", "~", "~/", "../../etc", "etc", "."])
def test_server_folders_are_refused_in_one_sentence_listing_nothing(layout, typed):
    """Threat row 3: no server folder is read or listed."""
    allowed, _, _ = layout
    with pytest.raises(UserError) as info:
        resolve_data_root(typed, allowed_roots([allowed]))
    message = str(info.value)
    assert message.startswith(NOT_ALLOWED)
    assert message.count(". ") == 0 and message.endswith(".")
    for entry in ("bin", "usr", "passwd", "holds"):
        assert entry not in message


@pytest.mark.parametrize("typed", ["hospital/../other_study", "hospital/../../secret", "{other}"])
def test_another_dataset_on_the_server_is_refused(layout, typed):
    """Threat row 4: no other dataset can be matched (and its manifest exported)."""
    allowed, other, _ = layout
    with pytest.raises(UserError, match=NOT_ALLOWED):
        resolve_data_root(typed.format(other=other), allowed_roots([allowed]))


def test_a_symlink_inside_the_allowed_folder_that_leads_outside_is_refused(layout):
    allowed, _, secret = layout
    (allowed / "link").symlink_to(secret, target_is_directory=True)
    roots = allowed_roots([allowed])
    for typed in ("hospital/link", str(allowed / "link")):
        with pytest.raises(UserError, match=NOT_ALLOWED) as info:
            resolve_data_root(typed, roots)
        assert "id_rsa" not in str(info.value)


def test_a_symlink_into_the_allowed_folder_is_followed_and_allowed(layout, tmp_path):
    allowed, _, _ = layout
    (allowed / "latest").symlink_to(allowed / "2024", target_is_directory=True)
    got = resolve_data_root("hospital/latest", allowed_roots([allowed]))
    assert got == (allowed / "2024").resolve()


def test_an_allowed_folder_configured_through_a_symlink_keeps_its_name(layout, tmp_path):
    allowed, _, _ = layout
    (tmp_path / "data").symlink_to(allowed, target_is_directory=True)
    roots = allowed_roots([tmp_path / "data"])
    assert roots[0].label == "data" and roots[0].path == allowed.resolve()
    assert resolve_data_root("data/2024", roots) == allowed.resolve() / "2024"


def test_a_symlink_loop_is_refused_not_a_crash(layout):
    allowed, _, _ = layout
    (allowed / "loop").symlink_to(allowed / "loop")
    with pytest.raises(UserError):
        resolve_data_root("hospital/loop", allowed_roots([allowed]))


def test_several_allowed_folders_come_from_the_setting(layout, tmp_path, monkeypatch):
    allowed, other, secret = layout
    monkeypatch.setenv("BCP_ALLOWED_ROOTS", os.pathsep.join([str(allowed), str(other)]))
    roots = allowed_roots(settings.allowed_roots())
    assert [r.label for r in roots] == ["hospital", "other_study"]
    assert resolve_data_root("other_study", roots) == other.resolve()
    with pytest.raises(UserError, match="choose hospital or other_study"):
        resolve_data_root(str(secret), roots)


def test_by_default_only_the_configured_data_root_is_allowed(layout, monkeypatch):
    allowed, other, _ = layout
    monkeypatch.delenv("BCP_ALLOWED_ROOTS", raising=False)
    monkeypatch.setenv("BCP_DATA_ROOT", str(allowed))
    roots = allowed_roots(settings.allowed_roots())
    assert resolve_data_root("hospital/2024", roots) == allowed.resolve() / "2024"
    with pytest.raises(UserError, match=NOT_ALLOWED):
        resolve_data_root(str(other), roots)


@pytest.mark.parametrize("typed", ["hospital\0", "\0", "/etc\0/x"])
def test_a_nul_character_is_refused_in_a_sentence(layout, typed):
    """Threat row 16: a NUL byte gave a ValueError traceback."""
    allowed, _, _ = layout
    with pytest.raises(UserError, match="The data root contains a NUL character"):
        resolve_data_root(typed, allowed_roots([allowed]))
    with pytest.raises(UserError, match="The data root contains a NUL character"):
        check_data_root(typed)
    assert data_root_signature(typed) == ()


def test_paths_are_shown_below_their_allowed_folder_never_absolute(layout):
    """Threat row 17: the dashboard shows ``hospital/2024/a.jpg``, not the server's path."""
    allowed, other, _ = layout
    roots = allowed_roots([allowed])
    real = allowed.resolve()
    assert display_path(real, roots) == "hospital"
    assert display_path(real / "2024" / "a.jpg", roots) == "hospital/2024/a.jpg"
    assert display_path(other / "x.jpg", roots) == "x.jpg"
    assert display_path(str(real) + "-old/x.jpg", roots) == "x.jpg"
    message = f"Data root not found: {real / 'nope'}; choose the folder."
    assert (
        hide_root(message, real, roots) == "Data root not found: hospital/nope; choose the folder."
    )


def test_a_missing_workbook_lists_the_data_root_only_not_what_a_link_leads_to(layout):
    allowed, _, secret = layout
    (allowed / "notes.txt").write_text("x")
    (allowed / "link").symlink_to(secret, target_is_directory=True)
    root = resolve_data_root("hospital", allowed_roots([allowed]))
    with pytest.raises(UserError, match="it holds: 2024/, link/, notes.txt") as info:
        read_data_root(root)
    assert "id_rsa" not in str(info.value)


def test_the_cli_still_reads_any_folder(small_demo, layout, monkeypatch, capsys):
    """The CLI is run by the owner of the files: the dashboard's rule does not apply."""
    allowed, _, _ = layout
    monkeypatch.setenv("BCP_ALLOWED_ROOTS", str(allowed))
    root, _ = small_demo
    assert main(["match", "--data-root", str(root), "--json"]) == 0
    assert '"cancer_rows"' in capsys.readouterr().out
