"""ClusterNet through ONNX Runtime: export equality with torch, int8, metadata, providers and the fallbacks.

Models are the tiny config of ``conftest.TINY_MODEL`` (32 x 48 network), so an export takes about a second.
Every test points the export cache at its own temporary directory (``INSTSEG_CACHE_DIR``).
"""
from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from instseg_ros.clusternet import onnx_engine as oe  # noqa: E402
from instseg_ros.clusternet.checkpoint import save_checkpoint  # noqa: E402
from instseg_ros.clusternet.config import ModelConfig  # noqa: E402
from instseg_ros.clusternet.model import ClusterNet  # noqa: E402
from instseg_ros.clusternet.predictor import ClusterNetPredictor  # noqa: E402

TINY = {"base_width": 8, "c1_channels": 8, "aspp_channels": 8, "decoder_channels": 8,
        "depth_widths": (8, 8, 8, 8), "input_height": 32, "input_width": 48}
RES = (32, 48)
#: float32 unit roundoff
EPS32 = float(np.finfo(np.float32).eps) / 2


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(oe.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def random_tiny(random_bn):
    """Factory seed -> a tiny ClusterNet with random weights and random BatchNorm statistics (so no layer is an
    identity)."""
    def make(seed: int) -> ClusterNet:
        torch.manual_seed(seed)
        model = ClusterNet(ModelConfig(**TINY))
        random_bn(model, 0.2, (0.5, 2.0))
        with torch.no_grad():
            model.net.xi_head.weight.normal_(0, 0.1)   # zero-initialised: give ξ a real dependence on the input
        return model.eval()
    return make


def geometric_tiny(random_tiny) -> ClusterNet:
    """Tiny ClusterNet with hand-set heads: foreground and centroid probability 1 - 6e-6 everywhere, ξ = the
    pixel's own 3-D point, radius 0.1 m, so the clustering cuts a scene into spatial clusters and a 1e-6
    change of any output cannot move a pixel across a threshold."""
    model = random_tiny(0)
    net = model.net
    with torch.no_grad():
        for head in (net.mask_head, net.centroid_head):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([-6.0, 6.0]))
        net.xi_head.weight.zero_()
        net.xi_head.bias.zero_()
        last = net.radius_head[-1]
        last.weight.zero_()
        last.bias.fill_(math.log(math.expm1(0.1 / model.cfg.radius_scale)))
    return model


def save(model: ClusterNet, path, **meta) -> str:
    save_checkpoint(str(path), model.cfg, model.state_dict(), {"note": "test", **meta})
    return str(path)


def frames(n: int, seed: int, make_scene) -> list[dict]:
    """Box scenes at 48 x 64 (not the network size, so the resize path runs too) with depth holes and a NaN."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = make_scene(rng, 48, 64, 3)
        f["depth"][5, 7] = np.nan
        out.append(f)
    return out


def torch_outputs(model: ClusterNet, x, dtype=torch.float32) -> list[np.ndarray]:
    """The graph's four outputs computed by torch; the network in ``dtype`` after float32 input preparation."""
    with torch.no_grad():
        inp = model.net.prepare(*(torch.from_numpy(a) for a in x))
        m = model.to(dtype)
        out = m({k: v.to(dtype) for k, v in inp.items()})
        model.float()
    return [out[k].double().numpy() for k in oe.OUTPUT_NAMES]


