"""Figures 1, 4 and 5 of the paper from this pipeline's outputs, plus training curves and the code atlas.

Figures are drawn on bare ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot state) under
matplotlib's default style with a fixed font, and saved without timestamps or version strings, so the
same inputs give the same bytes on every run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pivq.analysis.capacity import conventional_vq_bits, matching_bits, nearest_bits, pi_upper_bound_bits
from pivq.analysis.probe import accuracy_order, gain_order
from pivq.io import atomic_path
from pivq.report import code_atlas, interpolation_paths, metrics_json, reconstructions, training_log
from pivq.report import paper_values as paper

STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib, so present everywhere
    "font.size": 8,
    "axes.titlesize": 9,
    "legend.fontsize": 7,
    "svg.hashsalt": "pivq",
}
# PDF and PNG writers stamp the date and matplotlib's version unless told not to.
METADATA = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None}, "png": {"Software": None}}

# Figure 4's settings: the paper's CelebA-HQ model.
FIG4_K = paper.TABLE2_K
FIG4_K_IMG = paper.TABLE2[0]["k_img_max"]
FIG4_L_MAX = 1024


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # ignore any user matplotlibrc
        matplotlib.rcParams.update(STYLE)
        yield


def _save(fig: Figure, out_dir: Path, name: str, dpi: int, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=METADATA.get(fmt))
        paths.append(path)
    return paths


# --- Figure 1 ------------------------------------------------------------------------------------

def _mosaic(images: np.ndarray, gap: int, pair_gap: int) -> np.ndarray:
    """Tile (pairs, paths, steps, H, W, 3) into one image: a row per path, extra space between pairs."""
    pairs, paths, steps, h, w, _ = images.shape
    height = pairs * paths * h + (pairs * paths - 1) * gap + (pairs - 1) * (pair_gap - gap)
    width = steps * w + (steps - 1) * gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for p in range(pairs):
        for q in range(paths):
            for s in range(steps):
                x = s * (w + gap)
                canvas[y:y + h, x:x + w] = images[p, q, s]
            y += h + (pair_gap if q == paths - 1 else gap)
    return canvas


def figure1_columns(steps: int) -> list[str]:
    """Figure 1's column labels for rows of ``steps`` images (the two images, their decodes and the path between)."""
    inner = [f"step {i}" for i in range(1, steps - 3)]
    return ["source", "decoded\nsource", *inner, "decoded\ntarget", "target"]


def figure1(images: np.ndarray, experiment: str, paths_per_pair: int = 2) -> Figure:
    """Rows of interpolation paths, two paths per pair (paper's Figure 1): each row is the source image, its
    decode, the path's decoded steps (one code swapped at a time, evenly spaced), the target's decode and the
    target image; the columns are labelled."""
    images = images[:, :paths_per_pair]
    pairs, paths, steps, h, w, _ = images.shape
    gap = max(1, h // 32)
    mosaic = _mosaic(images, gap, pair_gap=4 * gap)
    width_in, top_in = 6.5, 0.75
    fig = Figure(figsize=(width_in, width_in * mosaic.shape[0] / mosaic.shape[1] + top_in))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - top_in / fig.get_figheight()))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    labels = figure1_columns(steps) if steps >= 4 else [""] * steps
    for s, label in enumerate(labels):
        ax.text(s * (w + gap) + w / 2, -gap, label, ha="center", va="bottom", fontsize=6.5, clip_on=False)
    fig.suptitle(f"Interpolation paths ({experiment}): {paths} random paths per pair of test images,\n"
                 "one code swapped per step", y=0.995, va="top")
    return fig


# --- reconstructions ----------------------------------------------------------------------------

