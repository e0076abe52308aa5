"""SimCLR under DDP contrasts against every rank's projections: 2 gloo ranks give the loss and the
gradients of one process on the global batch."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import socket  # noqa: E402

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from training.distributed import gather_with_grad  # noqa: E402
from training.losses import nt_xent  # noqa: E402

B, D, WORLD, T = 6, 8, 2, 0.2


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * B, D, generator=g), torch.randn(WORLD * B, D, generator=g)


def _rank(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        z1, z2 = (z[rank * B : (rank + 1) * B].clone().requires_grad_(True) for z in _inputs())
        loss = nt_xent(z1, z2, T, gather_with_grad, rank)
        loss.backward()
        results[rank] = (loss.detach(), z1.grad, z2.grad)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_global_batch():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(port, results), nprocs=WORLD, join=True)

    z1, z2 = (z.clone().requires_grad_(True) for z in _inputs())
    loss = nt_xent(z1, z2, T)
    loss.backward()
    # the mean of the ranks' losses is the global loss ...
    assert torch.allclose(sum(results[r][0] for r in range(WORLD)) / WORLD, loss.detach(), atol=1e-6)
    # ... and DDP's average of the ranks' gradients (each rank's own part x 1/WORLD) is the global one
    for r in range(WORLD):
        part = slice(r * B, (r + 1) * B)
        assert torch.allclose(results[r][1] / WORLD, z1.grad[part], atol=1e-6)
        assert torch.allclose(results[r][2] / WORLD, z2.grad[part], atol=1e-6)
    # without the gather each rank sees only its own negatives: a different loss
    local = nt_xent(z1[:B].detach(), z2[:B].detach(), T)
    assert not torch.allclose(local, results[0][0], atol=1e-4)
