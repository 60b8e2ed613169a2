"""Packaging for monai-dpe: Deep Perceptual Enhancement as a MONAI plugin."""
from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "monai_dpe" / "__init__.py").read_text()).group(1)

# The repository's bundle/ is the source of truth; wheels and sdists carry it as the package
# monai_dpe.bundle (package data), where `monai-dpe enhance` finds it after `pip install`.
# Training runs, evaluation outputs, baselines and training states stay out.
BUNDLE_DATA = [
    "LICENSE",
    "large_files.json",
    "configs/*.json",
    "configs/*.conf",
    "models/model*.pt",
    "models/model*.ts",
    "models/model*.onnx",
    "models/level_prior.json",
    "docs/*",
    "sample_data/*",
]

setup(
    name="monai-dpe",
    version=VERSION,
    description="Deep Perceptual Enhancement (Sharif et al., IEEE JBHI 2022) for medical images, as a MONAI plugin",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["monai_dpe", "monai_dpe.*"]) + ["monai_dpe.bundle"],
    package_dir={"monai_dpe.bundle": "bundle"},
    package_data={"monai_dpe.bundle": BUNDLE_DATA},
    include_package_data=True,
    install_requires=[
        "monai>=1.4",
        "torch>=2.1",
        "pytorch-ignite>=0.4.11",
        "numpy",
        "nibabel",
        "SimpleITK",
        # itk stays: MONAI's ITKReader/ITKWriter read DICOM, NRRD, MHA and TIFF stacks for `enhance`; without it a
        # DICOM file is read by another reader and written silently different (2D, another affine, float64)
        "itk",
        "pydicom",
        "Pillow",
        "tqdm",
        "fire",
        "scikit-image",
        "tifffile",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "hypothesis"],
        "onnx": ["onnx", "onnxruntime"],
        "data": ["pydicom-data", "nilearn>=0.10,<1", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg"],  # nilearn: MNI152 template; pylibjpeg: JPEG and JPEG 2000 DICOM test images
        "baselines": ["bm3d>=4,<5"],  # BM3D + CLAHE, the strongest classical baseline in evaluate.json
        "train": ["tensorboard", "scikit-learn"],  # train.json's TensorBoard logs; the level prior's fit (make level-prior)
        "report": ["matplotlib"],  # --save-comparison panels, quality charts and crops, training curves
    },
    entry_points={"console_scripts": ["monai-dpe = monai_dpe.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
