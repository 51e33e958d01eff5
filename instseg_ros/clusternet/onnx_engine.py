"""ClusterNet as an ONNX graph run by ONNX Runtime: export, int8 quantization, provider choice, metadata.

The exported graph is the whole network step of :class:`~instseg_ros.clusternet.predictor.ClusterNetPredictor`:
input normalisation, depth hole filling and backprojection (:meth:`ClusterNetModel.prepare`), the network, and
the two class probabilities, in the export form of :func:`~instseg_ros.clusternet.model.export_form` (same
function, less memory traffic). Inputs, at the network resolution (H, W) fixed at export, batch 1:

* ``rgb``   float32 (1, 3, H, W), 0..255, RGB order;
* ``depth`` float32 (1, 1, H, W), metres, 0 / NaN / inf = invalid;
* ``K``     float32 (1, 3, 3), intrinsics at (H, W), pixels.

Outputs: ``xi`` float32 (1, D, H, W) metres (camera optical frame), ``centroid_prob`` (1, H, W),
``fg_prob`` (1, H, W) in [0, 1], ``radius`` (1, 1, H, W) metres.

The file carries one metadata entry (ONNX ``metadata_props`` key :data:`METADATA_KEY`, JSON) with the model
config, network resolution, tuned clustering parameters, the sha256 of the source checkpoint, the precision
(fp32 / int8) and the checkpoint's own meta, so the .onnx alone is enough to build a predictor
(:meth:`ClusterNetPredictor.from_onnx`). ONNX Runtime is the only run-time dependency; ``onnx`` and torch's
exporter are needed to export and quantize.

Execution providers: on a CUDA device TensorRT -> CUDA -> CPU, keeping those that the installed ONNX Runtime
offers (``onnxruntime-gpu``, installed by ``scripts/setup.sh --gpu``); TensorRT engines are cached under
:func:`cache_dir` ``/tensorrt`` so only the first start builds them. On the CPU: CPUExecutionProvider.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger("instseg_ros.clusternet.onnx")

#: metadata_props key holding the JSON description of the export
METADATA_KEY = "instseg_ros.clusternet"
#: bumped when the graph's inputs / outputs, its form or the metadata layout change; older files are rebuilt
#: (2: the export form of :func:`~instseg_ros.clusternet.model.export_form`, same inputs and outputs)
FORMAT_VERSION = 2
#: ONNX opset of the export (torch's TorchScript-based exporter, measured to work with this network)
OPSET = 17
INPUT_NAMES = ("rgb", "depth", "K")
OUTPUT_NAMES = ("xi", "centroid_prob", "fg_prob", "radius")
PRECISIONS = ("fp32", "int8")
#: predictor backends; "onnxruntime-int8" is the QDQ-quantized graph (CPU)
BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
#: GPU providers in the order they are tried; the CPU provider always ends the list
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
#: ONNX Runtime's intra-op threads busy-wait for work by default; on a CPU shared with other processes (the node
#: next to the camera driver, other nodes) that burns the cores the others need, so they sleep instead
ALLOW_SPINNING = "0"
#: exports kept in the cache; older ones are deleted when a new one is written (every retrained or test checkpoint
#: has its own hash, so the cache would otherwise only grow)
CACHE_KEEP = 8
#: environment variable overriding the cache directory
CACHE_ENV = "INSTSEG_CACHE_DIR"
#: largest |ONNX Runtime - torch| an fp32 export may show on its check frames (metres for ξ / B̂, probability for
#: η̂ / foreground): the lite model measures 2.3e-6, float32 rounding; 1e-4 is far below anything the clustering's
#: thresholds resolve, and far above rounding, so only a wrong graph trips it
EXPORT_TOLERANCE = 1e-4
#: frames used to check an export against torch, and the default int8 calibration set size
CHECK_FRAMES = 2
CALIB_FRAMES = 16
#: submodules of ClusterNetModel whose operators are quantized to int8: the RGB and depth encoders, the ASPPs and the
#: 1/8 - 1/4 decoder. Everything else stays float: the input preparation, the XYZ encoder (metric input: with it
#: quantized too the lite model lost 3.0 AP instead of 1.8 on the synthetic test split), the heads, and the
#: full-resolution ξ branch, whose output is the measured 3-D point plus an offset: uint8 over its metre range would
#: round centroids to about a centimetre (every operator quantized: -38 AP). models/clusternet_MODEL_CARD.md has the
#: table
INT8_MODULES = ("rgb_enc", "depth_enc", "c4_aspp", "depth_aspp", "c1_fuse", "skip", "dec8", "dec4", "xi_up2")
#: seed of the generated calibration scenes (train-split scenes: disjoint from val / test)
CALIB_SEED = 7


class OnnxModelError(RuntimeError):
    """An .onnx file that cannot be used: unreadable, not a ClusterNet export, or not from this checkpoint."""


def onnxruntime_available() -> bool:
    """True when ``import onnxruntime`` works."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """Per-user cache: ``$INSTSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/instseg_ros``, else ``~/.cache/instseg_ros``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "instseg_ros"


