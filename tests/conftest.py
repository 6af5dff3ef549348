"""Settings every test needs, however pytest was launched."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A shell's background job (`cmd &` in a script, nohup) starts with SIGINT
    # ignored, and an ignored signal stays ignored across exec: every `kfs` the
    # tests start would then shrug off the Ctrl-C they send it. Python's own
    # handler here makes the children start with the default disposition again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
