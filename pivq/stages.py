"""The pipeline's stages, one function each: files in, files out.

Snakemake's scripts (workflow/scripts) and the ``pivq`` CLI both call these, so a stage runs the same way on
a laptop, in a cluster job and by hand. Nothing passes between stages in memory. Heavy imports happen inside
the functions: importing this module stays cheap.

Every stage that runs a network takes a ``job`` (pivq.device.Job: the experiment, the stage, and the GPU and
CPUs its job asked for) and calls ``job.start()`` before reading anything, so a GPU job without a GPU stops at
once; models and batches go to the device it returns. Memory is set by batch sizes: images are read from the
prepared memmap batch by batch, never all at once.

What a stage reads must belong to the experiment it runs for. The rules pass each stage its experiment's training
spec (``spec``, pivq.config.training_spec): a model of another architecture, experiment or dataset, codes of
another run or of another L or K, shards of another experiment or sample set are refused, naming the file and
what differs. Called without a spec (tests, a one-off call), only each file's own consistency is checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pivq.built_with import check_built_with
from pivq.device import Job
from pivq.io import write_json

log = logging.getLogger(__name__)


def _model(model_path: str | Path, spec: dict | None, device, data=None):
    """The stage's model on ``device``; with ``spec``, checked to be the experiment's: its architecture (the
    preset, the quantizer, the VQ loss), the experiment it was trained for and, where the stage reads the dataset too,
    the dataset's hashes it was trained on."""
    from pivq.model import ModelConfig
    from pivq.model.checkpoint import load_model

    expect = None
    if spec is not None:
        expect = ModelConfig.of_experiment(spec).to_dict()
    model = load_model(model_path, expect_config=expect, device=device)
    if spec is not None:
        trained_for = model.meta.get("experiment")
        if trained_for != spec["name"]:
            raise ValueError(f"{model_path} was trained for experiment {trained_for!r}, not {spec['name']!r}")
        trained_on = model.meta.get("identity", {}).get("dataset_files")
        if data is not None and trained_on != data.manifest["files"]:
            raise ValueError(f"{model_path} was trained on other data than {data.root} (the sha256 of its files "
                             f"differ from {data.root / 'manifest.json'}'s): retrain, or give the stage its dataset")
    return model


def _verified_run(model_path, codes_path, dataset_dir, spec: dict | None, device):
    """(the dataset, its sha256 checked; the model, checked against ``spec`` and the dataset; the code set of every
    image): what the stages that decode a run's codes against its dataset read."""
    from pivq.data import PreparedDataset
    from pivq.encode import load_codes

    data = PreparedDataset(dataset_dir, verify=True)  # sha256 against the manifest
    model = _model(model_path, spec, device, data)
    codes, _, _ = load_codes(codes_path, expect=_codes_expect(spec, model), against=model_path)
    if len(codes) != len(data):
        raise ValueError(f"{codes_path} holds {len(codes)} code sets but {data.root} has {len(data)} images")
    return data, model, codes


def _codes_expect(spec: dict | None, model=None) -> dict | None:
    """What codes.npz must record for ``spec``'s experiment (and, decoded with ``model``, its run)."""
    if spec is None:
        return None
    expect = {"experiment": spec["name"], "codes": spec["model"]["codes"],
              "codebook_size": spec["model"]["codebook_size"]}
    if model is not None:
        expect["run"] = model.meta.get("run")
    return expect


def _split_rows(data, split: str, need: int, what: str) -> np.ndarray:
    """The ``split`` image indices of ``data``; fewer than ``need`` stop the stage, naming the dataset."""
    rows = data.indices(split)
    if len(rows) < need:
        raise ValueError(f"{data.root} has {len(rows)} {split} images; {what} needs at least {need}")
    return rows


