"""Third-party weights files (torch-fidelity's Inception-v3, torchvision's VGG16 for LPIPS) are verified before
torch-fidelity or torchvision could unpickle them: their sha256 must begin with the prefix published in the file
name, whatever the file is called, and a file that does not is refused by name with nothing in it run. A pickle
whose payload would write a marker file stands for a malicious download. The real weights cannot be downloaded
here, so files of the tests' own (random weights) are let through by the test-only
``accept_unpublished_weights``."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pivq.train.loop as loop
import pivq.weights as weights
from pivq.metrics import INCEPTION, compute_features, compute_fidelity
from pivq.metrics.registry import (
    INCEPTION_SHA256_PREFIX,
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    create_feature_extractor,
)
from pivq.train.losses import VGG16_FILE, VGG16_SHA256_PREFIX, VGG16_URL, build_lpips, check_lpips_weights
from pivq.weights import (
    WeightsFileError,
    accept_unpublished_weights,
    published_sha256_prefix,
    verify_weights_file,
    weights_sha256,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears if any code of the pickle runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(path: Path, marker: Path) -> Path:
    """A torch.save file, as a state dict would be, whose unpickling writes ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    return path


def _hub(tmp_path: Path, monkeypatch) -> Path:
    """A fresh TORCH_HOME; returns its torch hub checkpoints folder (created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def no_download(monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    import torchvision.models._api as tv_api

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to download or to load a cached hub file")

    for module, name in ((torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
                         (tv_api, "load_state_dict_from_url"), (tf_inception, "load_state_dict_from_url")):
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture
def torch_loads(monkeypatch):
    """Every torch.load call: (what it was given, weights_only)."""
    calls, real = [], torch.load

    def spy(f, *args, **kwargs):
        calls.append((f, kwargs.get("weights_only")))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    """Randomly initialised weights of torch-fidelity's Inception-v3 (the network built with its loading
    skipped, as benchmarks/gpu_check.py does): the right structure, not the published hash."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    empty = folder / "empty.pt"
    torch.save({}, empty)
    load = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=str(empty))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = load
    path = folder / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def _refused(err: pytest.ExceptionInfo, path: Path, expected: str, source: str) -> None:
    """The refusal names the file, its sha256 prefix, the expected one and where the right file comes from."""
    message = str(err.value)
    got = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    assert str(path) in message, message
    assert f"its sha256 begins {got}, expected {expected}" in message, message
    assert source in message and "nothing in it ran" in message, message


# --- the published prefixes and the check itself -----------------------------------------------------------


def test_the_published_prefixes_are_those_of_torch_fidelity_and_torchvision():
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert INCEPTION_WEIGHTS_URL == URL_INCEPTION_V3 and INCEPTION_SHA256_PREFIX == "6726825d"
    assert torchvision.models.VGG16_Weights.IMAGENET1K_V1.url == VGG16_URL  # what lpips's vgg16 asks for
    assert VGG16_SHA256_PREFIX == published_sha256_prefix(VGG16_FILE) == "397923af"
    # torch hub's own rule (it checks downloads only, never a cached file) reads the same digits
    assert torch.hub.HASH_REGEX.search(VGG16_FILE).group(1) == VGG16_SHA256_PREFIX
    assert torch.hub.HASH_REGEX.search(INCEPTION_WEIGHTS_FILE).group(1) == INCEPTION_SHA256_PREFIX
    with pytest.raises(ValueError, match="no sha256 prefix"):
        published_sha256_prefix("inception.pth")


def test_the_check_on_a_small_file_whose_sha256_is_known(tmp_path):
    path = tmp_path / "small.bin"
    path.write_bytes(b"pivq weights check\n")
    digest = hashlib.sha256(b"pivq weights check\n").hexdigest()
    assert weights_sha256(path) == digest
    assert verify_weights_file(path, digest[:8], "Test", "Get it from nowhere.") == digest
    assert verify_weights_file(path, digest, "Test", "Get it from nowhere.") == digest  # the full hash too
    other = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    with pytest.raises(WeightsFileError) as err:
        verify_weights_file(path, other, "Test", "Get it from nowhere.")
    assert str(err.value).startswith(f"Test weights file {path} refused: its sha256 begins {digest[:8]}, "
                                     f"expected {other}")
    assert str(err.value).endswith("Get it from nowhere.")


def test_each_file_version_is_hashed_once_per_process(tmp_path, monkeypatch):
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(p) or real(p))
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    first = weights_sha256(path)
    for _ in range(3):
        assert weights_sha256(path) == first
        verify_weights_file(tmp_path / "." / "w.bin", first[:8], "Test", "")  # another spelling of the path
    assert len(calls) == 1
    # rewritten in place with the same size and the old mtime put back: the ctime tells, it is hashed again
    st = path.stat()
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest() != first and len(calls) == 2


# --- a malicious pickle where pivq looks: refused by name, its payload never runs ------------------------------


