"""Quality comparison of DPE against classical methods and MONAI's BasicUNet: table, bar chart, crops.

Reads the metrics JSON that ``bundle/configs/evaluate.json`` writes for DPE (with every classical
baseline) and for the BasicUNet baseline (the same evaluation with ``basicunet_baseline.json``
merged in), and writes ``quality.md``, ``quality_psnr.png`` (PSNR per modality and method, one
panel per degradation preset) and ``quality_crops.png`` (degraded input, best classical method,
BasicUNet, DPE and the truth for each evaluated image under the paper preset).

Usage::

    python -m monai_dpe.reports.quality --dpe-metrics docs/benchmarks/eval/metrics.json \\
        --basicunet-metrics docs/benchmarks/eval_basicunet/metrics.json --output docs/benchmarks
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_dpe.locations import default_bundle
from monai_dpe.engines.baselines import CLASSICAL, apply_baseline
from monai_dpe.engines.evaluation import CLEAN_PRESET
from monai_dpe.extras import require
from monai_dpe.transforms import BlendInputFit

__all__ = ["METHODS", "about", "method_scores", "write_markdown", "psnr_chart", "crop_figure", "main"]

logger = logging.getLogger(__name__)

#: Methods in report order: key in the metrics JSON -> label. ``model`` is the network the file scored.
METHODS = {
    "stretch": "percentile stretch (network input)",
    "histogram_equalisation": "histogram equalisation",
    "clahe": "CLAHE",
    "clahe_nlm": "CLAHE + NLM",
    "auto_gamma": "automatic gamma",
    "bm3d_clahe": "BM3D + CLAHE",
    "basicunet": "MONAI BasicUNet",
    "dpe": "DPE",
}
def about(report: Mapping[str, Any]) -> str:
    """What the tables are computed on, read from DPE's evaluation report (its split, images and presets)."""
    split = report.get("split") or "validation"
    degraded = [p for p in report.get("presets", ["paper", "radiology"]) if p != CLEAN_PRESET]
    images = [i for i in report["images"] if i["preset"] == degraded[0]] if degraded else report["images"]
    sources = sorted({i["source"] for i in images})
    modalities = sorted({_modality(i["modality"]) for i in images})
    return (
        f"The {split} split ({len(images)} images from {len(sources)} sources: {', '.join(modalities)}; a volume is "
        "degraded, stretched and enhanced whole, as inference reads it, and scored on its middle slice), each "
        f"degraded with fixed seeds by the {' and the '.join(degraded)} presets and saved "
        "as its storage depth holds it (8 or 16 bits); scores against the clean image (`bundle/configs/evaluate.json`)."
        + (" The clean preset feeds each clean image as it is: fidelity, the output against the input."
           if CLEAN_PRESET in report.get("presets", []) else "")
        + " Every method gets the same input, the degraded image after the intensity policy's percentile stretch "
        "(DPE's own input, listed first). Classical methods (scikit-image; BM3D from the `bm3d` package) work on the "
        "HSV value of colour images. Structure PSNR is the PSNR after the least-squares map `a * output + b` onto the "
        "truth: it leaves out the global level and measures noise, banding and detail. MONAI's `BasicUNet` is trained "
        "by the same `train.json` with `basicunet_baseline.json` swapping `network_def` (`make baseline`) and is "
        "listed only when its report scores the same split. Reproduce with `make benchmark-quality`."
    )


def _modality(name: str) -> str:
    return os.path.basename(str(name).rstrip("/"))  # MONAI's datalist loader prefixes existing folders