def reconstructions_figure(runs: list[tuple[str, str, dict[str, np.ndarray]]]) -> Figure:
    """Test images above, each run's decodes of them below, one row per run (``runs``: (experiment, quantizer,
    reconstructions.npz's arrays)); the runs must show the same test images."""
    first = runs[0][2]
    for name, _, arrays in runs[1:]:
        if not np.array_equal(arrays["image_index"], first["image_index"]):
            raise ValueError(f"reconstructions.npz of {name} shows other test images than {runs[0][0]}'s")
    rows = [("test images", first["original"])] + [(f"{q}\n({name})", a["reconstruction"]) for name, q, a in runs]
    n, h, w, _ = first["original"].shape
    gap = max(1, h // 16)
    canvas = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, (_, images) in enumerate(rows):
        for i in range(n):
            canvas[r * (h + gap):r * (h + gap) + h, i * (w + gap):i * (w + gap) + w] = images[i]
    left_in, width_in = 1.1, 5.4
    height_in = width_in * canvas.shape[0] / canvas.shape[1]
    fig = Figure(figsize=(left_in + width_in + 0.1, height_in + 0.45))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left_in / fw, 0.05 / fh, width_in / fw, height_in / fh))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for r, (label, _) in enumerate(rows):
        ax.text(-gap * 2, r * (h + gap) + h / 2, label, ha="right", va="center", fontsize=7, clip_on=False)
    fig.suptitle("Reconstructions: the first test images and their decodes (each from its code set)",
                 y=1 - 0.05 / fh, va="top")
    return fig


# --- Figure 4 ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)  # exact big-integer binomials: compute the 1024-point curves once
def capacity_curves(K: int = FIG4_K, k_img: int = FIG4_K_IMG, l_max: int = FIG4_L_MAX) -> dict[str, np.ndarray]:
    """Bits against L = 1..l_max for the three approaches of Figure 4 and the PI bound with repeats.

    Below L = k_img an image cannot hold k_img distinct codes, so the nearest curve uses min(k_img, L).
    """
    lengths = np.arange(1, l_max + 1)
    return {
        "L": lengths,
        "conventional": np.array([conventional_vq_bits(K, L) for L in lengths]),
        "nearest": np.array([nearest_bits(K, min(k_img, L), L) for L in lengths]),
        "matching": np.array([matching_bits(K, L) for L in lengths]),
        "upper_bound": np.array([pi_upper_bound_bits(K, L) for L in lengths]),
    }


def figure4(runs: list[tuple[str, dict]]) -> Figure:
    """Capacity against code length at K = 4096 (paper's Figure 4), with our runs' measured points."""
    curves = capacity_curves()
    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.add_subplot()
    L = curves["L"]
    ax.plot(L, curves["conventional"], color="tab:gray", label="standard VQ: L log2 K")
    ax.plot(L, curves["upper_bound"], color="tab:gray", ls=":", label="PI-VQ bound with repeats: log2 C(K+L-1, L)")
    ax.plot(L, curves["matching"], color="tab:blue", label="PI-VQ matching (eq. 4)")
    ax.plot(L, curves["nearest"], color="tab:orange", label=f"PI-VQ nearest, K_img={FIG4_K_IMG} (eq. 2)")
    reported = [(paper.TABLE2_L, row["bits"]) for row in paper.TABLE2]
    ax.plot(*zip(*reported), ls="none", marker="x", color="tab:red", label="paper, Table 2 (as printed)")
    markers = {"matching": "o", "nearest": "s", "sinkhorn": "^"}
    for name, cap in runs:
        ax.plot([cap["L"]], [cap["bits"]], ls="none", marker=markers.get(cap["quantizer"], "D"), color="black",
                mfc="none", label=f"run {name}: {cap['quantizer']}, K={cap['K']}, K_img={cap['k_img_max']}")
    ax.set_yscale("log")
    ax.set_xlim(0, FIG4_L_MAX)
    ax.set_xlabel("code length L")
    ax.set_ylabel("capacity (bits per image)")
    ax.set_title(f"Information capacity against code length (curves: K = {FIG4_K})")
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    return fig


# --- Figure 5 ------------------------------------------------------------------------------------

PROBE_ORDERS = {"accuracy": (accuracy_order, "accuracy (most predictable)"),  # the paper's Figure 5
                "gain": (gain_order, "gain over baseline")}


