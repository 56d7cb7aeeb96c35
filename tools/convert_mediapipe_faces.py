#!/usr/bin/env python3
"""Convert MediaPipe's face detector and face mesh from .tflite into lipsyncd's weight files.

Where the models come from
    The ``mediapipe==0.10.14`` wheel on PyPI ships them as
    ``mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite`` (BlazeFace,
    full range) and ``mediapipe/modules/face_landmark/face_landmark.tflite`` (468-point FaceMesh).
    Copyright Google LLC, licensed under the Apache License 2.0
    (https://www.apache.org/licenses/LICENSE-2.0); see ``engine/faces/weights/NOTICE``.

Why convert
    mediapipe itself cannot be a dependency (it pins protobuf<5 and pulls ~1 GB), and the
    engine wants batched torch models on CPU and GPU. The converter reads the flatbuffers with the
    ``tflite`` package, folds the weight-decoding ops (DENSIFY of the sparse detector, DEQUANTIZE
    of float16) into constants, resolves TF "SAME" padding into explicit pads, moves weights into
    torch layout, and writes the op list that ``engine/faces/graph.py`` replays.

How to rerun (any platform's wheel holds the same files; sha256 is checked)
    pip download --no-deps mediapipe==0.10.14 --python-version 3.11 --only-binary=:all: -d /tmp/mp
    .venv/bin/python tools/convert_mediapipe_faces.py /tmp/mp/mediapipe-0.10.14-*.whl

It writes ``engine/faces/weights/{face_detection_full_range,face_landmark}.{json,npz}``; the output
is deterministic, byte for byte, so a rerun must leave ``git status`` clean.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import tflite

MEDIAPIPE_VERSION = "0.10.14"
# wheel member -> (our model name, sha256 of the member)
MODELS = {
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite": (
        "face_detection_full_range",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    "mediapipe/modules/face_landmark/face_landmark.tflite": (
        "face_landmark",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "engine" / "faces" / "weights"

_OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
_DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
           tflite.TensorType.INT32: np.int32}
_ACTIVATIONS = {tflite.ActivationFunctionType.NONE: None, tflite.ActivationFunctionType.RELU: "relu"}
_INDEX_VECTORS = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
                  tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
                  tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}


class ConversionError(Exception):
    """The input is not the model this converter was written for."""


def read_wheel(wheel: Path) -> dict[str, bytes]:
    """The two .tflite files from the wheel, by our model name, after checking their sha256."""
    models: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as archive:
        for member, (name, sha256) in MODELS.items():
            data = archive.read(member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise ConversionError(f"{member} in {wheel} has sha256 {digest}, expected {sha256} "
                                      f"(is this mediapipe {MEDIAPIPE_VERSION}?)")
            models[name] = data
    return models


class _Reader:
    """Walks one TFLite subgraph and produces (op list, constant arrays) in torch terms."""

    def __init__(self, data: bytes) -> None:
        self.model = tflite.Model.GetRootAsModel(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise ConversionError("expected a single-subgraph model")
        self.graph = self.model.Subgraphs(0)
        self.constants: dict[int, np.ndarray] = {}
        for index in range(self.graph.TensorsLength()):
            value = self._stored_value(index)
            if value is not None:
                self.constants[index] = value

    def shape(self, tensor: int) -> list[int]:
        return [int(d) for d in self.graph.Tensors(tensor).ShapeAsNumpy()]

    def _stored_value(self, index: int) -> np.ndarray | None:
        tensor = self.graph.Tensors(index)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        dtype = _DTYPES.get(tensor.Type())
        if dtype is None:
            raise ConversionError(f"tensor {index}: unsupported type {tensor.Type()}")
        flat = buffer.DataAsNumpy().view(dtype)
        sparsity = tensor.Sparsity()
        if sparsity is None:
            return flat.reshape(self.shape(index))
        return _densify(flat, sparsity, self.shape(index), index)

    def ops(self) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        ops: list[dict[str, Any]] = []
        arrays: dict[str, np.ndarray] = {}
        for position in range(self.graph.OperatorsLength()):
            operator = self.graph.Operators(position)
            code = self.model.OperatorCodes(operator.OpcodeIndex())
            kind = _OP_NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            inputs = [int(operator.Inputs(i)) for i in range(operator.InputsLength())]
            out = int(operator.Outputs(0))
            if kind in ("DEQUANTIZE", "DENSIFY"):
                # Weight decoding: float16 (possibly sparse) storage -> float32 at run time. The
                # graph's loader casts the stored float16 to float32, which is this op exactly.
                self.constants[out] = self.constants[inputs[0]]
                continue
            op = self._convert(kind, operator, inputs, arrays)
            op.update({"in": [i for i in inputs if i not in self.constants], "out": out})
            ops.append(op)
        return _fold_pads(ops, self._outputs()), arrays

    def _inputs(self) -> list[int]:
        return [int(self.graph.Inputs(i)) for i in range(self.graph.InputsLength())]

    def _outputs(self) -> list[int]:
        return [int(self.graph.Outputs(i)) for i in range(self.graph.OutputsLength())]

    def _options(self, operator: Any, cls: type) -> Any:
        table = operator.BuiltinOptions()
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    def _convert(self, kind: str, operator: Any, inputs: list[int],
                 arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return self._conv(kind, operator, inputs, arrays)
        if kind == "MAX_POOL_2D":
            o = self._options(operator, tflite.Pool2DOptions)
            _no_activation(o, kind)
            kernel, stride = [o.FilterHeight(), o.FilterWidth()], [o.StrideH(), o.StrideW()]
            return {"op": "max_pool", "kernel": kernel, "stride": stride,
                    "pad": _same_or_valid(o.Padding(), self.shape(inputs[0]), kernel, stride)}
        if kind == "ADD":
            if any(i in self.constants for i in inputs):
                raise ConversionError("ADD of a constant")
            o = self._options(operator, tflite.AddOptions)
            return {"op": "add", "act": _activation(o.FusedActivationFunction())}
        if kind == "PRELU":
            alpha = self.constants[inputs[1]]
            if alpha.shape[:-1] != (1,) * (alpha.ndim - 1):
                raise ConversionError(f"PRELU with non-per-channel alpha {alpha.shape}")
            arrays[f"t{inputs[1]}"] = alpha.reshape(-1)
            return {"op": "prelu", "alpha": f"t{inputs[1]}"}
        if kind == "PAD":
            pairs = self.constants[inputs[1]].tolist()
            if pairs[0] != [0, 0]:
                raise ConversionError("PAD over the batch dimension")
            return {"op": "pad", "pad": pairs}
        if kind == "RESIZE_BILINEAR":
            o = self._options(operator, tflite.ResizeBilinearOptions)
            if o.AlignCorners() or not o.HalfPixelCenters():
                raise ConversionError("RESIZE_BILINEAR without half-pixel centres")
            return {"op": "resize_bilinear", "size": self.constants[inputs[1]].tolist()}
        if kind == "DEPTH_TO_SPACE":
            o = self._options(operator, tflite.DepthToSpaceOptions)
            return {"op": "depth_to_space", "block": o.BlockSize()}
        if kind == "RESHAPE":
            return {"op": "reshape", "shape": self.constants[inputs[1]].tolist()}
        raise ConversionError(f"unsupported op {kind}")

    def _conv(self, kind: str, operator: Any, inputs: list[int],
              arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        depthwise = kind == "DEPTHWISE_CONV_2D"
        o = self._options(operator, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        if o.DilationHFactor() != 1 or o.DilationWFactor() != 1:
            raise ConversionError(f"{kind} with dilation")
        if depthwise and o.DepthMultiplier() != 1:
            raise ConversionError("DEPTHWISE_CONV_2D with depth multiplier")
        weight = self.constants[inputs[1]]
        # TFLite: conv OHWI, depthwise 1HWC. torch: OIHW, depthwise C1HW.
        weight = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
        arrays[f"t{inputs[1]}"] = np.ascontiguousarray(weight)
        arrays[f"t{inputs[2]}"] = self.constants[inputs[2]]
        stride = [o.StrideH(), o.StrideW()]
        return {"op": "conv", "weight": f"t{inputs[1]}", "bias": f"t{inputs[2]}", "stride": stride,
                "pad": _same_or_valid(o.Padding(), self.shape(inputs[0]), list(weight.shape[2:]), stride),
                "groups": weight.shape[0] if depthwise else 1,
                "act": _activation(o.FusedActivationFunction())}

    def spec(self, source: dict[str, str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        ops, arrays = self.ops()
        (model_input,) = self._inputs()
        outputs = [{"id": i, "name": self.graph.Tensors(i).Name().decode(), "shape": self.shape(i)}
                   for i in self._outputs()]
        spec = {"source": source, "input": model_input, "input_shape": self.shape(model_input),
                "outputs": outputs, "ops": ops}
        return spec, arrays


def _densify(values: np.ndarray, sparsity: Any, shape: list[int], index: int) -> np.ndarray:
    """Dense array from TFLite's sparse storage, for the layout MediaPipe uses: every dimension
    dense except the last, stored CSR, natural traversal order, no blocks."""
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    dims = [sparsity.DimMetadata(d) for d in range(sparsity.DimMetadataLength())]
    dense_leading = all(d.Format() == tflite.DimensionType.DENSE for d in dims[:-1])
    if (order != list(range(len(shape))) or sparsity.BlockMapLength() or not dense_leading
            or dims[-1].Format() != tflite.DimensionType.SPARSE_CSR):
        raise ConversionError(f"tensor {index}: unsupported sparse layout")
    segments = _index_vector(dims[-1].ArraySegmentsType(), dims[-1].ArraySegments())
    columns = _index_vector(dims[-1].ArrayIndicesType(), dims[-1].ArrayIndices())
    rows = int(np.prod(shape[:-1]))
    if len(segments) != rows + 1 or segments[-1] != len(values) or len(columns) != len(values):
        raise ConversionError(f"tensor {index}: inconsistent sparse index")
    dense = np.zeros((rows, shape[-1]), dtype=values.dtype)
    row_of_value = np.repeat(np.arange(rows), np.diff(segments))
    dense[row_of_value, columns] = values
    return dense.reshape(shape)


def _index_vector(kind: int, table: Any) -> np.ndarray:
    vector = _INDEX_VECTORS[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def _activation(code: int) -> str | None:
    if code not in _ACTIVATIONS:
        raise ConversionError(f"unsupported fused activation {code}")
    return _ACTIVATIONS[code]


def _no_activation(options: Any, kind: str) -> None:
    if options.FusedActivationFunction() != tflite.ActivationFunctionType.NONE:
        raise ConversionError(f"{kind} with a fused activation")


def _same_or_valid(padding: int, input_shape: list[int], kernel: list[int], stride: list[int]) -> list[int]:
    """[top, bottom, left, right] for TF padding on an NHWC input: "SAME" puts the odd pixel at the
    end (bottom/right), which torch's symmetric padding cannot express."""
    if padding == tflite.Padding.VALID:
        return [0, 0, 0, 0]
    pads = []
    for size, k, s in zip(input_shape[1:3], kernel, stride):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