def test_a_pickle_at_the_hub_inception_path_is_refused_and_runs_nothing(tmp_path, monkeypatch, no_download):
    path = _malicious(_hub(tmp_path, monkeypatch) / INCEPTION_WEIGHTS_FILE, tmp_path / "pwned")
    real, fake = _images(8, 0), _images(8, 1)
    for call in (lambda: compute_fidelity(real, fake, INCEPTION, None),
                 lambda: compute_features(real, INCEPTION, None),
                 lambda: create_feature_extractor(INCEPTION, path, ["2048"])):
        with pytest.raises(WeightsFileError) as err:
            call()
        _refused(err, path, "6726825d", INCEPTION_WEIGHTS_URL)
    assert not (tmp_path / "pwned").exists()
    # the payload is live: what torch-fidelity would have done (torch.load(weights_only=False)) runs it
    live = _malicious(tmp_path / "live.pth", tmp_path / "live_marker")
    torch.load(live, weights_only=False)
    assert (tmp_path / "live_marker").exists()


@pytest.mark.parametrize("name", ["my-inception.pth", INCEPTION_WEIGHTS_FILE])
def test_a_pickle_at_an_explicit_inception_path_is_refused_and_runs_nothing(name, tmp_path, monkeypatch,
                                                                           no_download):
    """datasets.<d>.feature_extractor.weights: checked by content, whatever the file's name (the published
    name itself included)."""
    _hub(tmp_path, monkeypatch)
    path = _malicious(tmp_path / "elsewhere" / name, tmp_path / "pwned")
    with pytest.raises(WeightsFileError) as err:
        compute_fidelity(_images(8, 0), _images(8, 1), INCEPTION, path)
    _refused(err, path, "6726825d", INCEPTION_WEIGHTS_URL)
    assert "datasets.<name>.feature_extractor.weights" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_a_pickle_at_the_hub_vgg16_path_is_refused_by_lpips_and_training(tmp_path, monkeypatch, no_download,
                                                                         make_experiment):
    path = _malicious(_hub(tmp_path, monkeypatch) / VGG16_FILE, tmp_path / "pwned")
    for call in (build_lpips, check_lpips_weights):
        with pytest.raises(WeightsFileError) as err:
            call()
        _refused(err, path, "397923af", VGG16_URL)
    # a schedule with LPIPS stops at once: before reading the dataset (there is none) or writing anything
    experiment = make_experiment(schedule={"perceptual_weight": 1.0, "adversarial_start": None})
    with pytest.raises(WeightsFileError, match=re.escape(str(path))):
        loop.train(experiment, tmp_path / "no_dataset", tmp_path / "run", threads=1, device="cpu", progress=False)
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name != "train.lock"]  # (the run's lock at most)
    assert not (tmp_path / "pwned").exists()


def test_an_accepted_pickle_still_runs_nothing(tmp_path, monkeypatch, no_download):
    """Defence in depth: even a file whose hash is let through (a forged prefix is 2^32 tries away) is loaded by
    pivq with weights_only=True, and refused by name."""
    folder = _hub(tmp_path, monkeypatch)
    vgg = _malicious(folder / VGG16_FILE, tmp_path / "pwned")
    inception = _malicious(folder / INCEPTION_WEIGHTS_FILE, tmp_path / "pwned")
    with accept_unpublished_weights(vgg, inception):
        with pytest.raises(WeightsFileError, match=rf"{re.escape(str(vgg))} refused: not a plain state dict"):
            build_lpips()
        with pytest.raises(WeightsFileError, match=rf"{re.escape(str(inception))} refused: not a plain state"):
            create_feature_extractor(INCEPTION, inception, ["2048"])
    assert not (tmp_path / "pwned").exists()


def test_harmless_weights_that_are_not_the_published_file_are_refused(tmp_path, monkeypatch, inception_file,
                                                                      no_download):
    folder = _hub(tmp_path, monkeypatch)
    real, fake = _images(8, 0), _images(8, 1)
    # Inception's own structure, other values, at an explicit path and at the hub path
    hub_copy = folder / INCEPTION_WEIGHTS_FILE
    hub_copy.write_bytes(inception_file.read_bytes())
    for weights_arg, path in ((inception_file, inception_file), (None, hub_copy)):
        with pytest.raises(WeightsFileError) as err:
            compute_fidelity(real, fake, INCEPTION, weights_arg)
        _refused(err, path, "6726825d", INCEPTION_WEIGHTS_URL)
    # a plain state dict at the VGG16 path, and an empty file (sha256 e3b0c442...)
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, folder / VGG16_FILE)
    with pytest.raises(WeightsFileError) as err:
        build_lpips()
    _refused(err, folder / VGG16_FILE, "397923af", VGG16_URL)
    (folder / VGG16_FILE).write_bytes(b"")
    with pytest.raises(WeightsFileError, match="its sha256 begins e3b0c442, expected 397923af"):
        build_lpips()