def figure5_rows(probe: dict, top: int, order: str = "accuracy") -> list[dict]:
    """The ``top`` attributes Figure 5 draws, in its order: ``order`` "accuracy" = highest cross-validated
    accuracy_mean first, "gain" = largest gain over the majority baseline first (probe.json's order); ties by
    name (report.figures.probe_order)."""
    if order not in PROBE_ORDERS:
        raise ValueError(f"report.figures.probe_order: {order!r} is not one of {sorted(PROBE_ORDERS)}")
    return sorted(probe["attributes"], key=PROBE_ORDERS[order][0])[:top]


def figure5(probe: dict, experiment: str, top: int, order: str = "accuracy") -> Figure:
    """Probe accuracy (mean +- std over folds) beside the majority baseline, the ``top`` attributes by ``order``
    (:func:`figure5_rows`)."""
    rows = figure5_rows(probe, top, order)
    x = np.arange(len(rows))
    width = 0.4
    fig = Figure(figsize=(max(3.5, 0.38 * len(rows) + 1.2), 3.4))
    ax = fig.add_subplot()
    ax.bar(x - width / 2, [r["accuracy_mean"] for r in rows], width, yerr=[r["accuracy_std"] for r in rows],
           capsize=2, color="tab:blue", error_kw={"lw": 0.8}, label="logistic regression on code presence")
    ax.bar(x + width / 2, [r["baseline"] for r in rows], width, color="tab:gray",
           label="baseline (majority class)")
    ax.set_xticks(x, [r["name"] for r in rows], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(f"accuracy ({probe['folds']}-fold cross-validation)")
    ax.set_title(f"Attribute probe ({experiment}): top {len(rows)} by {PROBE_ORDERS[order][1]}")
    ax.legend(loc="upper right", ncols=2, frameon=False)
    ax.grid(True, axis="y", lw=0.4, alpha=0.5)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


# --- code atlas ----------------------------------------------------------------------------------

ATLAS_DIFF_GAIN = 4  # |change| tiles: mean absolute change over RGB, times this, black at 255 and above
ATLAS_TILE_IN = (0.42, 0.9)  # inches per image tile: at least (small images), at most (256 px and up)
ATLAS_HEADERS = {"add": "add: top positive codes swapped into test images without the attribute",
                 "remove": "remove: top negative codes swapped into test images with the attribute"}


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, the mean absolute RGB change between two uint8 images (H, W)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)


