"""One core kept busy for as long as it runs: a proxy-training stand-in (MobileViT forward + backward + AdamW step at
batch 64, 64 px, one torch thread, not pinned: the scheduler moves it between cores as a user's other work would).

    python -m bench.busy_core [--seconds S]      # the load of docs/search.md's "with one core busy" search
"""
from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=float("inf"))
    args = ap.parse_args(argv)
    import torch

    from students.registry import create_image_tower

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tower = create_image_tower("mobilevit_xxs", 128, 64)
    opt = torch.optim.AdamW(tower.parameters(), 1e-3)
    x = torch.rand(64, 3, 64, 64)
    end, steps = time.monotonic() + args.seconds, 0
    while time.monotonic() < end:
        loss = tower(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    print(f"busy_core: {steps} steps")


if __name__ == "__main__":
    main()
