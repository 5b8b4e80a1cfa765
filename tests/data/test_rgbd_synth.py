import pytest
import torch
from torch import Tensor

from dynmm.data.base import MultimodalDataset
from dynmm.data.registry import dataset_info, load_dataset
from dynmm.data.rgbd_synth import (
    CLASS_NAMES,
    COLOUR_ONLY_PAIRS,
    DEPTH_ONLY_PAIRS,
    DEPTH_SCALE,
    FLOOR,
    IGNORE,
    POSTER,
    RGB_MEAN,
    RGB_STD,
    RUG,
    RGBDSynthOptions,
    camera_slopes,
    load_rgbd_synth,
    rgbd_synth_info,
)
from dynmm.errors import ConfigError

SMALL = {"train_size": 40, "valid_size": 10, "test_size": 12, "height": 48, "width": 64}
RAW = {**SMALL, "train_size": 80, "normalize": False}
CLEAN = {**SMALL, "normalize": False, "depth_noise": 0.0, "hole_rate": 0.0, "edge_hole_rate": 0.0}


@pytest.fixture(scope="module")
def small() -> dict[str, MultimodalDataset]:
    return load_rgbd_synth(0, **SMALL)


@pytest.fixture(scope="module")
def raw() -> MultimodalDataset:
    """80 un-normalised training scenes: RGB in [0, 1], depth in metres."""
    return load_rgbd_synth(0, **RAW)["train"]


@pytest.fixture(scope="module")
def many() -> MultimodalDataset:
    """1500 small un-normalised scenes: many object instances, for class statistics."""
    return load_rgbd_synth(0, train_size=1500, valid_size=1, test_size=1, height=24, width=32, normalize=False)["train"]


@pytest.fixture(scope="module")
def clean() -> MultimodalDataset:
    """The first 40 of those scenes without depth noise or holes."""
    return load_rgbd_synth(0, **CLEAN)["train"]


def world(ds: MultimodalDataset) -> tuple[Tensor, Tensor]:
    """Height above the floor and distance in front of the back wall (metres) of every pixel, from its depth."""
    depth = ds.inputs["depth"][:, 0]
    a, b = camera_slopes(*depth.shape[1:])
    cam = ds.meta["camera_height_mm"].float()[:, None, None] / 1000
    pitch = ds.meta["pitch_mrad"].float()[:, None, None] / 1000
    height = cam + depth * (b * pitch.cos() - pitch.sin())
    to_wall = ds.meta["room_depth_mm"].float()[:, None, None] / 1000 - depth * (b * pitch.sin() + pitch.cos())
    return height, to_wall


def colour_features(rgb: Tensor) -> Tensor:
    """Per pixel (N, 3) -> chromaticity r, g and HSV saturation: colour statistics that shading does not change."""
    chroma = rgb / rgb.sum(-1, keepdim=True).clamp_min(1e-3)
    top = rgb.max(-1).values
    saturation = (top - rgb.min(-1).values) / top.clamp_min(1e-3)
    return torch.cat([chroma[:, :2], saturation[:, None]], dim=1)


def separability(x0: Tensor, x1: Tensor) -> float:
    """Balanced accuracy of the best-guess linear rule: project on the difference of the class means and cut
    half-way between them. Near 0.5 = the feature cannot tell the classes apart."""
    m0, m1 = x0.mean(0), x1.mean(0)
    w = m1 - m0
    cut = ((m0 + m1) / 2 * w).sum()
    return 0.5 * float(((x0 * w).sum(-1) < cut).float().mean() + ((x1 * w).sum(-1) >= cut).float().mean())


def test_shapes_dtypes_labels_and_info(small: dict[str, MultimodalDataset]) -> None:
    assert {k: len(v) for k, v in small.items()} == {"train": 40, "valid": 10, "test": 12}
    for ds in small.values():
        assert ds.inputs["rgb"].shape[1:] == (3, 48, 64) and ds.inputs["depth"].shape[1:] == (1, 48, 64)
        assert ds.target.shape[1:] == (48, 64) and ds.target.dtype == torch.int64
        assert all(torch.isfinite(x).all() for x in ds.inputs.values())
        assert set(ds.target.unique().tolist()) <= {*range(len(CLASS_NAMES)), IGNORE}
        assert (ds.inputs["depth"] >= 0).all()
        assert (ds.meta["hole_pixels"] == (ds.inputs["depth"] == 0).sum(dim=(1, 2, 3))).all()
    train = small["train"]
    assert set(train.target.unique().tolist()) == {*range(len(CLASS_NAMES)), IGNORE}
    assert (train.meta["num_objects"] >= 0).all() and train.meta["num_objects"].float().mean() > 3
    inputs, target = train[0]
    assert set(inputs) == {"rgb", "depth"} and target.shape == (48, 64)
    info = rgbd_synth_info(**SMALL)
    assert info.sizes == {"train": 40, "valid": 10, "test": 12}
    assert {k: (s.shape, s.kind) for k, s in info.modalities.items()} == {
        "rgb": ((3, 48, 64), "image"),
        "depth": ((1, 48, 64), "image"),
    }
    assert info.task.kind == "segmentation" and info.task.num_classes == len(CLASS_NAMES) == info.task.output_dim