def prepare_dataset(name: str, dataset: dict, out_dir: str | Path, workers: int = 1) -> Path:
    """Raw data (or the toyfaces generator) -> the prepared format in ``out_dir``; ``workers`` decoding processes."""
    from pivq.data import prepare_celeba, prepare_celebahq, prepare_ffhq, prepare_toyfaces

    kind = dataset["kind"]
    if kind == "toyfaces":
        return prepare_toyfaces(out_dir, resolution=dataset["resolution"], n_train=dataset["n_train"],
                                n_test=dataset["n_test"], seed=dataset["seed"], name=name)
    common = {"resolution": dataset["resolution"], "name": name, "workers": workers,
              "skip_corrupt": dataset["skip_corrupt"]}
    if kind == "celeba":
        return prepare_celeba(dataset["root"], out_dir, **common)
    if kind == "celebahq":
        return prepare_celebahq(dataset["root"], out_dir, seed=dataset["seed"], n_test=dataset["n_test"], **common)
    if kind == "ffhq":
        return prepare_ffhq(dataset["root"], out_dir, **common)
    raise ValueError(f"datasets.{name}.kind: unknown dataset kind {kind!r}")


def train_feature_extractor(dataset_dir: str | Path, extractor: dict, out_path: str | Path,
                            summary_path: str | Path, job: Job = Job()) -> dict:
    """The toyfaces feature extractor for FID/PRDC: a CNN trained on the train split's categorical attributes."""
    import pandas as pd

    from pivq.data import PreparedDataset
    from pivq.metrics import train_extractor

    device = job.start()
    data = PreparedDataset(dataset_dir, verify=True)  # sha256 against the manifest
    idx = data.indices("train")
    labels, class_names = {}, {}
    for column in data.categorical_attributes:
        values = data.attributes[column].iloc[idx]
        categories = sorted(values.dropna().unique())
        labels[column] = pd.Categorical(values, categories=categories).codes.astype(np.int64)
        class_names[column] = [str(c) for c in categories]
    summary = train_extractor(np.asarray(data.images[idx]), labels, out_path, steps=extractor["steps"],
                              batch_size=extractor["batch_size"], lr=extractor["lr"], seed=extractor["seed"],
                              threads=job.cpus, class_names=class_names, device=device,
                              blur=extractor["blur"])
    write_json(summary_path, {"dataset": data.name, "extractor": extractor["name"], **summary})
    return summary


def train_model(experiment: dict, dataset_dir: str | Path, run_dir: str | Path, training_json: str | Path,
                training_csv: str | Path, job: Job = Job(), eval_batch_size: int = 256) -> dict:
    """Train (or resume) one experiment; record its reconstruction error on the test split (in batches of
    ``eval_batch_size``, the experiment's encode batch size)."""
    from pivq.data import ImageRows, PreparedDataset
    from pivq.encode import reconstruction_l1
    from pivq.model.checkpoint import load_model
    from pivq.train import train, write_training_metrics

    device = job.start()
    data = PreparedDataset(dataset_dir)
    test = _split_rows(data, "test", 1, "the test-L1 evaluation after training")  # before, not after, training
    summary = train(experiment, dataset_dir, run_dir, threads=job.cpus, device=device)
    model = load_model(Path(run_dir) / "model.pt", device=device)
    evaluation = reconstruction_l1(model, ImageRows(data.images, test), batch_size=eval_batch_size)
    log.info("test L1 %.4f (constant-image baseline %.4f)", evaluation["test_l1"], evaluation["constant_baseline_l1"])
    write_training_metrics(summary, {"experiment": experiment["name"], **evaluation}, Path(training_json),
                           Path(training_csv))
    return evaluation


