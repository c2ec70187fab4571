"""Slice displays shared by the notebooks: volumes in RAS+ order, three orthogonal views, label overlays.

The notebooks import this module from their own folder (Jupyter and the notebook tests run them with the
notebook folder as the working directory). Arrays follow medseg's convention, indexed ``(i, j, k)`` as
stored, with the affine of :class:`medseg.io.Geometry` mapping voxels to RAS+ millimetres; every view is
drawn in radiological convention (the patient's right on the left of the image) with the true aspect
ratio of the voxels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medseg.errors import ConfigError, unknown_choice

VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
"""The three orthogonal views, in the order the figures show them."""

#: Colours of the BraTS labels (both releases: enhancing tumour is 4 in 2021, 3 in 2023).
BRATS_COLOURS: dict[int, str] = {1: "tab:red", 2: "tab:green", 3: "tab:blue", 4: "tab:blue"}
BRATS_NAMES: dict[int, str] = {1: "necrotic core", 2: "oedema", 3: "enhancing", 4: "enhancing"}

#: Values of :func:`error_map`, their colours and names.
ERROR_COLOURS: dict[int, str] = {1: "tab:green", 2: "tab:blue", 3: "tab:red"}
ERROR_NAMES: dict[int, str] = {1: "agreement", 2: "missed (FN)", 3: "extra (FP)"}


def to_ras(array: np.ndarray, affine: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip the axes of a volume so that they point to the patient's Right, Anterior, Superior.

    Args:
        array: volume ``(i, j, k)`` as stored.
        affine: ``(4, 4)`` voxel-to-RAS+ matrix of the volume (``Geometry.affine``).
        spacing: millimetres per voxel along ``i, j, k`` (``Geometry.spacing``).

    Returns:
        ``(volume (x, y, z), spacing (3,))``: the same voxels with axis 0 increasing to the right, axis 1 to
        the front and axis 2 upwards, and the spacing along those axes.
    """
    from nibabel import orientations

    ornt = orientations.io_orientation(np.asarray(affine, dtype=float))
    ras = orientations.apply_orientation(np.asarray(array), ornt)
    ras_spacing = np.empty(3)
    ras_spacing[ornt[:, 0].astype(int)] = np.asarray(spacing, dtype=float)
    return ras, ras_spacing


