"""tools/catalogues.py: the .mo reader, which messages are kept, the split and the held-out catalogue, on wheels
built here (no download)."""

from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import catalogues  # noqa: E402

from blcm.data.corpus import in_valid_split  # noqa: E402
from primitives.export import file_sha256  # noqa: E402


def mo_bytes(entries: dict[str, str], order: str = "<") -> bytes:
    """A GNU .mo catalogue of ``entries`` (the layout gettext's msgfmt writes, less the hash table)."""
    keys = sorted(entries)
    originals = [k.encode() for k in keys]
    translations = [entries[k].encode() for k in keys]
    start = 28 + 16 * len(keys)  # header (7 words) + two tables of (length, offset)
    blobs, tables, offset = b"", [], start
    for group in (originals, translations):
        table = []
        for text in group:
            table.append((len(text), offset))
            blobs += text + b"\0"
            offset += len(text) + 1
        tables.append(table)
    header = struct.pack(order + "7I", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
    body = b"".join(struct.pack(order + "2I", *pair) for table in tables for pair in table)
    return header + body + blobs


def write_wheel(path: Path, catalogues_by_locale: dict[str, dict[str, str]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for locale, entries in catalogues_by_locale.items():
            archive.writestr(f"pkg/locale/{locale}/LC_MESSAGES/pkg.mo", mo_bytes(entries))
        archive.writestr("pkg/__init__.py", "")
    return path


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=40).filter(lambda t: "\0" not in t),
                       st.text(max_size=40).filter(lambda t: "\0" not in t), max_size=12),
       st.sampled_from("<>"))
def test_mo_entries_read_back_what_was_written(entries, order):
    assert dict(catalogues.mo_entries(mo_bytes(entries, order))) == entries


def test_mo_entries_refuse_other_bytes():
    with pytest.raises(ValueError, match="not a GNU .mo"):
        list(catalogues.mo_entries(b"PK\x03\x04" + bytes(40)))


@pytest.mark.parametrize(("english", "translation", "kept"), [
    ("Delete the selected items", "Supprimer les éléments sélectionnés", True),
    ("Save", "Enregistrer", False),  # fewer than three words
    ("Delete %(count)s selected items", "Supprimer %(count)s éléments", False),  # a placeholder
    ("Click <b>here</b> to continue", "Cliquez <b>ici</b> pour continuer", False),  # markup
    ("Open the &File menu", "Ouvrir le menu &Fichier", False),  # an accelerator
    ("Show all the files", "Show all the files", False),  # untranslated
    ("One line\nand another line", "Une ligne\net une autre", False),
    ("Export the whole report", "é" * 65, False),  # longer than a unit
])
def test_plain_pairs(english, translation, kept):
    assert catalogues.plain_pair(english, translation) is kept


def test_messages_drop_contexts_and_plural_forms(tmp_path):
    path = write_wheel(tmp_path / "w.whl", {"fr": {"menu\x04Open the file now": "Ouvrir le fichier",
                                                   "one file\x00many files": "un\x00plusieurs",
                                                   "": "Content-Type: text/plain; charset=UTF-8\n"}})
    assert list(catalogues.messages(path)) == [("fr", "Open the file now", "Ouvrir le fichier")]


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Two training wheels and a held-out one in a cache folder, pinned by their real hashes."""
    shared = "Remove this item now"
    made = {
        "alpha": ("train", {"fr": {shared: "Retirer cet élément", **{f"Open file number {i}": f"Ouvrir {i}"
                                                                      for i in range(200)}},
                            "de": {shared: "Dieses Element entfernen"}}),
        "beta": ("train", {"fr": {"Close the window please": "Fermez la fenêtre"}}),
        "gamma": ("held_out", {"fr": {shared: "Supprimer cet élément", "Build the whole manual": "Construire le "
                                      "manuel"}, "es": {"Build the whole manual": "Construir el manual"}}),
    }
    pins = {}
    for name, (role, content) in made.items():
        path = write_wheel(tmp_path / f"{name}-1.0-py3-none-any.whl", content)
        pins[name] = ("1.0", file_sha256(path), role)
    monkeypatch.setattr(catalogues, "WHEELS", pins)
    return tmp_path


def test_split_is_disjoint_and_complete(wheels):
    train, valid = catalogues.catalogue_pairs("train", wheels), catalogues.catalogue_pairs("valid", wheels)
    assert {a for a, _ in train}.isdisjoint({a for a, _ in valid})
    assert len(train) + len(valid) == 203  # 200 numbered + the shared one twice (fr, de) + beta's
    english = {a.decode() for a, _ in train + valid}
    assert {a.decode() for a, _ in valid} == {m for m in english if in_valid_split(m, catalogues.VALID_PERCENT)}
    assert valid
    with pytest.raises(ValueError, match="split"):
        catalogues.catalogue_pairs("test", wheels)


def test_held_out_records_leave_trained_messages_out(wheels):
    assert catalogues.held_out_records(wheels) == [
        {"en": "Build the whole manual", "fr": "Construire le manuel", "es": "Construir el manual"}]


def test_a_wheel_with_another_hash_is_refused(wheels):
    (wheels / "beta-1.0-py3-none-any.whl").write_bytes(b"changed")
    with pytest.raises(SystemExit, match="SHA-256"):
        catalogues.catalogue_pairs("train", wheels)