def _fold_pads(ops: list[dict[str, Any]], outputs: list[int]) -> list[dict[str, Any]]:
    """Merge a spatial-only PAD into the conv that is its sole reader (the detector pads
    explicitly before every "VALID" conv), saving a copy of every padded feature map."""
    readers: dict[int, list[dict[str, Any]]] = {}
    for op in ops:
        for tensor in op["in"]:
            readers.setdefault(tensor, []).append(op)
    kept = []
    for op in ops:
        users = readers.get(op["out"], [])
        if (op["op"] == "pad" and op["pad"][3] == [0, 0] and op["out"] not in outputs
                and len(users) == 1 and users[0]["op"] == "conv" and users[0]["in"] == [op["out"]]):
            (top, bottom), (left, right) = op["pad"][1], op["pad"][2]
            conv = users[0]
            conv["pad"] = [a + b for a, b in zip(conv["pad"], [top, bottom, left, right])]
            conv["in"] = op["in"]
            continue
        kept.append(op)
    return kept


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that ``numpy.load(allow_pickle=False)`` reads, written byte-for-byte reproducibly:
    sorted members, fixed timestamps, no compression (numpy.savez stamps the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())


def convert(wheel: Path, out: Path) -> list[Path]:
    """Convert both models from ``wheel`` into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    models = read_wheel(wheel)
    written = []
    for member, (name, sha256) in MODELS.items():
        data = models[name]
        source = {"file": member.rsplit("/", 1)[1], "mediapipe": MEDIAPIPE_VERSION, "sha256": sha256}
        spec, arrays = _Reader(data).spec(source)
        json_path, npz_path = out / f"{name}.json", out / f"{name}.npz"
        json_path.write_text(_dump_spec(spec), encoding="utf-8")
        write_npz(npz_path, arrays)
        written += [json_path, npz_path]
    return written


def _dump_spec(spec: dict[str, Any]) -> str:
    """JSON with one entry (and one op) per line: easy to read, and a change shows as a small diff."""
    lines = [f" {json.dumps(key)}: {json.dumps(spec[key], sort_keys=True)}" for key in sorted(spec) if key != "ops"]
    ops = ",\n  ".join(json.dumps(op, sort_keys=True) for op in spec["ops"])
    return "{\n" + ",\n".join(lines) + ',\n "ops": [\n  ' + ops + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help=f"the mediapipe {MEDIAPIPE_VERSION} wheel (.whl)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        for path in convert(args.wheel, args.out):
            print(path)
    except (ConversionError, OSError, KeyError, zipfile.BadZipFile) as error:
        print(f"convert_mediapipe_faces: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