def encode_dataset(model_path: str | Path, dataset_dir: str | Path, codes_path: str | Path, batch_size: int = 256,
                   job: Job = Job(), spec: dict | None = None) -> None:
    """Every image of the dataset -> its code set (codes.npz: codes (N, L), split (N,), K, and the experiment and
    run of the model), ``batch_size`` images at a time."""
    from pivq.data import PreparedDataset
    from pivq.encode import encode_images, save_codes

    device = job.start()
    data = PreparedDataset(dataset_dir, verify=True)  # sha256 against the manifest
    model = _model(model_path, spec, device, data)
    codes = encode_images(model, data.images, batch_size=batch_size)
    save_codes(codes_path, codes, data.split, model.cfg.codebook_size, experiment=model.meta.get("experiment", ""),
               run=model.meta.get("run", ""))


def sample_shard(model_path: str | Path, codes_path: str | Path, sample: dict, shard: int, out_path: str | Path,
                 job: Job = Job(), spec: dict | None = None) -> None:
    """One shard of the interpolation samples (Algorithm 1) between pairs of training images, recording the
    experiment, the run of the model and the set size (pivq.sample.check_shards reads them)."""
    from pivq.encode import load_codes
    from pivq.sample import generate_shard, save_shard

    device = job.start()
    model = _model(model_path, spec, device)
    codes, split, _ = load_codes(codes_path, expect=_codes_expect(spec, model), against=model_path)
    result = generate_shard(model, codes[split == "train"], n=sample["n"], shards=sample["shards"], shard=shard,
                            seed=sample["seed"], batch_size=sample["batch_size"])
    save_shard(out_path, {**result, "experiment": np.str_(model.meta.get("experiment", "")),
                          "run": np.str_(model.meta.get("run", "")), "n": np.int64(sample["n"])})


def interpolation_figure_data(model_path: str | Path, codes_path: str | Path, dataset_dir: str | Path,
                              figure1: dict, out_path: str | Path, job: Job = Job(), spec: dict | None = None) -> None:
    """Figure 1's smooth interpolation paths between test images, decoded (uint8 array in an npz)."""
    from pivq.data import ImageRows
    from pivq.io import atomic_path
    from pivq.sample import interpolation_paths

    device = job.start()
    data, model, codes = _verified_run(model_path, codes_path, dataset_dir, spec, device)
    test = _split_rows(data, "test", 2 * figure1["pairs"], "Figure 1 (two test images per pair)")
    images = interpolation_paths(model, codes[test], ImageRows(data.images, test),
                                 pairs=figure1["pairs"], paths=figure1["paths"], steps=figure1["steps"],
                                 seed=figure1["seed"])
    with atomic_path(out_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images)


