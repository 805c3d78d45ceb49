"""`blcm patch` on any file: the lengths always sum to the size; bad input gets one clear line."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blcm.cli import main
from blcm.commands.patch import escape_patch, render_patches
from tests.conftest import shared_file

MODES = ["entropy", "monotonic", "both", "space", "static"]


def run_json(capsys, path: Path, model_dir: Path, *extra: str) -> dict:
    assert main(["patch", str(path), "--model", str(model_dir), "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def unescape_plain(text: str) -> bytes:
    """Inverse of the plain rendering: split on unescaped '|' and undo the escapes."""
    out, i, patches = bytearray(), 0, []
    simple = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t", "|": b"|"}
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1]
            if nxt == "x":
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            out += simple[nxt]
            i += 2
            continue
        if ch == "|":
            patches.append(bytes(out))
            out = bytearray()
        else:
            out += ch.encode("utf-8")
        i += 1
    patches.append(bytes(out))
    return patches


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("content", [b"", b"a", b"Hello, world. \xff\xfe not UTF-8 \xc3", "héllo wörld 你好".encode()])
def test_lengths_sum_to_file_size(tmp_path, capsys, tiny_entropy_model_dir, mode, content):
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    out = run_json(capsys, path, tiny_entropy_model_dir, "--mode", mode)
    assert sum(out["lengths"]) == len(content)
    assert all(n > 0 for n in out["lengths"])
    if mode in ("entropy", "monotonic", "both"):
        assert len(out["entropies"]) == len(content)
        assert all(0 <= h <= math.log(260) + 1e-3 for h in out["entropies"])
    else:
        assert out["entropies"] is None and out["threshold"] is None


@pytest.mark.parametrize("parts", [("bytes", "speech-en"), ("bytes", "images")])
def test_real_media_files(capsys, tiny_entropy_model_dir, parts):
    folder = shared_file(*parts)
    path = min(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".png"))
    size = path.stat().st_size
    out = run_json(capsys, path, tiny_entropy_model_dir, "--max-patch-length", "16")
    assert sum(out["lengths"]) == size
    assert max(out["lengths"]) <= 16


def test_target_patch_size_is_met(tmp_path, capsys, tiny_entropy_model_dir):
    path = tmp_path / "text.txt"
    path.write_bytes(b"The quick brown fox jumps over the lazy dog. " * 20)
    out = run_json(capsys, path, tiny_entropy_model_dir, "--target-patch-size", "5")
    mean = sum(out["lengths"]) / len(out["lengths"])
    assert abs(mean - 5) / 5 < 0.1
    # The same threshold, given explicitly, gives the same patches.
    again = run_json(capsys, path, tiny_entropy_model_dir, "--threshold", repr(out["threshold"]))
    assert again["lengths"] == out["lengths"]


def test_plain_text_output_round_trips(tmp_path, capsys, tiny_entropy_model_dir):
    data = b"pipes | and \\ backslashes\n\x00\x01 \xff end"
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    assert main(["patch", str(path), "--model", str(tiny_entropy_model_dir), "--color", "never"]) == 0
    captured = capsys.readouterr()
    patches = unescape_plain(captured.out.rstrip("\n"))
    assert b"".join(patches) == data
    assert f"{len(data)} bytes, {len(patches)} patches" in captured.err


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), max_size=8))
def test_render_is_unambiguous(patches):
    data = b"".join(patches)
    rendered = render_patches(data, [len(p) for p in patches], color=False)
    assert unescape_plain(rendered) == (patches or [b""])


def test_color_output_uses_ansi(tmp_path, capsys, tiny_entropy_model_dir):
    path = tmp_path / "x.txt"
    path.write_bytes(b"some text to colour")
    assert main(["patch", str(path), "--model", str(tiny_entropy_model_dir), "--color", "always"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[48;5;" in out and "\x1b[0m" in out
    assert escape_patch(b"a\nb", None) == "a\\nb"


def test_plot_writes_png(tmp_path, capsys, tiny_entropy_model_dir):
    path = tmp_path / "x.txt"
    path.write_bytes(b"plot me, please. " * 10)
    png = tmp_path / "fig.png"
    assert main(["patch", str(path), "--model", str(tiny_entropy_model_dir), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}"], "no such file"),
        (["{dir}"], "is a directory"),
        (["{file}", "--threshold", "6.0"], "no boundary"),
        (["{file}", "--threshold", "nan"], "finite number"),
        (["{file}", "--target-patch-size", "1000"], "out of reach"),
        (["{file}", "--mode", "space", "--threshold", "1"], "entropy modes"),
        (["{file}", "--mode", "static", "--patch-size", "0"], "patch_size"),
        (["{file}", "--model", "{dir}"], "is not an exported EntropyModel"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, tiny_entropy_model_dir, args, message):
    (tmp_path / "file.txt").write_bytes(b"some text for the model to score")
    values = {"missing": tmp_path / "nope.txt", "dir": tmp_path, "file": tmp_path / "file.txt"}
    argv = ["patch", *(a.format(**values) for a in args)]
    if "--model" not in argv:
        argv += ["--model", str(tiny_entropy_model_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_unreadable_file(tmp_path, capsys, monkeypatch, tiny_entropy_model_dir):
    path = tmp_path / "secret.txt"
    path.write_bytes(b"x")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert main(["patch", str(path), "--model", str(tiny_entropy_model_dir)]) == 2
    assert "cannot read (Permission denied)" in capsys.readouterr().err


def test_a_bad_model_in_the_environment_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLCM_ENTROPY_MODEL", str(tmp_path / "gone"))
    (tmp_path / "f.txt").write_bytes(b"abc")
    assert main(["patch", "f.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "gone") in err and "Traceback" not in err
    assert main(["patch", "f.txt", "--mode", "space"]) == 0  # no model needed, none read


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("patch", "data", "blcm fit --config configs/entropy-tiny.yaml"):
        assert word in out
