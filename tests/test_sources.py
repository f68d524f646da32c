"""Model sources: a named model without the hub or the package registry is one clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from forgetfilter import sources
from forgetfilter.errors import ConfigError


def test_no_hub_and_no_registry_is_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path))
    monkeypatch.setenv(sources.OFFLINE_ENV, "1")

    def refuse(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(sources.subprocess, "run", refuse)
    with pytest.raises(ConfigError) as info:
        sources.resolve_named("smollm2-135m-instruct")
    message = str(info.value)
    assert "hub is not reachable" in message and "No matching distribution" in message
    assert "\n" not in message


def test_a_named_model_is_only_the_hub_when_the_hub_answers(monkeypatch) -> None:
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "_probe_hub", lambda timeout: True)
    assert sources.resolve_named("SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not sources.hub_reachable()
