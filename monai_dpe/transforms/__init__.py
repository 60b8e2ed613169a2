"""DPE transforms, one module per family, each with its array and dictionary forms.

Gamma curves and bias fields come from MONAI (``RandAdjustContrast``, ``RandBiasField`` and
their dictionary twins); :class:`RandPerceptualDegradation` composes them with the paper's
brightness, contrast and noise degradations.
"""
from __future__ import annotations

from monai_dpe.transforms.degradation import (
    NOISE_TYPES,
    RandAcquisitionNoise,
    RandAcquisitionNoised,
    RandLowBrightness,
    RandLowBrightnessd,
    RandLowContrast,
    RandLowContrastd,
)
from monai_dpe.transforms.colour import RandColourJitter, RandColourJitterd
from monai_dpe.transforms.stain import RandStainJitter, RandStainJitterd
from monai_dpe.transforms.perceptual import (
    PRESETS,
    RandPerceptualDegradation,
    RandPerceptualDegradationd,
    SeededPerceptualDegradationd,
)
from monai_dpe.transforms.channels import MergeAlphad, SplitAlphad
from monai_dpe.transforms.io import SaveEnhancedd, StorageTyped, UnsafeOutputPath, output_path
from monai_dpe.transforms.fill import MaskFillValuesd, RestoreFillValuesd
from monai_dpe.transforms.input_fit import (
    BlendInputFit,
    BlendInputFitd,
    input_fit,
    input_noise,
    is_colour,
    level_weight,
    line_within_range,
    noise_weight,
)
from monai_dpe.transforms.level_prior import FEATURE_NAMES, LevelPrior, level_features, load_level_prior
from monai_dpe.transforms.load import LoadDisplayImage, LoadDisplayImaged, photo_header, pil_display_converter
from monai_dpe.transforms.wiener import dct_wiener
from monai_dpe.transforms.preparation import (
    CenterSliced,
    SingleSliceToPlaned,
    GreyToRGB,
    GreyToRGBd,
    LimitSize,
    LimitSized,
    RandSliced,
    UnitRange,
    UnitRanged,
)
from monai_dpe.transforms.storage import (
    RandJPEG,
    RandJPEGd,
    RecordStorageBitsd,
    RoundToBitDepth,
    RoundToBitDepthd,
    storage_bits,
)
from monai_dpe.transforms.checks import CheckHeaderd, CheckImaged, ImageRefused
from monai_dpe.transforms.intensity_policy import (
    LEVEL_META_KEY,
    POLICY_MODES,
    IntensityPolicy,
    IntensityPolicyd,
    input_level,
    robust_range,
)

__all__ = [
    "BlendInputFit",
    "BlendInputFitd",
    "FEATURE_NAMES",
    "LevelPrior",
    "level_features",
    "load_level_prior",
    "CheckHeaderd",
    "CheckImaged",
    "ImageRefused",
    "RandColourJitter",
    "RandColourJitterd",
    "RandStainJitter",
    "RandStainJitterd",
    "RandLowBrightness",
    "RandLowContrast",
    "RandAcquisitionNoise",
    "RandPerceptualDegradation",
    "IntensityPolicy",
    "LEVEL_META_KEY",
    "input_fit",
    "input_noise",
    "is_colour",
    "dct_wiener",
    "noise_weight",
    "level_weight",
    "line_within_range",
    "input_level",
    "RandLowBrightnessd",
    "RandLowContrastd",
    "RandAcquisitionNoised",
    "RandPerceptualDegradationd",
    "IntensityPolicyd",
    "SeededPerceptualDegradationd",
    "UnitRange",
    "UnitRanged",
    "LimitSize",
    "LimitSized",
    "RandSliced",
    "CenterSliced",
    "SingleSliceToPlaned",
    "GreyToRGB",
    "GreyToRGBd",
    "SaveEnhancedd",
    "StorageTyped",
    "LoadDisplayImage",
    "LoadDisplayImaged",
    "pil_display_converter",
    "photo_header",
    "SplitAlphad",
    "MergeAlphad",
    "MaskFillValuesd",
    "RestoreFillValuesd",
    "UnsafeOutputPath",
    "output_path",
    "robust_range",
    "storage_bits",
    "RecordStorageBitsd",
    "RoundToBitDepth",
    "RoundToBitDepthd",
    "RandJPEG",
    "RandJPEGd",
    "NOISE_TYPES",
    "PRESETS",
    "POLICY_MODES",
]