def onnx_name(checkpoint: str | os.PathLike, precision: str = "fp32") -> str:
    """File name of a checkpoint's export next to it: ``clusternet_lite.onnx`` / ``clusternet_lite.int8.onnx``."""
    stem = Path(checkpoint).stem
    return f"{stem}.onnx" if precision == "fp32" else f"{stem}.{precision}.onnx"


def cached_onnx_path(sha256: str, resolution: tuple[int, int], precision: str = "fp32") -> Path:
    """Where an export of the checkpoint with this hash at this resolution lives in :func:`cache_dir`."""
    h, w = resolution
    suffix = "" if precision == "fp32" else f".{precision}"
    return cache_dir() / "clusternet" / f"{sha256[:16]}_{h}x{w}{suffix}.onnx"


# ------------------------------------------------------------------------------------------ metadata
@dataclass
class OnnxMeta:
    """What the .onnx says about itself (stored as JSON under :data:`METADATA_KEY`).

    Attributes:
        checkpoint_sha256: hex sha256 of the .pt the graph was exported from.
        model_config: the checkpoint's ModelConfig as a plain dict.
        resolution: (H, W) network resolution, pixels (fixed in the graph).
        cluster_params: tuned ClusterParams fields, or None (library defaults).
        precision: "fp32" | "int8".
        checkpoint_meta: the checkpoint's "meta" dict (JSON-safe part).
        extra: export facts (torch / onnxruntime versions, opset, max abs difference to torch, calibration).
    """

    checkpoint_sha256: str
    model_config: dict[str, Any]
    resolution: tuple[int, int]
    cluster_params: dict[str, Any] | None = None
    precision: str = "fp32"
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["resolution"] = list(self.resolution)
        return json.dumps(d, default=_json_default, sort_keys=True)

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> OnnxMeta:
        """Parse the metadata map of an ONNX model; OnnxModelError naming ``where`` if it is missing or invalid."""
        raw = props.get(METADATA_KEY)
        if raw is None:
            raise OnnxModelError(f"{where} has no '{METADATA_KEY}' metadata: not exported by "
                                 "'instseg export clusternet'; export it again")
        try:
            d = json.loads(raw)
            if int(d.get("format_version", -1)) != FORMAT_VERSION:
                raise OnnxModelError(f"{where} has export format {d.get('format_version')}, this package reads "
                                     f"{FORMAT_VERSION}; export it again")
            res = d["resolution"]
            meta = cls(checkpoint_sha256=str(d["checkpoint_sha256"]), model_config=dict(d["model_config"]),
                       resolution=(int(res[0]), int(res[1])), cluster_params=d.get("cluster_params"),
                       precision=str(d.get("precision", "fp32")), checkpoint_meta=dict(d.get("checkpoint_meta", {})),
                       extra=dict(d.get("extra", {})))
        except OnnxModelError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise OnnxModelError(f"{where}: invalid '{METADATA_KEY}' metadata ({type(e).__name__}: {e})") from e
        if meta.precision not in PRECISIONS:
            raise OnnxModelError(f"{where}: unknown precision {meta.precision!r} in its metadata")
        return meta


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.ndarray,)):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    return str(x)


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=_json_default))


# ------------------------------------------------------------------------------------------ providers
def select_providers(available: Iterable[str], device_type: str = "cpu", device_index: int = 0,
                     trt_cache: str | os.PathLike | None = None) -> list[tuple[str, dict[str, str]]]:
    """Execution providers with their options, in the order ONNX Runtime should try them.

    Args:
        available: ``onnxruntime.get_available_providers()``.
        device_type: "cpu" or "cuda" (the predictor's torch device type). device_index: CUDA device number.
        trt_cache: directory for TensorRT engine + timing caches (None = ``cache_dir()/tensorrt``).
    Returns:
        [(name, options)]: on "cuda" TensorRT -> CUDA (those available) then CPU; on "cpu" only CPU.
    """
    avail = set(available)
    out: list[tuple[str, dict[str, str]]] = []
    if device_type == "cuda":
        idx = str(int(device_index))
        if GPU_PROVIDERS[0] in avail:
            cache = str(trt_cache or (cache_dir() / "tensorrt"))
            out.append((GPU_PROVIDERS[0], {"device_id": idx, "trt_engine_cache_enable": "True",
                                           "trt_engine_cache_path": cache, "trt_timing_cache_enable": "True",
                                           "trt_timing_cache_path": cache}))
        if GPU_PROVIDERS[1] in avail:
            out.append((GPU_PROVIDERS[1], {"device_id": idx}))
    out.append((CPU_PROVIDER, {}))
    return out


# ------------------------------------------------------------------------------------------ engine
class OnnxEngine:
    """An ONNX Runtime session over a ClusterNet export.

    Args:
        path: the .onnx file. device_type / device_index: where to run (see :func:`select_providers`).
        threads: intra-op CPU threads (0 = torch's current thread count, so ``--threads`` applies to both).
        expected_sha256: refuse a file exported from another checkpoint. expected_resolution: (H, W) to refuse
            an export at another network resolution. expected_precision: "fp32" / "int8" or None (any).
    Raises:
        OnnxModelError: unreadable / corrupt file, missing or mismatching metadata, unexpected inputs.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, path: str | os.PathLike, device_type: str = "cpu", device_index: int = 0, threads: int = 0,
                 expected_sha256: str | None = None, expected_resolution: tuple[int, int] | None = None,
                 expected_precision: str | None = None) -> None:
        import onnxruntime as ort

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise OnnxModelError(f"ONNX model {self.path} does not exist")
        if threads <= 0:
            import torch

            threads = torch.get_num_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3   # errors only: ORT warns about every unused initializer otherwise
        so.add_session_config_entry("session.intra_op.allow_spinning", ALLOW_SPINNING)
        requested = select_providers(ort.get_available_providers(), device_type, device_index)
        try:
            self.session = ort.InferenceSession(self.path, so, providers=[n for n, _ in requested],
                                                provider_options=[o for _, o in requested])
        except Exception as e:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...) for bad files
            raise OnnxModelError(f"cannot load ONNX model {self.path}: {type(e).__name__}: {e}") from e
        self.meta = OnnxMeta.from_props(self.session.get_modelmeta().custom_metadata_map, self.path)
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES or tuple(o.name for o in self.session.get_outputs()) != OUTPUT_NAMES:
            raise OnnxModelError(f"{self.path}: inputs {names} / outputs do not match {INPUT_NAMES} -> {OUTPUT_NAMES}")
        check_meta(self.meta, self.path, expected_sha256, expected_resolution, expected_precision)
        self.providers = list(self.session.get_providers())
        self.threads = int(threads)

    @property
    def provider(self) -> str:
        """The first (preferred) provider the session actually uses."""
        return self.providers[0]

    @property
    def resolution(self) -> tuple[int, int]:
        return self.meta.resolution

    def describe(self) -> str:
        """One log line: file, precision, provider in use (and the fallbacks behind it)."""
        return (f"ONNX Runtime {self.meta.precision} {Path(self.path).name} on {self.provider}"
                + (f" (then {', '.join(self.providers[1:])})" if len(self.providers) > 1 else "")
                + f", {self.threads} threads")

    def run(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on float32 arrays shaped as the module docstring says; dict of float32 outputs."""
        feeds = {"rgb": np.ascontiguousarray(rgb, dtype=np.float32),
                 "depth": np.ascontiguousarray(depth, dtype=np.float32),
                 "K": np.ascontiguousarray(K, dtype=np.float32)}
        return dict(zip(OUTPUT_NAMES, self.session.run(None, feeds)))


# ------------------------------------------------------------------------------------------ export
def _export_module(model):
    """The traced module: (rgb, depth, K) -> (xi, centroid_prob, fg_prob, radius), see the module docstring."""
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, rgb, depth, K):
            out = self.net(self.net.net.prepare(rgb, depth, K))
            return out["xi"], out["centroid_prob"], out["fg_prob"], out["radius"]

    return _Graph(model).eval()


