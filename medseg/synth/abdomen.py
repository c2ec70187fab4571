"""An abdominal CT phantom in Hounsfield units with the 13 BTCV organ labels.

The body is an elliptic cylinder of skin fat, muscle wall and a fat-and-bowel cavity, with a spine,
paraspinal and psoas muscles and ribs. The 13 organs sit where they sit in a patient: liver on the
right, spleen on the left and posterior, stomach left and anterior with a gas cap, gallbladder under the
liver, kidneys posterior either side of the spine with the adrenal glands above them, aorta left and
anterior of the spine, inferior vena cava to its right, the esophagus reaching the stomach from above,
the portal and splenic veins behind the pancreas. Organ positions, sizes and contrast vary per case and
every outline is bent by smooth random fields.

Coordinates are patient millimetres from the volume centre: ``u`` towards the patient's left along
array axis ``i``, ``v`` towards posterior along ``j``, ``w`` towards superior along ``k``. The writers
give the files the matching affine (``diag(-s_i, -s_j, s_k)`` in RAS+ world, nibabel codes L, P, S).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError
from medseg.synth.fields import smooth_field

AIR_HU = -1000.0
FAT_HU = -100.0
_NOISE_HU = 12.0
_STOMACH = 7  # BTCV label of the stomach, which gets a gas cap

# Default physical field of view (mm) along (i, j, k): 360 mm in plane like a 512 x 0.7 mm CT, 192 mm
# of the upper abdomen from the dome of the liver to below the kidneys.
FIELD_OF_VIEW_MM: tuple[float, float, float] = (360.0, 360.0, 192.0)


@dataclass(frozen=True)
class _Organ:
    """A BTCV organ: either an ellipsoid (``radii``) or a tube along ``path`` (``tube_radius``)."""

    label: int
    hu: float
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radii: tuple[float, float, float] | None = None
    path: tuple[tuple[float, float, float], ...] = ()
    tube_radius: float = 0.0


# Painted in this order, later organs over earlier ones (vessels pass through the liver, and so on).
_ORGANS: tuple[_Organ, ...] = (
    _Organ(6, 115.0, centre=(-72.0, 0.0, 40.0), radii=(82.0, 92.0, 68.0)),  # liver
    _Organ(7, 35.0, centre=(58.0, -40.0, 48.0), radii=(48.0, 38.0, 50.0)),  # stomach
    _Organ(4, 12.0, centre=(-52.0, -58.0, -8.0), radii=(17.0, 19.0, 32.0)),  # gallbladder
    _Organ(1, 110.0, centre=(96.0, 55.0, 42.0), radii=(32.0, 48.0, 52.0)),  # spleen
    _Organ(2, 175.0, centre=(-68.0, 62.0, -28.0), radii=(28.0, 32.0, 52.0)),  # right kidney
    _Organ(3, 170.0, centre=(68.0, 62.0, -18.0), radii=(28.0, 32.0, 52.0)),  # left kidney
    _Organ(12, 40.0, centre=(-38.0, 42.0, 38.0), radii=(6.0, 14.0, 17.0)),  # right adrenal gland
    _Organ(13, 40.0, centre=(38.0, 44.0, 30.0), radii=(6.0, 14.0, 17.0)),  # left adrenal gland
    # pancreas, then the portal vein into the liver hilum joined by the splenic vein from the spleen
    _Organ(11, 95.0, path=((-28.0, -8.0, -10.0), (8.0, -14.0, 2.0), (70.0, 18.0, 18.0)), tube_radius=13.0),
    _Organ(10, 165.0, path=((-48.0, -2.0, 18.0), (-8.0, 10.0, 6.0), (82.0, 36.0, 24.0)), tube_radius=6.5),
    _Organ(9, 140.0, path=((-24.0, 36.0, -96.0), (-26.0, 32.0, 30.0), (-20.0, 28.0, 96.0)), tube_radius=11.0),  # IVC
    _Organ(8, 230.0, path=((14.0, 40.0, -96.0), (16.0, 38.0, 40.0), (10.0, 42.0, 96.0)), tube_radius=11.5),  # aorta
    _Organ(5, 40.0, path=((6.0, 22.0, 96.0), (12.0, 16.0, 72.0), (34.0, -6.0, 50.0)), tube_radius=8.0),  # esophagus
)


@dataclass(frozen=True)
class AbdomenPhantom:
    """One synthetic abdominal CT case.

    Attributes:
        image: int16 array ``(D, H, W)`` in Hounsfield units.
        label: uint8 array ``(D, H, W)`` with the BTCV labels 0 to 13.
        spacing: voxel size in millimetres along ``(D, H, W)``.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


