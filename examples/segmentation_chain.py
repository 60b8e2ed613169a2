"""Does DPE enhancement help a downstream segmentation network? Grey and white matter on MNI152.

A small MONAI ``UNet`` learns grey- and white-matter segmentation from *clean* axial slices of
the MNI152 2009 T1 template (nilearn ships the template and its tissue probability maps in its
wheel; nothing is downloaded), then segments held-out slices that are clean, degraded with the
project's ``radiology`` and ``paper`` presets (fixed seeds), degraded then enhanced by the
shipped DPE weights, and degraded then enhanced by CLAHE (the project's classical baseline).
Enhancement and segmentation run as one MONAI ``Compose``::

    IntensityPolicyd                                    (the bundle's invertible robust stretch)
    -> DPENet through SliceWiseInferer(network_wrapper=ChannelAdapter), BlendInputFitd | CLAHE | nothing
    -> ScaleIntensityRangePercentilesd                  (the segmenter's own input normalisation)
    -> UNet through SliceWiseInferer -> AsDiscreted(argmax)

Data and protocol:

* Labels: the argmax of background (``1 - GM - WM``: CSF and outside the brain), grey-matter
  and white-matter probability, i.e. a voxel is GM or WM where that tissue's probability is
  the largest of the three (ties go to the lower label). The template is skull-stripped.
* Axial slices (1 mm), cropped in-plane to 160 x 192 around the brain; slices where GM and WM
  cover at least 5 % of the crop are used.
* Split by slab: consecutive slabs of 16 slices, every third slab is test; training slices
  within 3 slices of a test slice are dropped, so no test slice has a training neighbour.
  The template is one (averaged) brain, so this measures generalisation across slice levels
  of one anatomy, not across subjects.
* The UNet is trained on clean slices only, without intensity augmentation: the setting in
  which an enhancer in front of it could matter most.
* The MNI152 volume is in the DPE corpus's *validation* split: the shipped weights never saw it.

Writes ``downstream.md``, ``downstream.json`` and ``downstream.png`` to ``--output-dir``.

    python examples/segmentation_chain.py --output-dir OUT [--quick]
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.networks.utils import one_hot
from monai.transforms import AsDiscreted, Compose, CopyItemsd, DeleteItemsd, MapTransform, ScaleIntensityRangePercentilesd
from monai.utils import convert_to_dst_type, convert_to_numpy, convert_to_tensor, set_determinism
from tqdm.auto import tqdm

from monai_dpe.engines.baselines import clahe
from monai_dpe.files import atomic_path, write_json
from monai_dpe.inferers import SliceWiseInferer
from monai_dpe.networks import ChannelAdapter, load_weights, sha256_of
from monai_dpe.networks.weights import recorded_sha256
from monai_dpe.transforms import LEVEL_META_KEY, BlendInputFitd, IntensityPolicyd, SeededPerceptualDegradationd

logger = logging.getLogger("segmentation_chain")

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
CLASSES = ("background", "grey matter", "white matter")
INPUTS = ("clean", "radiology", "paper")  # test input: clean, or degraded by a preset
METHODS = ("none", "dpe", "clahe")  # what runs between the stretch and the segmenter
METHOD_NAMES = {"none": "no enhancement", "dpe": "DPE (shipped weights)", "clahe": "CLAHE"}
CROP = (160, 192)  # in-plane crop (x, y) around the brain; divisible by the UNet's stride product
MIN_BRAIN_FRACTION = 0.05
SLAB, TEST_EVERY, GUARD = 16, 3, 3
FULL_STEPS, QUICK_STEPS, QUICK_TEST_STRIDE = 300, 40, 8  # --quick: short training, every 8th test slice
DEFAULTS = {"batch_size": 8, "lr": 3e-3, "seed": 0}  # the segmenter's training options
DEFAULT_WEIGHTS = BUNDLE / "models" / "model.pt"


# ----------------------------------------------------------------------------------------------- data
def load_mni152() -> tuple[np.ndarray, np.ndarray]:
    """The 1 mm MNI152 2009 T1 template in [0, 1] and its GM/WM labels (0 background, 1 GM, 2 WM)."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    t1 = load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    gm = load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    background = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([background, gm, wm]), axis=0).astype(np.int64)
    return np.clip(t1, 0.0, 1.0), labels


