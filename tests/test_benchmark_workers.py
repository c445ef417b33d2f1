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


def test_workers_start_with_sized_thread_pools(quality, monkeypatch, tmp_path):
    """``run_seeds_in_workers`` starts each worker with the environment of
    :func:`worker_environment` for its share of the CPUs."""
    import argparse
    import json

    for name in quality.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(quality.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(quality.time, "sleep", lambda s: None)
    started = []

    class Worker:
        returncode = 0

        def __init__(self, command, stdout=None, stderr=None, env=None):
            out = command[command.index("--out") + 1]
            cpus = command[command.index("--cpus") + 1]
            started.append((cpus, env))
            payload = {
                "config": {"epochs": 1},
                "train_seconds": [1.0],
                "runs": {s: [{"seed": out}] for s in quality.SAMPLINGS},
                "train_vs_held_out_runs": [{}],
            }
            with open(out, "w") as f:
                json.dump(payload, f)

        def poll(self):
            return 0

        def kill(self):
            pass

    import subprocess

    monkeypatch.setattr(subprocess, "Popen", Worker)
    monkeypatch.setattr(quality.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    args = argparse.Namespace(jobs=2, seeds=[0, 1], samplings=["prior"])
    done = quality.run_seeds_in_workers(args, ["--jobs", "2", "--seeds", "0", "1"])
    assert len(done) == 2
    assert all(list(results) == ["prior"] for *_, results, _ in done)
    assert sorted(cpus for cpus, _ in started) == ["0", "1"]
    for _, env in started:
        assert env is not None
        for name in quality.THREAD_VARIABLES:
            assert env[name] == "1"


def test_band_table_prints_either_measure_per_sampling(quality):
    """``quality.py``'s band tables: each sampling's shares and the training
    streamlines' of the measure asked for, the allowed difference only with
    the standard errors (``band_precision``)."""

    def result(precision, recall):
        lists = {
            "band_precision_per_band": {"AF_L": precision},
            "band_precision_train_per_band": {"AF_L": [0.9, 0.9]},
            "band_recall_per_band": {"AF_L": recall},
            "band_recall_train_per_band": {"AF_L": [0.8, 0.7]},
        }
        return {"per_bundle_list_mean": lists}

    summary = {
        "bank": result([0.5, 0.6], [0.1, 0.2]),
        "prior": result([0.3, 0.4], [0.3, None]),
    }

    def rows(text):
        return [[c.strip() for c in line.split("|")] for line in text.splitlines()[2:]]

    assert rows(quality.band_table(summary, metric="band_recall")) == [
        ["AF_L", "bank", "0.100", "0.200"],
        ["AF_L", "prior", "0.300", "n/a"],
        ["AF_L", "training streamlines", "0.800", "0.700"],
    ]
    precision = rows(quality.band_table(summary, {"AF_L": [0.01, 0.1]}))
    assert precision[0] == ["AF_L", "bank", "0.500", "0.600"]
    assert precision[2] == ["AF_L", "training streamlines", "0.900", "0.900"]
    assert precision[-1] == ["AF_L", "lowest difference allowed", "-0.100", "-0.200"]


def test_compare_quality_names_each_bundles_lowest_recall_band(quality):
    import compare_quality

    lists = {
        "band_recall_per_band": {"AF_L": [0.5, 0.2, None], "UF_L": [None, 0.4, 0.1]},
        "band_recall_train_per_band": {
            "AF_L": [0.6, 0.5, 0.5],
            "UF_L": [0.3, 0.0, 0.2],
        },
    }
    payload = {"summary": {"prior": {"per_bundle_list_mean": lists}}}
    lowest = compare_quality.lowest_recall_bands(payload, "prior")
    # AF_L: band 3 has no generated share (-inf, as band_gaps marks it);
    # UF_L: band 2's training share is 0 (no value), band 1's generated
    # share is missing
    assert lowest["AF_L"][0] == 3 and lowest["AF_L"][1] == float("-inf")
    assert lowest["UF_L"][0] == 1 and lowest["UF_L"][1] == float("-inf")
    lists["band_recall_per_band"] = {"AF_L": [0.5, 0.2, 0.5], "UF_L": [0.3, 0.4, 0.1]}
    lowest = compare_quality.lowest_recall_bands(payload, "prior")
    assert lowest["AF_L"] == (2, pytest.approx(-0.3))
    assert lowest["UF_L"] == (3, pytest.approx(-0.1))
    older = {"summary": {"prior": {"per_bundle_list_mean": {}}}}
    assert compare_quality.lowest_recall_bands(older, "prior") is None


def test_per_seed_settings_hold_prior_spread_and_the_common_samplings(quality):
    """``compare_quality.py --per_seed`` pools runs of one setting: a run
    drawn at another prior_spread is another setting (files from before it
    was recorded drew at 1), and a run of both samplings pools with one of
    prior sampling alone when the prior targets agree."""
    import compare_quality

    targets = {
        "bank": {"novelty_ratio": [">=", 0.85]},
        "prior": {"novelty_ratio": [">=", 0.9]},
    }
    both = {"config": {"seed": 0}, "targets": targets}
    prior = {"config": {"seed": 1}, "targets": {"prior": targets["prior"]}}
    narrow = {**prior, "prior_spread": 0.7}
    assert compare_quality._setting(both) != compare_quality._setting(prior)
    assert compare_quality._setting(both, {"prior"}) == compare_quality._setting(
        {**prior, "prior_spread": 1.0}, {"prior"}
    )
    assert compare_quality._setting(narrow, {"prior"}) != compare_quality._setting(
        prior, {"prior"}
    )
