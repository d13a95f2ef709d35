"""Export a parkour policy to ONNX graphs that onnxruntime (or TensorRT) can run without torch.

Why not upstream's policy.onnx / depth_latest.onnx: upstream's depth export takes the image as
[1, 87, 58] and traces the GRU state as a constant zero, so it is stateless (spec §6). Here every
graph has a dynamic batch axis and the depth encoder's GRU state is an explicit input/output:

=====================  ================================================  ===========================
file                   inputs                                            outputs
=====================  ================================================  ===========================
actor.onnx             obs [N,753] (+ depth_latent [N,32] for student)   actions [N,12]
actor_priv_encoder     same, priv_encoder instead of history encoder     actions [N,12]
estimator.onnx         proprio [N,53] = obs[:, :53]                      priv_explicit [N,9]
depth_encoder.onnx     depth [N,58,87], proprio [N,53] (raw obs[:, :53],  latent [N,32], yaw_raw [N,2],
                       6:8 zeroed inside), h_in [1,N,512]                 h_out [1,N,512]
=====================  ================================================  ===========================

The estimator graph is absent for exported_teacher/ (upstream leaves it out) and the depth
encoder for teachers. ``manifest.json`` lists kind, dims, graphs with their input/output names,
and the sha256 of the source files; ``load_policy(dir, backend="onnx")`` reads it.

Each graph is checked against the torch module on random inputs right after export. The
TorchScript-based exporter is used by default (fast, opset 17, the standard ONNX GRU op); the
dynamo exporter (``--exporter dynamo``, opset 18+) gives equivalent graphs and is the fallback
when the TorchScript exporter is unavailable.

CLI: ``python -m krabby.parkour.onnx_export CHECKPOINT_OR_DIR OUT_DIR`` (``krabby-export-onnx``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from . import networks, obs_layout
from .policy_formats import (
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    ONNX_MANIFEST,
    PolicyLoadError,
    PolicyWeights,
    read_weights,
)

Exporter = Literal["auto", "torchscript", "dynamo"]
TORCHSCRIPT_OPSET = 17
VERIFY_ATOL = 1e-4
"""Max |onnxruntime − torch| accepted right after export (observed: ~3e-7)."""
_EXAMPLE_BATCH = 2  # not 1: a size-1 example lets exporters specialise the batch axis


@dataclass
class _Graph:
    role: str
    file: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]  # example inputs, in forward() order
    outputs: list[str]
    batch_dims: dict[str, int]  # which axis of each input/output is the batch


def _graphs(weights: PolicyWeights) -> list[_Graph]:
    """The modules to export, loaded strictly from ``weights``, with example inputs."""
    n = _EXAMPLE_BATCH
    nets = networks.load_networks(weights)
    actor_inputs = {"obs": torch.zeros(n, obs_layout.OBS_DIM)}
    batch_dims = {"obs": 0, "actions": 0}
    if weights.kind == "student":
        actor_inputs["depth_latent"] = torch.zeros(n, networks.DEPTH_LATENT_DIM)
        batch_dims["depth_latent"] = 0
    graphs = [
        _Graph("actor", "actor.onnx", networks.ActorStep(nets.actor, True), actor_inputs, ["actions"], batch_dims),
        _Graph(
            "actor_priv_encoder",
            "actor_priv_encoder.onnx",
            networks.ActorStep(nets.actor, False),
            actor_inputs,
            ["actions"],
            batch_dims,
        ),
    ]
    if nets.estimator is not None:
        graphs.append(
            _Graph(
                "estimator",
                "estimator.onnx",
                networks.EstimatorStep(nets.estimator).eval(),
                {"proprio": torch.zeros(n, obs_layout.NUM_PROPRIO)},
                ["priv_explicit"],
                {"proprio": 0, "priv_explicit": 0},
            )
        )
    if nets.depth_encoder is not None:
        graphs.append(
            _Graph(
                "depth_encoder",
                "depth_encoder.onnx",
                networks.DepthEncoderStep(nets.depth_encoder).eval(),
                {
                    "depth": torch.zeros(n, obs_layout.DEPTH_HEIGHT_PX, obs_layout.DEPTH_WIDTH_PX),
                    "proprio": torch.zeros(n, obs_layout.NUM_PROPRIO),
                    "h_in": torch.zeros(1, n, networks.GRU_HIDDEN_DIM),
                },
                ["latent", "yaw_raw", "h_out"],
                {"depth": 0, "proprio": 0, "h_in": 1, "latent": 0, "yaw_raw": 0, "h_out": 1},
            )
        )
    return graphs


def _export_torchscript(graph: _Graph, file: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice, and the GRU batch note (h_in is an input)
        torch.onnx.export(
            graph.module,
            tuple(graph.inputs.values()),
            str(file),
            input_names=list(graph.inputs),
            output_names=graph.outputs,
            dynamic_axes={name: {axis: "batch"} for name, axis in graph.batch_dims.items()},
            opset_version=TORCHSCRIPT_OPSET,
            dynamo=False,
        )


def _export_dynamo(graph: _Graph, file: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)  # "torchvision is not installed" notes: irrelevant here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph.module,
                tuple(graph.inputs.values()),
                str(file),
                input_names=list(graph.inputs),
                output_names=graph.outputs,
                dynamic_shapes={name: {graph.batch_dims[name]: batch} for name in graph.inputs},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        registration_log.setLevel(level)


def _verify(graph: _Graph, file: Path) -> float:
    """Run the fresh graph on random inputs with a batch size unlike the example; return max |error|."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(0)
    feeds = {}
    for name, example in graph.inputs.items():
        shape = list(example.shape)
        shape[graph.batch_dims[name]] = 3
        feeds[name] = torch.rand(shape, generator=gen) - 0.5
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    got = session.run(graph.outputs, {k: v.numpy() for k, v in feeds.items()})
    with torch.inference_mode():
        want = graph.module(*feeds.values())
    want = want if isinstance(want, tuple) else (want,)
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_onnx(
    source: str | Path | PolicyWeights,
    out_dir: str | Path,
    *,
    exporter: Exporter = "auto",
    verify: bool = True,
) -> dict[str, Any]:
    """Export ``source`` (checkpoint, export directory, or already-read weights) into ``out_dir``.

    Returns the manifest that was written. Raises ``PolicyLoadError`` for unusable sources and
    ``RuntimeError`` if a graph disagrees with torch by more than ``VERIFY_ATOL``.
    """
    weights = source if isinstance(source, PolicyWeights) else read_weights(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_MANIFEST).unlink(missing_ok=True)  # the manifest marks a complete export; write it last
    used = exporter
    graphs_meta: dict[str, Any] = {}
    for graph in _graphs(weights):
        file = out / graph.file
        if used in ("auto", "torchscript"):
            try:
                _export_torchscript(graph, file)
                used = "torchscript"
            except Exception:
                if used == "torchscript":
                    raise
                used = "dynamo"
        if used == "dynamo":
            _export_dynamo(graph, file)
        max_err = _verify(graph, file) if verify else None
        if max_err is not None and not max_err <= VERIFY_ATOL:
            raise RuntimeError(f"{file}: onnxruntime differs from torch by {max_err:.2e} (> {VERIFY_ATOL:g})")
        graphs_meta[graph.role] = {
            "file": graph.file,
            "inputs": list(graph.inputs),
            "outputs": graph.outputs,
            "verify_max_abs_err": max_err,
        }
    manifest = {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "kind": weights.kind,
        "obs_dim": obs_layout.OBS_DIM,
        "action_dim": networks.ACTION_DIM,
        "depth_latent_dim": networks.DEPTH_LATENT_DIM,
        "depth_shape_hw": [obs_layout.DEPTH_HEIGHT_PX, obs_layout.DEPTH_WIDTH_PX],
        "gru_hidden_dim": networks.GRU_HIDDEN_DIM,
        "yaw_obs_scale": obs_layout.PREDICTED_YAW_SCALE,
        "has_estimator": weights.estimator is not None,
        "graphs": graphs_meta,
        "conventions": {
            "depth_encoder": "proprio is raw obs[:, :53] (6:8 zeroed inside); h_in starts as zeros, feed h_out back",
            "student_actor": "before it runs, obs[:, 6:8] <- yaw_obs_scale * yaw_raw (held between encoder steps)",
            "estimator": "optional: obs[:, 185:194] <- priv_explicit before the actor (upstream play/deploy)",
        },
        "source": {
            "path": str(weights.source.resolve()),
            "format": weights.source_format,
            "sha256": {p.name: _sha256(p) for p in weights.source_files},
        },
        "exporter": used,
        "torch_version": torch.__version__,
    }
    (out / ONNX_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``krabby-export-onnx CHECKPOINT_OR_DIR OUT_DIR``: one line per graph, one line on error."""
    parser = argparse.ArgumentParser(
        prog="krabby-export-onnx",
        description="Export a parkour teacher/student (model_*.pt, exported_teacher/, exported_deploy/) to ONNX.",
    )
    parser.add_argument("source", type=Path, help="checkpoint file or export directory")
    parser.add_argument("out_dir", type=Path, help="directory to write the .onnx files and manifest.json into")
    parser.add_argument("--exporter", choices=["auto", "torchscript", "dynamo"], default="auto",
                        help="torch.onnx exporter (default auto: TorchScript, falling back to dynamo if it fails)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    args = parser.parse_args(argv)
    try:
        manifest = export_onnx(args.source, args.out_dir, exporter=args.exporter, verify=not args.no_verify)
    except PolicyLoadError as exc:
        print(f"krabby-export-onnx: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output folder that cannot be written
        print(f"krabby-export-onnx: error: cannot write {exc.filename or args.out_dir}: {exc.strerror or exc}; "
              f"choose a folder you can write to", file=sys.stderr)
        return 2
    print(f"{manifest['kind']} policy from {manifest['source']['path']} ({manifest['exporter']} exporter)")
    for role, meta in manifest["graphs"].items():
        err = meta["verify_max_abs_err"]
        check = "not verified" if err is None else f"max |ort - torch| = {err:.1e}"
        print(f"  {args.out_dir / meta['file']}: {', '.join(meta['inputs'])} -> {', '.join(meta['outputs'])}; {check}")
    print(f"  {args.out_dir / ONNX_MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
