"""A brain MR phantom with a glioma: four modalities and a tumour sub-region map.

The head is an ellipsoid with a thin skull shell, cerebrospinal fluid, folded grey matter, white matter,
lateral ventricles and deep grey nuclei. One tumour per case has surrounding oedema, an enhancing rim
and (in most cases) a necrotic core; every boundary is bent by smooth random fields so no two cases,
and no two sub-regions, share a shape. Intensities follow the usual contrasts: enhancing tumour bright
on T1 with contrast, oedema bright on T2 and FLAIR, necrosis dark on T1 with contrast, CSF dark on
FLAIR. A smooth multiplicative bias field and Gaussian noise are added per modality.

Coordinates are millimetres from the volume centre along the array axes ``(i, j, k)``; the physical
field of view is fixed (240 x 240 x 155 mm by default), so any array shape shows the same anatomy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError
from medseg.synth.fields import bias_field, smooth_field

# Physical modality order, named as BraTS 2021 does (2023 renames them t1n, t1c, t2w, t2f).
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

# Tumour sub-regions in the returned map (the dataset writers turn them into BraTS label values).
NECROSIS = 1
OEDEMA = 2
ENHANCING = 3

# Internal tissue codes, the rows of the intensity table below.
_BACKGROUND, _SKULL, _CSF, _GREY, _WHITE, _OEDEMA, _ENHANCING, _NECROSIS = range(8)

# Relative signal per tissue code (background, skull, CSF, grey, white, oedema, enhancing, necrosis).
_CONTRAST: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.15, 0.30, 0.65, 0.90, 0.55, 0.70, 0.35),
    "t1ce": (0.0, 0.15, 0.32, 0.68, 0.90, 0.58, 1.50, 0.26),
    "t2": (0.0, 0.10, 1.50, 0.80, 0.55, 1.15, 0.90, 1.35),
    "flair": (0.0, 0.10, 0.22, 0.80, 0.62, 1.30, 1.05, 0.85),
}

# Signal of white matter in the stored int16 values, drawn per case and modality.
_GAIN_RANGE = (350.0, 1100.0)
_NOISE_FRACTION = 0.035  # noise standard deviation relative to the white-matter signal


@dataclass(frozen=True)
class BrainPhantom:
    """One synthetic brain case.

    Attributes:
        images: modality name (``MODALITIES``) -> int16 array ``(D, H, W)``, zero outside the head.
        tumour: uint8 array ``(D, H, W)``: 0 none, ``NECROSIS``, ``OEDEMA`` or ``ENHANCING``.
        spacing: voxel size in millimetres along ``(D, H, W)``.
    """

    images: dict[str, np.ndarray]
    tumour: np.ndarray
    spacing: tuple[float, float, float]


def _axes_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Voxel-centre coordinates in millimetres from the volume centre, one float32 vector per axis."""
    return [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]


def _ellipsoid_radius(
    axes: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float]
) -> np.ndarray:
    """Normalised ellipsoidal radius ``sqrt(sum(((x - c) / r) ** 2))`` on the grid spanned by ``axes``."""
    terms = [((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii)]
    rho = terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :]
    return np.sqrt(rho, out=rho)


def _box(axes: Sequence[np.ndarray], centre: Sequence[float], half: Sequence[float]) -> tuple[slice, ...]:
    """Index slices of the voxels within ``centre +- half`` millimetres (clipped to the grid)."""
    slices = []
    for a, c, h in zip(axes, centre, half):
        inside = np.flatnonzero(np.abs(a - c) <= h)
        slices.append(slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0))
    return tuple(slices)


