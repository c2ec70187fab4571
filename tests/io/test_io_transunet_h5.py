"""TransUNet's HDF5 test volumes (``caseNNNN.npy.h5``) through medseg.io: axis order, geometry, refusals."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from medseg.cli import main
from medseg.data.labels import btcv_to_transunet, transunet_normalise
from medseg.errors import ConfigError, InputError, UnsafeFileError
from medseg.io import load_case, load_volume, read_geometry, save_like, transunet_geometry
from medseg.io.transunet_h5 import is_transunet_h5_path, transunet_h5_stem


def _write_h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, data in datasets.items():
            handle.create_dataset(name, data=data)
    return path


@pytest.fixture
def volume_file(tmp_path):
    """A (k, i, j) = (4, 5, 6) volume whose every voxel value encodes its (i, j, k) position."""
    i, j, k = np.meshgrid(np.arange(5), np.arange(6), np.arange(4), indexing="ij")
    image_ijk = (100 * i + 10 * j + k).astype(np.float32) / 1000.0
    label_ijk = ((i + j + k) % 9).astype(np.uint8)
    path = _write_h5(
        tmp_path / "case0007.npy.h5",
        image=np.transpose(image_ijk, (2, 0, 1)),
        label=np.transpose(label_ijk, (2, 0, 1)),
    )
    return path, image_ijk, label_ijk


def test_image_is_transposed_from_slices_first_to_ijk_with_identity_geometry(volume_file):
    path, image_ijk, _ = volume_file
    volume = load_volume(path)
    np.testing.assert_array_equal(volume.array, image_ijk)
    assert volume.array.flags.c_contiguous and volume.array.dtype == np.float32
    geometry = volume.geometry
    assert geometry.shape == (5, 6, 4)
    np.testing.assert_array_equal(geometry.affine, np.eye(4))
    assert geometry.spacing == (1.0, 1.0, 1.0) and geometry.orientation == "RAS"
    assert geometry.source_format == "transunet_h5" and geometry.dtype == "float32"
    assert read_geometry(path) == geometry


def test_label_dataset_is_read_by_keyword(volume_file):
    path, _, label_ijk = volume_file
    volume = load_volume(path, dataset="label")
    np.testing.assert_array_equal(volume.array, label_ijk)
    assert volume.array.dtype == np.uint8 and volume.geometry.dtype == "uint8"
    assert read_geometry(path, dataset="label").shape == (5, 6, 4)


def test_channels_and_load_case_give_channel_first_arrays(volume_file):
    path, image_ijk, _ = volume_file
    assert load_volume(path, channels=True).array.shape == (1, 5, 6, 4)
    case = load_case([path])
    np.testing.assert_array_equal(case.array[0], image_ijk)


def test_label_map_saved_with_the_h5_geometry_reloads_on_the_same_grid(volume_file, tmp_path):
    path, _, label_ijk = volume_file
    reference = load_volume(path, dataset="label")
    written = save_like(label_ijk, reference.geometry, tmp_path / "case0007.nii.gz")
    again = load_volume(written)
    np.testing.assert_array_equal(again.array, label_ijk)
    reference.geometry.require_match(again.geometry, "written vs h5")
    assert again.geometry.qform_code == 1 and again.geometry.sform_code == 1


def test_synthetic_transunet_volume_equals_the_raw_phantom_windowed_and_remapped(tmp_path):
    shape = ["--shape", "16", "12", "8", "--seed", "3"]
    assert main(["synth", "synapse", str(tmp_path / "raw"), "--cases", "3", *shape]) == 0
    assert main(["synth", "synapse", str(tmp_path / "tu"), "--cases", "3", "--format", "transunet", *shape]) == 0
    h5_files = sorted((tmp_path / "tu" / "test_vol_h5").iterdir())
    assert [p.name for p in h5_files] == ["case0003.npy.h5"]
    raw_image = load_volume(tmp_path / "raw/RawData/Training/img/img0003.nii.gz").array
    raw_label = load_volume(tmp_path / "raw/RawData/Training/label/label0003.nii.gz").array
    np.testing.assert_array_equal(load_volume(h5_files[0]).array, transunet_normalise(raw_image))
    np.testing.assert_array_equal(load_volume(h5_files[0], dataset="label").array, btcv_to_transunet(raw_label))


def test_names_and_geometry_helpers():
    assert is_transunet_h5_path("a/case0001.npy.h5") and is_transunet_h5_path("X.H5")
    assert not is_transunet_h5_path("case0001.nii.gz")
    assert transunet_h5_stem("case0001.npy.h5") == "case0001" and transunet_h5_stem("v.h5") == "v"
    assert transunet_h5_stem("case0001.nii.gz") is None
    assert transunet_geometry((3, 4, 5), "uint8").dtype == "uint8"


def test_missing_dataset_names_what_the_file_holds(tmp_path):
    path = _write_h5(tmp_path / "only.npy.h5", image=np.zeros((2, 3, 3), np.float32))
    with pytest.raises(InputError, match=r"no dataset 'label' \(holds \['image'\]\)"):
        load_volume(path, dataset="label")


def test_unknown_dataset_and_dataset_for_nifti_are_config_errors(volume_file, tmp_path):
    path, image_ijk, _ = volume_file
    with pytest.raises(ConfigError, match="valid.*image.*label"):
        load_volume(path, dataset="mask")
    nifti = save_like(image_ijk, transunet_geometry(image_ijk.shape), tmp_path / "a.nii.gz", kind="image")
    with pytest.raises(ConfigError, match="applies to TransUNet .npy.h5 volumes only"):
        load_volume(nifti, dataset="label")


def test_file_that_is_not_hdf5_is_an_input_error(tmp_path):
    path = tmp_path / "fake.npy.h5"
    path.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(InputError, match="not an HDF5 file"):
        load_volume(path)


def test_dataset_that_is_not_3d_is_refused(tmp_path):
    path = _write_h5(tmp_path / "slice.npy.h5", image=np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match=r"shape \(3, 3\); a 3D volume stored \(slices, H, W\)"):
        load_volume(path)


def test_non_finite_voxels_follow_the_policy(tmp_path):
    data = np.zeros((2, 3, 3), np.float32)
    data[1, 2, 0] = np.nan
    path = _write_h5(tmp_path / "nan.npy.h5", image=data)
    with pytest.raises(InputError, match="1 non-finite voxel"):
        load_volume(path)
    with pytest.warns(RuntimeWarning, match="replaced 1 non-finite"):
        assert load_volume(path, nonfinite="replace").array[0, 2, 1] == 0.0


def test_voxel_cap_is_checked_before_reading(tmp_path):
    path = _write_h5(tmp_path / "big.npy.h5", image=np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="more than the limit of 10"):
        load_volume(path, max_voxels=10)


def test_links_to_other_files_are_refused(tmp_path):
    target = _write_h5(tmp_path / "other.h5", image=np.zeros((2, 2, 2), np.float32))
    path = tmp_path / "linked.npy.h5"
    with h5py.File(path, "w") as handle:
        handle["image"] = h5py.ExternalLink(str(target), "image")
        layout = h5py.VirtualLayout(shape=(2, 2, 2), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(target), "image", shape=(2, 2, 2))
        handle.create_virtual_dataset("label", layout)
    with pytest.raises(UnsafeFileError, match="link to other data"):
        load_volume(path)
    with pytest.raises(UnsafeFileError, match="reads its data from other files"):
        load_volume(path, dataset="label")
