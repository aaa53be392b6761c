"""Space Ranger Visium input: real tissue (the squidpy crop) written as a Space Ranger outs/ folder in both
positions formats; scanpy's own reader reads each fixture before genedml converts it."""

import json

import anndata as ad
import numpy as np
import pytest

from genedml.errors import InputError
from genedml.io.hest import SamplePaths
from genedml.io.spaceranger import SpaceRangerFiles, SpaceRangerSpec, import_spaceranger
from genedml.tiles.geometry import TileSpec, tile_sample
from support.spaceranger import PITCH_PX, write_spaceranger_outs
from support.workflow import need_shared

OUTSIDE = 3


@pytest.fixture(params=[True, False], ids=["tissue_positions.csv", "tissue_positions_list.csv"])
def outs(request, tmp_path):
    data = need_shared("squidpy_visium_crop").parent
    return write_spaceranger_outs(data, tmp_path / "sr", header=request.param, outside=OUTSIDE)


@pytest.mark.filterwarnings("ignore:Use `squidpy.read.visium`:FutureWarning")
def test_scanpy_reads_the_fixture_and_genedml_converts_it_to_the_same_sample(outs, tmp_path):
    import scanpy as sc

    folder, image = outs
    ref = sc.read_visium(str(folder), count_file="filtered_feature_bc_matrix.h5")  # the ecosystem's reader first
    meta = import_spaceranger(
        SpaceRangerFiles.find(folder, image, "V1"),
        tmp_path / "hest",
        "V1",
        SpaceRangerSpec.of(),
        patient="P1",
        dataset="mine",
    )
    paths = SamplePaths.layout(tmp_path / "hest", "V1")
    st = ad.read_h5ad(paths.st)
    ref = ref[st.obs_names]
    assert st.n_obs == ref.n_obs == 49 and list(st.var_names) == list(ref.var_names)
    assert (st.X != ref.X).nnz == 0 and np.issubdtype(st.X.dtype, np.integer)
    np.testing.assert_allclose(st.obsm["spatial"], ref.obsm["spatial"])
    for column in ("in_tissue", "array_row", "array_col"):
        np.testing.assert_array_equal(st.obs[column].to_numpy(), ref.obs[column].to_numpy().astype(int))
    # Visium's lattice: neighbouring spots of a row are 100 µm apart (the crop's real positions, about PITCH_PX)
    assert meta["pixel_size_um_estimated"] == pytest.approx(100.0 / PITCH_PX, rel=0.02)
    assert meta["spots_under_tissue"] == 49 - OUTSIDE and "spot pitch" in meta["pixel_size_um_source"]
    assert json.loads(paths.metadata.read_text())["patient"] == "P1"
    # what HEST's own loader reads: the image downscaled to 1024 px on its long side, and its scale factors
    hest = st.uns["spatial"]["ST"]
    factor = hest["scalefactors"]["tissue_downscaled_fullres_scalef"]
    assert factor == pytest.approx(1024 / 1717) and hest["images"]["downscaled_fullres"].shape == (1024, 567, 3)
    assert hest["scalefactors"]["spot_diameter_fullres"] == pytest.approx(PITCH_PX * 0.55, rel=0.02)  # 55 µm
    g = tile_sample(paths, TileSpec.of(tile_px=32, target_mpp=2.0), tmp_path / "V1.npz")
    assert g.n_spots == 49 - OUTSIDE and g.mpp_source == "metadata"  # in_tissue 0 left out (data.in_tissue: only)
    # the hexagonal array: every spot's row + col has one parity, neighbours 100 µm apart
    assert len(set((g.array_coords.sum(1) % 2).tolist())) == 1


def test_bad_space_ranger_input_names_the_sample_and_file_and_writes_nothing(outs, tmp_path):
    folder, image = outs
    out = tmp_path / "hest"
    with pytest.raises(InputError, match="outs/ folder not found"):
        SpaceRangerFiles.find(tmp_path / "nowhere", image, "V1")
    (folder / "filtered_feature_bc_matrix.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a 10x feature-barcode matrix") as err:
        import_spaceranger(SpaceRangerFiles.find(folder, image, "V1"), out, "V1", SpaceRangerSpec.of())
    assert "V1" in str(err.value) and "filtered_feature_bc_matrix.h5" in str(err.value)
    assert not out.exists() or not any(out.rglob("*.*"))
    for positions in (folder / "spatial").glob("tissue_positions*.csv"):
        positions.unlink()
    with pytest.raises(InputError, match="tissue_positions"):
        SpaceRangerFiles.find(folder, image, "V1")


@pytest.mark.parametrize("pseudo_spot_um", [None, 64.0], ids=["bins", "pooled"])
def test_visium_hd_bins_and_pooled_pseudo_spots(pseudo_spot_um, tmp_path):
    import scanpy as sc

    from support.spaceranger import write_visium_hd_outs

    data = need_shared("squidpy_visium_crop").parent
    outs, image = write_visium_hd_outs(data, tmp_path / "hd", bin_um=16, window_um=160.0)
    bins = sc.read_10x_h5(str(outs / "binned_outputs/square_016um/filtered_feature_bc_matrix.h5"))  # scanpy first
    spec = SpaceRangerSpec.of(hd_bin_um=16, hd_pseudo_spot_um=pseudo_spot_um)
    meta = import_spaceranger(SpaceRangerFiles.find(outs, image, "HD1", 16), tmp_path / "hest", "HD1", spec)
    st = ad.read_h5ad(SamplePaths.layout(tmp_path / "hest", "HD1").st)
    assert meta["st_technology"] == "Visium HD" and meta["pixel_size_um_estimated"] == pytest.approx(100 / PITCH_PX)
    assert meta["pixel_size_um_source"].startswith("microns_per_pixel")
    if pseudo_spot_um is None:
        assert st.n_obs == bins.n_obs == 100 and meta["spot_diameter"] == 16
        assert (st.X != bins[st.obs_names].X.astype(np.int32)).nnz == 0
    else:  # 4 x 4 bins a pseudo-spot: counts summed, positions averaged
        assert meta["hd_bins_pooled"] == 4 and meta["spot_diameter"] == 64 and st.n_obs == 9
        assert st.obs["n_bins"].sum() == bins.n_obs and int(st.X.sum()) == int(bins.X.sum())
        first = st.obs_names[0]
        members = [
            b
            for b in bins.obs_names
            if int(b.split("_")[2]) // 4 == st.obs.loc[first, "array_row"]
            and int(b.split("_")[3].split("-")[0]) // 4 == st.obs.loc[first, "array_col"]
        ]
        assert len(members) == st.obs.loc[first, "n_bins"]
        np.testing.assert_array_equal(st[first].X.toarray().ravel(), np.asarray(bins[members].X.sum(0)).ravel())
    g = tile_sample(
        SamplePaths.layout(tmp_path / "hest", "HD1"), TileSpec.of(tile_px=32, target_mpp=2.0), tmp_path / "g.npz"
    )
    assert g.n_spots == st.n_obs and len(set((g.array_coords.sum(1) % 2).tolist())) == 2  # a square lattice