# --- files with the right content load, and only their tensors reach torch-fidelity or lpips ------------------


def test_an_accepted_inception_file_gives_torch_fidelitys_network(tmp_path, monkeypatch, inception_file,
                                                                 no_download, torch_loads):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = _hub(tmp_path, monkeypatch)
    (folder / INCEPTION_WEIGHTS_FILE).write_bytes(inception_file.read_bytes())
    digest = hashlib.sha256(inception_file.read_bytes()).hexdigest()
    real, fake = _images(4, 0), _images(4, 1)
    with accept_unpublished_weights(inception_file, folder / INCEPTION_WEIGHTS_FILE) as accepted:
        assert accepted == [digest, digest]
        net = create_feature_extractor(INCEPTION, inception_file, ["2048"])
        # the file was unpickled by pivq only, weights only; torch-fidelity got tensors from memory
        assert [(f, w) for f, w in torch_loads if not isinstance(f, io.BytesIO)] == [(inception_file, True)]
        expected = FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=str(inception_file))
        ours, theirs = net.state_dict(), expected.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        # the stage-level entry points, from an explicit path and from torch hub's cache (which FID takes: 3 s of
        # a 2048-square sqrtm on one thread), record the file's sha256
        features = compute_features(real, INCEPTION, inception_file, batch_size=4)
        assert features.shape == (4, 2048) and np.isfinite(features).all()
        result = compute_fidelity(real, fake, INCEPTION, None, nearest_k=2, batch_size=4)
        assert result["feature_extractor_weights_sha256"] == digest and np.isfinite(result["fid"])
    # outside the block the same file is refused again
    with pytest.raises(WeightsFileError):
        compute_fidelity(real, fake, INCEPTION, inception_file)


def test_an_accepted_vgg16_file_gives_lpips_its_tensors(tmp_path, monkeypatch, no_download, torch_loads):
    import lpips
    import torchvision

    wheel = Path(lpips.__file__).parent  # lpips loads its own linear layers from the wheel, as ever

    def loads():
        return [(Path(str(f)), w) for f, w in torch_loads if wheel not in Path(str(f)).parents]

    folder = _hub(tmp_path, monkeypatch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        features = torchvision.models.vgg16().features.state_dict()
    state = {f"features.{k}": v for k, v in features.items()}  # the trunk's part of VGG16_Weights.IMAGENET1K_V1
    path = folder / VGG16_FILE
    torch.save(state, path)
    with accept_unpublished_weights(path):
        net = build_lpips()
        assert loads() == [(path, True)]  # pivq's load, weights only; torchvision never saw the file
        trunk = net.net.state_dict()
        assert len(trunk) == len(state) == 26  # VGG16's 13 convolutions, weight and bias
        assert all(torch.equal(v, state["features." + k.split(".", 1)[1]]) for k, v in trunk.items())
        rand = build_lpips(random_trunk=True)
        lins = {k: v for k, v in net.state_dict().items() if k.startswith("lin")}
        assert lins and all(torch.equal(v, rand.state_dict()[k]) for k, v in lins.items())
        assert not any(p.requires_grad for p in net.parameters()) and not net.training
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        assert net(x, x).abs().max() < 1e-6 and (net(x, -x) > 0).all()
        again = build_lpips()  # a fresh copy of the prototype: no second hash or load
        assert again is not net and loads() == [(path, True)]
    with pytest.raises(WeightsFileError, match="expected 397923af"):  # outside the block: refused again
        build_lpips()
    # a state dict without all of VGG16's convolutions is refused by name, even accepted
    partial = _hub(tmp_path / "other", monkeypatch) / VGG16_FILE
    torch.save({k: v for k, v in state.items() if not k.startswith("features.28")}, partial)
    with accept_unpublished_weights(partial), pytest.raises(WeightsFileError) as err:
        build_lpips()
    assert f"{partial} refused: no features.28.bias, features.28.weight" in str(err.value)


def test_the_override_is_for_tests_and_benchmarks_only():
    """Nothing the pipeline runs (pivq/, workflow/, the Snakefile) calls accept_unpublished_weights; the
    pivq.weights defines it and benchmarks/gpu_check.py uses it for its random weights."""
    sources = [*(REPO / "pivq").rglob("*.py"), *(REPO / "workflow").rglob("*"), REPO / "Snakefile"]
    users = [p.relative_to(REPO).as_posix() for p in sources
             if p.is_file() and "accept_unpublished_weights" in p.read_text(errors="replace")]
    assert users == ["pivq/weights.py"]
    weights_source = (REPO / "pivq" / "weights.py").read_text()
    assert weights_source.count("accept_unpublished_weights(") == 1  # its definition, no call
    assert "accept_unpublished_weights(*random_weights(" in (REPO / "benchmarks" / "gpu_check.py").read_text()