def _change_tile(change: np.ndarray) -> np.ndarray:
    """A change map, amplified, as a grey tile (white: no change)."""
    grey = 255 - np.clip(change * ATLAS_DIFF_GAIN, 0, 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def code_atlas_figure(atlas: dict[str, np.ndarray], experiment: str) -> Figure:
    """A row per attribute; per direction, each test image as (decoded, swapped, |change|) with the codes that
    came in and went out beneath; the probe's accuracy and baseline at the left."""
    original, swapped = atlas["original"], atlas["swapped"]
    n_attr, n_dir, n_img, h, w, _ = original.shape
    # layout in tile units (one tile = h pixels)
    gap, triplet_gap, dir_gap, caption, row_gap = 0.08, 0.35, 0.7, 0.62, 0.18
    triplet = 3 + 2 * gap
    group = n_img * triplet + (n_img - 1) * triplet_gap
    pitch = 1 + caption + row_gap
    width_t, height_t = n_dir * group + (n_dir - 1) * dir_gap, n_attr * pitch - row_gap

    def px(t: float) -> int:
        return int(round(t * h))

    change = _change(original, swapped)  # (A, 2, n, H, W)
    canvas = np.full((px(height_t), px(width_t), 3), 255, dtype=np.uint8)
    tile_x = {}  # (direction, image) -> x of its first tile, in tile units
    for d in range(n_dir):
        for i in range(n_img):
            tile_x[d, i] = d * (group + dir_gap) + i * (triplet + triplet_gap)
    for a in range(n_attr):
        y = px(a * pitch)
        for (d, i), x in tile_x.items():
            tiles = (original[a, d, i], swapped[a, d, i], _change_tile(change[a, d, i]))
            for k, tile in enumerate(tiles):
                x0 = px(x + k * (1 + gap))
                canvas[y:y + h, x0:x0 + w] = tile

    tile_in = min(max(ATLAS_TILE_IN[0], h / 300), ATLAS_TILE_IN[1])
    left_in, top_in, bottom_in = 1.25, 0.62, 0.12
    fig = Figure(figsize=(left_in + width_t * tile_in + 0.1, top_in + height_t * tile_in + bottom_in))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left_in / fw, bottom_in / fh, width_t * tile_in / fw, height_t * tile_in / fh))
    ax.imshow(canvas, interpolation="nearest", extent=(0, width_t, height_t, 0))
    ax.set_xlim(0, width_t)
    ax.set_ylim(height_t, 0)
    ax.set_axis_off()
    small = {"fontsize": 5.5, "ha": "center", "clip_on": False}
    directions = [str(s) for s in atlas["directions"]]
    for d, direction in enumerate(directions):
        ax.text(d * (group + dir_gap) + group / 2, -0.42, ATLAS_HEADERS.get(direction, direction), fontsize=7,
                ha="center", va="bottom", clip_on=False)
        for i in range(n_img):
            for k, label in enumerate(("decoded", "swapped", f"change x{ATLAS_DIFF_GAIN}")):
                ax.text(tile_x[d, i] + k * (1 + gap) + 0.5, -0.06, label, va="bottom", **small)
    for a in range(n_attr):
        y = a * pitch
        std = float(atlas["accuracy_std"][a])
        accuracy = f"probe {float(atlas['accuracy'][a]):.3f}" + ("" if np.isnan(std) else f" \u00b1 {std:.3f}")
        ax.text(-0.25, y + 0.5, f"{atlas['attributes'][a]}\n{accuracy}\nbaseline {float(atlas['baseline'][a]):.3f}",
                fontsize=7, ha="right", va="center", clip_on=False, linespacing=1.35)
        for (d, i), x in tile_x.items():
            codes_in = " ".join(str(int(c)) for c in atlas["swapped_in"][a, d, i])
            codes_out = " ".join(str(int(c)) for c in atlas["swapped_out"][a, d, i])
            ax.text(x + triplet / 2, y + 1.05, f"in {codes_in} / out {codes_out}\n"
                    f"image {int(atlas['image_index'][a, d, i])}, mean |change| {change[a, d, i].mean():.1f}", va="top",
                    linespacing=1.3, **small)
    m = atlas["swapped_in"].shape[-1]
    fig.suptitle(f"Code atlas ({experiment}): the probe's top {m} code{'s' if m > 1 else ''} of each attribute "
                 f"swapped into test images for the {m} least related to it; change: mean |RGB difference| "
                 f"x{ATLAS_DIFF_GAIN}, white = none", y=1 - 0.06 / fh, va="top", fontsize=8)
    return fig


# --- training curves -------------------------------------------------------------------------------

TRAINING_PANELS = (("l1", "reconstruction L1 (train batches)"), ("loss", "total loss"),
                   ("k_data", "codes used in a log window (K_data)"), ("k_img_max", "distinct codes per image (K_img)"))
CODEBOOK_COLUMNS = ("k_data", "k_img_max", "k_img_mean")  # undefined before T_q: the codes do not exist yet