# ---------------------------------------------------------------------------------- fp32 equality
def test_fp32_export_equals_torch_within_float32_rounding(tmp_path, make_scene, random_tiny):
    """ONNX Runtime and torch compute the same float32 network with different kernels and summation orders,
    so each differs from a float64 evaluation by float32 rounding: ORT's error may be a few times torch's own
    (4x here) plus a floor of 64 roundoffs of the output magnitude, never more."""
    model = random_tiny(1)
    ck = save(model, tmp_path / "a.pt")
    fr = frames(3, 0, make_scene)
    res = oe.export_onnx(ck, tmp_path / "a.onnx", check_frames=fr[:1])
    assert res["resolution"] == RES
    eng = oe.OnnxEngine(tmp_path / "a.onnx")
    for f in fr:
        x = oe.resize_frame(f["rgb"], f["depth"], f["K"], RES)
        ref64 = torch_outputs(model, x, torch.float64)
        t32 = torch_outputs(model, x)
        ort = [v.astype(np.float64) for v in eng.run(*x).values()]
        for name, r, t, o in zip(oe.OUTPUT_NAMES, ref64, t32, ort):
            assert o.shape == r.shape, name
            torch_err = np.abs(t - r).max()
            bound = 4 * torch_err + 64 * EPS32 * np.abs(r).max()
            assert np.abs(o - r).max() <= bound, (name, np.abs(o - r).max(), torch_err)
    # the export's own check against torch is recorded in the file and is within the same kind of bound
    assert max(eng.meta.extra["max_abs_diff_vs_torch"].values()) < 1e-4


def test_an_export_that_disagrees_with_torch_is_not_written(tmp_path, monkeypatch, random_tiny):
    ck = save(random_tiny(11), tmp_path / "t.pt")
    # a bound below float32 rounding: the real (correct) graph then counts as disagreeing
    monkeypatch.setattr(oe, "EXPORT_TOLERANCE", 1e-12)
    with pytest.raises(oe.OnnxModelError, match="differs from torch"):
        oe.export_onnx(ck, tmp_path / "t.onnx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("t.onnx")) == []   # nor a temporary


def test_onnx_file_alone_rebuilds_the_predictor_and_matches_torch(tmp_path, make_scene, random_tiny):
    model = geometric_tiny(random_tiny)
    params = {"fg_threshold": 0.5, "min_size": 4}
    ck = save(model, tmp_path / "g.pt", cluster_params=params, resolution=list(RES))
    oe.export_onnx(ck, tmp_path / "g.onnx")
    # metadata read with the onnx package, independently of the engine's reader
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "g.onnx")).metadata_props}
    meta = json.loads(props[oe.METADATA_KEY])
    assert meta["checkpoint_sha256"] == oe.file_sha256(ck)
    assert meta["resolution"] == list(RES) and meta["cluster_params"] == params and meta["precision"] == "fp32"
    assert meta["model_config"]["base_width"] == 8 and meta["checkpoint_meta"]["note"] == "test"
    shutil.move(ck, tmp_path / "elsewhere.pt")          # the .onnx alone
    ort_pred = ClusterNetPredictor.from_onnx(str(tmp_path / "g.onnx"), device="cpu")
    ref = ClusterNetPredictor.from_checkpoint(str(tmp_path / "elsewhere.pt"), device="cpu", backend="torch")
    assert ort_pred.params == ref.params and ort_pred.resolution == RES and ort_pred.model is None
    for f in frames(2, 3, make_scene):
        a = ort_pred.predict(f["rgb"], f["depth"], f["K"])
        b = ref.predict(f["rgb"], f["depth"], f["K"])
        assert len(b) >= 2                               # the scene really is cut into clusters
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-9)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


# ---------------------------------------------------------------------------------- int8
#: measured on this tiny model (random_tiny(2), 4 calibration frames of seed 10, 3 frames of seed 11, the default
#: INT8_MODULES): max |int8 - fp32| xi 3.4e-6 m, centroid_prob 9.1e-4, fg_prob 3.7e-4, radius 3.8e-5 m (ORT 1.32,
#: AVX2 CPU); the bounds are about twice that (calibration and ORT's int8 kernels are deterministic)
INT8_TOLERANCE = {"xi": 1e-5, "centroid_prob": 2e-3, "fg_prob": 1e-3, "radius": 1e-4}


