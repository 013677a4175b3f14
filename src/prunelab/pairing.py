"""Which model trains on which data set, as the two configs declare it.

A model config may declare ``input`` (``image`` or ``tokens``), ``input_shape`` (of one sample,
e.g. ``[1, 28, 28]``), ``num_classes`` and, to restrict it further, ``datasets`` (data names);
a data config declares ``input``, ``num_classes`` and, where it is fixed, ``input_shape``.
:func:`check_configs` compares what both declare before any data is read; :func:`check_data`
compares the model's declarations with what the data module found in the files (the number of
classes and the sample shape of an image folder are only known then). Either way a wrong pair
is one line naming both sides.

The declarations do not change a run's numbers, so they stay out of the config a resume
compares (:func:`without_declarations`): adding one to a config never orphans a checkpoint.
"""

from __future__ import annotations

from typing import Any

from prunelab import bounds
from prunelab.errors import ConfigError

# keys of a model or data section that are no constructor argument: declarations, and
# ``arch``, model=torchvision's shorthand that its ``net.arch`` interpolates
NOT_ARGUMENTS = ("name", "description", "datasets", "input", "input_shape", "arch")
# left out of resume comparisons: they change no number (``name`` identifies a run: it stays;
# a data set's ``num_classes`` is compared through ``model.num_classes``, which follows it)
COMPARED_OUT = {"model": ("datasets", "input", "input_shape"),
                "data": ("input", "input_shape", "num_classes")}
KINDS = ("image", "tokens")
BUILT_IN = "built-in pairs: cnn+mnist, text+imdb; image data: mnist, torchvision, image_folder; " \
           "token data: imdb, text_files"


def arguments(section: dict[str, Any]) -> dict[str, Any]:
    """A model or data section without its declarations: the constructor's arguments."""
    return {k: v for k, v in section.items() if k not in NOT_ARGUMENTS}


def without_declarations(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without the model and data declarations (for resume comparisons)."""
    out = dict(config)
    for group, keys in COMPARED_OUT.items():
        if isinstance(out.get(group), dict):
            out[group] = {k: v for k, v in out[group].items() if k not in keys}
    return out


def _shape(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]


def check_configs(model: Any, data: Any) -> None:
    """Refuse a model/data pair whose declarations disagree (one line, both names)."""
    m, d = model.get("name", "?"), data.get("name", "?")
    for side, node in (("model", model), ("data", data)):  # numbers, before int() reads them
        if node.get("num_classes") is not None:
            bounds.integer(f"{side}.num_classes", node.get("num_classes"), 1, bounds.MAX_CLASSES)
        for i, size in enumerate(node.get("input_shape") or []):
            bounds.integer(f"{side}.input_shape.{i}", size, 1, bounds.MAX_IMAGE_SIDE)
    pair = f"model={m} cannot train on data={d}"
    compatible = list(model.get("datasets") or [])
    if compatible and d not in compatible:
        raise ConfigError(f"{pair}: model={m} takes data={'/'.join(compatible)} ({BUILT_IN})")
    for side, kind in (("model", model.get("input")), ("data", data.get("input"))):
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"{side}.input={kind} must be one of {', '.join(KINDS)}")
    mk, dk = model.get("input"), data.get("input")
    if mk and dk and mk != dk:
        raise ConfigError(f"{pair}: model={m} takes {mk} input, data={d} gives {dk} ({BUILT_IN})")
    check_classes(m, model.get("num_classes"), d, data.get("num_classes"))
    check_shape(m, _shape(model.get("input_shape")), d, _shape(data.get("input_shape")))
    check_channels(model, d, _shape(data.get("input_shape")), "channels" in data)


def check_classes(model_name: str, model_classes: Any, data_name: str, data_classes: Any) -> None:
    if model_classes is None or data_classes is None or int(model_classes) == int(data_classes):
        return
    raise ConfigError(
        f"model={model_name} predicts {model_classes} classes (model.num_classes), data="
        f"{data_name} has {data_classes} (data.num_classes): set model.num_classes="
        f"{data_classes}, or the data set's data.num_classes")


def check_shape(model_name: str, model_shape: list[int] | None, data_name: str,
                data_shape: list[int] | None) -> None:
    if model_shape is None or data_shape is None or model_shape == data_shape:
        return
    raise ConfigError(
        f"model={model_name} takes samples of shape {model_shape} (model.input_shape), data="
        f"{data_name} gives {data_shape}: choose a model for that shape (model=torchvision "
        "adapts to any image size), or resize the images (data.image_size, data.channels)")


def check_channels(model: Any, data_name: str, data_shape: list[int] | None,
                   convertible: bool) -> None:
    """The network's input planes (``model.net.in_channels``, model=torchvision's key) against
    the data's image channels: a grayscale set for a colour network, or the reverse.

    ``convertible``: the data config has ``channels`` (image folders, torchvision sets), which
    converts the images on reading.
    """
    net = model.get("net")
    want = net.get("in_channels") if hasattr(net, "get") else None
    if want is None or data_shape is None or len(data_shape) != 3:
        return
    want = bounds.integer("model.net.in_channels", want, 1, bounds.MAX_WIDTH)
    if want == data_shape[0]:
        return
    have, want = data_shape[0], int(want)
    fix = f"set model.net.in_channels={have}"
    if convertible and want in (1, 3):
        fix += f" (or data.channels={want} to convert the images on reading)"
    raise ConfigError(
        f"model={model.get('name', '?')} takes {want}-channel images (model.net.in_channels="
        f"{want}), data={data_name} gives {have}-channel images {data_shape}: {fix}")


def check_data(model: Any, data_name: str, datamodule: Any) -> None:
    """The model's declarations against what the data module read from the files."""
    m = model.get("name", "?")
    check_classes(m, model.get("num_classes"), data_name, getattr(datamodule, "num_classes", None))
    shape = getattr(datamodule, "sample_shape", None)
    shape = _shape(shape() if callable(shape) else shape)
    check_shape(m, _shape(model.get("input_shape")), data_name, shape)
    check_channels(model, data_name, shape, hasattr(datamodule, "channels"))
