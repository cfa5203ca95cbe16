"""Faults injected into pivq: a full or read-only disk during a write, corrupted artefacts, SIGKILL in the middle of a
stage, a killed Snakemake, two Snakemake runs at once. Nothing may be lost or used silently, every error must name
its file, and a rerun must give the bytes an uninterrupted run gives (docs/faults.md).

Kills at function level run a stage in a child process that SIGKILLs itself at a chosen rename (the worst moment:
the output is fully written under its temporary name, not yet renamed), so they are deterministic and cheap.
The workflow-level tests run Snakemake on a shrunken embedded configuration (tests/workflow_support.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_support import SNAKEMAKE, check, copy_workflow, env, mtimes, need, run, tiny_params, write_params

from pivq import stages
from pivq.data import PreparedDataset, prepare_toyfaces, write_prepared, write_preview
from pivq.encode import load_codes, save_codes
from pivq.io import atomic_path, remove_stale_temporaries, write_json
from pivq.logs import to_file
from pivq.model import ModelConfig
from pivq.model.checkpoint import load_model, read_checkpoint, save_atomic, save_model
from pivq.sample import load_sample_images, save_shard
from pivq.train import train

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------- helpers


def _flip_byte(path: Path, at: float = 0.6) -> None:
    """Flip one byte in the middle of a file: same size, different content."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _visible_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------- failed writes
# Every writer of a pipeline output goes through pivq.io.atomic_path; each is tried here.


def _prepared(path: Path) -> None:
    n = 4
    write_prepared(path.parent, "t", np.zeros((n, 8, 8, 3), np.uint8), n, 8, pd.DataFrame({"c": ["a"] * n}),
                   ["train"] * n, [], ["c"], {}, {})


WRITERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    # name: (file name written, writer)
    "metrics json": ("fidelity.json", lambda p: write_json(p, {"fid": 1.0})),
    "checkpoint": ("latest.pt", lambda p: save_atomic({"w": torch.zeros(50_000)}, p)),
    "sample shard": ("shard-0.npz", lambda p: save_shard(p, {"images": np.zeros((64, 16, 16, 3), np.uint8)})),
    "codes": ("codes.npz", lambda p: save_codes(p, np.zeros((500, 16), np.int64), np.array(["train"] * 500), 32)),
    "prepared images": ("images.npy", _prepared),
    "png": ("preview.png", lambda p: write_preview(p, np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3),
                                                                                        dtype=np.uint8))),
}