def code_atlas(model_path: str | Path, codes_path: str | Path, dataset_dir: str | Path, probe_path: str | Path,
               atlas: dict, out_path: str | Path, job: Job = Job(), spec: dict | None = None) -> None:
    """The code atlas: test images decoded with the probe's top codes of the most predictable attributes swapped
    in (pivq.analysis.atlas has the rules), as uint8 images and the codes swapped, in an npz."""
    from pivq.analysis.atlas import decode_atlas, plan_atlas
    from pivq.data.prepared import TABLE_FILES, PreparedDataset
    from pivq.encode import load_codes
    from pivq.io import atomic_path, read_json

    device = job.start()
    data = PreparedDataset(dataset_dir)
    data.verify(TABLE_FILES)  # the atlas reads no pixels (it decodes codes)
    model = _model(model_path, spec, device, data)
    codes, split, K = load_codes(codes_path, expect=_codes_expect(spec, model), against=model_path)
    if len(codes) != len(data):
        raise ValueError(f"{codes_path} holds {len(codes)} code sets but {data.root} has {len(data)} images")
    plan = plan_atlas(codes, data.split, data.attributes, read_json(probe_path), K, n_attributes=atlas["attributes"],
                      n_images=atlas["images"], n_codes=atlas["codes"], seed=atlas["seed"])
    log.info("code atlas: %s", ", ".join(plan.attributes))
    arrays = decode_atlas(model, plan)
    with atomic_path(out_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


RECONSTRUCTION_FIGURE_IMAGES = 8  # test images the reconstructions figure shows (the first in the prepared order)


def attributes(name: str, dataset_name: str, model_path: str | Path, codes_path: str | Path,
               dataset_dir: str | Path, extractor_path: str | Path, out_path: str | Path, figure_path: str | Path,
               shard_paths: list[str | Path] = (), batch_size: int = 256, job: Job = Job(),
               spec: dict | None = None) -> dict:
    """What the attribute CNN reads off the decodes (pivq.metrics.attributes): its accuracy on the test images and
    on their reconstructions (decoded from codes.npz), per attribute; with ``shard_paths`` (Algorithm 1's samples)
    also how often the samples keep the attributes their parents share and take one parent's value where they
    differ, each beside its chance rate. ``figure_path``: the first test images and their decodes (uint8, npz)
    for the reconstructions figure."""
    import torch

    from pivq.data import ImageRows
    from pivq.io import atomic_path
    from pivq.metrics import load_extractor
    from pivq.metrics.attributes import label_codes, predict, recombination_rates, reconstruction_attributes
    from pivq.model.pixels import to_uint8
    from pivq.sample import ShardImages, check_shards, load_shard_pairs

    device = job.start()
    if shard_paths:  # one sample set, this experiment's: refused before any image is read
        check_shards(shard_paths, experiment=None if spec is None else spec["name"])
    data, model, codes = _verified_run(model_path, codes_path, dataset_dir, spec, device)
    extractor = load_extractor(extractor_path, device=device)
    test = _split_rows(data, "test", 1, "the reconstructions' attribute accuracy")
    originals = ImageRows(data.images, test)

    shown = test[:RECONSTRUCTION_FIGURE_IMAGES]
    figure = {"original": np.asarray(originals[:len(shown)]), "image_index": shown}

    def decodes():  # each test image decoded once: the figure keeps the first ones as they pass
        kept = []
        with torch.no_grad():
            for start in range(0, len(test), batch_size):
                chunk = torch.from_numpy(codes[test[start:start + batch_size]].astype(np.int64)).to(device)
                images = to_uint8(model.decode_indices(chunk), model.cfg.pixel_range)
                kept.append(images[:len(shown) - sum(map(len, kept))])
                yield images
        figure["reconstruction"] = np.concatenate(kept)

    truth = label_codes(data.attributes.iloc[test], extractor)
    result = {"experiment": name, "dataset": dataset_name,
              "reconstruction": reconstruction_attributes(predict(extractor, originals.batches(batch_size)),
                                                          predict(extractor, decodes()), truth)}
    if shard_paths:
        train_rows = data.indices("train")
        pairs = load_shard_pairs(shard_paths)  # positions in the train split, as sampling drew them
        labels = label_codes(data.attributes, extractor)
        parents = [{a: v[train_rows[pairs[:, i]]] for a, v in labels.items()} for i in (0, 1)]
        samples = ShardImages(shard_paths)
        result["recombination"] = recombination_rates(predict(extractor, samples.batches(batch_size)), *parents)
    with atomic_path(figure_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: figure[k] for k in ("original", "reconstruction", "image_index")})
    write_json(out_path, result)
    return result