class _Grid:
    """Patient coordinates (mm) of the voxel centres, one vector per axis."""

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]

    def box(self, low: Sequence[float], high: Sequence[float]) -> tuple[slice, ...]:
        """Index slices of the voxels with ``low <= coordinate <= high`` on every axis."""
        slices = []
        for axis, lo, hi in zip(self.axes, low, high):
            inside = np.flatnonzero((axis >= lo) & (axis <= hi))
            slices.append(slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0))
        return tuple(slices)

    def local(self, box: tuple[slice, ...]) -> list[np.ndarray]:
        """The coordinate vectors restricted to ``box``."""
        return [axis[s] for axis, s in zip(self.axes, box)]


def _ellipsoid(axes: Sequence[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised ellipsoidal radius on the grid spanned by ``axes``."""
    terms = [((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii)]
    rho = terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :]
    return np.sqrt(rho, out=rho)


def _tube(axes: Sequence[np.ndarray], path: np.ndarray, radius: float) -> np.ndarray:
    """Distance to a polyline divided by ``radius`` on the grid spanned by ``axes``."""
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    best = np.full(points.shape[:3], np.inf, dtype=np.float32)
    for start, end in zip(path[:-1], path[1:]):
        direction = (end - start).astype(np.float32)
        offset = points - start.astype(np.float32)
        t = np.clip(offset @ direction / float(direction @ direction), 0.0, 1.0)
        nearest = offset - t[..., None] * direction
        np.minimum(best, np.sqrt((nearest**2).sum(axis=-1)), out=best)
    return best / np.float32(radius)


def _body(grid: _Grid, rng: np.random.Generator, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hounsfield map of the body wall, cavity, spine, muscles and ribs, and the cavity mask."""
    u, v, w = grid.axes
    half_width = 160.0 * rng.uniform(0.9, 1.05)
    half_depth = 112.0 * rng.uniform(0.9, 1.08)
    fat_thickness = rng.uniform(8.0, 24.0)
    centre_v = 12.0
    uu, vv = u[:, None], v[None, :]

    # Elliptic cylinder outline, bent slightly along the body by the shape field.
    rho = np.sqrt((uu / half_width) ** 2 + ((vv - centre_v) / half_depth) ** 2)[:, :, None]
    rho = rho + 0.02 * field
    depth = (1.0 - rho) * min(half_width, half_depth)  # approximate mm inside the skin
    hu = np.full(grid.shape, AIR_HU, dtype=np.float32)
    hu[depth > 0] = FAT_HU
    hu[depth > fat_thickness] = 45.0  # abdominal wall muscle
    cavity = depth > fat_thickness + 12.0
    hu[cavity] = FAT_HU + 10.0

    # Bowel loops and gas in the cavity: thresholds on a smooth field.
    bowel_field = smooth_field(grid.shape, rng, 18.0 / grid.spacing)
    hu[cavity & (bowel_field > 0.1)] = 25.0
    hu[cavity & (bowel_field > 1.6)] = -850.0

    # Ribs: bands of bone just inside the muscle wall, above the kidneys' lower poles.
    rib_band = (depth > fat_thickness + 2.0) & (depth < fat_thickness + 9.0) & (vv[..., None] > -40.0)
    rib_phase = np.cos(2.0 * np.pi * (w[None, None, :] - rng.uniform(0, 26.0)) / 26.0) > 0.55
    hu[rib_band & rib_phase & (w[None, None, :] > -30.0)] = 550.0

    # Psoas and paraspinal muscles, then the vertebra (cortical rim, cancellous core, discs).
    for side in (-1.0, 1.0):
        psoas = ((uu - side * 38.0) / 20.0) ** 2 + ((vv - 62.0) / 20.0) ** 2 < 1.0
        hu[psoas[:, :, None] & (w[None, None, :] < 10.0)] = 50.0
        paraspinal = ((uu - side * 38.0) / 30.0) ** 2 + ((vv - 108.0) / 22.0) ** 2 < 1.0
        hu[np.broadcast_to(paraspinal[:, :, None], grid.shape) & (depth > fat_thickness)] = 55.0
    body_r = np.sqrt((uu / 21.0) ** 2 + ((vv - 78.0) / 19.0) ** 2)
    disc = np.cos(2.0 * np.pi * w / 32.0) > 0.85
    hu[np.broadcast_to((body_r < 1.0)[:, :, None], grid.shape)] = 700.0
    hu[(body_r < 0.85)[:, :, None] & ~disc[None, None, :]] = 260.0
    hu[(body_r < 1.0)[:, :, None] & disc[None, None, :]] = 85.0
    spinous = (np.abs(uu) < 6.0) & (vv > 97.0) & (vv < 122.0)
    hu[np.broadcast_to(spinous[:, :, None], grid.shape)] = 650.0
    cavity &= hu < 200.0
    return hu, cavity


def abdomen_phantom(
    shape: Sequence[int] = (256, 256, 64),
    rng: np.random.Generator | None = None,
    field_of_view_mm: Sequence[float] = FIELD_OF_VIEW_MM,
) -> AbdomenPhantom:
    """Synthesise one contrast-enhanced abdominal CT case with the 13 BTCV organ labels.

    Args:
        shape: array shape ``(D, H, W)`` (``i`` patient left, ``j`` posterior, ``k`` superior);
            voxels are ``field_of_view_mm / shape`` millimetres (1.41 x 1.41 x 3 mm by default).
        rng: random generator (a fresh ``default_rng(0)`` if omitted); the case is a deterministic
            function of its state.
        field_of_view_mm: physical extent along ``(D, H, W)``.

    Returns:
        The CT image (int16 HU, air -1000) and the label map (uint8, values 0 to 13).

    Raises:
        ConfigError: ``shape`` is not three sizes of at least 4 voxels.
    """
    if len(shape) != 3 or min(shape) < 4:
        raise ConfigError(f"abdomen_phantom needs a 3-D shape of at least 4 voxels per axis, got {tuple(shape)}")
    rng = np.random.default_rng(0) if rng is None else rng
    spacing = tuple(float(f) / int(n) for f, n in zip(field_of_view_mm, shape))
    grid = _Grid(shape, spacing)
    # Two shape fields; each organ bends its outline by its own mix of them.
    fields = (smooth_field(grid.shape, rng, 30.0 / grid.spacing), smooth_field(grid.shape, rng, 30.0 / grid.spacing))
    hu, cavity = _body(grid, rng, fields[0])
    label = np.zeros(grid.shape, dtype=np.uint8)

    anatomy_shift = np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-14, 14)])
    contrast = rng.uniform(0.85, 1.15)  # phase of the contrast bolus: all enhancing organs together
    for organ in _ORGANS:
        jitter = anatomy_shift + rng.uniform(-6.0, 6.0, size=3)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        organ_hu = np.float32((organ.hu * contrast if organ.hu > 60 else organ.hu) + rng.normal(0.0, 8.0))
        if organ.radii is not None:
            centre = np.asarray(organ.centre) + jitter
            radii = np.asarray(organ.radii) * rng.uniform(0.85, 1.15, size=3)
            box = grid.box(centre - 1.3 * radii, centre + 1.3 * radii)
            rho = _ellipsoid(grid.local(box), centre, radii)
            amplitude = 0.16
        else:
            path = np.asarray(organ.path) + jitter
            radius = organ.tube_radius * rng.uniform(0.85, 1.15)
            box = grid.box(path.min(axis=0) - 1.3 * radius, path.max(axis=0) + 1.3 * radius)
            rho = _tube(grid.local(box), path, radius)
            amplitude = 0.25
        if rho.size == 0:
            continue
        rho += amplitude * (np.cos(angle) * fields[0][box] + np.sin(angle) * fields[1][box])
        inside = (rho < 1.0) & cavity[box]
        hu[box][inside] = organ_hu
        label[box][inside] = organ.label
        if organ.label == _STOMACH:
            # Swallowed air rises to the anterior wall of the stomach.
            v = grid.local(box)[1][None, :, None]
            gas = inside & (v < organ.centre[1] + jitter[1] - 0.45 * radii[1])
            hu[box][gas] = -800.0

    # Partial volume in plane, then quantum noise.
    in_plane_sigma = np.clip(0.8 / grid.spacing, 0.0, 1.0) * np.array([1.0, 1.0, 0.0])
    hu = ndimage.gaussian_filter(hu, sigma=in_plane_sigma, mode="nearest")
    hu += rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(_NOISE_HU)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return AbdomenPhantom(image=np.rint(hu).astype(np.int16), label=label, spacing=spacing)