def test_int8_quantization_is_real_and_within_its_measured_tolerance(tmp_path, make_scene, random_tiny):
    import onnx

    model = random_tiny(2)
    ck = save(model, tmp_path / "q.pt")
    oe.export_onnx(ck, tmp_path / "q.onnx")
    q = oe.quantize_int8(tmp_path / "q.onnx", tmp_path / "q.int8.onnx", frames(4, 10, make_scene))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.int8.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    # int8 weights where quantized (the float XYZ encoder and heads keep the file at 66 % of the fp32 one here)
    assert q["bytes"] < 0.8 * (tmp_path / "q.onnx").stat().st_size
    fp, i8 = oe.OnnxEngine(tmp_path / "q.onnx"), oe.OnnxEngine(tmp_path / "q.int8.onnx", expected_precision="int8")
    assert i8.meta.precision == "int8" and i8.meta.checkpoint_sha256 == fp.meta.checkpoint_sha256
    diffs = {k: 0.0 for k in oe.OUTPUT_NAMES}
    for f in frames(3, 11, make_scene):
        x = oe.resize_frame(f["rgb"], f["depth"], f["K"], RES)
        a, b = fp.run(*x), i8.run(*x)
        for k in diffs:
            diffs[k] = max(diffs[k], float(np.abs(a[k] - b[k]).max()))
    assert all(diffs[k] <= INT8_TOLERANCE[k] for k in diffs), diffs
    # the quantized graph really computes something else: far above float32 rounding (~1e-7 here)
    assert diffs["centroid_prob"] > 1e-5 and diffs["fg_prob"] > 1e-5


# ---------------------------------------------------------------------------------- backend choice
def test_auto_exports_once_into_the_cache_then_reuses_it(tmp_path, random_tiny):
    ck = save(random_tiny(3), tmp_path / "c.pt")
    logs: list[str] = []
    p = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="auto", log=logs.append)
    target = oe.cached_onnx_path(oe.file_sha256(ck), RES)
    assert p.engine is not None and p.engine.path == str(target) and target.is_file()
    assert any("exporting it once" in m for m in logs)
    assert any("CPUExecutionProvider" in m for m in logs)      # the log names the provider in use
    logs.clear()
    p2 = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="onnxruntime", log=logs.append)
    assert p2.engine.path == str(target) and not any("exporting" in m for m in logs)
    # a file next to the checkpoint is preferred when it matches
    shutil.copy(target, tmp_path / "c.onnx")
    p3 = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="auto", log=logs.append)
    assert p3.engine.path == str(tmp_path / "c.onnx")
    assert ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="torch").engine is None


def test_corrupt_onnx_falls_back_to_torch_in_auto_and_raises_when_asked_for(tmp_path, random_tiny):
    ck = save(random_tiny(4), tmp_path / "d.pt")
    (tmp_path / "d.onnx").write_bytes(b"\x08\x07not a protobuf" * 100)
    logs: list[str] = []
    p = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="auto", log=logs.append)
    assert p.engine is None and p.backend == "torch"
    assert any("cannot load ONNX model" in m and "d.onnx" in m and "torch instead" in m for m in logs), logs
    with pytest.raises(RuntimeError, match="cannot load ONNX model"):
        ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="onnxruntime")


def test_onnx_of_another_checkpoint_is_refused(tmp_path, random_tiny):
    a = save(random_tiny(5), tmp_path / "a" / "m.pt")
    b = save(random_tiny(6), tmp_path / "b" / "m.pt")
    oe.export_onnx(a, tmp_path / "b" / "m.onnx")          # A's export sitting next to B
    logs: list[str] = []
    p = ClusterNetPredictor.from_checkpoint(b, device="cpu", backend="auto", log=logs.append)
    assert p.engine is None
    assert any("another checkpoint" in m for m in logs), logs
    with pytest.raises(RuntimeError, match="another checkpoint"):
        ClusterNetPredictor.from_checkpoint(b, device="cpu", backend="onnxruntime")
    with pytest.raises(oe.OnnxModelError, match="another checkpoint"):
        oe.OnnxEngine(tmp_path / "b" / "m.onnx", expected_sha256=oe.file_sha256(b))


def test_an_onnx_without_our_metadata_is_refused(tmp_path, random_tiny):
    import onnx

    ck = save(random_tiny(7), tmp_path / "e.pt")
    oe.export_onnx(ck, tmp_path / "e.onnx")
    m = onnx.load(str(tmp_path / "e.onnx"))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "e.onnx"))
    with pytest.raises(oe.OnnxModelError, match="no 'instseg_ros.clusternet' metadata"):
        oe.OnnxEngine(tmp_path / "e.onnx")