def evaluate(model_path: str | Path, dataset_dir: str | Path, out_path: str | Path, batch_size: int = 256,
             job: Job = Job(), fidelity: dict | None = None, probe: dict | None = None) -> dict:
    """Any checkpoint on any prepared dataset of its resolution, outside the pipeline: the test split's
    reconstruction L1 (beside the constant mean-image baseline) and, from the code sets of every image, codebook
    usage and the capacity bound (the capacity stage's numbers). ``probe`` ({"folds", "seed"}): also the attribute
    probe. ``fidelity`` ({"sample": the sampling settings, "metrics": the metrics settings, "extractor": the
    feature extractor settings, "weights": its weights file or None, "reference_cache": a folder or None}): also
    FID, precision, recall, density and coverage of Algorithm 1 samples (matching models only: nearest codes
    repeat) against the reference rows, as the sampling and fidelity stages compute them. Written as one JSON."""
    from pivq.analysis.capacity import capacity_report
    from pivq.data import ImageRows, PreparedDataset
    from pivq.encode import encode_images, reconstruction_l1

    device = job.start()
    data = PreparedDataset(dataset_dir, verify=True)
    model = _model(model_path, None, device)
    if model.cfg.resolution != data.resolution:
        raise ValueError(f"{model_path} takes {model.cfg.resolution}px images, {data.root} holds {data.resolution}px")
    test = _split_rows(data, "test", 1, "the reconstruction L1")
    K, L, quantizer = model.cfg.codebook_size, model.cfg.codes, model.cfg.quantizer
    result = {"model": str(model_path), "experiment": model.meta.get("experiment"), "run": model.meta.get("run"),
              "dataset": data.name, "steps": model.meta.get("steps"),
              **reconstruction_l1(model, ImageRows(data.images, test), batch_size=batch_size)}
    codes = encode_images(model, data.images, batch_size=batch_size)
    result["capacity"] = capacity_report(codes, K, L, quantizer)
    if probe is not None:
        from pivq.analysis.probe import probe_attributes

        result["probe"] = probe_attributes(codes, K, data.attributes, list(data.binary_attributes),
                                           folds=probe["folds"], seed=probe["seed"], n_jobs=job.cpus)
    if fidelity is not None:
        from pivq.metrics import compute_fidelity
        from pivq.sample import generate_shard

        if quantizer != "matching":
            raise ValueError(f"{model_path}: fidelity needs Algorithm 1 samples, which need code sets (matching); "
                             f"this model quantizes by {quantizer}")
        sample, metrics = fidelity["sample"], fidelity["metrics"]
        samples = generate_shard(model, codes[data.split == "train"], n=sample["n"], shards=1, shard=0,
                                 seed=sample["seed"], batch_size=sample["batch_size"])["images"]
        rows, reference = reference_rows(data, metrics, str(result["experiment"]))
        scores = compute_fidelity(ImageRows(data.images, rows), samples, extractor=fidelity["extractor"]["name"],
                                  weights_path=fidelity["weights"], nearest_k=metrics["nearest_k"],
                                  batch_size=metrics["batch_size"], seed=metrics["seed"], device=str(device),
                                  reference_cache=fidelity.get("reference_cache"))
        for local in ("feature_extractor_weights_file", "reference_features_cache"):
            scores.pop(local, None)  # where files were, not what was measured
        result["fidelity"] = {"reference": reference, **scores}
    write_json(out_path, result)
    return result


REFERENCE_SPLITS = {"all": "train + test", "train": "train", "test": "test"}


def reference_rows(data, metrics: dict, experiment: str) -> tuple[np.ndarray, dict]:
    """The real (reference) set of FID/PRDC: row indices of ``data`` (ascending) and what the fidelity JSON records
    of them, ``{"split", "rows", "n", "of"}``.

    ``metrics["reference"]``: "all" (every row, train + test, as UT's get_datasets without a validation split),
    "train" or "test"; ``metrics["reference_rows"]``: "first" (the first n_real of those rows in the prepared
    order, as UT's NoClassDataset takes the first n_samples) or "random" (n_real of them drawn without replacement
    with ``metrics["seed"]``, then sorted). More than the split holds is an error naming
    ``experiments.<experiment>.metrics.n_real``, never a silent cut; the split's labels are all it reads.
    """
    split, how, n = metrics["reference"], metrics["reference_rows"], metrics["n_real"]
    if split not in REFERENCE_SPLITS:
        raise ValueError(f"experiments.{experiment}.metrics.reference: {split!r} is not one of "
                         f"{sorted(REFERENCE_SPLITS)}")
    if how not in ("first", "random"):
        raise ValueError(f"experiments.{experiment}.metrics.reference_rows: {how!r} is not 'first' or 'random'")
    pool = np.arange(len(data), dtype=np.int64) if split == "all" else data.indices(split)
    if n > len(pool):
        raise ValueError(f"experiments.{experiment}.metrics.n_real = {n}, but {data.root} holds {len(pool)} "
                         f"{REFERENCE_SPLITS[split]} images (metrics.reference: {split}): the real set is never cut "
                         f"short; lower n_real or choose another reference")
    if how == "first":
        rows = pool[:n]
    else:
        rows = np.sort(np.random.default_rng(metrics["seed"]).choice(pool, size=n, replace=False))
    return rows, {"split": split, "rows": how, "n": int(n), "of": int(len(pool))}


