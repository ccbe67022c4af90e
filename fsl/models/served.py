"""A trained network as a user runs it: pixels in, the network's output out.

The study feeds its networks uint8 images scaled to [0, 1] and standardised with the ImageNet statistics; the
wrapper does the same, so a user (or MLflow's pyfunc) gives it images as they are stored, (N, H, W, 3) uint8,
and gets what the method produces: embeddings (ProtoNet), backbone features (BYOL, SimCLR) or class logits
(the supervised classifier). fsl.tracking.models logs it as an exported graph (torch.export), which loads
without this package; the network's other methods (ProtoNet's episode forward) come from best_model.pt.
"""

from __future__ import annotations

import torch
from torch import nn

from fsl.data.augment import normalize, to_unit_float


class ImageModel(nn.Module):
    def __init__(self, net: nn.Module, output: str, call: str = "forward") -> None:
        super().__init__()
        self.net = net.eval()
        self.output = output  # what forward returns, for people: "embedding", "features", "logits"
        self.call = call  # the network's method that computes it (ProtoNet: "embed")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(to_unit_float(torch.as_tensor(images)))
        return getattr(self.net, self.call)(x)
