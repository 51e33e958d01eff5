"""OccuSeg checkpoint I/O: atomic writes, and every way a file can be wrong gives RuntimeError / ValueError
naming the path (never a KeyError from deep inside the loader)."""
import pytest
import torch

from instseg_ros.occuseg import MapSegmenter
from instseg_ros.occuseg.checkpoint import load_checkpoint, save_checkpoint, set_inference_config
from instseg_ros.occuseg.config import NetConfig, SegmenterConfig
from instseg_ros.occuseg.model import OccuSegNet

VOX = 0.01
TINY = NetConfig(num_classes=2, channels=(8, 16), embed_dim=4)


@pytest.fixture
def good(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "good.pt"
    save_checkpoint(str(p), OccuSegNet(TINY), VOX, {"meta": {"steps": 3}})
    return p


def _rewrite(src, dst, **changes):
    ck = torch.load(src, weights_only=True)
    for k, v in changes.items():
        if v is None:
            ck.pop(k)
        else:
            ck[k] = v
    torch.save(ck, dst)
    return dst


def test_round_trip_keeps_weights_and_configs(good):
    ck = load_checkpoint(str(good))
    assert ck["model_config"] == TINY and ck["meta"] == {"steps": 3}
    assert ck["segmenter_config"] == SegmenterConfig(net=TINY, voxel_size=VOX)
    seg = MapSegmenter.from_checkpoint(str(good), device="cpu")
    torch.manual_seed(0)
    ref = OccuSegNet(TINY).state_dict()
    for k, v in seg.model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert not seg.model.training


def test_save_is_atomic(good, tmp_path):
    before = good.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save, whatever its type
        save_checkpoint(str(good), OccuSegNet(TINY), VOX, {"meta": {"bad": lambda: 0}})
    assert good.read_bytes() == before       # the previous checkpoint is intact
    load_checkpoint(str(good))
    # a successful save leaves no temporary file behind
    save_checkpoint(str(tmp_path / "sub" / "new.pt"), OccuSegNet(TINY), VOX)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["new.pt"]


@pytest.mark.parametrize("load", [load_checkpoint, lambda p: MapSegmenter.from_checkpoint(p, device="cpu")],
                         ids=["load_checkpoint", "from_checkpoint"])
def test_unreadable_files_are_runtime_errors_naming_the_path(load, good, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(RuntimeError, match=f"{missing}.*does not exist"):
        load(str(missing))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(RuntimeError, match=f"cannot read OccuSeg checkpoint {truncated}"):
        load(str(truncated))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(RuntimeError, match=str(text)):
        load(str(text))
    foreign = tmp_path / "clusternet_like.pt"
    torch.save({"config": {}, "model": {}, "meta": {}}, foreign)
    with pytest.raises(RuntimeError, match=f"{foreign} is not an OccuSeg checkpoint"):
        load(str(foreign))
    not_dict = tmp_path / "list.pt"
    torch.save([1, 2], not_dict)
    with pytest.raises(RuntimeError, match="not an OccuSeg checkpoint"):
        load(str(not_dict))
    no_weights = _rewrite(good, tmp_path / "no_weights.pt", model=None)
    with pytest.raises(RuntimeError, match=f"{no_weights} is not an OccuSeg checkpoint"):
        load(str(no_weights))


def test_invalid_stored_configs_are_value_errors_naming_the_path(good, tmp_path):
    cases = {"unknown_net_key": {"net_config": {"num_classes": 2, "width": 3}},
             "bad_net_value": {"net_config": {"num_classes": 1}},
             "net_not_a_dict": {"net_config": 7},
             "voxel_size": {"voxel_size": -0.01},
             "voxel_size_text": {"voxel_size": "5mm"},
             "cluster": {"cluster": {"tzero": 0.2}},
             "cluster_range": {"cluster": {"voxel_bg_max": 2.0}}}
    for name, change in cases.items():
        p = _rewrite(good, tmp_path / f"{name}.pt", **change)
        with pytest.raises(ValueError, match=str(p)):
            load_checkpoint(str(p))
        with pytest.raises(ValueError, match=str(p)):
            MapSegmenter.from_checkpoint(str(p), device="cpu")


def test_weights_that_do_not_fit_the_config_are_a_runtime_error(good, tmp_path):
    p = _rewrite(good, tmp_path / "wide.pt", net_config={"num_classes": 2, "channels": [8, 32], "embed_dim": 4})
    with pytest.raises(RuntimeError, match=f"{p}: the weights do not match"):
        MapSegmenter.from_checkpoint(str(p), device="cpu")


def test_set_inference_config_rewrites_in_place_atomically(good):
    set_inference_config(str(good), str(good), cluster={"t0": 0.3})
    ck = load_checkpoint(str(good))
    assert ck["segmenter_config"].cluster.t0 == 0.3 and ck["meta"] == {"steps": 3}
    assert "model_config" not in torch.load(good, weights_only=True)   # parsed objects are never written


def test_remap_semantic_head_averages_the_chosen_rows(good, tmp_path):
    from instseg_ros.occuseg.checkpoint import remap_semantic_head

    big = tmp_path / "ten.pt"
    torch.manual_seed(1)
    save_checkpoint(str(big), OccuSegNet(NetConfig(num_classes=10, channels=(8, 16), embed_dim=4)), VOX)
    out = remap_semantic_head(str(big), str(tmp_path / "six.pt"), ((0,), (1,), (2, 3, 4), (9,), (9,), (6, 8, 9)))
    a, b = load_checkpoint(str(big)), load_checkpoint(out)
    assert b["model_config"].num_classes == 6
    w, bias = a["model"]["head_sem.weight"], a["model"]["head_sem.bias"]
    torch.testing.assert_close(b["model"]["head_sem.weight"][2], (w[2] + w[3] + w[4]) / 3)
    torch.testing.assert_close(b["model"]["head_sem.bias"][5], (bias[6] + bias[8] + bias[9]) / 3)
    torch.testing.assert_close(b["model"]["head_sem.weight"][3], w[9])
    for k, v in a["model"].items():
        if not k.startswith("head_sem."):
            assert torch.equal(v, b["model"][k]), k
    assert MapSegmenter.from_checkpoint(out, device="cpu").model.head_sem.out_features == 6
    with pytest.raises(ValueError, match="rows"):
        remap_semantic_head(str(big), str(tmp_path / "x.pt"), ((0,), (10,)))


def test_shipped_grasp_model_predicts_the_grasp_classes():
    from instseg_ros.data.io import GRASP_CLASSES

    ck = load_checkpoint("models/occuseg_bin5mm_grasp.pt")
    assert ck["meta"]["semantic"] == "grasp" and tuple(ck["meta"]["classes"]) == GRASP_CLASSES
    seg = MapSegmenter.from_checkpoint("models/occuseg_bin5mm_grasp.pt", device="cpu")
    assert seg.model.head_sem.out_features == len(GRASP_CLASSES) and seg.config.voxel_size == 0.005
    # the same tuned inference settings as the default model
    base = load_checkpoint("models/occuseg_bin5mm.pt")["segmenter_config"]
    assert seg.config.cluster == base.cluster and seg.config.supervoxel == base.supervoxel
