"""Take a trained model elsewhere: ONNX (onnxruntime and other runtimes) and safetensors (PyTorch).

``python -m minifcn.export --checkpoint runs/X/best.npz --format onnx -o model.onnx``
``python -m minifcn.export --checkpoint runs/X/best.npz --format safetensors -o model.safetensors``

ONNX (``onnx_graph.py``)
    A plain inference graph, built with the ``onnx`` package by walking ``model.graph()``
    and dispatching on each layer's type; no PyTorch involved:

    ===================  ==============================================================
    minifcn layer        ONNX
    ===================  ==============================================================
    ``Conv2d``           ``Conv`` (weights OIHW, as stored)
    ``ReLU``             ``Relu``
    ``MaxPool2d``        ``MaxPool`` with ``ceil_mode=1``
    ``Dropout``          nothing: the identity at inference
    ``Scale``            ``Mul`` by a constant (the mini input scale, FCN-8s at-once's 0.01
                         and 0.0001); nothing when the factor is 1
    ``ConvTranspose2d``  ``ConvTranspose`` (weights IOHW, as stored)
    ``Crop``             ``Slice`` from the offset, baked in from the computed geometry
                         (``model.crop_offsets``), to offset + the reference's height and
                         width, read at run time with ``Shape``; then ``Reshape`` to the
                         reference's size (see below)
    ``Fuse``             ``Add``
    ===================  ==============================================================

    Opset ``OPSET`` = 17 (onnxruntime 1.13 and later), IR version 8. The input ``data`` is
    the mean-subtracted RGB image, float32 (N, 3, H, W), exactly what ``model.forward``
    takes; the output ``score`` is (N, num_classes, H, W).

    N, H and W are dynamic. With the paper backbone (padding 100) every size works. The mini
    backbone accepts only some sides (FCN-8s: 31-46, 63-78, ...; ``FCN.supported_sizes``);
    for other sides a crop would not fit, and ``Slice`` clamps silently, so the ``Reshape``
    after each crop (a no-op for supported sizes) makes onnxruntime fail rather than return a
    smaller or misaligned map. The supported sides are in the file's metadata
    (``minifcn.supported_sides``); ``predict_onnx`` and ``segment_image_onnx`` pad an image
    up to the next one with the mean, as ``predict`` does, and crop the scores back.
    ``--input-size HxW`` exports a fixed-size graph instead.

    Metadata (``metadata_props``): ``minifcn.spec`` (JSON), ``minifcn.crop_offsets``,
    ``minifcn.supported_sides``, ``minifcn.mean_rgb`` and, when the checkpoint has them,
    ``minifcn.class_names``.

safetensors (``weights.py``)
    The ``state_dict``: the reference FCN's names (``conv1_1.weight`` ... ``upscore8.weight``)
    in PyTorch's layouts, float32. ``safetensors.numpy.load_file`` reads it without PyTorch;
    a PyTorch FCN with the reference layer names takes it with a plain ``load_state_dict``
    (``torch_fcn.py`` builds one for any configuration; for the paper configuration the
    reference's own PyTorch port takes it too). The metadata holds ``minifcn.spec`` and
    ``minifcn.crop_offsets``.

``onnx``, ``onnxruntime`` and ``safetensors`` are the optional extra ``minifcn[export]``;
they are imported only by the functions that need them, and torch only by ``torch_fcn``.
"""

from .common import FORMATS, INSTALL_HINT, ExportError, refuse_nonfinite
from .onnx_graph import IR_VERSION, OPSET, save_onnx, to_onnx
from .runtime import compare_onnx, onnx_session, predict_onnx, segment_image_onnx
from .weights import load_safetensors, save_safetensors

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "IR_VERSION",
    "OPSET",
    "ExportError",
    "refuse_nonfinite",
    "compare_onnx",
    "load_safetensors",
    "onnx_session",
    "predict_onnx",
    "save_onnx",
    "save_safetensors",
    "segment_image_onnx",
    "to_onnx",
]
