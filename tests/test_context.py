import os
from pathlib import Path

import pytest

from recursa import ContextError, load_context


def test_plain_text_metadata_and_preview():
    ctx = load_context("hello " * 200)
    assert ctx.value == "hello " * 200
    assert ctx.total_chars == 1200
    assert ctx.approx_tokens == 300
    text = ctx.describe()
    assert "1,200 characters" in text
    assert "about 300 tokens" in text
    assert "Preview (first 500 characters)" in text
    assert "hello hello" in text


def test_bytes_are_decoded_and_invalid_utf8_is_reported():
    ctx = load_context(b"caf\xc3\xa9 \xff\xfe ok")
    assert ctx.value.startswith("café")
    assert "\ufffd" in ctx.value
    assert any("2 invalid UTF-8" in w for w in ctx.warnings)


def test_list_and_dict_contexts_list_part_lengths():
    ctx = load_context(["aa", "bbbb"])
    assert ctx.parts == (("0", 2), ("1", 4))
    assert "Parts: 2" in ctx.describe()
    d = load_context({"a.txt": "xyz", "b.txt": "12"})
    assert "a.txt: 3" in d.describe()


def test_only_the_first_100_parts_are_listed():
    ctx = load_context([f"part {i}" for i in range(150)])
    text = ctx.describe()
    assert "99: " in text
    assert "(50 more)" in text
    assert ", 100: " not in text


def test_json_items_are_data_and_other_items_are_rejected():
    assert load_context(["ok", 3]).value == ["ok", 3]  # JSON data (tests/test_context_json.py)
    with pytest.raises(ContextError, match=r"context\[1\] is a set"):
        load_context(["ok", {3}])


def test_file_and_missing_file(tmp_path: Path):
    f = tmp_path / "notes.txt"
    f.write_text("the answer is 7", encoding="utf-8")
    assert load_context(f).value == "the answer is 7"
    with pytest.raises(ContextError, match="no such file or folder"):
        load_context(tmp_path / "missing.txt")


def test_binary_file_is_refused(tmp_path: Path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ContextError, match="binary"):
        load_context(f)


def test_folder_honours_gitignore_skips_git_and_binary(tmp_path: Path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("secret")
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\n")
    (tmp_path / "app.log").write_text("noise")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.txt").write_text("generated")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('hi')\n")
    (tmp_path / "src" / ".gitignore").write_text("local_*.py\n")
    (tmp_path / "src" / "local_settings.py").write_text("X = 1")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\x00\x00" + bytes(100))
    ctx = load_context(tmp_path)
    assert ctx.kind == "folder"
    assert set(ctx.value) == {".gitignore", "src/.gitignore", "src/main.py"}
    assert any("binary" in w for w in ctx.warnings)
    assert any(".gitignore" in w for w in ctx.warnings)


def test_empty_inputs_are_errors(tmp_path: Path):
    with pytest.raises(ContextError, match="empty"):
        load_context("")
    with pytest.raises(ContextError, match="no readable text"):
        load_context(tmp_path)
    with pytest.raises(ContextError, match="no context"):
        load_context()


def test_unreadable_folder_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Tests run as root, where permission bits deny nothing; make the access check say no.
    (tmp_path / "a.txt").write_text("x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ContextError, match="permission denied"):
        load_context(tmp_path)


def test_several_sources_make_a_list_with_named_parts(tmp_path: Path):
    f = tmp_path / "a.txt"
    f.write_text("alpha")
    ctx = load_context(f, "beta text")
    assert ctx.multi
    assert ctx.value == ["alpha", "beta text"]
    assert "context_0 .. context_1" in ctx.describe()


def test_folder_skips_special_files_and_links_leading_outside(tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret from elsewhere")
    root = tmp_path / "proj"
    root.mkdir()
    (root / "a.txt").write_text("inside")
    (root / "link_in.txt").symlink_to(root / "a.txt")
    (root / "link_out.txt").symlink_to(outside)
    (root / "zero").symlink_to("/dev/zero")
    os.mkfifo(root / "pipe")
    (root / "link_pipe").symlink_to(root / "pipe")
    ctx = load_context(root)  # would hang on the FIFO, or fill memory from /dev/zero
    assert ctx.value == {"a.txt": "inside", "link_in.txt": "inside"}
    assert any("2 link(s) to files outside" in w for w in ctx.warnings)
    assert any("2 special file(s)" in w for w in ctx.warnings)


def test_folder_names_the_links_to_folders_it_does_not_follow(tmp_path: Path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("secret")
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("inside")
    (root / "out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "loop").symlink_to(root / "sub", target_is_directory=True)
    ctx = load_context(root)
    assert ctx.value == {"sub/a.txt": "inside"}
    assert any("2 link(s) to folders" in w and "loop, out" in w for w in ctx.warnings)