def _anatomy(
    axes: Sequence[np.ndarray], spacing: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Healthy tissue codes, the brain mask (where a tumour may grow), the head centre and radii (mm)."""
    shape = tuple(a.size for a in axes)
    spacing = np.asarray(spacing, dtype=np.float64)
    head_radii = np.array([70.0, 90.0, 66.0]) * rng.uniform(0.92, 1.06, size=3)
    head_centre = np.array([0.0, 4.0, -4.0]) + rng.uniform(-4.0, 4.0, size=3)
    rho = _ellipsoid_radius(axes, head_centre, head_radii)
    rho += 0.035 * smooth_field(shape, rng, 40.0 / spacing)  # an uneven skull outline
    folds = smooth_field(shape, rng, 7.0 / spacing)  # gyri: a short correlation length

    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[rho < 1.0] = _SKULL
    tissue[rho < 0.94] = _CSF
    brain = rho < 0.91
    cortex_edge = rho + 0.035 * folds
    tissue[brain] = _GREY
    tissue[brain & (cortex_edge < 0.80)] = _WHITE

    # Lateral ventricles and deep grey nuclei, mirrored across the midline with small asymmetries.
    for side in (-1.0, 1.0):
        jitter = rng.uniform(-3.0, 3.0, size=3)
        ventricle_centre = head_centre + np.array([side * 9.0, -6.0, 12.0]) + jitter
        ventricle_radii = np.array([6.0, 26.0, 11.0]) * rng.uniform(0.8, 1.25, size=3)
        box = _box(axes, ventricle_centre, 1.4 * ventricle_radii)
        local = [a[s] for a, s in zip(axes, box)]
        shape_noise = 0.15 * folds[box]
        tissue[box][_ellipsoid_radius(local, ventricle_centre, ventricle_radii) + shape_noise < 1.0] = _CSF

        nucleus_centre = head_centre + np.array([side * 20.0, 4.0, -4.0]) + jitter
        nucleus_radii = np.array([10.0, 14.0, 11.0]) * rng.uniform(0.85, 1.15, size=3)
        box = _box(axes, nucleus_centre, 1.4 * nucleus_radii)
        local = [a[s] for a, s in zip(axes, box)]
        nucleus = _ellipsoid_radius(local, nucleus_centre, nucleus_radii) + 0.15 * folds[box] < 1.0
        tissue[box][nucleus & (tissue[box] == _WHITE)] = _GREY
    return tissue, brain, head_centre, head_radii


def _grow_tumour(
    tissue: np.ndarray,
    brain: np.ndarray,
    axes: Sequence[np.ndarray],
    spacing: Sequence[float],
    head_centre: np.ndarray,
    head_radii: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint one tumour into ``tissue`` (in place) and return its sub-region map."""
    spacing = np.asarray(spacing, dtype=np.float64)
    oedema_radius = rng.uniform(14.0, 38.0)
    oedema_radii = oedema_radius * rng.uniform(0.8, 1.2, size=3)
    # A centre inside the brain, away from its edge by a margin that grows with the tumour.
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    reach = max(0.0, 0.72 - 0.45 * oedema_radius / head_radii.min())
    centre = head_centre + direction * head_radii * reach * rng.uniform(0.2, 1.0) ** (1 / 3)

    box = _box(axes, centre, 1.6 * oedema_radii)
    local = [a[s] for a, s in zip(axes, box)]
    box_shape = tuple(a.size for a in local)
    tumour = np.zeros(tissue.shape, dtype=np.uint8)
    if min(box_shape) == 0:
        return tumour

    core_radius = oedema_radius * rng.uniform(0.35, 0.7)
    core_centre = centre + rng.uniform(-0.25, 0.25, size=3) * (oedema_radius - core_radius)
    core_radii = core_radius * rng.uniform(0.8, 1.2, size=3)
    has_necrosis = rng.uniform() < 0.85
    necrosis_radii = core_radii * rng.uniform(0.35, 0.75)

    lengths = 12.0 / spacing
    rho_oedema = _ellipsoid_radius(local, centre, oedema_radii) + 0.28 * smooth_field(box_shape, rng, lengths)
    rho_core = _ellipsoid_radius(local, core_centre, core_radii) + 0.18 * smooth_field(box_shape, rng, lengths)
    rho_necrosis = _ellipsoid_radius(local, core_centre, necrosis_radii)
    rho_necrosis += 0.22 * smooth_field(box_shape, rng, lengths)

    in_brain = brain[box]
    local_tissue = tissue[box]
    # Oedema spreads along white matter; close to the mass it also takes grey matter.
    oedema = in_brain & (rho_oedema < 1.0) & ((local_tissue == _WHITE) | (rho_oedema < 0.6))
    core = in_brain & (rho_core < 1.0)
    necrosis = core & (rho_necrosis < 1.0) if has_necrosis else np.zeros_like(core)

    local_tumour = tumour[box]
    local_tumour[oedema] = OEDEMA
    local_tumour[core] = ENHANCING
    local_tumour[necrosis] = NECROSIS
    local_tissue[oedema] = _OEDEMA
    local_tissue[core] = _ENHANCING
    local_tissue[necrosis] = _NECROSIS
    return tumour


def brain_phantom(
    shape: Sequence[int] = (240, 240, 155),
    rng: np.random.Generator | None = None,
    field_of_view_mm: Sequence[float] = (240.0, 240.0, 155.0),
) -> BrainPhantom:
    """Synthesise one brain MR case with a glioma.

    Args:
        shape: array shape ``(D, H, W)``; voxels are ``field_of_view_mm / shape`` millimetres.
        rng: random generator (a fresh ``default_rng(0)`` if omitted); the case is a deterministic
            function of its state.
        field_of_view_mm: physical extent of the volume along ``(D, H, W)``.

    Returns:
        The four modalities (int16, zero outside the head) and the tumour sub-region map (uint8).

    Raises:
        ConfigError: ``shape`` is not three sizes of at least 4 voxels.
    """
    if len(shape) != 3 or min(shape) < 4:
        raise ConfigError(f"brain_phantom needs a 3-D shape of at least 4 voxels per axis, got {tuple(shape)}")
    rng = np.random.default_rng(0) if rng is None else rng
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(f) / n for f, n in zip(field_of_view_mm, shape))
    axes = _axes_mm(shape, spacing)

    tissue, brain, head_centre, head_radii = _anatomy(axes, spacing, rng)
    tumour = _grow_tumour(tissue, brain, axes, spacing, head_centre, head_radii, rng)

    head = np.flatnonzero(tissue != _BACKGROUND)  # noise only where there is signal: background stays 0
    texture = smooth_field(shape, rng, 4.0 / np.asarray(spacing))
    texture *= np.float32(0.025)
    texture += np.float32(1.0)
    images = {}
    for name in MODALITIES:
        gain = rng.uniform(*_GAIN_RANGE)
        table = np.asarray(_CONTRAST[name], dtype=np.float64) * rng.uniform(0.94, 1.06, size=8) * gain
        table[_BACKGROUND] = 0.0
        signal = table.astype(np.float32)[tissue]
        signal *= texture
        signal *= bias_field(shape, rng, 120.0 / np.asarray(spacing), strength=0.12)
        noise = rng.standard_normal(head.size, dtype=np.float32)
        noise *= np.float32(_NOISE_FRACTION * table[_WHITE])
        signal.reshape(-1)[head] += noise
        np.clip(signal, 0.0, np.iinfo(np.int16).max, out=signal)
        images[name] = np.rint(signal, out=signal).astype(np.int16)
    return BrainPhantom(images=images, tumour=tumour, spacing=spacing)