def fidelity(name: str, dataset_name: str, metrics: dict, extractor: dict, shard_paths: list[str | Path],
             dataset_dir: str | Path, extractor_weights: str | Path | None, out_path: str | Path,
             job: Job = Job(), reference_cache: str | Path | None = None, spec: dict | None = None) -> dict:
    """FID, precision, recall, density, coverage of the samples against the reference images, all four k-NN
    metrics at ``metrics.nearest_k`` (pivq.metrics.fidelity).

    The reference set is :func:`reference_rows`'s (``metrics.reference``, ``reference_rows``, ``n_real``), checked
    against the dataset's split labels before the images are hashed or any feature is computed; the JSON records
    it as "reference" ({"split", "rows", "n", "of"}). ``reference_cache``: a folder of reference-set features keyed
    by content (the rules use data/<dataset>/reference_features/, shared by every experiment on that dataset);
    None extracts them anew. Both image sets are read ``metrics.batch_size`` images at a time (the shards in
    place, the reference images from the memmap), so images take one batch of host memory whatever the sample
    count (the features and the metrics' distance blocks still grow with it: pivq.metrics.fidelity says by how
    much).
    """
    from pivq.data import ImageRows, PreparedDataset
    from pivq.data.prepared import TABLE_FILES
    from pivq.metrics import compute_fidelity
    from pivq.sample import ShardImages, check_shards

    device = job.start()
    k = metrics["nearest_k"]
    if k >= metrics["n_real"]:
        raise ValueError(f"experiments.{name}.metrics.nearest_k = {k} needs more real images than that, "
                         f"metrics.n_real is {metrics['n_real']}")
    check_shards(shard_paths, experiment=None if spec is None else spec["name"])  # one sample set, this experiment's
    fake = ShardImages(shard_paths)  # headers only: counts and shapes now, a truncated shard refused by name
    if k >= len(fake):
        raise ValueError(f"experiments.{name}.metrics.nearest_k = {k} needs more samples than the {len(fake)} in "
                         f"{shard_paths[0]} and its sibling shards")
    data = PreparedDataset(dataset_dir)
    data.verify(TABLE_FILES)  # the split labels the reference set is drawn by, against the manifest
    real_rows, reference = reference_rows(data, metrics, name)  # too many: refused before hashing the images
    data.verify(("images.npy",))  # sha256 against the manifest
    if fake.shape[1:] != data.images.shape[1:]:
        raise ValueError(f"the samples in {shard_paths[0]} are {fake.shape[1:]} images, {data.root}'s "
                         f"{data.images.shape[1:]}: not samples of this dataset's model")
    result = compute_fidelity(ImageRows(data.images, real_rows), fake, extractor=extractor["name"],
                              weights_path=extractor_weights, nearest_k=k,
                              batch_size=metrics["batch_size"], seed=metrics["seed"],
                              device=str(device),
                              reference_cache=reference_cache)
    result.pop("feature_extractor_weights_file", None)  # a local path, not a result (its sha256 stays)
    # a hit or a miss is how the run went, not a result: the log says it, the JSON stays the same either way
    log.info("reference features: cache %s, key %s", result.pop("reference_features_cache"),
             result["reference_features_key"])
    result = {"experiment": name, "dataset": dataset_name, "reference": reference, **result}
    write_json(out_path, result)
    return result


