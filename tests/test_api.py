"""pivq.api: the README's snippet runs as written (its paths pointed at a tiny run), and the API gives what the
pipeline's own functions give: preparation's resize, encode_images' code sets, Algorithm 1's seeded samples."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pivq.api import load
from pivq.data.images import DecodeSpec, crop_resize
from pivq.encode import encode_images
from pivq.sample import interpolate, sample_generator
from pivq.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(make_experiment, toyfaces16, tmp_path):
    """A tiny matching run (the tests' 60-step schedule) on the 16px toyfaces set: (run folder, dataset)."""
    train(make_experiment(), toyfaces16, tmp_path / "run", threads=1, device="cpu", progress=False)
    return tmp_path / "run", toyfaces16


def test_the_readme_snippet_runs(run):
    run_dir, data = run
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Using a trained model from Python"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'load("runs/toy_matching")' in snippet and "data/toyfaces32/images.npy" in snippet
    snippet = snippet.replace("runs/toy_matching", str(run_dir)).replace("data/toyfaces32", str(data))
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    model, codes = scope["model"], scope["codes"]
    assert codes.shape == (2, model.codes) and codes.dtype == np.int32
    assert scope["decoded"].shape == (2, 16, 16, 3) and scope["decoded"].dtype == np.uint8
    assert scope["samples"].shape == (8, 16, 16, 3)
    shared = len(np.intersect1d(codes[0], codes[1]))
    assert scope["frames"].shape == (model.codes - shared + 1, 16, 16, 3)  # C_a, one swap per frame, C_b


def test_the_api_gives_what_the_pipeline_gives(run):
    run_dir, data = run
    model = load(run_dir / "model.pt")
    images = np.load(data / "images.npy")[:4]
    assert np.array_equal(model.encode(images), encode_images(model.net, images, progress=False))
    # a larger, non-square PIL image: preparation's centre crop and LANCZOS resize, then the same code set
    big = Image.fromarray(images[0]).resize((40, 48), Image.Resampling.NEAREST)
    prepared = crop_resize(big, DecodeSpec(resolution=16))
    assert np.array_equal(model.prepare([big]), prepared[None])
    assert np.array_equal(model.encode(big), encode_images(model.net, prepared[None], progress=False))
    # Algorithm 1 as the sampling stage seeds it, sample by sample
    codes = model.encode(images)
    want = [interpolate(torch.as_tensor(codes[0], dtype=torch.int64), torch.as_tensor(codes[1], dtype=torch.int64),
                        sample_generator(5, i)) for i in range(3)]
    assert np.array_equal(model.sample(codes[0], codes[1], n=3, seed=5), model.decode(torch.stack(want)))
    frames = model.path(codes[0], codes[1])
    assert np.array_equal(frames[0], model.decode(codes[0])[0])
    assert np.array_equal(frames[-1], model.decode(codes[1])[0])
    # bad input is named
    with pytest.raises(FileNotFoundError, match="no model file"):
        load(data)
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.encode(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="codebook indices"):
        model.decode(np.full(model.codes, model.codebook_size))
    with pytest.raises(ValueError, match="one code set"):
        model.sample(np.zeros(model.codes, int), np.arange(model.codes))