@pytest.fixture
def disk_full(monkeypatch) -> None:
    """Every temporary file atomic_path hands out is a link to /dev/full: the kernel answers ENOSPC to the write."""
    import pivq.io

    real_mkstemp = pivq.io.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return fd, name

    monkeypatch.setattr(pivq.io.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_disk_full_names_the_output_and_leaves_no_file(writer, disk_full, tmp_path):
    name, write = WRITERS[writer]
    out = tmp_path / "out" / name
    with pytest.raises(OSError) as err:
        write(out)
    assert err.value.errno == errno.ENOSPC, err.value
    assert str(out) in str(err.value)
    assert not out.exists() and not out.is_symlink()
    assert _leftovers(out.parent) == []  # no temporary file either


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` (root only); skips the test where mounting is not allowed."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("writer", ["metrics json", "checkpoint", "prepared images"])
@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_real_read_only_or_full_file_system(fault, writer, tmp_path):
    """The same on a real file system: a read-only tmpfs, and a 64 KiB one that fills up mid-write (root only)."""
    options = "ro,size=1m" if fault == "read-only" else "size=64k"
    name, write = WRITERS[writer]
    with _tmpfs(tmp_path / "mnt", options) as mnt:
        out = mnt / name  # straight in the mount: the temporary file cannot even be created when read-only
        if fault == "full":
            big = {"metrics json": lambda p: write_json(p, {"x": list(range(100_000))}),
                   "checkpoint": WRITERS["checkpoint"][1],
                   "prepared images": lambda p: write_prepared(
                       p.parent, "t", np.zeros((100, 32, 32, 3), np.uint8), 100, 32,
                       pd.DataFrame({"c": ["a"] * 100}), ["train"] * 100, [], ["c"], {}, {})}
            write = big[writer]
        with pytest.raises(OSError) as err:
            write(out)
        assert err.value.errno == (errno.EROFS if fault == "read-only" else errno.ENOSPC), err.value
        # a prepared dataset's first write is the removal of a stale manifest.json: that path is named
        culprit = mnt if writer == "prepared images" else out
        assert str(culprit) in str(err.value)
        assert _leftovers(mnt) == []


# ------------------------------------------------------------------------------------- corrupted artefacts


@pytest.fixture
def dataset_copy(toyfaces16, tmp_path) -> Path:
    out = tmp_path / "toyfaces16"
    out.mkdir()
    for f in toyfaces16.iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.mark.parametrize("damage", ["truncated", "trailing bytes", "no manifest"])
def test_prepared_dataset_cheap_damage_is_caught_on_open(dataset_copy, damage):
    images = dataset_copy / "images.npy"
    if damage == "truncated":
        _truncate(images)
        culprit = str(images)
    elif damage == "trailing bytes":
        images.write_bytes(images.read_bytes() + b"\0" * 10)
        culprit = str(images)
    else:  # an interrupted preparation: the manifest is written last
        (dataset_copy / "manifest.json").unlink()
        culprit = "manifest.json"
    with pytest.raises((ValueError, FileNotFoundError), match=culprit):
        PreparedDataset(dataset_copy)


@pytest.mark.parametrize("damage", ["flipped byte", "wrong hash in manifest"])
@pytest.mark.parametrize("file", ["images.npy", "attributes.csv"])
def test_prepared_dataset_hash_mismatch_stops_every_stage(dataset_copy, damage, file, model_file, tmp_path):
    """A same-size corruption passes the cheap checks on open; the sha256 check that every stage does catches it."""
    if damage == "flipped byte":
        _flip_byte(dataset_copy / file, at=0.9)
    else:
        manifest = json.loads((dataset_copy / "manifest.json").read_text())
        manifest["files"][file] = "0" * 64
        (dataset_copy / "manifest.json").write_text(json.dumps(manifest))
    if file == "images.npy":
        PreparedDataset(dataset_copy)  # cheap open: size, shape, dtype all fine
    with pytest.raises(ValueError, match=f"{dataset_copy / file} does not match the sha256"):
        PreparedDataset(dataset_copy, verify=True)
    with pytest.raises(ValueError, match=str(dataset_copy / file)):
        stages.encode_dataset(model_file, dataset_copy, tmp_path / "codes.npz")
    assert not (tmp_path / "codes.npz").exists()


@pytest.fixture
def model_file(make_model, tmp_path) -> Path:
    path = tmp_path / "model.pt"
    model = make_model()
    save_model(path, model, model, meta={})
    return path


@pytest.mark.parametrize("damage", [_truncate, _flip_byte], ids=["truncated", "flipped byte"])
def test_corrupt_checkpoint_is_refused_by_name(model_file, damage):
    """torch.load never checks the zip records' CRC-32: a flipped bit in the weights would load silently."""
    load_model(model_file)
    damage(model_file)
    with pytest.raises(ValueError, match=str(model_file)):
        load_model(model_file)


class _Payload:
    """Not a tensor: unpickling it would run this module's code."""


def test_checkpoints_load_weights_only_and_another_preset_is_named(model_file, params, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "pivq-model-v1", "object": _Payload()}, foreign)
    with pytest.raises(ValueError, match=str(foreign)) as err:
        load_model(foreign)
    assert "weights_only" in str(err.value) or "Unsupported global" in str(err.value), err.value
    toy32 = ModelConfig.from_dict(params["models"]["toy32"], quantizer="matching").to_dict()
    with pytest.raises(ValueError) as err:
        load_model(model_file, expect_config=toy32)
    ours = read_checkpoint(model_file)["config"]
    assert f"nf {ours['nf']!r} here, {toy32['nf']!r} expected" in str(err.value)  # both configurations' values


def test_corrupt_training_state_stops_the_resume_by_name(make_experiment, toyfaces16, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "latest.pt"
    ckpt.parent.mkdir(parents=True)
    save_atomic({"format": "anything", "w": torch.zeros(1000)}, ckpt)
    _truncate(ckpt)
    with pytest.raises(ValueError, match=str(ckpt)):
        train(make_experiment(), toyfaces16, tmp_path / "run", threads=1, device="cpu", progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("damage", [_truncate, _flip_byte], ids=["truncated", "flipped byte"])
def test_corrupt_sample_shard_or_codes_is_refused_by_name(damage, tmp_path):
    shard, codes = tmp_path / "shard-1.npz", tmp_path / "codes.npz"
    rng = np.random.default_rng(0)
    save_shard(shard, {"images": rng.integers(0, 255, (64, 16, 16, 3), dtype=np.uint8)})
    save_codes(codes, rng.integers(0, 32, (500, 16)), np.array(["train"] * 500), 32)
    damage(shard)
    damage(codes)
    with pytest.raises(ValueError, match=str(shard)):
        load_sample_images([shard])
    with pytest.raises(ValueError, match=str(codes)):
        load_codes(codes)


# ------------------------------------------------------------------------------------- SIGKILL inside a stage

# Runs ``module:function(**kwargs)`` after arranging to SIGKILL itself just before the ``count``-th rename onto a
# file whose name matches ``kill_at`` (a glob): everything before that output is done, that output is fully
# written under its temporary name but not renamed.
_CHILD = r"""
import fnmatch, importlib, json, os, signal, sys
spec = json.loads(sys.argv[1])
real_replace, seen = os.replace, []
def replace(src, dst, *args, **kwargs):
    if fnmatch.fnmatch(os.path.basename(dst), spec["kill_at"]):
        seen.append(dst)
        if len(seen) == spec["count"]:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
import torch
torch.set_num_threads(1)
module, name = spec["call"].split(":")
getattr(importlib.import_module(module), name)(**spec["kwargs"])
"""


def _killed_during(call: str, kill_at: str, count: int = 1, **kwargs) -> None:
    """Run ``call`` in a child process that is SIGKILLed as described above; check it was."""
    spec = {"call": call, "kill_at": kill_at, "count": count, "kwargs": kwargs}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec, default=str)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"exited {proc.returncode}, not killed:\n{proc.stderr[-3000:]}"


def test_sigkill_during_preparation_then_rerun_gives_the_same_dataset(toyfaces16, tmp_path):
    out = tmp_path / "data"
    kwargs = {"out_dir": out, "resolution": 16, "n_train": 200, "n_test": 50, "seed": 0}  # as toyfaces16
    _killed_during("pivq.data:prepare_toyfaces", "attributes.csv", **kwargs)  # images.npy is done by then
    assert (out / "images.npy").is_file() and not (out / "attributes.csv").exists()
    with pytest.raises(FileNotFoundError, match="interrupted preparation"):
        PreparedDataset(out)
    # what the kill leaves: the hidden temporary file of the output it was writing, and nothing else hidden
    assert [p.name.startswith(".attributes.csv.") for p in out.iterdir() if p.name.startswith(".")] == [True]
    log = tmp_path / "prepare.log"
    with to_file(log, outputs=[out / name for name in ("images.npy", "attributes.csv", "split.csv", "manifest.json")]):
        prepare_toyfaces(**kwargs)  # the rule's rerun: its script opens the log with the rule's outputs
    assert _visible_files(out) == _visible_files(toyfaces16)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert "left by a killed earlier attempt" in log.read_text()


@pytest.fixture
def encoded(model_file, toyfaces16, tmp_path) -> tuple[Path, Path]:
    codes = tmp_path / "codes.npz"
    stages.encode_dataset(model_file, toyfaces16, codes)
    return model_file, codes


SAMPLE = {"n": 40, "shards": 2, "seed": 3, "batch_size": 16}


def test_sigkill_during_a_sample_shard_keeps_the_finished_one(encoded, tmp_path):
    model, codes = encoded
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for shard in range(2):
        stages.sample_shard(model, codes, SAMPLE, shard, clean / f"shard-{shard}.npz")
    stages.sample_shard(model, codes, SAMPLE, 0, killed / "shard-0.npz")
    done = (killed / "shard-0.npz").stat().st_mtime_ns
    _killed_during("pivq.stages:sample_shard", "shard-1.npz", model_path=model, codes_path=codes, sample=SAMPLE,
                   shard=1, out_path=killed / "shard-1.npz")
    assert not (killed / "shard-1.npz").exists()
    with pytest.raises(ValueError, match="shard-1.npz"):
        load_sample_images([killed / "shard-0.npz", killed / "shard-1.npz"])
    stages.sample_shard(model, codes, SAMPLE, 1, killed / "shard-1.npz")  # what Snakemake reruns: that shard only
    assert (killed / "shard-0.npz").stat().st_mtime_ns == done
    assert _visible_files(killed) == _visible_files(clean)


@pytest.fixture
def extractor(params, toyfaces16, tmp_path) -> tuple[dict, Path]:
    settings = {**params["datasets"]["toyfaces32"]["feature_extractor"], "steps": 5, "batch_size": 16}
    weights = tmp_path / "extractor.pt"
    stages.train_feature_extractor(toyfaces16, settings, weights, tmp_path / "extractor.json")
    return settings, weights


@pytest.mark.parametrize("kill_at", ["fidelity.json", "reference features"])
def test_sigkill_during_fidelity_reuses_the_cached_reference_features(kill_at, encoded, extractor, toyfaces16,
                                                                      tmp_path, caplog):
    """Killed after the reference features are cached, the rerun takes them from the cache; killed while caching
    them, it computes them again. Either way the metrics file is the uninterrupted run's, byte for byte."""
    model, codes = encoded
    settings, weights = extractor
    shards = [tmp_path / f"shard-{k}.npz" for k in range(2)]
    for k, shard in enumerate(shards):
        stages.sample_shard(model, codes, SAMPLE, k, shard)
    metrics = {"n_real": 40, "reference": "all", "reference_rows": "first", "nearest_k": 3, "batch_size": 20,
               "seed": 0}

    def fidelity(out: Path, cache: Path, child: bool = False) -> None:
        kwargs = {"name": "toy", "dataset_name": "toyfaces16", "metrics": metrics, "extractor": settings,
                  "shard_paths": shards, "dataset_dir": toyfaces16, "extractor_weights": weights, "out_path": out,
                  "reference_cache": cache}
        if not child:
            return stages.fidelity(**kwargs)
        # the cache's features file is named by its content key; it is the one .npy the stage writes
        _killed_during("pivq.stages:fidelity", "fidelity.json" if kill_at == "fidelity.json" else "*.npy", **kwargs)

    fidelity(tmp_path / "clean.json", tmp_path / "cache-clean")
    out, cache = tmp_path / "killed" / "fidelity.json", tmp_path / "cache-killed"
    fidelity(out, cache, child=True)
    assert not out.exists()
    cached = sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(cached) == (2 if kill_at == "fidelity.json" else 0), cached  # features + sidecar, or nothing
    with caplog.at_level(logging.INFO, logger="pivq.stages"):
        fidelity(out, cache)
    expected = "hit" if kill_at == "fidelity.json" else "miss"
    assert f"reference features: cache {expected}" in caplog.text
    assert out.read_bytes() == (tmp_path / "clean.json").read_bytes()


def test_sigkill_during_training_resumes_to_the_same_model(make_experiment, toyfaces16, tmp_path):
    """Killed as it renames its second checkpoint (step 30 of 60), training resumes from the first (step 15) and
    ends with the uninterrupted run's model file, byte for byte."""
    experiment = make_experiment(schedule={"checkpoint_every": 15})
    train(experiment, toyfaces16, tmp_path / "clean", threads=1, device="cpu", progress=False)
    run = tmp_path / "killed"
    _killed_during("pivq.train:train", "latest.pt", count=2, experiment=experiment, dataset_dir=toyfaces16,
                   run_dir=run, threads=1, device="cpu", progress=False)
    assert read_checkpoint(run / "checkpoints" / "latest.pt", expect="pivq-train-state-v1")["step"] == 15
    assert not (run / "model.pt").exists()
    assert [p.name.startswith(".latest.pt.") for p in (run / "checkpoints").iterdir()
            if p.name.startswith(".")] == [True]
    train(experiment, toyfaces16, run, threads=1, device="cpu", progress=False)
    assert (run / "model.pt").read_bytes() == (tmp_path / "clean" / "model.pt").read_bytes()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # the cut-short write: removed


def test_remove_stale_temporaries_takes_only_the_outputs_own(tmp_path):
    """Only the temporary names that atomic_path makes for the given outputs go; other files stay."""
    outputs = [tmp_path / "a.json", tmp_path / "codes.npz", tmp_path / "missing" / "x.csv"]
    with atomic_path(tmp_path / "b.json") as other:  # a real temporary name of another output, made mid-write
        stale = [tmp_path / ".a.json.k3_x9q0z.tmp", tmp_path / ".codes.npz.abcdefgh.tmp.npz"]
        kept = [other, tmp_path / "a.json", tmp_path / ".a.json.gz.abcdefgh.tmp", tmp_path / ".a.json.short.tmp",
                tmp_path / ".a.jsonXabcdefgh.tmp", tmp_path / "a.json.abcdefgh.tmp"]
        for path in stale + kept:
            path.write_text("x")
        (tmp_path / ".a.json.dir45678.tmp").mkdir()  # not a file: kept
        assert sorted(remove_stale_temporaries(outputs)) == sorted(stale)
        assert all(path.exists() for path in kept) and (tmp_path / ".a.json.dir45678.tmp").is_dir()
        other.write_text("done")
    assert (tmp_path / "b.json").read_text() == "done"


def test_extractor_summary_is_byte_identical_across_runs(params, toyfaces16, tmp_path):
    """Wall-clock times go to the log, not the metrics JSON: two runs write the same bytes."""
    settings = {**params["datasets"]["toyfaces32"]["feature_extractor"], "steps": 3, "batch_size": 16}
    summaries = []
    for _ in range(2):  # the same paths, as a rerun of the rule (the summary records the weights' path)
        stages.train_feature_extractor(toyfaces16, settings, tmp_path / "extractor.pt", tmp_path / "extractor.json")
        summaries.append((tmp_path / "extractor.json").read_bytes())
    assert summaries[0] == summaries[1]
    assert not {"seconds", "wall_seconds", "host", "hostname"} & set(json.loads(summaries[0]))


# ------------------------------------------------------------------------------------- Snakemake: kills and locks

LOCKED = "Directory cannot be locked"
INCOMPLETE = "IncompleteFilesException"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _job_process(snakemake: subprocess.Popen, script: str) -> int | None:
    """The pid of the Python process running workflow/scripts/<script> for this Snakemake (Snakemake runs a
    copy named .snakemake/scripts/tmp<random>.<script>)."""
    for pid in _descendants(snakemake.pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(a.endswith(f".{script}".encode()) for a in argv):
                return pid
    return None


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _fault_params(root: Path, **schedule) -> dict:
    params = tiny_params()
    params["schedules"]["toy"].update(checkpoint_every=20, **schedule)
    write_params(root / "params.yaml", params)
    return params


@contextlib.contextmanager
def _snakemake(root: Path, *args: str) -> Iterator[subprocess.Popen]:
    """Snakemake in the background, in its own process group (so it can be killed whole, as a crash would),
    output in ``snakemake.out``; on leaving, whatever of the group still runs is killed and reaped."""
    with open(root / "snakemake.out", "w") as log:
        proc = subprocess.Popen([str(SNAKEMAKE), *args], cwd=root, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("key, value, shown", [
    ("schedules.toy.steps", "many", "'many' is not of type 'integer'"),
    ("datasets.toyfaces32.feature_extractor.name", "inception-v4", "'inception-v4' is not one of"),
])
def test_bad_params_stop_snakemake_before_any_job(tmp_path, key, value, shown):
    """More of tests/test_workflow.py::test_bad_params_stop_before_any_job: a wrong type, an unknown extractor."""
    need(SNAKEMAKE)
    root = copy_workflow(tmp_path / "wf")
    params = tiny_params()
    *parents, last = key.split(".")
    section = params
    for name in parents:
        section = section[name]
    section[last] = value
    write_params(root / "params.yaml", params)
    proc = run([SNAKEMAKE, "--cores", "1", "all"], root)
    assert proc.returncode != 0 and f"{key}: {shown}" in proc.out, proc.out[-3000:]
    assert not any((root / folder).exists() for folder in ("data", "runs", "results", "logs"))


TRAINED = "runs/toy_matching/model.pt"
CHECKPOINT = "runs/toy_matching/checkpoints/latest.pt"


def test_a_killed_training_job_resumes_and_a_concurrent_run_is_refused(tmp_path):
    """While Snakemake runs, a second Snakemake on the same folder is refused by the lock; a training job killed
    by SIGKILL fails its Snakemake run; rerunning the same command resumes from the checkpoint and reuses the
    prepared dataset."""
    need(SNAKEMAKE)
    root = copy_workflow(tmp_path / "wf")
    _fault_params(root, steps=100)
    with _snakemake(root, "--cores", "2", TRAINED) as first:
        _wait_for(lambda: (root / CHECKPOINT).exists(), "the first checkpoint")
        trainer = _job_process(first, "train.py")
        assert trainer is not None, "the training job ended before it could be stopped"
        os.kill(trainer, signal.SIGSTOP)  # held mid-training while two more Snakemakes try the folder
        before = mtimes(root, ["data", "runs"])
        # a plain second run stops at the running job's incomplete outputs; with --rerun-incomplete, at the lock
        second = run([SNAKEMAKE, "--cores", "1", TRAINED], root)
        assert second.returncode != 0 and INCOMPLETE in second.out, second.out[-3000:]
        second = run([SNAKEMAKE, "--cores", "1", "--rerun-incomplete", TRAINED], root)
        assert second.returncode != 0 and LOCKED in second.out and "--unlock" in second.out, second.out[-3000:]
        assert mtimes(root, ["data", "runs"]) == before  # refused before touching anything
        os.kill(trainer, signal.SIGKILL)
        assert first.wait(timeout=120) != 0
    assert "Error in rule train" in (root / "snakemake.out").read_text()
    assert not (root / TRAINED).exists()
    prepared = mtimes(root, ["data"])
    check(run([SNAKEMAKE, "--cores", "2", TRAINED], root, timeout=600), "the rerun")
    assert "resumed toy_matching from runs/toy_matching/checkpoints/latest.pt at step" in \
        (root / "logs" / "train_toy_matching.log").read_text()
    assert mtimes(root, ["data"]) == prepared  # the dataset was not prepared again


FIDELITY = "results/metrics/toy_matching/fidelity.json"
# what the fidelity target makes for toy_matching: compared byte for byte between runs
PRODUCTS = ["results/metrics/toy_matching", "runs/toy_matching/samples"]


def _products(root: Path) -> dict[str, bytes]:
    files = {f"{folder}/{name}": data for folder in PRODUCTS for name, data in _visible_files(root / folder).items()}
    files.update({name: (root / name).read_bytes() for name in ("runs/toy_matching/model.pt",
                                                                 "runs/toy_matching/codes.npz")})
    return files


@pytest.mark.slow
def test_killed_snakemake_needs_unlock_and_rerun_incomplete_then_matches_an_uninterrupted_run(tmp_path):
    """Snakemake itself SIGKILLed with its jobs (a crashed login node, an OOM kill of the session): its lock and
    incomplete-output markers stay behind. What it takes to go on (docs/faults.md): `snakemake
    --unlock`, then the command with --rerun-incomplete; training resumes from its checkpoint. A sample-shard job
    killed in that run leaves the other shard, which the plain rerun keeps. The end products equal an
    uninterrupted run's, byte for byte."""
    need(SNAKEMAKE)
    clean = copy_workflow(tmp_path / "clean")
    _fault_params(clean, steps=100)
    check(run([SNAKEMAKE, "--cores", "2", FIDELITY], clean, timeout=900), "the uninterrupted run")

    root = copy_workflow(tmp_path / "killed")
    _fault_params(root, steps=100)
    with _snakemake(root, "--cores", "2", FIDELITY) as crashed:
        _wait_for(lambda: (root / CHECKPOINT).exists(), "the first checkpoint")
    # leaving the block SIGKILLed Snakemake and its jobs at once
    assert not _descendants(crashed.pid)
    assert list((root / ".snakemake" / "locks").glob("*.lock")), "no lock left behind"

    plain = run([SNAKEMAKE, "--cores", "2", FIDELITY], root)
    assert plain.returncode != 0 and INCOMPLETE in plain.out and "--rerun-incomplete" in plain.out, plain.out[-3000:]
    locked = run([SNAKEMAKE, "--cores", "2", "--rerun-incomplete", FIDELITY], root)
    assert locked.returncode != 0 and LOCKED in locked.out and "--unlock" in locked.out, locked.out[-3000:]
    check(run([SNAKEMAKE, "--unlock", FIDELITY], root), "snakemake --unlock")

    with _snakemake(root, "--cores", "2", "--rerun-incomplete", FIDELITY) as resumed:
        shard_job = _wait_for(lambda: _job_process(resumed, "sample_shard.py"), "a sample_shard job", 600)
        os.kill(shard_job, signal.SIGKILL)
        assert resumed.wait(timeout=300) != 0
    assert "resumed toy_matching from runs/toy_matching/checkpoints/latest.pt at step" in \
        (root / "logs" / "train_toy_matching.log").read_text()
    assert "Error in rule sample_shard" in (root / "snakemake.out").read_text()
    shards = sorted((root / "runs" / "toy_matching" / "samples").glob("shard-*.npz"))
    assert len(shards) <= 1  # the killed shard is gone; the other finished or never started
    kept = mtimes(root, ["runs/toy_matching/samples", "data"])

    check(run([SNAKEMAKE, "--cores", "2", FIDELITY], root, timeout=900), "the plain rerun")
    after = mtimes(root, ["runs/toy_matching/samples", "data"])
    assert {k: after[k] for k in kept} == kept  # finished shards and the dataset reused
    assert _products(root) == _products(clean)


@pytest.mark.slow
def test_the_embedded_pipeline_twice_from_scratch_gives_identical_results(tmp_path):
    """`snakemake all` on the (shrunken) embedded configuration in two fresh folders: every metrics file and
    table is byte-identical (figures are left out: PDF and PNG writers may stamp dates)."""
    need(SNAKEMAKE)
    roots = []
    for name in ("a", "b"):
        root = copy_workflow(tmp_path / name)
        write_params(root / "params.yaml", tiny_params())
        check(run([SNAKEMAKE, "--cores", "2", "all"], root, timeout=1200), f"run {name}")
        roots.append(root)
    a, b = ({f"{folder}/{k}": v for folder in ("results/metrics", "results/tables")
             for k, v in _visible_files(root / folder).items()} for root in roots)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert any(k.endswith("fidelity.json") for k in a) and any(k.endswith("training.json") for k in a)
