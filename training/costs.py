"""What the device part costs on an MCU: MACs, parameters, int8 flash and peak activation memory.

Counted with forward hooks on one sample, assuming BatchNorm is folded into the preceding conv
(so a conv/linear layer stores int8 weights plus one int32 bias per output channel).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def device_cost(device_part: nn.Module, input_shape: tuple[int, int, int], held_bytes: int = 0) -> dict:
    """``held_bytes``: int8 bytes that stay live through the whole run (the remote features waiting
    to be sent while the local predictor runs); added to every layer's in+out footprint after the
    extractor has produced them (a conservative whole-run add is used here: simple and an upper bound).
    """
    macs, weights, biases = 0, 0, 0
    peak = 0

    def hook(mod, inp, out):
        nonlocal macs, weights, biases, peak
        x = inp[0]
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            macs += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw
            weights += mod.weight.numel()
            biases += mod.out_channels
        elif isinstance(mod, nn.Linear):
            macs += mod.in_features * mod.out_features
            weights += mod.weight.numel()
            biases += mod.out_features
        # int8 activations: this layer's input and output both live while it runs
        peak = max(peak, x[0].numel() + out[0].numel())

    leaves = [m for m in device_part.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = device_part.training
    device_part.eval()
    with torch.no_grad():
        device_part(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    device_part.train(was_training)
    return {
        "macs": int(macs),
        "params": int(weights + biases),
        "int8_flash_bytes": int(weights + 4 * biases),
        "peak_activation_bytes": int(peak + held_bytes),
    }