def method_scores(dpe: Mapping[str, Any], basicunet: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """``{preset: {modality or "mean": {method: means}}}`` from the evaluation reports.

    DPE's report contributes its model (as ``dpe``) and its baselines; BasicUNet's report its model.
    """
    table: dict[str, dict] = {}
    sources = [("dpe", dpe)] + ([("basicunet", basicunet)] if basicunet else [])
    for method, report in sources:
        groups = {p: {"mean": v, **{_modality(m): w for m, w in report["per_preset_modality"][p].items()}}
                  for p, v in report["per_preset"].items()}
        for preset, by_modality in groups.items():
            for modality, methods in by_modality.items():
                cell = table.setdefault(preset, {}).setdefault(modality, {})
                cell[method] = methods["model"]
                if method == "dpe":
                    cell.update({k: v for k, v in methods.items() if k in METHODS and isinstance(v, Mapping)})
    return table


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _best_classical(cell: Mapping[str, Any]) -> tuple[str | None, float | None]:
    scored = [(cell[m]["psnr"], m) for m in CLASSICAL if m in cell and cell[m]["psnr"] is not None]
    return (max(scored)[1], max(scored)[0]) if scored else (None, None)


def write_markdown(table: Mapping[str, dict], path: Path, info: Mapping[str, str]) -> None:
    """The comparison as markdown: means per preset, PSNR per modality, and the targets' verdicts."""
    lines = ["# Quality: DPE against classical methods and MONAI BasicUNet", "", info.get("about", ""), ""]
    lines += [f"{k}: {v}" for k, v in info.items() if k not in ("about", "split")] + [""]
    split = info.get("split", "validation")
    for preset in ("paper", "radiology"):
        if preset not in table:
            continue
        lines += [f"## {preset} preset: means over the {split} images", "",
                  "| method | PSNR (dB) | structure PSNR (dB) | SSIM | DeltaE (all) | DeltaE (RGB images) |",
                  "|---|---|---|---|---|---|"]
        mean = table[preset]["mean"]
        for method, label in METHODS.items():
            if method in mean:
                s = mean[method]
                name = f"**{label}**" if method == "dpe" else label
                lines.append(f"| {name} | {_num(s['psnr'])} | {_num(s.get('structure_psnr'))} | {_num(s['ssim'], 3)} | "
                             f"{_num(s['delta_e'])} | {_num(s.get('delta_e_rgb'))} |")
        best, best_psnr = _best_classical(mean)
        dpe = mean["dpe"]["psnr"]
        verdicts = [f"DPE {dpe:.2f} dB; best classical {METHODS[best]} {best_psnr:.2f} dB: margin {dpe - best_psnr:+.2f} dB "
                    f"(target +5 dB: {'met' if dpe - best_psnr >= 5 else 'not met'})"] if best else []
        if "basicunet" in mean:
            gap = dpe - mean["basicunet"]["psnr"]
            verdicts.append(f"margin over BasicUNet (trained for 0.2.0's budget) {gap:+.2f} dB ({'met' if gap > 0 else 'not met'})")
        if preset == "paper":
            verdicts.append(f"paper's 30.7 dB: {'met' if dpe >= 30.7 else 'not met'}")
        lines += ["", "; ".join(verdicts) + ".", ""]
        modalities = [m for m in table[preset] if m != "mean"]
        lines += [f"PSNR (dB) per modality, {preset} preset:", "",
                  "| method | " + " | ".join(modalities) + " |", "|---|" + "---|" * len(modalities)]
        for method, label in METHODS.items():
            if method in mean:
                lines.append(f"| {label} | " + " | ".join(_num(table[preset][m].get(method, {}).get("psnr"))
                                                         for m in modalities) + " |")
        lines.append("")
    if CLEAN_PRESET in table:
        lines += ["## Fidelity on clean inputs (PSNR of the output against the input)", "",
                  "| method | PSNR (dB) | structure PSNR (dB) | SSIM | DeltaE (RGB images) |", "|---|---|---|---|---|"]
        for method in ("basicunet", "dpe"):
            if method in table[CLEAN_PRESET]["mean"]:
                s = table[CLEAN_PRESET]["mean"][method]
                lines.append(f"| {METHODS[method]} | {_num(s['psnr'])} | {_num(s.get('structure_psnr'))} | "
                             f"{_num(s['ssim'], 3)} | {_num(s.get('delta_e_rgb'))} |")
        lines.append("")
    lines += ["![PSNR per modality and method](quality_psnr.png)", "", "![crops](quality_crops.png)", ""]
    path.write_text("\n".join(lines))


def psnr_chart(table: Mapping[str, dict], path: Path, split: str = "validation") -> None:
    """Grouped bars: PSNR per modality (and the mean) for every method, one panel per degraded preset."""
    require("matplotlib", "the quality report's charts")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    presets = [p for p in ("paper", "radiology") if p in table]
    fig = Figure(figsize=(12, 3.6 * len(presets)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(presets), 1, squeeze=False)[:, 0]
    for ax, preset in zip(axes, presets):
        groups = [m for m in table[preset] if m != "mean"] + ["mean"]
        methods = [m for m in METHODS if m in table[preset]["mean"]]
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            values = [table[preset][g].get(method, {}).get("psnr") or 0.0 for g in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width, values, width, label=METHODS[method])
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{preset} preset ({split} images)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=4, fontsize=8)
    fig.savefig(path)


def _network(config_files: Sequence[str], weights: str, bundle_root: str,
             experts: Mapping[str, str] | None = None) -> torch.nn.Module:
    """The configs' network with ``weights``, and a copy per modality specialist in ``experts`` (a router)."""
    from monai.bundle import ConfigParser

    from monai_dpe.networks import load_router

    parser = ConfigParser()
    parser.read_config(list(config_files))
    parser["bundle_root"] = bundle_root
    return load_router(parser.get_parsed_content("network_def"), weights, experts).eval()


def _bundle_parts(config_file: str, bundle_root: str, *names: str) -> list[Any]:
    """The objects ``config_file`` defines as ``names`` (its ``blend``, its ``validate#inferer``), parsed once,
    with the bundle's own files (the level prior) read from ``bundle_root``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = bundle_root
    return [parser.get_parsed_content(name) for name in names]


def _validation_pairs(dataset_dir: str, bundle_root: str, preset: str) -> list[dict]:
    """The first evaluated image of each source under ``preset``: the raw degraded image, the network input and the truth.

    The raw degraded image is the copy validation keeps before the intensity policy (``degraded``).
    """
    from monai.bundle import ConfigParser

    configs = Path(bundle_root) / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
    parser.update({"bundle_root": bundle_root, "dataset_dir": dataset_dir, "validate#presets": [preset]})
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    pairs, sources = [], set()
    for item in parser.get_parsed_content("validate#datalist"):
        if item.get("source") in sources:  # one row per source keeps the figure readable
            continue
        sources.add(item.get("source"))
        net_in = preprocessing(dict(item))
        pairs.append({"name": _modality(item.get("modality", "")), "modality": item.get("modality"),
                      "rgb": int(item.get("channels", 1)) == 3, "level": net_in.get("level"),
                      "degraded": net_in["degraded"], "image": net_in["image"], "target": net_in["target"]})
    return pairs


def _display(img: torch.Tensor, rgb: bool, crop: int) -> np.ndarray:
    """A centred ``crop`` x ``crop`` patch as an (H, W, 3) array in [0, 1] (spatial axes as stored, transposed)."""
    img = torch.as_tensor(img, dtype=torch.float32)[:3]
    img = img.repeat(3, 1, 1) if img.shape[0] == 1 else (img if rgb else img.mean(0, keepdim=True).repeat(3, 1, 1))
    h, w = img.shape[1:]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    patch = img[:, top : top + crop, left : left + crop].clamp(0, 1)
    return patch.permute(2, 1, 0).numpy()


def _route(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` as a :class:`ModalityRouter` (a plain network serves every modality)."""
    from monai_dpe.networks import ModalityRouter

    return network if isinstance(network, ModalityRouter) else ModalityRouter(network)


def _level(network: torch.nn.Module, pair: Mapping[str, Any]) -> dict:
    """The image's level for a network that takes one (the stretch hid it), as validation passes it."""
    takes = int(getattr(_route(network).network_for(pair.get("modality")), "level_channels", 0))
    return {"level": torch.as_tensor(pair["level"], dtype=torch.float32)[None]} if takes and pair.get("level") is not None else {}


def crop_figure(pairs: Sequence[dict], networks: Mapping[str, torch.nn.Module], classical: str, path: Path,
                crop: int = 160, blend: BlendInputFit | None = None, inferer: Any = None) -> None:
    """One row per image: degraded input, ``classical``, each network, truth; PSNR in the titles.

    Each network runs through ``inferer`` (the bundle's ``validate#inferer``; ``None``: a
    :class:`~monai_dpe.inferers.SliceWiseInferer` with the ``ChannelAdapter``, as that one) and its output
    through ``blend`` (the bundle's ``blend``; ``None``: the network's output alone). A volume is
    enhanced whole, as evaluation and inference enhance it, and shown and scored on its centre slice.
    """
    from monai_dpe.inferers import SliceWiseInferer
    from monai_dpe.networks import ChannelAdapter
    from monai_dpe.transforms import CenterSliced

    blend = BlendInputFit(1.0) if blend is None else blend
    inferer = SliceWiseInferer(sw_batch_size=1, network_wrapper=ChannelAdapter) if inferer is None else inferer
    names = [f"net{i}" for i in range(len(networks))]
    centre = CenterSliced(keys=["degraded", "image", "target", *names])
    require("matplotlib", "the quality report's crops")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from monai.metrics import PSNRMetric

    psnr = PSNRMetric(max_val=1.0)
    columns = ["degraded input", METHODS[classical], *[METHODS[n] for n in networks], "truth"]
    fig = Figure(figsize=(2.3 * len(columns), 2.4 * len(pairs)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(pairs), len(columns), squeeze=False)
    for row, pair in enumerate(pairs):
        image = pair["image"]
        with torch.inference_mode():
            enhanced = [blend(inferer(image[None], _route(net), modality=pair.get("modality"), **_level(net, pair))[0],
                              image, pair.get("level")).clamp(0, 1) for net in networks.values()]
        sliced = centre({**{key: pair[key] for key in ("degraded", "image", "target")}, **dict(zip(names, enhanced))})
        target = sliced["target"]
        outputs = [sliced["degraded"], apply_baseline(classical, sliced["image"], pair["rgb"]),
                   *(sliced[name] for name in names), target]
        for col, (out, label) in enumerate(zip(outputs, columns)):
            shown = torch.as_tensor(out, dtype=torch.float32)
            score = "" if col == len(columns) - 1 else \
                f"\n{float(psnr(shown.expand_as(target)[None], target[None]).item()):.1f} dB"
            axes[row, col].imshow(_display(shown, pair["rgb"], crop), interpolation="nearest")
            axes[row, col].set_title((f"{pair['name']}: " if col == 0 else "") + label + score, fontsize=8)
            axes[row, col].set_axis_off()
    fig.suptitle(f"paper preset, centre {crop}x{crop} crops (PSNR of the whole image against the truth)", fontsize=10)
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dpe-metrics", type=Path, default=Path("docs/benchmarks/eval/metrics.json"))
    parser.add_argument("--basicunet-metrics", type=Path, default=Path("docs/benchmarks/eval_basicunet/metrics.json"))
    parser.add_argument("--dpe-weights", default="bundle/models/model.pt")
    parser.add_argument("--dpe-histology-weights", default="",
                        help="a histology specialist that histology images go to, as evaluate.json's "
                             "--expert_weights sends them (default: none; `make train-histology` trains one)")
    parser.add_argument("--basicunet-weights", default="bundle/baselines/basicunet/model.pt")
    parser.add_argument("--dataset-dir", default="corpus")
    parser.add_argument("--bundle-root", default=str(default_bundle()),
                        help="bundle whose configs build the networks (default: $MONAI_DPE_BUNDLE or the shipped bundle)")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dpe = json.loads(args.dpe_metrics.read_text())
    except (OSError, ValueError) as err:  # before any output is written
        parser.error(f"--dpe-metrics {args.dpe_metrics}: {getattr(err, 'strerror', None) or err} "
                     "(write it with evaluate.json: make benchmark-quality)")
    basicunet = json.loads(args.basicunet_metrics.read_text()) if args.basicunet_metrics.is_file() else None
    split = dpe.get("split") or "validation"
    if basicunet and (basicunet.get("split") or "validation") != split:
        logger.info("%s scores another split than DPE's %s split: BasicUNet is left out", args.basicunet_metrics, split)
        basicunet = None
    table = method_scores(dpe, basicunet)
    args.output.mkdir(parents=True, exist_ok=True)
    info = {"about": about(dpe), "split": split, "DPE": f"`{args.dpe_metrics}`",
            "BasicUNet": f"`{args.basicunet_metrics}`" if basicunet else f"not evaluated on the {split} split"}
    write_markdown(table, args.output / "quality.md", info)
    psnr_chart(table, args.output / "quality_psnr.png", split)
    experts = {"histology": args.dpe_histology_weights} if args.dpe_histology_weights else None
    configs = Path(args.bundle_root) / "configs"
    networks = {"dpe": _network([str(configs / "train.json")], args.dpe_weights, args.bundle_root, experts)}
    if basicunet and not os.path.isfile(args.basicunet_weights):
        logger.info("%s not found (make baseline): the crops show DPE without BasicUNet", args.basicunet_weights)
    elif basicunet:
        files = [str(configs / "train.json"), str(configs / "basicunet_baseline.json")]
        networks = {"basicunet": _network(files, args.basicunet_weights, args.bundle_root), **networks}
    best, _ = _best_classical(table["paper"]["mean"])
    pairs = _validation_pairs(args.dataset_dir, args.bundle_root, "paper")
    blend, inferer = _bundle_parts(str(configs / "train.json"), args.bundle_root, "blend", "validate#inferer")
    crop_figure(pairs, networks, best or "clahe", args.output / "quality_crops.png", blend=blend, inferer=inferer)
    logger.info("wrote %s", args.output / "quality.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
