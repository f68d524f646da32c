"""One rule for claiming an output directory (`claims.claim`), used by run, experiment and demo."""

import json

import pytest

from forgetfilter import claims, io
from forgetfilter.errors import ConfigError


def _claim(out, want, force=False, **kw):
    claims.claim(
        out,
        "marker.json",
        want,
        force=force,
        what="a thing",
        has_work=lambda: (out / "work").exists(),
        discard=lambda: io.clear_dir(out),
        **kw,
    )


def test_the_same_configuration_continues_and_another_is_refused_unless_forced(tmp_path):
    _claim(tmp_path, {"a": 1, "b": 2})
    (tmp_path / "work").write_text("x")
    _claim(tmp_path, {"a": 1, "b": 2})
    assert (tmp_path / "work").exists()
    with pytest.raises(
        ConfigError, match=r"holds a thing made with another configuration \(changed: b\)"
    ):
        _claim(tmp_path, {"a": 1, "b": 3})
    assert (tmp_path / "work").exists()
    _claim(tmp_path, {"a": 1, "b": 3}, force=True)
    assert not (tmp_path / "work").exists()
    assert json.loads((tmp_path / "marker.json").read_text()) == {"a": 1, "b": 3}


def test_a_directory_without_work_is_taken_over_and_cleared(tmp_path):
    _claim(tmp_path, {"a": 1})
    (tmp_path / "half-written").write_text("x")  # not work: nothing worth keeping
    _claim(tmp_path, {"a": 2})
    assert not (tmp_path / "half-written").exists()


def test_work_without_a_marker_is_refused_unless_forced(tmp_path):
    (tmp_path / "work").write_text("x")
    with pytest.raises(ConfigError, match="recorded no configuration"):
        _claim(tmp_path, {"a": 1})
    _claim(tmp_path, {"a": 1}, force=True)
    assert not (tmp_path / "work").exists()


def test_a_configuration_the_same_in_substance_rewrites_the_marker(tmp_path):
    same = lambda have, want: have["a"] == want["a"]  # noqa: E731 (e.g. a file named by another path)
    _claim(tmp_path, {"a": 1, "path": "/x"})
    (tmp_path / "work").write_text("x")
    _claim(tmp_path, {"a": 1, "path": "/y"}, same=same)
    assert (tmp_path / "work").exists()
    assert json.loads((tmp_path / "marker.json").read_text())["path"] == "/y"