def crop_to_brain(t1: np.ndarray, labels: np.ndarray, size: Sequence[int] = CROP) -> tuple[np.ndarray, np.ndarray]:
    """Crop x and y to ``size`` around the centre of the labelled brain (all axial slices)."""
    brain = np.argwhere(labels > 0)
    centre = (brain.min(0) + brain.max(0)) // 2
    box = []
    for axis, length in enumerate(size):
        start = int(np.clip(centre[axis] - length // 2, 0, labels.shape[axis] - length))
        box.append(slice(start, start + length))
    return t1[box[0], box[1]], labels[box[0], box[1]]


def split_slices(labels: np.ndarray, slab: int = SLAB, test_every: int = TEST_EVERY, guard: int = GUARD) -> dict:
    """Axial slice indices for training and test: slabs of ``slab`` slices, every ``test_every``-th one
    (starting with the second) is test, training slices closer than ``guard + 1`` to a test slice are dropped."""
    fraction = (labels > 0).mean(axis=(0, 1))
    usable = np.flatnonzero(fraction >= MIN_BRAIN_FRACTION)
    first = int(usable[0])
    test = [int(z) for z in usable if ((z - first) // slab) % test_every == 1]
    test_arr = np.asarray(test)
    train = [int(z) for z in usable if z not in test and np.abs(test_arr - z).min() > guard]
    return {"train": train, "test": test, "usable": [first, int(usable[-1])]}


def axial(volume: np.ndarray, z: int) -> torch.Tensor:
    """One axial slice as a (1, X, Y) float tensor."""
    return torch.as_tensor(np.ascontiguousarray(volume[:, :, z]))[None]


# ------------------------------------------------------------------------------------------ the chain
class Inferd(MapTransform):
    """Run ``network`` through ``inferer`` on each key's (C, H, W) image, as one step of a ``Compose``.

    Args:
        keys: images to run the network on.
        network: the network (left in eval mode).
        inferer: a MONAI inferer, called as ``inferer(batch, network)``.
        output_key: where the output goes (default: replace the input).
    """

    def __init__(self, keys: KeysCollection, network: torch.nn.Module, inferer: Callable, output_key: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.network, self.inferer, self.output_key = network, inferer, output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            with torch.no_grad():
                d[self.output_key or key] = self.inferer(d[key][None], self.network)[0]
        return d


class Classicald(MapTransform):
    """A classical grey-level enhancement from ``monai_dpe.engines.evaluation`` (e.g. ``clahe``) on [0, 1] images."""

    def __init__(self, keys: KeysCollection, method: Callable[[np.ndarray, bool], np.ndarray] = clahe,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.method = method

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key]).float().clamp(0.0, 1.0)
            hwc = img.permute(1, 2, 0).cpu().numpy().astype(np.float64)
            out = np.clip(self.method(hwc, False), 0.0, 1.0).astype(np.float32)
            d[key], *_ = convert_to_dst_type(torch.from_numpy(out).permute(2, 0, 1).contiguous(), d[key])
        return d


def segmenter_input() -> list:
    """Preprocessing every segmenter input goes through, in training and in the chain."""
    return [
        # the level in the item too: these slices are tensors without a file's metadata, where inference finds it
        IntensityPolicyd("image", level_key="level"),
        ScaleIntensityRangePercentilesd("image", lower=0.5, upper=99.5, b_min=0.0, b_max=1.0),
    ]


def build_chain(method: str, segmenter: torch.nn.Module, enhancer: torch.nn.Module | None = None) -> Compose:
    """stretch -> enhancement (``method``) -> segmenter normalisation -> UNet -> argmax, as one ``Compose``."""
    stretch, normalise = segmenter_input()
    if method == "dpe":
        # the bundle's inference pieces: plain DPENet, ChannelAdapter applied by the inferer (grey in, grey out)
        enhance = [Inferd("image", enhancer, SliceWiseInferer(spatial_dim=-1, sw_batch_size=1, network_wrapper=ChannelAdapter,
                                                      meta_kwargs={"level": LEVEL_META_KEY}), output_key="enhanced"),
                   BlendInputFitd("enhanced", image_key="image", blend=bundle_value("blend")),
                   DeleteItemsd("image"), CopyItemsd("enhanced", names="image")]
    elif method == "clahe":
        enhance = [Classicald("image", clahe)]
    elif method == "none":
        enhance = []
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    return Compose([
        stretch,
        *enhance,
        normalise,
        Inferd("image", segmenter, SliceWiseInferer(spatial_dim=-1, sw_batch_size=1), output_key="pred"),
        AsDiscreted("pred", argmax=True),
    ])


def bundle_value(key: str):
    """``key`` as the bundle's ``inference.json`` sets it."""
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "inference.json")
    parser["bundle_root"] = str(BUNDLE)  # the files the configs read beside the weights (the level prior)
    return parser.get_parsed_content(key)


def load_enhancer(weights: Path) -> torch.nn.Module:
    """The bundle's DPENet (its ``network_def``), weights checked against the bundle's record."""
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "inference.json")
    network = parser.get_parsed_content("network_def")
    return load_weights(network, weights, sha256=recorded_sha256(BUNDLE, weights)).eval()


# ----------------------------------------------------------------------------------------- training
def train_segmenter(images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int, lr: float,
                    seed: int) -> tuple[torch.nn.Module, list[float]]:
    """A 2D UNet (3 classes) trained with DiceCE on random batches of clean slices; returns it and the losses."""
    set_determinism(seed)
    network = UNet(spatial_dims=2, in_channels=1, out_channels=len(CLASSES), channels=(16, 32, 64, 128),
                   strides=(2, 2, 2), num_res_units=1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    network.train()
    with tqdm(range(steps), desc="training UNet", unit="step") as bar:
        for _ in bar:
            index = torch.randint(len(images), (batch_size,), generator=generator)
            optimiser.zero_grad()
            loss = loss_fn(network(images[index]), labels[index])
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return network.eval(), losses


# --------------------------------------------------------------------------------------- evaluation
def dice_per_slice(pred: torch.Tensor, label: torch.Tensor) -> list[float | None]:
    """Dice of GM and WM for one (1, H, W) prediction against its label (``None`` where a class is absent)."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    scores = metric(one_hot(pred[None].long(), len(CLASSES)), one_hot(label[None].long(), len(CLASSES)))[0]
    return [None if torch.isnan(s) else float(s) for s in scores]


def summarise(per_slice: dict[str, dict[str, list]]) -> dict[str, dict[str, dict]]:
    """Per input and method: mean GM, WM and (GM + WM) / 2 Dice, and the paired change against no enhancement."""
    out: dict[str, dict[str, dict]] = {}
    for source, methods in per_slice.items():
        base = np.array(methods["none"], dtype=float)
        out[source] = {}
        for method, scores in methods.items():
            arr = np.array(scores, dtype=float)  # (slices, 2); NaN where a class is absent
            mean = np.nanmean(arr, axis=1)
            entry = {"gm": float(np.nanmean(arr[:, 0])), "wm": float(np.nanmean(arr[:, 1])),
                     "mean": float(np.mean(mean)), "std": float(np.std(mean)), "slices": len(arr)}
            if method != "none":
                delta = mean - np.nanmean(base, axis=1)
                entry.update({"delta_mean": float(delta.mean()), "better_slices": int((delta > 0).sum()),
                              "worse_slices": int((delta < 0).sum())})
            out[source][method] = entry
    return out


def evaluate(t1: np.ndarray, labels: np.ndarray, test: list[int], chains: dict[str, Compose], seed: int,
             keep: int | None) -> tuple[dict, dict, dict]:
    """Dice of every (input, method) on the test slices; also the degradation draws and the panels of slice ``keep``."""
    per_slice = {source: {method: [] for method in chains} for source in INPUTS}
    draws: dict[str, list] = {source: [] for source in INPUTS if source != "clean"}
    panels: dict[str, dict[str, Any]] = {}
    for z in tqdm(test, desc="test slices", unit="slice"):
        clean = {"image": axial(t1, z), "label": axial(labels, z), "slice_id": f"mni152_z{z:03d}"}
        for source in INPUTS:
            item = dict(clean, preset=source)
            if source != "clean":
                degrade = SeededPerceptualDegradationd("image", target_keys=None, seed=seed, id_key="slice_id",
                                                       preset_key="preset", params_key="degradation")
                item = degrade(item)
                draws[source].append({"z": z, **item["degradation"]})
            for method, chain in chains.items():
                result = chain(dict(item))
                per_slice[source][method].append(dice_per_slice(result["pred"], item["label"]))
                if z == keep:
                    panels.setdefault(source, {})[method] = {
                        "input": convert_to_numpy(result["image"][0]), "pred": convert_to_numpy(result["pred"][0]).astype(np.uint8)}
        if z == keep:
            panels["truth"] = clean["label"][0].numpy().astype(np.uint8)
    return per_slice, draws, panels


# ------------------------------------------------------------------------------------------ reports
def write_figure(path: Path, panels: dict, summary: dict, keep: int) -> None:
    """Degraded / DPE / CLAHE inputs, their predictions and the truth for one slice, and a Dice bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    tissue = ListedColormap(["black", "#d95f02", "#fdf6e3"])  # background, GM, WM
    presets = [s for s in INPUTS if s != "clean"]
    fig = plt.figure(figsize=(13, 2.3 * len(presets) + 3.0))
    grid = fig.add_gridspec(len(presets) + 1, 7, height_ratios=[1] * len(presets) + [1.3], hspace=0.3, wspace=0.04,
                         left=0.02, right=0.98, top=0.9, bottom=0.06)
    titles = [("none", "input", "degraded"), ("dpe", "input", "DPE-enhanced"), ("clahe", "input", "CLAHE"),
              ("none", "pred", "seg. of degraded"), ("dpe", "pred", "seg. after DPE"),
              ("clahe", "pred", "seg. after CLAHE")]
    for row, source in enumerate(presets):
        for col, (method, kind, title) in enumerate(titles):
            ax = fig.add_subplot(grid[row, col])
            image = panels[source][method][kind]
            if kind == "input":
                ax.imshow(np.rot90(image), cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(np.rot90(image), cmap=tissue, vmin=0, vmax=2, interpolation="nearest")
            ax.set_title(f"{title}\n({source})" if col == 0 else title, fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[row, 6])
        ax.imshow(np.rot90(panels["truth"]), cmap=tissue, vmin=0, vmax=2, interpolation="nearest")
        ax.set_title("truth (GM orange, WM light)", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[len(presets), 1:6])
    width = 0.8 / len(METHODS)
    x = np.arange(len(INPUTS))
    for i, method in enumerate(METHODS):
        means = [summary[s][method]["mean"] for s in INPUTS]
        stds = [summary[s][method]["std"] for s in INPUTS]
        bars = ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=2, label=METHOD_NAMES[method])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, [f"{s} test slices" for s in INPUTS])
    ax.set_ylabel("mean Dice (GM, WM)")
    ax.set_ylim(0.0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("UNet trained on clean slices; bars: mean over test slices, whiskers: std", fontsize=9)
    fig.suptitle(f"MNI152 axial test slice z={keep} as the segmenter sees it (after the robust stretch, the "
                 "enhancement and its normalisation)", fontsize=11)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=72)
    plt.close(fig)


def reproduce_command(cfg: dict) -> str:
    """The command line that repeats the run ``cfg`` describes (options left at their defaults omitted)."""
    default_steps = QUICK_STEPS if cfg["quick"] else FULL_STEPS
    options = [f"--output-dir {cfg['output_dir']}", *(["--quick"] if cfg["quick"] else [])]
    options += [f"--steps {cfg['steps']}"] if cfg["steps"] != default_steps else []
    options += [f"--{name.replace('_', '-')} {cfg[name]}" for name, default in DEFAULTS.items() if cfg[name] != default]
    options += [f"--weights {cfg['weights']}"] if Path(cfg["weights"]).resolve() != DEFAULT_WEIGHTS.resolve() else []
    return " ".join(["python examples/segmentation_chain.py", *options, f"--threads {cfg['threads']}"])


def write_markdown(path: Path, report: dict) -> None:
    """The results table and what it says, as Markdown."""
    summary, cfg = report["results"], report["config"]
    chance = report["chance_dice"]
    lines = [
        "# Downstream: DPE enhancement in front of a segmentation network",
        "",
        f"Generated by `{reproduce_command(cfg)}` "
        f"({report['runtime_s']['total']:.0f} s after Python's imports on {cfg['threads']} CPU thread(s), of which "
        f"training {report['runtime_s']['train']:.0f} s and the {len(INPUTS) * len(METHODS)} test chains "
        f"{report['runtime_s']['evaluate']:.0f} s).",
        "",
        "A MONAI `UNet` (2D, 3 classes) is trained on clean axial slices of the MNI152 2009 T1 template "
        f"({len(report['split']['train'])} slices, {cfg['steps']} steps of batch {cfg['batch_size']}, DiceCE) and "
        f"tested on {len(report['split']['test'])} held-out slices (slabs of {SLAB}, every {TEST_EVERY}rd slab, "
        f"{GUARD}-slice guard band). Labels: argmax of background (1 - GM - WM), GM and WM probability. "
        "Enhancement and segmentation run as one MONAI `Compose` (IntensityPolicyd -> DPE or CLAHE or nothing -> "
        "percentile normalisation -> UNet -> argmax). Degradations: the project's `radiology` and `paper` presets "
        f"(`SeededPerceptualDegradationd`: `RandPerceptualDegradation` seeded from seed {cfg['seed']} and the slice). Dice by MONAI `DiceMetric` (GM and WM, background excluded); "
        f"chance (random labels with the test class frequencies): GM {chance['gm']:.3f}, WM {chance['wm']:.3f}.",
        "",
        "| test input | enhancement | Dice GM | Dice WM | mean (std over slices) | change vs no enhancement | slices better / worse |",
        "|---|---|---|---|---|---|---|",
    ]
    for source in INPUTS:
        for method in METHODS:
            r = summary[source][method]
            change = f"{r['delta_mean']:+.3f}" if "delta_mean" in r else "-"
            counts = f"{r['better_slices']} / {r['worse_slices']}" if "delta_mean" in r else "-"
            lines.append(f"| {source} | {METHOD_NAMES[method]} | {r['gm']:.3f} | {r['wm']:.3f} | "
                         f"{r['mean']:.3f} ({r['std']:.3f}) | {change} | {counts} |")
    lines += ["", "What the numbers say (a change within 0.005 counts as little):", ""]
    for source in INPUTS:
        none = summary[source]["none"]["mean"]
        parts = []
        for method in ("dpe", "clahe"):
            r = summary[source][method]
            verdict = "helps" if r["delta_mean"] > 0.005 else "hurts" if r["delta_mean"] < -0.005 else "changes little"
            parts.append(f"{METHOD_NAMES[method]} {verdict} ({r['delta_mean']:+.3f}, better on {r['better_slices']} "
                         f"of {r['slices']} slices)")
        lost = "" if source == "clean" else f", {summary['clean']['none']['mean'] - none:.3f} below clean"
        lines.append(f"- {source} inputs: no enhancement {none:.3f}{lost}; " + "; ".join(parts) + ".")
    lines += [
        "",
        "Caveats: one averaged brain (the template), so slices of one anatomy, not subjects; test slices are "
        "correlated, so the std and slice counts describe spread, not independent samples; the UNet saw no "
        "intensity augmentation. The DPE weights were trained on other images (MNI152 is in their validation split).",
        "",
        "Figure: `downstream.png` (images after the robust stretch, which undoes most of the `paper` preset's "
        "brightness and contrast loss, so those inputs look mild); per-slice Dice, split and degradation draws: "
        "`downstream.json`.",
        "",
    ]
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------- main
def run(output_dir: Path, quick: bool = False, steps: int | None = None, batch_size: int = 8, lr: float = 3e-3,
        seed: int = 0, threads: int | None = None, weights: Path = DEFAULT_WEIGHTS) -> dict:
    """The whole experiment; returns the report written to ``output_dir/downstream.json``."""
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    steps = steps if steps is not None else (QUICK_STEPS if quick else FULL_STEPS)
    t1, labels = crop_to_brain(*load_mni152())
    split = split_slices(labels)
    test = split["test"][::QUICK_TEST_STRIDE] if quick else split["test"]
    logger.info("MNI152 crop %s, %d usable axial slices (z %d-%d): %d training, %d test",
                t1.shape, split["usable"][1] - split["usable"][0] + 1, *split["usable"], len(split["train"]), len(test))

    prepare = Compose(segmenter_input())
    images = torch.stack([convert_to_tensor(prepare({"image": axial(t1, z)})["image"], track_meta=False)
                          for z in split["train"]])
    targets = torch.stack([axial(labels, z) for z in split["train"]])
    train_start = time.perf_counter()
    segmenter, losses = train_segmenter(images, targets, steps, batch_size, lr, seed)
    train_s = time.perf_counter() - train_start

    chains = {"none": build_chain("none", segmenter), "dpe": build_chain("dpe", segmenter, load_enhancer(weights)),
              "clahe": build_chain("clahe", segmenter)}
    brain = [(int((labels[:, :, z] > 0).sum()), z) for z in test]
    keep = max(brain)[1]  # the test slice with the most brain, for the figure
    eval_start = time.perf_counter()
    per_slice, draws, panels = evaluate(t1, labels, test, chains, seed, keep)
    eval_s = time.perf_counter() - eval_start
    summary = summarise(per_slice)

    test_labels = labels[:, :, test]
    import monai
    import nilearn

    report = {
        "config": {"output_dir": str(output_dir), "quick": quick, "steps": steps, "batch_size": batch_size, "lr": lr,
                   "seed": seed, "threads": torch.get_num_threads(), "crop": list(CROP), "slab": SLAB,
                   "test_every": TEST_EVERY, "guard": GUARD, "min_brain_fraction": MIN_BRAIN_FRACTION,
                   "weights": str(weights), "weights_sha256": sha256_of(weights),
                   "versions": {"torch": torch.__version__, "monai": monai.__version__, "nilearn": nilearn.__version__}},
        "split": {"train": split["train"], "test": test, "usable_z": split["usable"]},
        "chance_dice": {"gm": float((test_labels == 1).mean()), "wm": float((test_labels == 2).mean())},
        "results": summary,
        "figure_slice": keep,
        "final_train_loss": float(np.mean(losses[-10:])),
        "runtime_s": {"train": train_s, "evaluate": eval_s, "total": time.perf_counter() - start},
        "per_slice_dice_gm_wm": per_slice,
        "degradations": draws,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_figure(output_dir / "downstream.png", panels, summary, keep)
    report["runtime_s"]["total"] = time.perf_counter() - start
    write_json(report, output_dir / "downstream.json")
    write_markdown(output_dir / "downstream.md", report)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, type=Path, help="where downstream.{md,json,png} go")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps, every {QUICK_TEST_STRIDE}th test slice")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {FULL_STEPS}; {QUICK_STEPS} with --quick)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="DPE weights")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 1 or not args.lr > 0:
        parser.error(f"--batch-size must be at least 1 and --lr positive, got {args.batch_size} and {args.lr}")
    if not args.weights.is_file():  # found before training, not after it
        parser.error(f"--weights {args.weights}: no such file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report = run(args.output_dir, args.quick, args.steps, args.batch_size, args.lr, args.seed, args.threads, args.weights)
    r = report["results"]
    print("mean Dice (GM, WM) " + "; ".join(
        f"{s}: " + ", ".join(f"{m} {r[s][m]['mean']:.3f}" for m in METHODS) for s in INPUTS
    ) + f" ({report['runtime_s']['total']:.0f} s) -> {args.output_dir / 'downstream.md'}")


if __name__ == "__main__":
    main()
