"""Pseudo-labels from 2 DDP processes (gloo, CPU) equal the 1-process ones exactly.

The 2 processes run in a subprocess (``torch.multiprocessing.spawn``), never in pytest itself.
37 images over 2 ranks: the DistributedSampler pads one duplicate, which must be dropped.
"""

import textwrap

import torch

from ddp_script import single_and_ranks

SCRIPT = textwrap.dedent("""
    import os, socket, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from torch import nn

    from lit_effdl.pseudo_labels import predict_probs  # light imports: 3 processes start

    class Images(torch.utils.data.Dataset):
        def __init__(self, n):
            self.images = torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(3),
                                        dtype=torch.uint8)
        def __len__(self):
            return len(self.images)
        def __getitem__(self, i):
            return {"image": self.images[i], "index": i}

    def setup():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8 * 16 * 16, 4))
        return nn.Sequential(Scale(), net), Images(37)  # predict_probs puts it in eval mode

    class Scale(nn.Module):
        def forward(self, x):
            return x.float() / 255.0

    def worker(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        net, data = setup()
        result = predict_probs(net, data, batch_size=8)
        torch.save(result, f"{out}.rank{rank}")
        dist.barrier()  # no rank tears gloo down while another still talks to it
        dist.destroy_process_group()

    if __name__ == "__main__":
        out = sys.argv[1]
        torch.set_num_threads(1)
        net, data = setup()
        torch.save(predict_probs(net, data, batch_size=8), f"{out}.single")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(worker, args=(2, port, out), nprocs=2, join=True)
""")


def test_two_process_pseudo_labels_equal_one_process(tmp_path):
    single, ranks = single_and_ranks(tmp_path, SCRIPT)
    assert torch.equal(single["index"], torch.arange(37))
    for ddp in ranks:  # every rank holds the whole gathered result
        assert torch.equal(ddp["index"], single["index"])  # padded duplicate dropped, order by index
        assert torch.equal(ddp["probs"], single["probs"])  # bit-identical