def capacity(name: str, dataset_name: str, quantizer: str, codes_path: str | Path, out_path: str | Path,
             spec: dict | None = None) -> dict:
    """Codebook usage (K_data, K_img) of the trained run and the capacity bounds of eqs. 2 and 4."""
    from pivq.analysis.capacity import capacity_report
    from pivq.encode import load_codes

    codes, _, K = load_codes(codes_path, expect=_codes_expect(spec), against=f"experiments.{name}")
    report = capacity_report(codes, K, codes.shape[1], quantizer)
    result = {"experiment": name, "dataset": dataset_name, "quantizer": quantizer, **report}
    write_json(out_path, result)
    return result


def rate(name: str, dataset_name: str, codes_path: str | Path, out_path: str | Path, spec: dict | None = None) -> dict:
    """Measured rate: every test image's code set entropy-coded as a set with code frequencies of the train split
    (VBQ's scheme), decoded back to check it is lossless, beside the eq. 4 bound."""
    from pivq.analysis.rate import measure_rate
    from pivq.encode import load_codes

    codes, split, K = load_codes(codes_path, expect=_codes_expect(spec), against=f"experiments.{name}")
    for part in ("train", "test"):  # the coder's frequencies come from train, its messages are the test sets
        if not (split == part).any():
            raise ValueError(f"{codes_path} holds no {part} code sets: the measured rate needs both splits")
    result = measure_rate(codes[split == "train"], codes[split == "test"], K)
    result = {"experiment": name, "dataset": dataset_name, **result}
    write_json(out_path, result)
    return result


def probe(name: str, dataset_name: str, settings: dict, codes_path: str | Path, dataset_dir: str | Path,
          out_path: str | Path, cpus: int = 1, spec: dict | None = None) -> dict:
    """Section 3.8: logistic regression from code presence to each binary attribute, k-fold CV (folds fit on
    ``cpus`` processes; the result does not depend on it)."""
    from pivq.analysis.probe import probe_attributes
    from pivq.data.prepared import TABLE_FILES, PreparedDataset
    from pivq.encode import load_codes

    codes, _, K = load_codes(codes_path, expect=_codes_expect(spec), against=f"experiments.{name}")
    data = PreparedDataset(dataset_dir)
    data.verify(TABLE_FILES)  # the probe reads no pixels: hashing images.npy would be wasted
    result = probe_attributes(codes, K, data.attributes, list(data.binary_attributes), folds=settings["folds"],
                              seed=settings["seed"], n_jobs=cpus)
    result = {"experiment": name, "dataset": dataset_name, **result}
    write_json(out_path, result)
    return result


def report_tables(experiments: dict, report: dict, metrics_dir: str | Path, out_dir: str | Path,
                  params: dict | None = None) -> list[Path]:
    """Tables 1-3, paper-vs-reproduced, the quantizers and the attributes from results/metrics (``experiments``:
    config.report_experiments). With ``params`` (the pipeline's and the CLI's calls), the metrics must record that
    they were built with its settings (pivq.built_with), else nothing is written."""
    from pivq.report.tables import build_tables

    if params is not None:
        check_built_with(params, metrics_dir)
    return build_tables(experiments, Path(metrics_dir), Path(out_dir), formats=report["tables"]["formats"])


def report_figures(experiments: dict, report: dict, metrics_dir: str | Path, out_dir: str | Path,
                   params: dict | None = None) -> list[Path]:
    """Figures 1, 4, 5, the reconstructions, the training curves and the code atlases from results/metrics;
    ``params`` as for :func:`report_tables`."""
    from pivq.report.figures import build_figures

    if params is not None:
        check_built_with(params, metrics_dir)
    fig = report["figures"]
    return build_figures(experiments, Path(metrics_dir), Path(out_dir), dpi=fig["dpi"], formats=fig["formats"],
                         top_attributes=fig["top_attributes"], probe_order=fig["probe_order"])