def training_curves(logs: list[tuple[str, pd.DataFrame, list[int]]]) -> Figure:
    """L1, loss, K_data and K_img against step, one colour per experiment (``logs``: (experiment, its
    training_log.csv, the steps of its codebook initialisations)). The first initialisation is T_q, drawn as a
    dashed line, the re-initialisations dotted; the codebook columns are blank before T_q. K_img: the largest
    per image in the window (solid), the mean (thin). Panels with no data are left out."""
    panels = [(col, title) for col, title in TRAINING_PANELS if any(col in log.columns for _, log, _ in logs)]
    fig = Figure(figsize=(2.9 * max(1, len(panels)), 3.0))
    colours = [f"C{i}" for i in range(len(logs))]
    last = max((float(log["step"].max()) for _, log, _ in logs if len(log)), default=1.0)
    for i, (col, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for colour, (name, log, inits) in zip(colours, logs):
            if col not in log.columns:
                continue
            quantized = log["quantized"].astype(bool) if "quantized" in log.columns else pd.Series(True, log.index)
            values = log[col].where(quantized) if col in CODEBOOK_COLUMNS else log[col]
            ax.plot(log["step"], values, lw=0.9, color=colour, label=name)
            if col == "k_img_max" and "k_img_mean" in log.columns:
                ax.plot(log["step"], log["k_img_mean"].where(quantized), lw=0.5, color=colour)
            for k, step in enumerate(inits):
                ax.axvline(step, color=colour, lw=0.7, ls="--" if k == 0 else ":", alpha=0.8,
                           label=(f"T_q = {step}" if k == 0 else "codebook re-initialised") if i == 0 and k < 2
                           else None)
        if col in ("l1", "loss"):
            ax.set_yscale("log")
        ax.set_xlim(0, last)  # the same steps in every panel: the codebook panels start blank at T_q
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(True, lw=0.4, alpha=0.5)
        if i == 0:
            ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def _init_steps(metrics_dir: Path, experiment: str) -> list[int]:
    """The steps of a run's codebook initialisations (training.json's codebook_inits); none if it is absent."""
    training = metrics_json(metrics_dir, experiment, "training.json")
    return [int(init["step"]) for init in (training or {}).get("codebook_inits", [])]


# --- entry point -----------------------------------------------------------------------------------

def build_figures(experiments: dict[str, dict], metrics_dir: Path, out_dir: Path, dpi: int = 150,
                  formats: Sequence[str] = ("png", "pdf"), top_attributes: int = 15,
                  probe_order: str = "accuracy") -> list[Path]:
    """Write every figure whose inputs exist; return the paths written (Figure 4 is always drawn).
    ``top_attributes`` and ``probe_order`` (report.figures): Figure 5's attributes (:func:`figure5_rows`)."""
    if probe_order not in PROBE_ORDERS:  # before any figure is drawn
        raise ValueError(f"report.figures.probe_order: {probe_order!r} is not one of {sorted(PROBE_ORDERS)}")
    metrics_dir, out_dir = Path(metrics_dir), Path(out_dir)
    drawn: list[tuple[str, Callable[[], Figure]]] = []

    for name in experiments:
        images = interpolation_paths(metrics_dir, name)
        if images is not None:
            drawn.append(("figure1_interpolations", lambda images=images, name=name: figure1(images, name)))
            break

    shown = [(n, spec["quantizer"], r) for n, spec in experiments.items()
             if (r := reconstructions(metrics_dir, n)) is not None]
    if shown:
        drawn.append(("reconstructions", lambda: reconstructions_figure(shown)))

    runs = [(n, c) for n in experiments if (c := metrics_json(metrics_dir, n, "capacity.json")) is not None]
    drawn.append(("figure4_capacity", lambda: figure4(runs)))

    for name in experiments:
        probe = metrics_json(metrics_dir, name, "probe.json")
        if probe is not None and probe["attributes"]:
            drawn.append((f"figure5_probe_{name}",
                          lambda p=probe, n=name: figure5(p, n, top_attributes, probe_order)))

    for name in experiments:
        atlas = code_atlas(metrics_dir, name)
        if atlas is not None:
            drawn.append((f"code_atlas_{name}", lambda a=atlas, n=name: code_atlas_figure(a, n)))

    logs = [(n, log, _init_steps(metrics_dir, n)) for n in experiments
            if (log := training_log(metrics_dir, n)) is not None]
    if logs:
        drawn.append(("training_curves", lambda: training_curves(logs)))

    written = []
    with _style():
        for stem, draw in drawn:
            written += _save(draw(), out_dir, stem, dpi, formats)
    return written
