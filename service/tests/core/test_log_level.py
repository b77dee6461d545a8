from __future__ import annotations

import logging

import pytest

from app.core.logging import configure_logging


def test_the_root_level_is_the_validated_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOG_LEVEL is read once, by the settings; configure_logging must not read it again."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    try:
        configure_logging("WARNING")
        assert root.level == logging.WARNING
        assert logging.getLogger("app.services").level == logging.WARNING
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
