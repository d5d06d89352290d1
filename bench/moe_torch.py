"""PyTorch peer for `npm run bench`: an MoE block written like Hugging Face's MixtralSparseMoeBlock
(loop over experts, index gather, index_add_). Prints one JSON line of timings.

usage: /usr/bin/python3 bench/moe_torch.py TOKENS DMODEL DFF EXPERTS K THREADS REPS [WARMUP]
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

tokens, d, dff, E, k, threads, reps = (int(v) for v in sys.argv[1:8])
warmup = int(sys.argv[8]) if len(sys.argv) > 8 else 1
torch.set_num_threads(threads)
torch.manual_seed(0)


class Expert(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Linear(d, dff, bias=False)
        self.w2 = torch.nn.Linear(dff, d, bias=False)
        self.w3 = torch.nn.Linear(d, dff, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoeBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(d, E, bias=False)
        self.experts = torch.nn.ModuleList([Expert() for _ in range(E)])

    def forward(self, hidden):
        logits = self.gate(hidden)
        weights = F.softmax(logits, dim=1, dtype=torch.float)
        weights, selected = torch.topk(weights, k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(hidden)
        mask = F.one_hot(selected, num_classes=E).permute(2, 1, 0)
        for e in range(E):
            idx, top_x = torch.where(mask[e])
            if top_x.numel() == 0:
                continue
            cur = hidden[top_x]
            y = self.experts[e](cur) * weights[top_x, idx, None]
            out.index_add_(0, top_x, y)
        return out, logits


block = SparseMoeBlock()
x = torch.randn(tokens, d, requires_grad=True)
g = torch.randn(tokens, d)


def fwd():
    with torch.no_grad():
        block(x)


def fwd_bwd():
    block.zero_grad(set_to_none=True)
    x.grad = None
    out, _ = block(x)
    out.backward(g)


def median_time(fn):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


print(json.dumps({"peer": f"torch {torch.__version__}", "threads": threads,
                  "forward_s": median_time(fwd), "forward_backward_s": median_time(fwd_bwd)}))