def centre_of(mask: np.ndarray | None, shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel at which to cut the three views: the centre of mass of ``mask``, or the volume's centre.

    Args:
        mask: boolean volume ``(x, y, z)``, or ``None``.
        shape: shape of the volume.

    Returns:
        ``(x, y, z)`` voxel indices.
    """
    if mask is None or not mask.any():
        return tuple(int(n) // 2 for n in shape)  # type: ignore[return-value]
    return tuple(int(round(float(c))) for c in np.argwhere(mask).mean(axis=0))  # type: ignore[return-value]


def view(volume: np.ndarray, spacing: Sequence[float], name: str, centre: Sequence[int]) -> tuple[np.ndarray, float]:
    """One 2D plane of a RAS volume, laid out for ``imshow(..., origin="lower")``.

    Args:
        volume: volume ``(x, y, z)`` in RAS order (see :func:`to_ras`).
        spacing: millimetres per voxel along ``x, y, z``.
        name: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        centre: ``(x, y, z)`` voxel through which the plane passes.

    Returns:
        ``(plane (rows, columns), aspect)``: rows run from posterior to anterior (axial) or from inferior to
        superior (coronal, sagittal); columns from the patient's right to left (axial, coronal) or from
        anterior to posterior (sagittal); ``aspect`` is the row spacing over the column spacing.

    Raises:
        ConfigError: for another view name.
    """
    x, y, z = (int(c) for c in centre)
    sx, sy, sz = (float(s) for s in spacing)
    if name == "axial":
        return volume[::-1, :, z].T, sy / sx
    if name == "coronal":
        return volume[::-1, y, :].T, sz / sx
    if name == "sagittal":
        return volume[x, ::-1, :].T, sz / sy
    raise unknown_choice("view", name, VIEWS)


def ct_window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map CT intensities to [0, 1] through a display window (values outside are clipped).

    Args:
        image: Hounsfield units, any shape.
        level: centre of the window in HU (soft-tissue abdomen: 40).
        width: width of the window in HU (soft-tissue abdomen: 400).

    Returns:
        float32 array of the same shape in [0, 1].

    Raises:
        ConfigError: if ``width`` is not positive.
    """
    if width <= 0:
        raise ConfigError(f"the CT window width must be positive, got {width} HU")
    low = level - width / 2.0
    return np.clip((np.asarray(image, dtype=np.float32) - low) / float(width), 0.0, 1.0)


def robust_range(image: np.ndarray) -> tuple[float, float]:
    """Display range of an MR image: the 1st and 99.5th percentiles of its non-zero voxels.

    Args:
        image: any shape.

    Returns:
        ``(low, high)`` with ``low < high``.
    """
    values = np.asarray(image, dtype=np.float32)
    values = values[values != 0] if np.any(values != 0) else values.ravel()
    low, high = (float(v) for v in np.percentile(values, [1.0, 99.5]))
    return low, max(high, low + 1e-6)


def error_map(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Where a predicted mask agrees with the reference mask and where it does not.

    Args:
        reference: boolean reference mask, any shape.
        predicted: boolean predicted mask of the same shape.

    Returns:
        uint8 array: 0 background of both, 1 in both (true positive), 2 only in the reference (missed, false
        negative), 3 only in the prediction (extra, false positive); colours in :data:`ERROR_COLOURS`.
    """
    reference, predicted = np.asarray(reference, dtype=bool), np.asarray(predicted, dtype=bool)
    out = np.zeros(reference.shape, dtype=np.uint8)
    out[reference & predicted] = 1
    out[reference & ~predicted] = 2
    out[~reference & predicted] = 3
    return out


def label_overlay(labels: np.ndarray, colours: Mapping[int, str], alpha: float = 0.45) -> np.ndarray:
    """An RGBA image colouring every labelled pixel, transparent elsewhere.

    Args:
        labels: 2D label plane ``(rows, columns)``.
        colours: label value -> matplotlib colour; values not listed are not drawn.
        alpha: opacity of the coloured pixels.

    Returns:
        float array ``(rows, columns, 4)``.
    """
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value, colour in colours.items():
        rgba[labels == value] = (*to_rgba(colour)[:3], alpha)
    return rgba


def show_overlays(
    image: np.ndarray,
    label_maps: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    colours: Mapping[int, str],
    *,
    centre: Sequence[int] | None = None,
    display_range: tuple[float, float] | None = None,
    names: Mapping[int, str] | None = None,
    title: str = "",
):
    """A grid of the image alone and with each label map, on the axial, coronal and sagittal planes.

    Args:
        image: image ``(x, y, z)`` in RAS order (already windowed to [0, 1] for CT, or raw for MR).
        label_maps: column title -> label map ``(x, y, z)`` in RAS order (e.g. ground truth, prediction).
        spacing: millimetres per voxel along ``x, y, z``.
        colours: label value -> colour.
        centre: voxel where the planes cross; default: the centre of mass of the first label map's
            foreground.
        display_range: grey-value range of the image; default :func:`robust_range`.
        names: label value -> name; when given, a legend names the colours of the values present.
        title: figure title.

    Returns:
        The matplotlib figure (rows: views; columns: image, then one per label map).
    """
    import matplotlib.pyplot as plt

    first = next(iter(label_maps.values()), None)
    if centre is None:
        centre = centre_of(None if first is None else first > 0, image.shape)
    low, high = display_range or robust_range(image)
    columns = 1 + len(label_maps)
    fig, axes = plt.subplots(len(VIEWS), columns, figsize=(2.6 * columns, 2.6 * len(VIEWS)), squeeze=False)
    for row, name in enumerate(VIEWS):
        plane, aspect = view(image, spacing, name, centre)
        titles = ["image", *label_maps]
        overlays = [None, *label_maps.values()]
        for col, (heading, labels) in enumerate(zip(titles, overlays)):
            ax = axes[row, col]
            ax.imshow(plane, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect, interpolation="nearest")
            if labels is not None:
                ax.imshow(label_overlay(view(labels, spacing, name, centre)[0], colours), origin="lower",
                          aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(heading)
            if col == 0:
                ax.set_ylabel(name)
    bottom = add_legend(fig, colours, names, label_maps.values()) if names else 0.0
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    return fig


def add_legend(fig, colours: Mapping[int, str], names: Mapping[int, str], label_maps) -> float:
    """Add a legend below a figure naming the colour of every label value present in ``label_maps``.

    Args:
        fig: the matplotlib figure.
        colours: label value -> colour.
        names: label value -> name (values with the same name are listed once).
        label_maps: label arrays whose values are looked up.

    Returns:
        The fraction of the figure's height the legend takes at the bottom (for ``tight_layout(rect=...)``).
    """
    from matplotlib.patches import Patch

    present = sorted(set().union(*(np.unique(m).tolist() for m in label_maps)) & set(colours) & set(names))
    handles, seen = [], set()
    for value in present:
        if names[value] not in seen:
            seen.add(names[value])
            handles.append(Patch(color=colours[value], label=names[value]))
    if not handles:
        return 0.0
    columns = min(len(handles), 4)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize="small", frameon=False)
    rows = -(-len(handles) // columns)
    return min(0.4, (0.3 * rows + 0.1) / fig.get_figheight())