def test_normalisation_is_fixed_and_keeps_holes_at_zero(small: dict, raw: MultimodalDataset) -> None:
    # growing a split keeps its first scenes, so the first 40 raw scenes are the normalised ones before scaling
    norm, first = small["train"], raw.subset(range(40))
    assert torch.equal(norm.target, first.target)
    assert 0 <= first.inputs["rgb"].min() and first.inputs["rgb"].max() <= 1
    expected = (first.inputs["rgb"] - torch.tensor(RGB_MEAN)[:, None, None]) / torch.tensor(RGB_STD)[:, None, None]
    torch.testing.assert_close(norm.inputs["rgb"], expected)
    torch.testing.assert_close(norm.inputs["depth"], first.inputs["depth"] / DEPTH_SCALE)
    holes = norm.inputs["depth"] == 0
    assert holes.any() and norm.inputs["depth"][~holes].min() > 0.2  # nearest surfaces are >= ~1 m away
    rgb = raw.inputs["rgb"]  # the constants fit the data: z-scored RGB is about standard
    z = (rgb - torch.tensor(RGB_MEAN)[:, None, None]) / torch.tensor(RGB_STD)[:, None, None]
    assert z.mean(dim=(0, 2, 3)).abs().max() < 0.15
    assert ((z.std(dim=(0, 2, 3)) - 1).abs() < 0.15).all()


def test_same_seed_same_data_other_seed_and_split_differ(small: dict[str, MultimodalDataset]) -> None:
    again = load_rgbd_synth(0, **SMALL)
    other = load_rgbd_synth(1, **SMALL)
    for split, ds in small.items():
        for key in ("rgb", "depth"):
            assert torch.equal(ds.inputs[key], again[split].inputs[key])
            assert not torch.equal(ds.inputs[key], other[split].inputs[key])
        assert torch.equal(ds.target, again[split].target)
        assert (ds.target != other[split].target).float().mean() > 0.05
    # the splits are independent streams, not the same scenes
    assert (small["train"].target[:10] != small["valid"].target).float().mean() > 0.05


def test_depth_only_pairs_differ_in_geometry_not_colour(many: MultimodalDataset) -> None:
    rgb, valid = many.inputs["rgb"].permute(0, 2, 3, 1), many.inputs["depth"][:, 0] > 0
    height, to_wall = world(many)
    cues = {POSTER: to_wall, RUG: height}  # posters vs wall cabinets: distance to the wall; rugs: height
    for c0, c1 in DEPTH_ONLY_PAIRS:
        m0, m1 = (many.target == c0) & valid, (many.target == c1) & valid
        assert m0.sum() > 2000 and m1.sum() > 2000
        assert separability(rgb[m0], rgb[m1]) < 0.62, (CLASS_NAMES[c0], CLASS_NAMES[c1])
        c0_colour, c1_colour = colour_features(rgb[m0]), colour_features(rgb[m1])
        assert ((c0_colour.mean(0) - c1_colour.mean(0)).abs() < 0.03).all()
        assert ((c0_colour.std(0) - c1_colour.std(0)).abs() < 0.02).all()
        # brightness differs only by the shading of the wall cabinets' and tables' sides
        assert (rgb[m0].mean() - rgb[m1].mean()).abs() < 0.06
        assert separability(cues[c0][m0][:, None], cues[c0][m1][:, None]) > 0.85, (CLASS_NAMES[c0], CLASS_NAMES[c1])
    posters, cabinets = (many.target == POSTER) & valid, (many.target == DEPTH_ONLY_PAIRS[0][1]) & valid
    assert to_wall[posters].median() < 0.05 < 0.2 < to_wall[cabinets].median()