def test_without_onnxruntime_auto_uses_torch_and_onnxruntime_says_what_to_install(tmp_path, monkeypatch, random_tiny):
    ck = save(random_tiny(8), tmp_path / "f.pt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # makes `import onnxruntime` raise ImportError
    assert not oe.onnxruntime_available()
    logs: list[str] = []
    p = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="auto", log=logs.append)
    assert p.engine is None and any("onnxruntime is not installed" in m for m in logs)
    with pytest.raises(RuntimeError, match="pip install onnxruntime"):
        ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="onnxruntime")


def test_torch_only_options_keep_auto_on_torch(tmp_path, random_tiny):
    ck = save(random_tiny(9), tmp_path / "h.pt")
    assert ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="auto", channels_last=True).engine is None
    with pytest.raises(ValueError, match="channels_last"):
        ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="onnxruntime", channels_last=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="tensorrt")


def test_a_sibling_export_at_another_resolution_is_passed_over(tmp_path, random_tiny):
    ck = save(random_tiny(10), tmp_path / "r.pt")
    oe.export_onnx(ck, tmp_path / "r.onnx", resolution=(64, 96))
    p = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="onnxruntime")
    assert p.engine.resolution == RES and p.engine.path != str(tmp_path / "r.onnx")
    p2 = ClusterNetPredictor.from_checkpoint(ck, device="cpu", backend="onnxruntime", resolution=(64, 96))
    assert p2.engine.path == str(tmp_path / "r.onnx")


# ---------------------------------------------------------------------------------- providers
def test_providers_go_tensorrt_cuda_cpu_keeping_only_available_ones(tmp_path):
    all3 = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    sel = oe.select_providers(all3, "cuda", 1, trt_cache=tmp_path / "trt")
    assert [n for n, _ in sel] == all3
    trt = sel[0][1]
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert trt["device_id"] == "1" and sel[1][1]["device_id"] == "1"
    assert [n for n, _ in oe.select_providers(all3[1:], "cuda")] == all3[1:]
    assert [n for n, _ in oe.select_providers(["CPUExecutionProvider"], "cuda")] == ["CPUExecutionProvider"]
    assert [n for n, _ in oe.select_providers(all3, "cpu")] == ["CPUExecutionProvider"]
    # default engine cache: the per-user cache directory (INSTSEG_CACHE_DIR here)
    assert oe.select_providers(all3, "cuda")[0][1]["trt_engine_cache_path"] == str(oe.cache_dir() / "tensorrt")


def test_cache_keeps_only_the_newest_exports(tmp_path):
    import os

    d = tmp_path / "c"
    d.mkdir()
    for i in range(5):
        (d / f"{i}.onnx").write_bytes(b"x")
        os.utime(d / f"{i}.onnx", (1000 + i, 1000 + i))
    (d / "notes.txt").write_text("kept")
    gone = oe.prune_cache(d, 2)
    assert sorted(p.name for p in gone) == ["0.onnx", "1.onnx", "2.onnx"]
    assert sorted(p.name for p in d.iterdir()) == ["3.onnx", "4.onnx", "notes.txt"]


def test_cache_dir_follows_xdg_when_not_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv(oe.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert oe.cache_dir() == tmp_path / "xdg" / "instseg_ros"


# ---------------------------------------------------------------------------------- node parameter
def test_node_backend_parameter_is_validated_and_matches_the_engine():
    from instseg_ros.ros.node_params import CLUSTERNET_BACKENDS, ClusterNetNodeConfig

    assert CLUSTERNET_BACKENDS == oe.BACKENDS
    assert ClusterNetNodeConfig().backend == "auto"
    for b in oe.BACKENDS:
        assert ClusterNetNodeConfig(backend=b).backend == b
    with pytest.raises(ValueError, match="backend"):
        ClusterNetNodeConfig(backend="tensorrt")
