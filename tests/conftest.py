"""Shared fixtures: reference checkpoints are built once per test session."""

from __future__ import annotations

import signal

import pytest

from tests.reference import REAL_12B_TEXT, SMALL_VOCAB_IDS, build_checkpoint

# A test run started in the background by a shell without job control inherits SIGINT *ignored*, and so
# would every gemma4 process the tests start: the Ctrl-C tests would hang. With a handler here instead,
# each child starts with the default disposition (a handler, unlike "ignored", is reset by exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """The tiny random reference checkpoint (float32, HF layout, stand-in tokenizer and chat template)."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny"), with_processor=True)


@pytest.fixture(scope="session")
def real_geometry_ckpt(tmp_path_factory):
    """Two layers of the real 12B sizes (one sliding, one full), small vocabulary."""
    return build_checkpoint(
        tmp_path_factory.mktemp("real12b"),
        text=REAL_12B_TEXT,
        vision={},
        top=SMALL_VOCAB_IDS,
        seed=1,
    )
