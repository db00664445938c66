"""FD-REST's network family, so a trained model is a drop-in for FD-REST's dnn_model.keras.

Dense 512-256-128-64-32, each followed by LeakyReLU(0.01); BatchNormalization and
Dropout(0.05) after the first four; a linear Dense(8) head. `width` scales the first
layer (halving after each), which lets tests train a tiny member of the same family.
"""

from __future__ import annotations

from typing import Any

FDREST_WIDTH = 512
DEPTH = 5
DROPOUT = 0.05
LEAK = 0.01


def widths(width: int = FDREST_WIDTH) -> list[int]:
    return [max(width >> i, 4) for i in range(DEPTH)]


def build(n_features: int, n_outputs: int, width: int = FDREST_WIDTH) -> Any:
    from convert.keras_model import import_tensorflow

    _, keras = import_tensorflow()
    layers: list[Any] = [keras.Input((n_features,), name="features")]
    for i, units in enumerate(widths(width)):
        layers += [keras.layers.Dense(units), keras.layers.LeakyReLU(negative_slope=LEAK)]
        if i < DEPTH - 1:
            layers += [keras.layers.BatchNormalization(), keras.layers.Dropout(DROPOUT)]
    layers.append(keras.layers.Dense(n_outputs, name="faults"))
    return keras.Sequential(layers, name="fdedge_dnn")
