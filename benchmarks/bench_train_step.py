"""Training step speed of EfficientNet-Lite0 on this machine: forward + backward + AdamW step, batch 32,
fp32 ``channels_last``, random inputs, with and without the stem and first three stages frozen.

    .venv/bin/python benchmarks/bench_train_step.py      (ms a film, 5 steps each; the first is warm-up)
"""

import time

import torch

from boneage_core.model.net import BoneAgeNet
from boneage_core.training.loop import freeze_early

torch.manual_seed(0)
for size, blocks in [(299, 3), (256, 3), (256, 0)]:
    net = BoneAgeNet(pretrained=False).to(memory_format=torch.channels_last)
    frozen = freeze_early(net, blocks)
    net.train()
    for m in frozen:
        m.eval()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(32, 1, size, size).contiguous(memory_format=torch.channels_last)
    male = torch.ones(32)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        net(x, male, normalised=True).abs().mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    print(f"{size} px, {blocks} stages frozen: {[round(t / 32 * 1000) for t in times]} ms a film")
