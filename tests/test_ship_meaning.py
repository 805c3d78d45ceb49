"""tools/ship_meaning.py's recipe: the phases run in order, a finished one is skipped, an interrupted one resumed for
the minutes it has left; the decoder's stage refuses to start without an encoder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import ship_meaning  # noqa: E402


def test_the_recipe_skips_finished_phases_and_resumes_an_interrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(ship_meaning, "RUNS", tmp_path)
    monkeypatch.setattr(ship_meaning, "RECIPE", (("one", ["--minutes", "10"]),
                                                 ("two", ["--start-from", "one", "--minutes", "20", "--noise", "0.25"]),
                                                 ("three", ["--start-from", "two", "--minutes", "5"])))
    for name, elapsed in (("one", 10.2 * 60), ("two", 7.5 * 60)):
        (tmp_path / name).mkdir()
        torch.save({"elapsed": elapsed}, tmp_path / name / "last.pt")
    calls = []
    monkeypatch.setattr(ship_meaning, "main", lambda argv: calls.append(argv) or 0)
    assert ship_meaning.cmd_recipe(type("Args", (), {"no_ship": True})()) == 0
    assert calls == [["train", "--name", "two", "--start-from", "one", "--minutes", "12.5", "--noise", "0.25",
                      "--resume"],
                     ["train", "--name", "three", "--start-from", "two", "--minutes", "5"],
                     ["package", "--name", "three", "--no-ship"]]


def test_the_recipe_ends_in_the_shipped_decoder_stage():
    names = [name for name, _ in ship_meaning.RECIPE]
    for (previous, _), (_, phase) in zip(ship_meaning.RECIPE, ship_meaning.RECIPE[1:], strict=False):
        assert phase[phase.index("--start-from") + 1] == previous  # each phase starts from the one before
    assert "--frozen-encoder" in ship_meaning.RECIPE[-1][1] and len(set(names)) == len(names)


def test_the_decoder_stage_needs_an_encoder(monkeypatch, tmp_path):
    monkeypatch.setattr(ship_meaning, "RUNS", tmp_path)
    monkeypatch.setattr(ship_meaning, "SHARED", tmp_path)  # present: the check under test comes first
    monkeypatch.setattr(ship_meaning, "build", lambda args: (None, torch.nn.Linear(1, 1)))
    with pytest.raises(SystemExit, match="--start-from"):
        ship_meaning.main(["train", "--name", "x", "--frozen-encoder"])
