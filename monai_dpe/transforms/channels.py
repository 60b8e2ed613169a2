"""Channels the network may see: an alpha channel is set aside, components that are neither colour nor
alpha are refused.

``SplitAlphad``/``MergeAlphad`` keep an alpha channel out of the intensity policy and the network.
Two or four channels are grey + alpha and RGBA only where the file format says so (a photo
format, a packed RGBA32 NIfTI, an ITK RGBA pixel); a 2-component vector NIfTI, say, is two
measurements, whose second must not pass through as if it were alpha while the first is
enhanced, so it is refused in one line instead of being half done.
"""
from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_dpe.formats import PHOTO_SUFFIXES, image_suffix

__all__ = ["SplitAlphad", "MergeAlphad", "carries_alpha", "has_alpha"]


def carries_alpha(source: str | os.PathLike | None, channels: int) -> bool:
    """Whether the last of ``channels`` (2 or 4) channels read from ``source`` is alpha.

    Photo formats (PNG, JPEG, BMP, TIFF) store grey + alpha and RGBA as such; a NIfTI only as packed
    RGBA32; NRRD and MetaImage only as an RGBA pixel type; DICOM never. Without a source (a tensor
    from a library user) the channel count decides, as it always did.
    """
    if not source:
        return True
    suffix = image_suffix(str(source))
    if suffix in PHOTO_SUFFIXES:
        return True
    if channels != 4:
        return False
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            names = nibabel.load(str(source)).header.get_data_dtype().names
            return bool(names) and len(names) == 4
        if suffix in (".nrrd", ".mha", ".mhd"):
            import itk

            io = itk.ImageIOFactory.CreateImageIO(str(source), itk.CommonEnums.IOFileMode_ReadMode)
            io.SetFileName(str(source))
            io.ReadImageInformation()
            return io.GetPixelTypeAsString(io.GetPixelType()) == "rgba"
    except Exception:  # the header was read once already; an error now leaves no alpha to claim
        return False
    return False


def has_alpha(img) -> bool:
    """Whether the last channel of the channel-first ``img`` is alpha: two or four channels, and the
    format of the file it was read from (its meta's ``filename_or_obj``) says so (:func:`carries_alpha`)."""
    source = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
    return img.shape[0] in (2, 4) and carries_alpha(source, img.shape[0])


class SplitAlphad(MapTransform):
    """Move an alpha channel (RGBA, or grey + alpha) out of ``image`` to ``{key}_alpha``, untouched.

    Two or four channels whose format does not make the last one alpha (:func:`carries_alpha`)
    raise a ``ValueError`` naming the component count: enhancing some components and passing
    another through would be half done.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            alpha = has_alpha(img)
            if img.shape[0] in (2, 4) and not alpha:
                raise ValueError(f"{img.shape[0]}-component image that is neither grey + alpha nor RGBA: only grey, "
                                 "RGB and those are enhanced, and enhancing some components while passing the "
                                 "others through would be half done; save each component as its own image")
            if alpha:
                d[f"{key}_alpha"] = img[-1:].clone()
                d[key] = img[:-1]
        return d


class MergeAlphad(MapTransform):
    """Append ``{source}_alpha`` (if present) back to the enhanced image, in the image's dtype."""

    def __init__(self, keys: KeysCollection = "pred", source_key: str = "image", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.alpha_key = f"{source_key}_alpha"

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        alpha = d.get(self.alpha_key)
        if alpha is None:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            merged = torch.cat([torch.as_tensor(img), torch.as_tensor(alpha).to(torch.as_tensor(img).dtype)], dim=0)
            d[key] = MetaTensor(merged, meta=img.meta) if isinstance(img, MetaTensor) else merged
        return d
