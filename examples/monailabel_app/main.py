"""A minimal MONAI Label app that serves MONAI bundles through MONAI Label's own bundle tasks.

It does what MONAI Label's sample ``monaibundle`` app does for a plain bundle (that app is not in
the ``monailabel`` wheel and cannot be downloaded here), and nothing else: every bundle named in
``--conf models`` becomes

- an infer task, ``monailabel.tasks.infer.bundle.BundleInferTask``: it reads the bundle's
  ``configs/inference.json`` and ``configs/metadata.json``, instantiates ``network_def`` and loads
  ``models/model.pt`` into it (or runs ``models/model.ts``), and runs the bundle's ``preprocessing``,
  ``inferer`` and ``postprocessing`` (minus any ``SaveImaged``), then MONAI Label's ``Restored`` and
  its writer, which returns the result as an image file (same extension as the input);
- a train task, ``monailabel.tasks.train.bundle.BundleTrainTask``: it runs the bundle's
  ``configs/train.json`` (``configs/multi_gpu_train.json`` on several GPUs) with MONAI Label's
  datastore as ``train#dataset#data`` / ``validate#dataset#data``, ``max_epochs`` as
  ``train#trainer#max_epochs``, and a ``CheckpointLoader`` for ``models/model.pt`` prepended to
  ``train#handlers`` (``pretrained``). Disable it with ``--conf skip_trainers true``.

Bundles are folders under ``<app>/model/<name>`` (or absolute paths); a name that is not a local
folder is handed to MONAI Label's ``get_bundle_models``, which fetches it from the model zoo
(``--conf zoo_source``), as the sample app does.

Usage (a copy of the app, with a copy of the bundle as ``model/monai_dpe``; see bundle/docs/monailabel.md)::

    mkdir -p apps/dpe/model && cp -r examples/monailabel_app/. apps/dpe && cp -r bundle apps/dpe/model/monai_dpe
    monailabel start_server --app apps/dpe --studies STUDIES \\
        --conf models monai_dpe --host 127.0.0.1 --port 8000
    curl -X POST "http://127.0.0.1:8000/infer/monai_dpe?image=<image id>&output=image" -o enhanced.nii.gz
"""
from __future__ import annotations

import logging
import os
from typing import Dict

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import get_bundle_models, strtobool

logger = logging.getLogger(__name__)


def find_bundles(app_dir: str, conf: Dict[str, str]) -> Dict[str, str]:
    """Map each name in ``conf["models"]`` (comma separated) to a bundle folder.

    Local folders (``<app_dir>/model/<name>`` or an absolute path, keyed by its base name) are
    used as they are; other names go to MONAI Label's ``get_bundle_models`` (model zoo download).
    """
    names = [n.strip() for n in conf.get("models", "").split(",") if n.strip()]
    if not names:
        raise ValueError("no bundle given: pass --conf models <name>[,<name>...] (folders under <app>/model/)")
    bundles: Dict[str, str] = {}
    remote = []
    for name in names:
        path = name if os.path.isabs(name) else os.path.join(app_dir, "model", name)
        if os.path.isdir(path):
            bundles[os.path.basename(os.path.normpath(path))] = path
        else:
            remote.append(name)
    if remote:
        bundles.update(get_bundle_models(app_dir, {**conf, "models": ",".join(remote)}))
    return bundles


class BundleApp(MONAILabelApp):
    """Serve the bundles in ``--conf models`` with ``BundleInferTask`` and ``BundleTrainTask``."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.models = find_bundles(app_dir, conf)
        logger.info(f"bundles: {self.models}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAI bundles (monai-dpe test app)",
            description="Serves MONAI bundles with MONAI Label's BundleInferTask and BundleTrainTask",
            version="0.1.0",
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = BundleInferTask(path, self.conf)
            if task.is_valid():
                infers[name] = task
            else:
                logger.warning(f"bundle {name} ({path}) has no usable inference config or weights; not served")
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: Dict[str, TrainTask] = {}
        for name, path in self.models.items():
            task = BundleTrainTask(path, self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers
