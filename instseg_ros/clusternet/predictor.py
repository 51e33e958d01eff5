"""Inference wrapper: numpy RGB-D frame in, :class:`instseg_ros.core.Instances` out."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from instseg_ros.core.device import resolve_device
from instseg_ros.core.geometry import validate_intrinsics
from instseg_ros.core.instances import Instances

from .checkpoint import build_model, load_checkpoint
from .clustering import ClusterParams, cluster_pixels, warm_up
from .model import ClusterNet
from .refine import RefineParams, refine_labels

_log = logging.getLogger("instseg_ros.clusternet")
#: ``backend="auto"`` on a CPU runs the int8 graph only when its measured accuracy cost is within the bar of
#: issue #14 (<= 1 AP, <= 1 point overlap F; models/clusternet_MODEL_CARD.md, "ONNX Runtime")
AUTO_INT8_ON_CPU = False

def scale_intrinsics(K: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """K of an image resized from src (H, W) to dst (H, W) (pixel-centre convention)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def nearest_index(n_src: int, n_dst: int) -> np.ndarray:
    """Source index of each destination pixel for a nearest-neighbour resize along one axis."""
    return np.clip(np.floor((np.arange(n_dst) + 0.5) * n_src / n_dst).astype(np.int64), 0, n_src - 1)


def instance_moments(labels: np.ndarray, points: np.ndarray, valid: np.ndarray, n: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label count of valid points, centroid and covariance (1/n), vectorised over labels 1..n.

    Args:
        labels: int (H, W) 0..n. points: float (H, W, 3) metres. valid: bool (H, W).
    Returns:
        counts int64 (n,), centroids float64 (n, 3), covariances float64 (n, 3, 3) (NaN where count is 0).
    """
    lab = labels.reshape(-1)
    m = valid.reshape(-1) & (lab > 0)
    idx = lab[m] - 1
    p = points.reshape(-1, 3)[m].astype(np.float64)
    cnt = np.bincount(idx, minlength=n).astype(np.int64)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.stack([np.bincount(idx, weights=p[:, j], minlength=n)[:n] for j in range(3)], 1) / cnt[:, None]
        d = p - c[idx]
        cov = np.stack([np.bincount(idx, weights=d[:, a] * d[:, b], minlength=n)[:n]
                        for a in range(3) for b in range(3)], 1).reshape(n, 3, 3) / cnt[:, None, None]
    return cnt, c, cov


@njit(cache=True)
def _upsample_moments(lab, rows, cols, depth, fx, fy, cx, cy, n):
    """Nearest-neighbour upsampling of network-resolution labels fused with :func:`instance_moments` of the
    backprojected input depth, in two passes over the input pixels (no full-image point cloud).

    Args:
        lab: int64 (h, w) labels 0..n. rows (H,), cols (W,): source row / column of each input pixel.
        depth: float32 (H, W) metres (0 / NaN / inf = invalid). fx, fy, cx, cy: float32 intrinsics.
    Returns:
        labels int32 (H, W), and counts, centroids, covariances as :func:`instance_moments` computes them
        from :func:`instseg_ros.core.geometry.backproject` points (same float32 points, float64 sums in
        pixel order).
    """
    h0, w0 = depth.shape
    out = np.empty((h0, w0), np.int32)
    cnt = np.zeros(n, np.int64)
    s = np.zeros((n, 3))
    for v in range(h0):
        ry = (np.float32(v) - cy) / fy
        for u in range(w0):
            lv = lab[rows[v], cols[u]]
            if lv < 0 or lv > n:
                raise ValueError("labels must lie in 0..len(scores)")
            out[v, u] = lv
            z = depth[v, u]
            if lv > 0 and np.isfinite(z) and z > 0:
                cnt[lv - 1] += 1
                s[lv - 1, 0] += np.float64((np.float32(u) - cx) / fx * z)
                s[lv - 1, 1] += np.float64(ry * z)
                s[lv - 1, 2] += np.float64(z)
    cen = np.empty((n, 3))
    for i in range(n):
        for j in range(3):
            cen[i, j] = s[i, j] / cnt[i] if cnt[i] > 0 else np.nan
    cov = np.zeros((n, 3, 3))
    p = np.empty(3)
    for v in range(h0):
        ry = (np.float32(v) - cy) / fy
        for u in range(w0):
            lv = out[v, u]
            z = depth[v, u]
            if lv > 0 and np.isfinite(z) and z > 0:
                i = lv - 1
                p[0] = np.float64((np.float32(u) - cx) / fx * z) - cen[i, 0]
                p[1] = np.float64(ry * z) - cen[i, 1]
                p[2] = np.float64(z) - cen[i, 2]
                for a in range(3):
                    for b in range(3):
                        cov[i, a, b] += p[a] * p[b]
    for i in range(n):
        for a in range(3):
            for b in range(3):
                cov[i, a, b] = cov[i, a, b] / cnt[i] if cnt[i] > 0 else np.nan
    return out, cnt, cen, cov


def _warm_up_kernels() -> None:
    """JIT-compile (or load from cache) the numba clustering and post-processing kernels now, not on the
    first frame."""
    warm_up()
    _upsample_moments(np.ones((2, 2), np.int64), np.arange(2), np.arange(2), np.ones((2, 2), np.float32),
                      np.float32(1), np.float32(1), np.float32(0), np.float32(0), 1)


def _mean_per_label(lab: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` (C, h, w) over the pixels of each label 1..n of ``lab`` (h, w): float64 (n, C)
    (NaN for a label without pixels)."""
    flat = lab.reshape(-1)
    m = flat > 0
    idx = flat[m]
    cnt = np.bincount(idx, minlength=n + 1)[1:n + 1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([np.bincount(idx, weights=values[c].reshape(-1)[m], minlength=n + 1)[1:n + 1]
                         for c in range(values.shape[0])], 1) / cnt[:, None]


#: precision option -> autocast dtype (None = plain float32, no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class ClusterNetPredictor:
    """Runs ClusterNet + clustering on one RGB-D frame.

    Args:
        model: a ClusterNet (weights loaded). device: "auto" | "cpu" | "cuda[:N]".
        params: clustering parameters. resolution: (H, W) network resolution; None = the model's
            training resolution. min_valid_points: instances with fewer pixels of valid input depth are
            dropped (their centroid is undefined).
        precision: "fp32" | "fp16" | "bf16": the network runs under autocast in that dtype (fp16 is
            meant for CUDA; bf16 also runs on recent CPUs); its outputs are cast back to float32 before
            clustering, so only the network's arithmetic changes. channels_last: NHWC memory layout for
            the convolutions (faster on GPUs and with oneDNN on CPUs; same results up to rounding).
        engine: an :class:`~instseg_ros.clusternet.onnx_engine.OnnxEngine` that runs the network (and its input
            preparation) instead of ``model``, which may then be None; precision / channels_last must keep their
            defaults and resolution must be the engine's.
        refine: geometric refinement of the labels at the input resolution from the measured depth
            (boundary snapping, fragment merging, sliver rejection; :mod:`.refine`); None = the defaults,
            ``RefineParams(enabled=False)`` = the network's labels as they are.
    After each :meth:`predict`, ``last_timings`` holds milliseconds of "preprocess", "network",
    "clustering", "postprocess" (CUDA-synchronised).
    """

    def __init__(self, model: ClusterNet, device: str | torch.device = "auto", params: ClusterParams | None = None,
                 resolution: tuple[int, int] | None = None, min_valid_points: int = 10,
                 precision: str = "fp32", channels_last: bool = False, refine: RefineParams | None = None,
                 engine=None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.engine = engine
        if engine is None:
            if model is None:
                raise ValueError("ClusterNetPredictor needs a model or an ONNX engine")
            self.model = model.to(self.device).eval()
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.cfg = model.cfg
        else:
            if precision != "fp32" or self.channels_last:
                raise ValueError("precision / channels_last are torch options; the ONNX engine runs its own graph")
            from .config import model_config_from_dict

            self.model = None
            self.cfg = model_config_from_dict(engine.meta.model_config)
        self.params = params or ClusterParams()
        self.resolution = tuple(resolution) if resolution else (self.cfg.input_height, self.cfg.input_width)
        if min(self.resolution) < 32:
            raise ValueError(f"network resolution {self.resolution} is below 32 pixels")
        if engine is not None and self.resolution != tuple(engine.resolution):
            raise ValueError(f"network resolution {self.resolution} differs from the ONNX graph's {engine.resolution}")
        #: "torch" or "onnxruntime <precision> <provider>" (what runs the network)
        self.backend = "torch" if engine is None else f"onnxruntime {engine.meta.precision} {engine.provider}"
        self.min_valid_points = int(min_valid_points)
        self.refine = refine if refine is not None else RefineParams()
        self.last_timings: dict[str, float] = {}
        self.meta: dict[str, Any] = {}
        _warm_up_kernels()

    @classmethod
    def from_onnx(cls, path: str, device: str = "auto", threads: int = 0, **kw) -> ClusterNetPredictor:
        """A predictor from an ``instseg export clusternet`` file alone: config, resolution and tuned clustering
        parameters come from its metadata. OnnxModelError (a RuntimeError) names an unusable file."""
        from .onnx_engine import OnnxEngine

        dev = resolve_device(device)
        engine = OnnxEngine(path, dev.type, dev.index or 0, threads=threads)
        if kw.get("params") is None and isinstance(engine.meta.cluster_params, dict):
            kw["params"] = ClusterParams(**engine.meta.cluster_params)
        kw.setdefault("resolution", engine.resolution)
        pred = cls(None, dev, engine=engine, **kw)
        pred.meta = dict(engine.meta.checkpoint_meta)
        return pred

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "auto", backend: str = "auto",
                        log: Callable[[str], None] | None = None, **kw) -> ClusterNetPredictor:
        """Load ``path`` (see :mod:`instseg_ros.clusternet.checkpoint`); RuntimeError names a missing/corrupt file.

        Without ``params``, the clustering parameters tuned for this checkpoint (meta "cluster_params",
        chosen on validation frames by ``instseg evaluate clusternet --tune-split``) are used if present;
        without ``resolution``, the network resolution recorded with them (meta "resolution", [H, W]), else
        the training resolution.

        ``backend`` chooses what runs the network: "torch"; "onnxruntime" / "onnxruntime-int8" (the fp32 / int8
        ONNX export of this checkpoint at this resolution: ``<checkpoint dir>/<stem>[.int8].onnx`` when its
        metadata matches, else the per-user cache, exported there once when missing; RuntimeError if onnxruntime
        is missing or the file found is corrupt / from another checkpoint); "auto" = ONNX Runtime (int8 on a CPU
        when :data:`AUTO_INT8_ON_CPU`) when it is installed and the torch-only options (precision, channels_last)
        are at their defaults, else torch, and torch with a logged reason when the ONNX file is unusable.
        ``log`` receives the lines saying which backend runs and why (default: this module's logger).
        """
        from .onnx_engine import BACKENDS

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        log = log or _log.info
        dev = resolve_device(device)
        ck = load_checkpoint(path, map_location="cpu")
        if kw.get("params") is None and isinstance(ck["meta"].get("cluster_params"), dict):
            kw["params"] = ClusterParams(**ck["meta"]["cluster_params"])
        if kw.get("refine") is None and isinstance(ck["meta"].get("refine_params"), dict):
            kw["refine"] = RefineParams(**ck["meta"]["refine_params"])
        res = ck["meta"].get("resolution")
        if kw.get("resolution") is None and res is not None:
            if not (isinstance(res, (list, tuple)) and len(res) == 2 and all(isinstance(v, int) for v in res)):
                raise ValueError(f"{path}: meta 'resolution' must be [height, width] in pixels, got {res!r}")
            kw["resolution"] = tuple(res)
        mcfg = ck["model_config"]
        engine = cls._onnx_engine(path, dev, backend, kw, log,
                                  kw.get("resolution") or (mcfg.input_height, mcfg.input_width))
        pred = cls(None if engine else build_model(ck, "cpu"), dev, engine=engine, **kw)
        pred.meta = dict(ck.get("meta", {}))
        log(f"ClusterNet network runs on {engine.describe() if engine else 'torch ' + str(dev)}")
        return pred

    @staticmethod
    def _onnx_engine(path: str, dev: torch.device, backend: str, kw: dict, log: Callable[[str], None],
                     resolution: tuple[int, int]):
        """The OnnxEngine ``backend`` asks for, or None for torch (see :meth:`from_checkpoint`)."""
        from .onnx_engine import OnnxEngine, OnnxModelError, file_sha256, find_or_export, onnxruntime_available

        if backend == "torch":
            return None
        auto = backend == "auto"
        if not onnxruntime_available():
            if auto:
                log("backend auto: onnxruntime is not installed, the network runs in torch")
                return None
            raise RuntimeError(f"backend {backend!r} needs onnxruntime: pip install onnxruntime "
                               "(onnxruntime-gpu on CUDA machines), or use backend 'torch'")
        if kw.get("precision", "fp32") != "fp32" or kw.get("channels_last", False):
            if auto:
                log("backend auto: precision / channels_last are torch options, the network runs in torch")
                return None
            raise ValueError(f"backend {backend!r} runs its own graph: leave precision fp32 and channels_last off")
        int8 = backend == "onnxruntime-int8" or (auto and dev.type == "cpu" and AUTO_INT8_ON_CPU)
        precision = "int8" if int8 else "fp32"
        res = (int(resolution[0]), int(resolution[1]))
        try:
            sha = file_sha256(path)
            onnx_path = find_or_export(path, sha, res, precision, log=log)
            return OnnxEngine(onnx_path, dev.type, dev.index or 0, expected_sha256=sha, expected_resolution=res,
                              expected_precision=precision)
        except (OnnxModelError, OSError) as e:
            if auto:
                log(f"backend auto: {e}; the network runs in torch instead")
                return None
            raise

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def raw(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> dict[str, torch.Tensor]:
        """Network outputs at the network resolution (batch of 1) plus "K_net" (3, 3)."""
        rgb, depth, K = self._check(rgb, depth, K)
        return self._forward(rgb, depth, K)

    def _check(self, rgb, depth, K):
        rgb = np.asarray(rgb)
        depth = np.asarray(depth)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"depth {depth.shape} must match rgb (H, W) = {rgb.shape[:2]}")
        if not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f"depth must be float metres, got {depth.dtype} (divide uint16 mm by 1000)")
        K = validate_intrinsics(K)
        return rgb, depth.astype(np.float32), K

    def _forward(self, rgb, depth, K):
        h0, w0 = depth.shape
        h, w = self.resolution
        t_rgb = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float()
        if (h, w) != (h0, w0):
            t_rgb = F.interpolate(t_rgb, size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=(h < h0 or w < w0))
            dsm = depth[nearest_index(h0, h)[:, None], nearest_index(w0, w)[None, :]]
        else:
            dsm = depth
        Kn = scale_intrinsics(K, (h0, w0), (h, w))
        t_d = torch.from_numpy(np.ascontiguousarray(dsm)).to(self.device)[None, None]
        t_K = torch.from_numpy(Kn).float().to(self.device)[None]
        if self.engine is not None:
            # ONNX Runtime: input preparation (hole filling, backprojection, normalisation) is inside the graph
            self._t_pre = time.perf_counter()
            out = {k: torch.from_numpy(v) for k, v in
                   self.engine.run(t_rgb.cpu().numpy(), t_d.cpu().numpy(), t_K.cpu().numpy()).items()}
            out["K_net"] = t_K[0].cpu()
            return out
        inputs = self.model.net.prepare(t_rgb, t_d, t_K)
        if self.channels_last:
            inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                      for k, v in inputs.items()}
        self._sync()
        self._t_pre = time.perf_counter()
        dtype = PRECISIONS[self.precision]
        amp = (torch.autocast(device_type=self.device.type, dtype=dtype) if dtype is not None
               else contextlib.nullcontext())
        with amp:
            out = self.model(inputs)
        if dtype is not None:   # clustering and moments stay in float32 whatever the network ran in
            out = {k: v.float() if torch.is_floating_point(v) else v for k, v in out.items()}
        out["K_net"] = t_K[0]
        return out

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> Instances:
        """Segment one frame.

        Args:
            rgb: uint8 (H, W, 3) RGB. depth: float32 (H, W) metres, aligned to rgb, 0 / NaN = invalid.
            K: (3, 3) intrinsics of rgb/depth.
        Returns:
            Instances with labels int32 (H, W) at the input resolution (0 = background), ids 1..N by
            decreasing score, centroids (N, 3) m and covariances (N, 3, 3) m^2 of each instance's measured
            points (backprojected input depth, invalid pixels excluded) in the camera optical frame,
            scores (N,), num_points (N,) = pixels with valid depth.
        """
        t0 = time.perf_counter()
        rgb, depth, K = self._check(rgb, depth, K)
        out = self._forward(rgb, depth, K)
        self._sync()
        t1 = time.perf_counter()
        lab, scores = cluster_pixels(out["xi"][0], out["centroid_prob"][0], out["radius"][0, 0],
                                     out["fg_prob"][0], self.params)
        lab = lab.cpu().numpy()
        scores = scores.cpu().numpy()
        t2 = time.perf_counter()
        inst = self._postprocess(lab, scores, depth, K, out["xi"][0, :3])
        t3 = time.perf_counter()
        self.last_timings = {"preprocess": (self._t_pre - t0) * 1e3, "network": (t1 - self._t_pre) * 1e3,
                             "clustering": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return inst

    def _postprocess(self, lab: np.ndarray, scores: np.ndarray, depth: np.ndarray, K: np.ndarray,
                     xi: torch.Tensor | np.ndarray | None = None) -> Instances:
        """Labels (h, w) 0..N at network resolution, scores (N,) -> Instances at the input resolution.

        ``xi``: the network's predicted object centroids (3, h, w) metres, used by the fragment merge's
        centroid check (None: no check)."""
        h0, w0 = depth.shape
        h, w = lab.shape
        n = len(scores)
        if n == 0:
            return Instances.empty((h0, w0))
        K = validate_intrinsics(K)
        fx, fy, cx, cy = (np.float32(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        rows, cols = nearest_index(h, h0), nearest_index(w, w0)
        lab = np.ascontiguousarray(lab, dtype=np.int64)
        if self.refine.enabled:
            pred_c = None if xi is None else _mean_per_label(lab, np.asarray(torch.as_tensor(xi).cpu(), np.float64), n)
            up = lab[rows[:, None], cols[None, :]] if (h, w) != (h0, w0) else lab
            lab, scores = refine_labels(up, scores, depth, K, self.refine, pred_c)
            lab = lab.astype(np.int64)
            n = len(scores)
            if n == 0:
                return Instances.empty((h0, w0))
            rows, cols = np.arange(h0), np.arange(w0)
        lab, cnt, cen, cov = _upsample_moments(lab, rows, cols, np.ascontiguousarray(depth, dtype=np.float32),
                                               fx, fy, cx, cy, n)
        keep = cnt >= max(1, self.min_valid_points)
        new_id = np.zeros(n + 1, np.int32)
        new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = new_id[lab]
        return Instances(labels=labels, ids=np.arange(1, int(keep.sum()) + 1, dtype=np.int32),
                         centroids=cen[keep], covariances=cov[keep], scores=scores[keep],
                         num_points=cnt[keep])