def test_colour_only_pair_differs_in_colour_not_geometry(many: MultimodalDataset) -> None:
    rgb, valid = many.inputs["rgb"].permute(0, 2, 3, 1), many.inputs["depth"][:, 0] > 0
    height, to_wall = world(many)
    for c0, c1 in COLOUR_ONLY_PAIRS:
        m0, m1 = (many.target == c0) & valid, (many.target == c1) & valid
        assert separability(rgb[m0], rgb[m1]) > 0.95
        assert (colour_features(rgb[m0]).mean(0) - colour_features(rgb[m1]).mean(0))[0] > 0.3  # redder
        for cue in (height, to_wall, many.inputs["depth"][:, 0]):
            assert separability(cue[m0][:, None], cue[m1][:, None]) < 0.6
        pixels = (many.target == c0).sum().float() / (many.target == c1).sum()
        assert 0.8 < pixels < 1.25  # same sizes and frequency


def test_labels_match_the_geometry(clean: MultimodalDataset) -> None:
    height, _ = world(clean)
    assert (clean.inputs["depth"] > 0).all()  # no holes when both rates are 0
    assert height[clean.target == FLOOR].abs().max() < 0.01
    ceiling = clean.target == IGNORE
    assert ceiling.flatten(1).any(1).float().mean() > 0.3  # many views show some ceiling
    assert height[ceiling].min() > 2.49 and height[~ceiling].max() < 3.01


def test_depth_noise_grows_with_depth(raw: MultimodalDataset, clean: MultimodalDataset) -> None:
    noisy, exact = raw.inputs["depth"][:40], clean.inputs["depth"]
    valid = noisy > 0
    error = (noisy - exact)[valid]
    near, far = error[exact[valid] < 2.5], error[exact[valid] > 5.0]
    assert near.std() < 0.015 and far.std() > 3 * near.std()
    assert error.mean().abs() < 0.005
    assert torch.equal(raw.inputs["rgb"][:40], clean.inputs["rgb"])  # depth options do not touch RGB


def test_holes_at_the_documented_rates() -> None:
    shape = {"train_size": 30, "valid_size": 1, "test_size": 1, "height": 48, "width": 64}
    random_only = load_rgbd_synth(0, hole_rate=0.05, edge_hole_rate=0.0, **shape)["train"]
    assert 0.046 < float((random_only.inputs["depth"] == 0).float().mean()) < 0.054
    edges_only = load_rgbd_synth(0, hole_rate=0.0, edge_hole_rate=1.0, **shape)["train"]
    holes = edges_only.inputs["depth"][:, 0] == 0
    assert torch.equal(holes.sum(dim=(1, 2)), edges_only.meta["edge_pixels"]) and holes.any()
    y = edges_only.target  # occlusion edges are (almost always) where the label changes
    changes = torch.zeros_like(holes)
    changes[:, 1:] |= y[:, 1:] != y[:, :-1]
    changes[:, :-1] |= y[:, 1:] != y[:, :-1]
    changes[:, :, 1:] |= y[:, :, 1:] != y[:, :, :-1]
    changes[:, :, :-1] |= y[:, :, 1:] != y[:, :, :-1]
    assert changes[holes].float().mean() > 0.9
    default = load_rgbd_synth(0, **shape)["train"]
    edge, total = default.meta["edge_pixels"].sum().item(), 30 * 48 * 64
    expected = 0.01 * (total - edge) + 0.5 * edge
    assert abs(default.meta["hole_pixels"].sum().item() - expected) < 4 * expected**0.5


def test_plain_rooms_hold_no_depth_only_object(clean: MultimodalDataset) -> None:
    depth_only = torch.tensor([c for pair in DEPTH_ONLY_PAIRS for c in pair])
    holds = torch.isin(clean.target, depth_only).flatten(1).any(dim=1)
    flags = clean.flags["depth_pairs"]
    assert 0 < int(flags.sum()) < len(flags)  # the default mixes both kinds of room
    assert not bool(holds[~flags].any())  # a scene flagged plain shows no depth-only pixel
    plain = load_rgbd_synth(0, **{**CLEAN, "plain_room_fraction": 1.0})["train"]
    assert not bool(plain.flags["depth_pairs"].any()) and not bool(torch.isin(plain.target, depth_only).any())
    busy = load_rgbd_synth(0, **{**CLEAN, "plain_room_fraction": 0.0})["train"]
    assert float(busy.flags["depth_pairs"].float().mean()) > 0.9
    # the fraction draws on its own stream: scenes that keep their depth-only objects are unchanged
    kept = flags.nonzero().flatten()
    assert torch.equal(busy.target[kept], clean.target[kept])


