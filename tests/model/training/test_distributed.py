"""One process on the CPU when launched plainly; gradient accumulation as the trainers write it
(`no_sync` on every micro-batch but the last, (loss / k).backward()) gives the big batch's
gradient, and DDP all-reduces once per step."""

import torch

from fd2talk.model.configs import RunConfig
from fd2talk.model.training.distributed import no_sync, setup_distributed, wrap_ddp
from fd2talk.model.training.metrics import Mean


def test_single_process_defaults_to_cpu_here(monkeypatch):
    """`auto` (the default) picks the CPU on a machine without CUDA: a plain launch is one
    process on the CPU, and nothing is wrapped in DDP."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    d = setup_distributed(RunConfig(shards="s", out="o").device)
    assert (d.rank, d.world, d.device, d.main) == (0, 1, "cpu", True)
    model = torch.nn.Linear(1, 1)
    assert wrap_ddp(model, d) is model


def _accumulate(model, k: int, micro) -> dict:
    """The trainers' micro-batch loop (model/training/lipsync.py and the others)."""
    train = Mean(k)
    for i in range(k):
        with no_sync([model], i < k - 1):
            loss, scalars = micro(i)
            (loss / k).backward()
        train.add(loss, scalars)
    return train.values


def test_accumulated_micro_batches_give_the_big_batch_gradient_and_sync_once(tmp_path):
    """Two micro-batches of 4 = one batch of 8 (the mean loss), also inside a real (1-process,
    gloo) DDP wrapper, whose all-reduce runs on the last micro-batch only."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 1)

    def net():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))

    big = net()
    torch.nn.functional.mse_loss(big(x), y).backward()
    small = net()
    values = _accumulate(
        small,
        2,
        lambda i: (
            torch.nn.functional.mse_loss(small(x[4 * i : 4 * i + 4]), y[4 * i : 4 * i + 4]),
            {"n": float(i)},
        ),
    )
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert values["n"] == 0.5 and set(values) == {"loss", "n"}

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        inner = net()
        ddp = DistributedDataParallel(inner)
        syncs = []
        real = ddp.no_sync
        ddp.no_sync = lambda: (syncs.append(1), real())[1]
        _accumulate(
            ddp,
            3,
            lambda i: (
                torch.nn.functional.mse_loss(ddp(x[2 * i : 2 * i + 2]), y[2 * i : 2 * i + 2]),
                {},
            ),
        )
        assert len(syncs) == 2  # micro-batches 0 and 1 skip the all-reduce, 2 does it
        ref = net()
        for i in range(3):
            (
                torch.nn.functional.mse_loss(ref(x[2 * i : 2 * i + 2]), y[2 * i : 2 * i + 2]) / 3
            ).backward()
        for a, b in zip(ref.parameters(), inner.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()