def network_inputs(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame already at the network resolution as the graph's inputs: rgb uint8 (H, W, 3), depth float (H, W)
    metres, K (3, 3) -> float32 (1, 3, H, W), (1, 1, H, W), (1, 3, 3)."""
    return (np.ascontiguousarray(np.asarray(rgb, np.float32).transpose(2, 0, 1)[None]),
            np.asarray(depth, np.float32)[None, None], np.asarray(K, np.float32)[None])


def resize_frame(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, resolution: tuple[int, int]):
    """The predictor's resize (bilinear rgb, nearest depth, K scaled) to ``resolution``; graph inputs as
    :func:`network_inputs`."""
    import torch
    import torch.nn.functional as F

    from .predictor import nearest_index, scale_intrinsics

    h0, w0 = depth.shape
    h, w = resolution
    if (h, w) == (h0, w0):
        return network_inputs(rgb, depth, K)
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=(h < h0 or w < w0))
    d = depth[nearest_index(h0, h)[:, None], nearest_index(w0, w)[None, :]]
    return (t.numpy(), np.asarray(d, np.float32)[None, None],
            scale_intrinsics(K, (h0, w0), (h, w)).astype(np.float32)[None])


def generated_frames(n: int, seed: int = CALIB_SEED, split: str = "train") -> list[dict]:
    """``n`` frames of the package's synthetic generator (train-split scenes, 640 x 480), in memory.

    Each dict has rgb uint8 (H, W, 3), depth float32 (H, W) metres, K (3, 3) and labels int32 (H, W).
    About 3 s per scene of 4 views on one core.
    """
    from instseg_ros.data.scene import SceneConfig, generate_scene_frames

    cfg = SceneConfig()
    frames: list[dict] = []
    index = 0
    while len(frames) < n:
        frames += generate_scene_frames(split, seed, index, cfg)
        index += 1
    return frames[:n]


def quick_frames(n: int) -> list[dict]:
    """``n`` 640 x 480 box-on-a-table frames (rgb, depth with holes, K) for export checks."""
    from .bench import synthetic_frame

    frames = []
    for i in range(n):
        rgb, depth, K, _ = synthetic_frame(480, 640, 12, seed=i)
        depth[::7, ::5] = 0.0      # holes, so the hole filling inside the graph is exercised
        frames.append({"rgb": rgb, "depth": depth, "K": K})
    return frames


def _ort_outputs(path: str, inputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=[CPU_PROVIDER])
    return [s.run(None, dict(zip(INPUT_NAMES, x))) for x in inputs]


def max_abs_difference(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> dict[str, float]:
    """Per output name, the largest |a - b| over all frames."""
    return {name: float(max(np.abs(x[i] - y[i]).max() for x, y in zip(a, b))) for i, name in enumerate(OUTPUT_NAMES)}


def _write_meta(path: str, meta: OnnxMeta) -> None:
    import onnx

    m = onnx.load(path)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {METADATA_KEY: meta.to_json()})
    m.doc_string = (f"ClusterNet {meta.precision} at {meta.resolution[0]}x{meta.resolution[1]} from checkpoint "
                    f"sha256 {meta.checkpoint_sha256}")
    tmp = f"{path}.{os.getpid()}.meta.tmp"
    onnx.save(m, tmp)
    os.replace(tmp, path)


def export_onnx(checkpoint: str, out: str | os.PathLike, resolution: tuple[int, int] | None = None,
                check_frames: list[dict] | None = None, log: Callable[[str], None] = _log.info) -> dict[str, Any]:
    """Export a checkpoint's network (with its input preparation) as fp32 ONNX and check it against torch.

    Args:
        checkpoint: ClusterNet .pt. out: the .onnx to write (atomically: temporary file + rename).
        resolution: (H, W) network resolution; None = the checkpoint's meta "resolution", else its training size.
        check_frames: frames (dicts with rgb, depth, K) to compare torch and ONNX Runtime on; None = two
            640 x 480 box scenes of :func:`instseg_ros.clusternet.bench.synthetic_frame` (milliseconds to make,
            unlike the generator's scenes; equality of the two runtimes does not need realistic frames).
    Returns:
        {"path", "resolution", "max_abs_diff": {output: float}, "seconds", "bytes"}.
    """
    import torch

    from .checkpoint import build_model, load_checkpoint

    t0 = time.perf_counter()
    ck = load_checkpoint(checkpoint, map_location="cpu")
    model = build_model(ck, "cpu")
    res = tuple(resolution) if resolution else tuple(ck["meta"].get("resolution") or
                                                     (model.cfg.input_height, model.cfg.input_width))
    res = (int(res[0]), int(res[1]))
    frames = check_frames if check_frames is not None else quick_frames(CHECK_FRAMES)
    inputs = [resize_frame(f["rgb"], f["depth"], f["K"], res) for f in frames]
    from .model import export_form

    graph = _export_module(export_form(model))
    reference = _export_module(model)   # checked against the model as trained, not against the rewritten copy
    out = str(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.export.tmp"   # per process: two nodes may export at once
    example = tuple(torch.from_numpy(x) for x in inputs[0])
    try:
        diff = _export_and_compare(graph, example, inputs, tmp, reference)
        bad = {k: v for k, v in diff.items() if not v <= EXPORT_TOLERANCE}
        if bad:
            raise OnnxModelError(f"the ONNX export of {checkpoint} differs from torch by {bad} (> {EXPORT_TOLERANCE}); "
                                 "not written")
        from .config import to_dict

        meta = OnnxMeta(checkpoint_sha256=file_sha256(checkpoint), model_config=to_dict(model.cfg), resolution=res,
                        cluster_params=ck["meta"].get("cluster_params"), precision="fp32",
                        checkpoint_meta=_json_safe(dict(ck["meta"])),
                        extra={"opset": OPSET, "torch": torch.__version__, "onnxruntime": _ort_version(),
                               "max_abs_diff_vs_torch": diff, "check_frames": len(inputs),
                               "source_checkpoint": os.path.basename(checkpoint)})
        _write_meta(tmp, meta)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    secs = time.perf_counter() - t0
    log(f"exported {checkpoint} -> {out} at {res[0]}x{res[1]} in {secs:.1f} s; max |ORT - torch| over "
        f"{len(inputs)} frames: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    return {"path": out, "resolution": res, "max_abs_diff": diff, "seconds": secs, "bytes": os.path.getsize(out)}


def _export_and_compare(graph, example, inputs, tmp: str, reference) -> dict[str, float]:
    """Trace ``graph`` into ``tmp`` and return the per-output max |ONNX Runtime - torch| over ``inputs``, torch
    being the module ``reference``."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns that shapes become constants: intended, the graph is fixed to ``res``
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.13 marks the TorchScript exporter deprecated; the dynamo one needs onnxscript and was not
        # measured on this network, the TorchScript one was (opset 17, outputs equal to 2e-6)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, example, tmp, dynamo=False, opset_version=OPSET,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), do_constant_folding=True)
        ref = [[o.numpy() for o in reference(*(torch.from_numpy(a) for a in x))] for x in inputs]
    return max_abs_difference(_ort_outputs(tmp, inputs), ref)


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "not installed"


# ------------------------------------------------------------------------------------------ int8
def quantize_int8(fp32_path: str | os.PathLike, out: str | os.PathLike, calib: list[dict],
                  log: Callable[[str], None] = _log.info, modules: tuple[str, ...] | None = INT8_MODULES
                  ) -> dict[str, Any]:
    """Static QDQ int8 quantization of an fp32 export, calibrated on frames.

    Weights int8 per output channel, activations uint8 with MinMax ranges collected over ``calib`` (dicts with
    rgb, depth, K at any size: resized like the predictor does). Only the operators inside ``modules`` (submodule
    names of ClusterNetModel, :data:`INT8_MODULES`; None = every operator ONNX Runtime can quantize) are
    quantized; the rest of the graph stays float.

    Returns:
        {"path", "calib_frames", "seconds", "bytes"}.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calib:
        raise ValueError("int8 calibration needs at least one frame")
    t0 = time.perf_counter()
    fp32_path, out = str(fp32_path), str(out)
    s = ort.InferenceSession(fp32_path, providers=[CPU_PROVIDER])
    meta = OnnxMeta.from_props(s.get_modelmeta().custom_metadata_map, fp32_path)
    del s
    if meta.precision != "fp32":
        raise ValueError(f"{fp32_path} is already {meta.precision}; quantize the fp32 export")
    feeds = [dict(zip(INPUT_NAMES, resize_frame(f["rgb"], f["depth"], f["K"], meta.resolution))) for f in calib]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    pre = f"{out}.{os.getpid()}.pre.tmp"
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        # shape inference + graph clean-up first, as ONNX Runtime recommends before static quantization
        quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
        exclude = []
        if modules is not None:
            import onnx

            # the TorchScript exporter names nodes by module path: /net/net/<submodule>/.../<Op>
            prefixes = tuple(f"/net/net/{m}/" for m in modules)
            exclude = [n.name for n in onnx.load(pre).graph.node if not n.name.startswith(prefixes)]
        quantize_static(pre, tmp, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
        meta.precision = "int8"
        meta.extra = dict(meta.extra, calib_frames=len(feeds), calibration="MinMax, generated train-split frames",
                          int8_modules=list(modules) if modules is not None else "all",
                          quant_format="QDQ, per-channel int8 weights, uint8 activations")
        _write_meta(tmp, meta)
        os.replace(tmp, out)
    finally:
        for p in (pre, tmp):
            if os.path.exists(p):
                os.remove(p)
    secs = time.perf_counter() - t0
    log(f"quantized {fp32_path} -> {out} (int8 QDQ, {len(feeds)} calibration frames) in {secs:.1f} s")
    return {"path": out, "calib_frames": len(feeds), "seconds": secs, "bytes": os.path.getsize(out)}


# ------------------------------------------------------------------------------------------ lookup
def find_or_export(checkpoint: str, sha256: str, resolution: tuple[int, int], precision: str = "fp32",
                   log: Callable[[str], None] = _log.info, calib_frames: int = CALIB_FRAMES) -> str:
    """Path of an export of ``checkpoint`` at ``resolution`` in ``precision``, exporting it once if needed.

    Looks at ``<checkpoint dir>/<stem>.onnx`` (``.int8.onnx``) first: used when its metadata names this
    checkpoint and resolution. A file there at another resolution is passed over (it serves that resolution).
    Then the per-user cache (:func:`cached_onnx_path`); when that is missing too, exports into it (and for int8
    quantizes the fp32 export, calibrated on ``calib_frames`` generated frames), saying so through ``log``.

    Raises:
        OnnxModelError: a file that exists at one of these places is corrupt or from another checkpoint (the
            caller decides whether to fall back to torch).
    """
    sibling = Path(checkpoint).with_name(onnx_name(checkpoint, precision))
    candidates = [sibling, cached_onnx_path(sha256, resolution, precision)]
    for p in candidates:
        if not p.is_file():
            continue
        meta = read_meta(p)
        if meta.resolution != tuple(resolution) and p == sibling:
            continue
        check_meta(meta, p, sha256, resolution, precision)
        return str(p)
    target = candidates[-1]
    prune_cache(target.parent, CACHE_KEEP - 1)
    log(f"no {precision} ONNX export of {checkpoint} at {resolution[0]}x{resolution[1]} yet: exporting it once "
        f"into {target}")
    if precision == "fp32":
        export_onnx(checkpoint, target, resolution, log=log)
    else:
        fp32 = find_or_export(checkpoint, sha256, resolution, "fp32", log=log)
        quantize_int8(fp32, target, generated_frames(calib_frames), log=log)
    return str(target)


def prune_cache(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recently modified .onnx files in ``directory``; returns the deleted."""
    if not directory.is_dir():
        return []
    files = sorted(directory.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    gone = files[max(0, keep):]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def read_meta(path: str | os.PathLike) -> OnnxMeta:
    """The metadata of an .onnx (through ONNX Runtime, so only onnxruntime is needed); OnnxModelError if unusable."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        s = ort.InferenceSession(str(path), so, providers=[CPU_PROVIDER])
    except Exception as e:  # see OnnxEngine: ORT's pybind error types
        raise OnnxModelError(f"cannot load ONNX model {path}: {type(e).__name__}: {e}") from e
    return OnnxMeta.from_props(s.get_modelmeta().custom_metadata_map, str(path))


def check_meta(meta: OnnxMeta, path, sha256: str | None, resolution, precision: str | None) -> None:
    """OnnxModelError when ``meta`` is not of this checkpoint / resolution / precision."""
    if sha256 is not None and meta.checkpoint_sha256 != sha256:
        raise OnnxModelError(f"{path} was exported from another checkpoint (sha256 {meta.checkpoint_sha256[:12]}..., "
                             f"expected {sha256[:12]}...); delete it or run 'instseg export clusternet' again")
    if resolution is not None and meta.resolution != tuple(resolution):
        raise OnnxModelError(f"{path} runs at {meta.resolution}, not {tuple(resolution)}")
    if precision is not None and meta.precision != precision:
        raise OnnxModelError(f"{path} is {meta.precision}, not {precision}")