def test_failed_depth_sensors_are_flagged_and_mostly_holes() -> None:
    options = {**SMALL, "train_size": 60, "depth_failure_fraction": 0.3}
    data = load_rgbd_synth(0, **options)["train"]
    failed = data.flags["depth_failed"]
    assert 0 < int(failed.sum()) < len(failed)
    holes = (data.inputs["depth"][:, 0] == 0).flatten(1).float().mean(dim=1)
    assert float(holes[failed].min()) > 0.9 and float(holes[~failed].max()) < 0.5
    assert int(data.meta["hole_pixels"][failed].min()) > 0.9 * SMALL["height"] * SMALL["width"]
    healthy = load_rgbd_synth(0, **{**SMALL, "train_size": 60})["train"]  # the failure draws its own stream
    assert torch.equal(data.inputs["rgb"], healthy.inputs["rgb"]) and torch.equal(data.target, healthy.target)
    assert torch.equal(data.inputs["depth"][~failed], healthy.inputs["depth"][~failed])
    assert not bool(healthy.flags["depth_failed"].any())


def colour_accuracy(rgb: Tensor, target: Tensor) -> Tensor:
    """Per scene, the pixel accuracy of labelling each pixel by its nearest class-mean colour (means fitted on the
    scene itself): how far colour alone goes there. rgb (N, 3, H, W), target (N, H, W) -> (N,)."""
    scores = []
    for image, labels in zip(rgb, target, strict=True):
        pixels, labels = image.flatten(1).t(), labels.flatten()
        keep = labels != IGNORE
        pixels, labels = pixels[keep], labels[keep]
        classes = labels.unique()
        means = torch.stack([pixels[labels == c].mean(0) for c in classes])
        scores.append((classes[torch.cdist(pixels, means).argmin(1)] == labels).float().mean())
    return torch.stack(scores)


def test_dark_rooms_are_flagged_dim_noisy_and_otherwise_the_same_rooms() -> None:
    options = {**SMALL, "train_size": 60, "normalize": False}
    data = load_rgbd_synth(0, **options, dark_room_fraction=0.4)["train"]
    lit = load_rgbd_synth(0, **options)["train"]
    dark = data.flags["dark"]
    assert 0.2 < float(dark.float().mean()) < 0.6 and not bool(lit.flags["dark"].any())
    # the darkness draws its own stream: same rooms, labels and depth; lit scenes keep their very pixels
    assert torch.equal(data.target, lit.target) and torch.equal(data.inputs["depth"], lit.inputs["depth"])
    assert torch.equal(data.inputs["rgb"][~dark], lit.inputs["rgb"][~dark])
    brightness = data.inputs["rgb"].mean(dim=(1, 2, 3))
    assert float(brightness[dark].max()) < float(brightness[~dark].min())
    # colour alone labels a lit room well and a dark one poorly: there depth must carry the scene
    accuracy = colour_accuracy(data.inputs["rgb"], data.target)
    assert float(accuracy[~dark].mean()) > float(accuracy[dark].mean()) + 0.15
    assert float(accuracy[dark].max()) < float(accuracy[~dark].mean())


def test_bad_options_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"\['colour'\].*hole_rate"):
        load_rgbd_synth(colour=True)
    with pytest.raises(ConfigError, match="height"):
        RGBDSynthOptions(height=4)
    with pytest.raises(ConfigError, match="edge_hole_rate"):
        RGBDSynthOptions(edge_hole_rate=1.5)
    with pytest.raises(ConfigError, match="train_size must be int"):
        RGBDSynthOptions(train_size="100")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="valid_size"):
        RGBDSynthOptions(valid_size=0)
    with pytest.raises(ConfigError, match="normalize must be bool"):
        RGBDSynthOptions(normalize=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="plain_room_fraction"):
        RGBDSynthOptions(plain_room_fraction=1.2)
    with pytest.raises(ConfigError, match="depth_noise"):
        RGBDSynthOptions(depth_noise=-0.1)
    with pytest.raises(ConfigError, match="dark_room_fraction must be in"):
        RGBDSynthOptions(dark_room_fraction=-0.1)
    with pytest.raises(ConfigError, match="dark_rgb_noise must be finite"):
        RGBDSynthOptions(dark_rgb_noise=float("inf"))
    with pytest.raises(ConfigError, match="seed"):
        load_rgbd_synth(seed=0.5)  # type: ignore[arg-type]
    assert RGBDSynthOptions(hole_rate=0).hole_rate == 0.0


def test_registry_loads_it() -> None:
    options = {"seed": 3, "train_size": 4, "valid_size": 2, "test_size": 2, "height": 24, "width": 32}
    splits = load_dataset("rgbd_synth", **options)
    info = dataset_info("rgbd_synth", **options)
    assert info.name == "rgbd_synth" and info.sizes == {k: len(v) for k, v in splits.items()}
    for key, spec in info.modalities.items():
        assert tuple(splits["train"].inputs[key].shape[1:]) == spec.shape
    assert torch.equal(splits["test"].target, load_rgbd_synth(**options)["test"].target)  # type: ignore[arg-type]
