"""``benchmarks/quality.py --jobs``: the environment of its worker processes."""

import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


@pytest.fixture
def quality(monkeypatch):
    if not os.path.isdir(BENCHMARKS):
        pytest.skip("benchmarks/ is not beside the tests")
    monkeypatch.syspath_prepend(BENCHMARKS)
    import quality

    yield quality
    sys.modules.pop("quality", None)


def test_worker_environment_sizes_thread_pools(quality):
    env = quality.worker_environment(1, {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    for name in quality.THREAD_VARIABLES:
        assert env[name] == "1"
    assert "OPENBLAS_NUM_THREADS" in quality.THREAD_VARIABLES
    assert "OMP_NUM_THREADS" in quality.THREAD_VARIABLES


def test_worker_environment_keeps_what_the_caller_set(quality):
    env = quality.worker_environment(3, {"OMP_NUM_THREADS": "8"})
    assert env["OMP_NUM_THREADS"] == "8"
    assert env["OPENBLAS_NUM_THREADS"] == "3"


def test_worker_environment_leaves_the_given_mapping(quality):
    given = {"A": "1"}
    quality.worker_environment(2, given)
    assert given == {"A": "1"}
