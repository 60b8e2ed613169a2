"""Speed and memory benchmark of the shipped enhancer: eager, TorchScript and ONNX Runtime side by side.

Run with ``python -m monai_dpe.reports.benchmark --output docs/benchmarks`` (``make benchmark``). It reports
medians of repeated runs, the machine (cores, CPU flags), the achieved GFLOP/s next to this machine's
matmul GFLOP/s measured in the same run, and the peak RSS of a volume run, and writes
``speed.md`` and ``speed.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch.nn.functional as F

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from monai.bundle import ConfigParser

from monai_dpe.locations import default_bundle
from monai_dpe.inferers import SliceWiseInferer, hold_channels_last
from monai_dpe.networks import OnnxNetwork, export_onnx, load_weights
from monai_dpe.processor import cpu_features, has_fast_bf16, has_spare_core
from monai_dpe.transforms import IntensityPolicy

__all__ = ["conv_flops", "matmul_gflops", "time_call", "enhance_volume", "main"]

logger = logging.getLogger(__name__)


def sample_volume() -> Path:
    """The shipped MR head sample (64 x 64 x 10, uint16): the bundle's ``sample_data/mr_head.nii.gz``,
    the same file as ``examples/data/mr_head.nii.gz``, found in a clone and in an installed package alike."""
    return default_bundle() / "sample_data" / "mr_head.nii.gz"


def conv_flops(network, shape: tuple[int, ...]) -> float:
    """Floating-point operations of one forward pass on an input of ``shape`` (PyTorch's own counter)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(shape))
    return float(counter.get_total_flops())


def time_call(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """This machine's dense matmul rate in GFLOP/s (median of several n x n products)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = time_call(lambda: a @ b, repeats=5)
    return 2.0 * n**3 / seconds / 1e9


def _machine() -> dict:
    flags = " ".join(sorted(cpu_features()))
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "flags": flags, "torch": torch.__version__, "cuda": torch.cuda.is_available()}


def _inference_config() -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(default_bundle() / "configs" / "inference.json")
    return parser


def _bundle_channels() -> tuple[int, ...]:
    """The widths of the bundle's ``network_def``, which the end-to-end runs use."""
    return tuple(_inference_config()["channels"])


def shipped_network(channels: tuple[int, ...]) -> nn.Module:
    """The bundle's ``network_def`` (``inference.json``) at ``channels``: the network users run."""
    parser = _inference_config()
    parser["channels"] = list(channels)
    return parser.get_parsed_content("network_def")


def benchmark(weights: str | None, channels: tuple[int, ...], repeats: int) -> dict:
    """Time slices and a volume for each backend; return a results dictionary."""
    net = shipped_network(channels).eval()
    if weights:
        load_weights(net, weights)
    results = {"machine": _machine(), "auto_backend": "bf16" if has_fast_bf16() else "onnx", "weights": weights, "channels": list(channels), "repeats": repeats,
               "matmul_gflops_fp32": matmul_gflops(torch.float32), "matmul_gflops_bf16": matmul_gflops(torch.bfloat16)}
    eager, scripted = net, torch.jit.script(net)  # a level-aware network falls back on its default_level
    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxNetwork(export_onnx(net, os.path.join(tmp, "model.onnx")), multiple=net.multiple,
                           default_level=getattr(net, "default_level", None))
        last = copy.deepcopy(net)
        hold_channels_last(last)  # as SliceWiseInferer(channels_last=True) holds it

        def bf16(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return last(x.contiguous(memory_format=torch.channels_last)).float()

        backends = {"eager": eager, "bf16": bf16, "torchscript": scripted, "onnxruntime": onnx}
        rows = []
        for size in (256, 512):
            flops = conv_flops(eager, (1, 3, size, size))
            for batch in (1, 8):
                x = torch.rand(batch, 3, size, size)
                for name, fn in backends.items():
                    with torch.inference_mode():
                        seconds = time_call(lambda: fn(x), repeats=repeats)
                    rows.append({"backend": name, "size": size, "batch": batch, "ms_per_slice": 1e3 * seconds / batch,
                                 "gflops": flops * batch / seconds / 1e9, "gflop_per_slice": flops / 1e9})
        results["slices"] = rows
    results["bf16"] = bf16_fidelity(net, repeats)
    volume = torch.rand(1, 3, 256, 256, 150)
    inferer = SliceWiseInferer(spatial_dim=2, sw_batch_size=8)
    with torch.inference_mode():
        results["volume_256x256x150_s"] = time_call(lambda: inferer(volume, eager), repeats=max(1, repeats // 2), warmup=0)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def bf16_fidelity(net: nn.Module, repeats: int, size: int = 256) -> dict:
    """bf16 autocast (channels-last) against fp32 on a real slice: time and PSNR of one output against the other.

    The slice is the middle of the shipped MR sample, stretched to [0, 1] as the pipeline does, so
    the PSNR is over the network's real working range (peak 1).
    """
    source = torch.from_numpy(nib.load(sample_volume()).get_fdata(dtype="float32"))
    plane = source[..., source.shape[-1] // 2][None, None]
    plane = F.interpolate(plane, size=(size, size), mode="bilinear", align_corners=False)
    x = IntensityPolicy()(plane).repeat(1, 3, 1, 1)
    last = copy.deepcopy(net)
    hold_channels_last(last)
    x_last = x.contiguous(memory_format=torch.channels_last)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return last(x_last).float()

    with torch.inference_mode():
        fp32_out, bf16_out = net(x), bf16()
        fp32_s, bf16_s = time_call(lambda: net(x), repeats=repeats), time_call(bf16, repeats=repeats)
    mse = float(((fp32_out.clamp(0, 1) - bf16_out.clamp(0, 1)) ** 2).mean())
    return {"size": size, "fp32_ms": 1e3 * fp32_s, "bf16_ms": 1e3 * bf16_s,
            "psnr_bf16_vs_fp32": 10 * math.log10(1.0 / mse) if mse > 0 else float("inf"),
            "max_abs_diff": float((fp32_out - bf16_out).abs().max())}


def blend_timing(repeats: int) -> dict:
    """Milliseconds the bundle's blend (its Wiener filter) takes on one grey slice of 256x256 and of
    512x512: part of every slice's cost that the network timings above leave out."""
    blend = _inference_config().get_parsed_content("blend")
    generator = torch.Generator().manual_seed(0)
    timings = {}
    for size in (256, 512):
        image = torch.rand(1, size, size, generator=generator)
        pred = 0.8 * image + 0.05 * torch.rand(1, size, size, generator=generator)
        timings[str(size)] = 1e3 * time_call(lambda: blend(pred.clone(), image), repeats)
    return timings


def write_volume(shape: tuple[int, int, int], path: Path) -> Path:
    """An int16 NIfTI of ``shape`` resampled (trilinear) from the shipped MR head sample: real anatomy at any size."""
    source = torch.from_numpy(nib.load(sample_volume()).get_fdata(dtype="float32"))
    volume = F.interpolate(source[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0]
    nib.save(nib.Nifti1Image(volume.round().clamp(-32768, 32767).numpy().astype("int16"), None), str(path))
    return path


def write_picture(shape: tuple[int, int], path: Path) -> Path:
    """An 8-bit grey PNG of ``shape`` resampled from the shipped X-ray sample (a digital radiograph's size)."""
    from PIL import Image

    source = torch.from_numpy(np.asarray(Image.open(default_bundle() / "sample_data" / "xray_limb.png").convert("L"),
                                         dtype=np.float32))
    picture = F.interpolate(source[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    Image.fromarray(picture.round().clamp(0, 255).numpy().astype(np.uint8)).save(path)
    return path


def enhance_volume(shape: tuple[int, ...], *options: str) -> dict:
    """Run ``monai-dpe enhance`` on one int16 volume (3D ``shape``) or 8-bit PNG (2D) in a child process:
    wall time and its peak RSS.

    The child is the whole user path (reading, intensity policy, slice-wise network, inversion,
    writing), so its peak resident set is what a user's machine needs for that input.
    """
    with tempfile.TemporaryDirectory() as tmp:
        source = (write_volume(shape, Path(tmp) / "volume.nii.gz") if len(shape) == 3
                  else write_picture(shape, Path(tmp) / "picture.png"))
        command = [sys.executable, "-m", "monai_dpe.cli", "enhance", str(source), "-o", str(Path(tmp) / "out"),
                   "--no-progress", *options]
        # a fresh parent per run: RUSAGE_CHILDREN reports the largest peak of all children it waited for
        probe = ("import json, resource, subprocess, sys, time; t = time.monotonic(); "
                 "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                 "print(json.dumps([time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
        out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True)
        seconds, peak_kb = json.loads(out.stdout)
    return {"shape": list(shape), "options": list(options), "seconds": seconds, "peak_rss_mb": peak_kb / 1024}


def start_up() -> dict:
    """Seconds a fresh process takes to import what ``monai-dpe enhance`` imports (torch, MONAI, ignite, monai_dpe):
    the fixed part of every end-to-end time, median of 3."""
    probe = ("import time; t = time.monotonic(); import monai_dpe.cli, monai_dpe.engines, monai.bundle; "
             "print(time.monotonic() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout)
            for _ in range(3)]
    return {"import_s": float(np.median(runs))}


def enhance_folder(count: int, shape: tuple[int, int, int], write_behind: bool) -> dict:
    """``python -m monai.bundle run`` of the bundle's inference.json over ``count`` int16 volumes of ``shape``:
    wall time with and without writing each file in a child process while the next one is enhanced."""
    bundle = default_bundle()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for index in range(count):
            write_volume(shape, folder / f"volume{index}.nii.gz")
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
                   "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
                   "--dataset_dir", str(folder), "--output_dir", str(Path(tmp) / "out"), "--progress", "false",
                   "--write_behind", str(write_behind).lower()]
        start = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.monotonic() - start
    return {"files": count, "shape": list(shape), "write_behind": write_behind, "seconds": seconds}


def write_report(results: dict, output: Path) -> None:
    """Write speed.json and a markdown table."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "speed.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    lines = [
        "# Speed and memory", "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} torch threads), flags: {m['flags'] or 'n/a'}, "
        f"torch {m['torch']}, CUDA: {m['cuda']}.",
        f"Network: DPENet channels {results['channels']}. Medians of {results['repeats']} runs.",
        f"Matmul on this machine in the same run: {results['matmul_gflops_fp32']:.0f} GFLOP/s fp32, "
        f"{results['matmul_gflops_bf16']:.0f} GFLOP/s bf16.", "",
        f"`auto` runs `{results['auto_backend']}` here (monai_dpe.networks.resolve_backend).", "",
        "| backend | slice | batch | ms / slice | GFLOP / slice | achieved GFLOP/s | % of matmul (its dtype) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["slices"]:  # bf16 rows against the bf16 matmul rate, the others against fp32's
        share = 100 * r["gflops"] / results["matmul_gflops_bf16" if r["backend"] == "bf16" else "matmul_gflops_fp32"]
        lines.append(f"| {r['backend']} | {r['size']}x{r['size']} | {r['batch']} | {r['ms_per_slice']:.1f} | "
                     f"{r['gflop_per_slice']:.1f} | {r['gflops']:.0f} | {share:.0f}% |")
    if results.get("bf16"):
        b = results["bf16"]
        verdict = "holds" if b["psnr_bf16_vs_fp32"] >= 50 else "does not hold"
        lines += ["", f"bf16 autocast + channels-last against fp32 on a real {b['size']}x{b['size']} slice (eager): "
                  f"{b['bf16_ms']:.0f} ms against {b['fp32_ms']:.0f} ms; PSNR of the bf16 output against the fp32 "
                  f"output {b['psnr_bf16_vs_fp32']:.1f} dB (largest difference {b['max_abs_diff']:.3g}): the 50 dB "
                  f"fidelity bound {verdict}."]
    lines += ["", f"Volume 256x256x150 (eager, SliceWiseInferer, 8 slices a batch): {results['volume_256x256x150_s']:.1f} s; "
              f"peak RSS of the benchmark process: {results['peak_rss_mb']:.0f} MB.", ""]
    if results.get("end_to_end"):
        lines += ["End to end (`monai-dpe enhance` on one int16 NIfTI volume resampled from the shipped MR sample, "
                  "or one 8-bit PNG resampled from the X-ray sample, in a child process: reading, intensity policy, "
                  "network slice by slice (tiles of 1024 for larger slices), inversion, writing, and the process "
                  "start-up):", "",
                  "| input | options | wall s | peak RSS MB |", "|---|---|---|---|"]
        lines += [f"| {'x'.join(map(str, r['shape']))} | {' '.join(r['options']) or 'defaults'} | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} |" for r in results["end_to_end"]]
        by_shape = {tuple(r["shape"]): r["seconds"] for r in results["end_to_end"] if not r["options"]}
        if (256, 256, 150) in by_shape and (256, 256, 600) in by_shape:
            short, long = by_shape[(256, 256, 150)], by_shape[(256, 256, 600)]
            per_slice = (long - short) / 450
            lines += ["", f"Slices 150 -> 600 (defaults): {long / short:.2f}x the time (linear would be 4x): "
                      f"{1e3 * per_slice:.0f} ms a slice on top of a fixed {short - 150 * per_slice:.1f} s."]
            rate = _end_to_end_rate(results, short)
            lines += ["", rate] if rate else []
        if results.get("start_up"):
            lines += ["", f"Of that fixed part, a fresh process importing torch, MONAI, ignite and monai_dpe takes "
                      f"{results['start_up']['import_s']:.1f} s (MONAI's `import monai` loads all of its submodules)."]
            lines += _start_up_floor(results, by_shape)
        lines += [""]
    if results.get("folders"):
        default = {True: ", on here", False: ", off here"}.get(results.get("write_behind_default"), "")
        lines += ["A folder of volumes through `python -m monai.bundle run` (inference.json), writing each file in a "
                  "forked child while the next is enhanced (`write_behind`, by default on where the platform forks "
                  f"and a core is spare beside the network's threads{default}) or in turn:", "",
                  "| files | volume | write_behind | wall s |", "|---|---|---|---|"]
        lines += [f"| {r['files']} | {'x'.join(map(str, r['shape']))} | {str(r['write_behind']).lower()} | "
                  f"{r['seconds']:.1f} |" for r in results["folders"]]
        lines += [""]
    lines += [
              "Reproduce: `make benchmark` (or `python -m monai_dpe.reports.benchmark --output docs/benchmarks`)."]
    (output / "speed.md").write_text("\n".join(lines) + "\n")


def _start_up_floor(results: dict, by_shape: dict) -> list[str]:
    """The slice-count scaling without the start-up, and the least a 256x256x150 volume can take here:
    the start-up, 150 slices at the ``auto`` backend's one-slice rate and the blend on each, reading and
    writing not counted."""
    start, short, long = results["start_up"]["import_s"], by_shape.get((256, 256, 150)), by_shape.get((256, 256, 600))
    if short is None:
        return []
    lines = []
    if long is not None and short > start:
        lines += ["", f"Less the start-up, 150 -> 600 slices take {(long - start) / (short - start):.2f}x the time."]
    name = {"onnx": "onnxruntime"}.get(results["auto_backend"], results["auto_backend"])
    row = next((r for r in results["slices"] if (r["backend"], r["size"], r["batch"]) == (name, 256, 1)), None)
    blend = results.get("blend_ms_per_slice", {}).get("256")
    if row is not None and blend is not None:
        network, filtering = 150 * row["ms_per_slice"] / 1e3, 150 * blend / 1e3
        lines += ["", f"The least a 256x256x150 volume can take here, before reading and writing: the start-up, "
                      f"150 slices at `{name}`'s one-slice rate and the blend's Wiener filter on each "
                      f"({blend:.1f} ms a slice; {results['blend_ms_per_slice']['512']:.1f} ms at 512x512), "
                      f"{start:.1f} + {network:.1f} + {filtering:.1f} = {start + network + filtering:.1f} s "
                      f"(measured end to end: {short:.1f} s)."]
    return lines


def _end_to_end_rate(results: dict, seconds: float) -> str:
    """The network's arithmetic over 150 slices of 256x256 per end-to-end second, against the matmul
    rate of the dtype ``auto`` runs in: the figure the speed targets are stated in ("" where the timed
    network is not the bundle's)."""
    per_slice = next((r["gflop_per_slice"] for r in results["slices"] if r["size"] == 256), None)
    if per_slice is None or results.get("bundle_channels", results["channels"]) != results["channels"]:
        return ""  # the end-to-end runs use the bundle's network: only its arithmetic is theirs
    gflop = 150 * per_slice
    dtype = "bf16" if results["auto_backend"] == "bf16" else "fp32"
    rate = gflop / seconds
    return (f"256x256x150 end to end: {gflop:.0f} GFLOP of network in {seconds:.1f} s, {rate:.0f} GFLOP/s: "
            f"{100 * rate / results[f'matmul_gflops_{dtype}']:.0f}% of this run's {dtype} matmul rate.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/benchmarks", type=Path)
    parser.add_argument("--weights", default=None, type=Path,
                        help="weights to time (default: the bundle's models/model.pt, $MONAI_DPE_BUNDLE or shipped)")
    parser.add_argument("--channels", default="32,48,64,80,96")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-end-to-end", action="store_true", help="skip the whole-volume CLI runs")
    args = parser.parse_args(argv)
    weights = args.weights or default_bundle() / "models" / "model.pt"
    if not weights.is_file():  # timing random weights would also judge bf16 fidelity on an untrained network
        parser.error(f"--weights {weights}: no such file")
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        parser.error(f"--channels {args.channels}: expected comma-separated integers such as 32,48,64,80,96")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = benchmark(str(weights), channels, args.repeats)
    if not args.skip_end_to_end:
        results["bundle_channels"] = list(_bundle_channels())
        results["end_to_end"] = [enhance_volume((256, 256, 150)), enhance_volume((256, 256, 600)),
                                 enhance_volume((256, 256, 150), "--backend", "onnx"),
                                 enhance_volume((256, 256, 150), "--backend", "eager"),
                                 enhance_volume((512, 512, 400)), enhance_volume((4096, 4096))]
        results["start_up"] = start_up()
        results["blend_ms_per_slice"] = blend_timing(args.repeats)
        results["folders"] = [enhance_folder(6, (256, 256, 60), behind) for behind in (False, True)]
        results["write_behind_default"] = has_spare_core()  # the children get this process's cores and thread count
    write_report(results, args.output)
    logger.info("wrote %s", args.output / "speed.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
