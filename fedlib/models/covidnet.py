"""COVID-Net (Wang, Lin & Wong 2020) in PyTorch, small and large variants.

Topology follows the paper and the public PyTorch port iliasprc/COVIDNet
(model/model.py): a 7x7/2 stem conv to 64 channels, ReLU and a 2x2 max-pool;
four stages of PEPX blocks (3, 4, 6, 3 blocks; 256, 512, 1024, 2048 channels)
with 2x2 max-pooling between stages; inside a stage every block after the first
reads the sum of all earlier block outputs (dense long-range connections), and
the stage hands the sum of all its block outputs on. The head is flatten
7x7x2048 -> FC 1024 -> FC 256 -> classes, with ReLU between, as in the port.

Where we differ from the port, and why:
- PEPX widths. The paper does not publish them (they came out of a machine
  design search). The port's widths (n_in/2, 3n_in/4) give 131.7M parameters
  for the small model, 12% over the published 117.4M. ResNet-50's bottleneck
  ratios (project to n_out/4, expand to n_out/2) fit: COVID-Net's stage widths
  and block counts are ResNet-50's too.
- Large-variant shortcuts. The published sizes differ by 10.0M. A single 1x1
  conv per stage (the port) adds only 2.8M; one 1x1 conv of the stage input for
  each place that reads the stage's running sum (blocks 2..k and the stage
  output) adds 10.0M, so that is what we build.
- BatchNorm: one BatchNorm2d at the end of every PEPX block, as in the port's
  model/covidnet.py (its model/model.py has none). We add a ReLU after it;
  without it the five convs of a block collapse into one linear map.
- The port max-pools each block output separately before summing; we pool the
  stage sum once (same shapes, fewer ops, one place to hook Grad-CAM).
- An AdaptiveAvgPool2d(grid) before the flatten, ``grid`` given by the caller
  (``TrainConfig.head_grid``): by default the last stage's own grid, the input
  side / 32. At 224 px that is the paper's 7x7 and the pool is the identity. At
  the quick profile's 64 px it is 2x2, so the head flattens 2x2x2048 into its
  1,024 units (8.4M weights) instead of copying each of the four values into a
  7x7 grid for 102.8M weights that can only learn what 8.4M can. ``grid=7`` at
  any size keeps the paper's parameter count (runs of fedlib before the grid
  was chosen by the input were trained that way).

Parameter counts at 224 px, 3 classes: small 117,559,299 (+0.1% vs 117.4M),
large 127,585,027 (+0.1% vs 127.4M); most of it (102.8M) is the first FC layer.
At 64 px with the 2x2 head: small 23,187,459.
"""

import torch
from torch import nn

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_CHANNELS = (256, 512, 1024, 2048)
STEM_CHANNELS = 64


class PEPX(nn.Module):
    """Projection-expansion-projection-extension block: 1x1 projection, 1x1
    expansion, 3x3 depthwise, 1x1 projection, 1x1 extension."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        project = out_channels // 4
        expand = out_channels // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, project, 1),
            nn.Conv2d(project, expand, 1),
            nn.Conv2d(expand, expand, 3, padding=1, groups=expand),
            nn.Conv2d(expand, project, 1),
            nn.Conv2d(project, out_channels, 1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PEPXStage(nn.Module):
    """PEPX blocks with dense connections; returns the sum of the block outputs.

    With ``shortcuts`` (the large variant) each reader of the running sum,
    blocks 2..k and the stage output, also gets its own 1x1 conv of the stage
    input.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, shortcuts: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            PEPX(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)
        )
        count = num_blocks if shortcuts else 0
        self.shortcuts = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.blocks[0](x)
        for i, block in enumerate(self.blocks[1:]):
            block_input = total + self.shortcuts[i](x) if self.shortcuts else total
            total = total + block(block_input)
        if self.shortcuts:
            total = total + self.shortcuts[-1](x)
        return total


class CovidNet(nn.Module):
    """COVID-Net; ``variant`` is "small" or "large" (large adds the 1x1 shortcuts)."""

    def __init__(self, variant: str = "small", num_classes: int = 3, grid: int = 7):
        super().__init__()
        if variant not in ("small", "large"):
            raise ValueError(f"CovidNet variant must be 'small' or 'large', got {variant!r}.")
        layers: list[nn.Module] = [
            nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        in_channels = STEM_CHANNELS
        for i, (blocks, channels) in enumerate(zip(STAGE_BLOCKS, STAGE_CHANNELS, strict=True)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(PEPXStage(in_channels, channels, blocks, shortcuts=variant == "large"))
            in_channels = channels
        # features[-1] is the last stage, the Grad-CAM target.
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(grid * grid * in_channels, 1024),
            nn.ReLU(inplace=True),
            nn.Linear(1024, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))
