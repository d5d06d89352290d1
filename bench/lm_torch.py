"""PyTorch peer of the `switchyard demo` model for `npm run bench`: the same decoder-only MoE LM
(RMSNorm, rotary multi-head causal attention, Mixtral-style MoE FFN written like Hugging Face's
MixtralSparseMoeBlock with balance + z losses, tied head) trained with AdamW + gradient clipping.
Prints one JSON line: median seconds per training step (forward + backward + optimizer).

usage: /usr/bin/python3 bench/lm_torch.py CONFIG_JSON THREADS STEPS
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

cfg = json.loads(sys.argv[1])
threads, steps = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
V, d, L, H, dff, T, B = (cfg[k] for k in ("vocabSize", "dModel", "nLayers", "nHeads", "dFF", "seqLen", "batchSize"))
E, K = cfg["numExperts"], cfg["k"]
Dh = d // H


class RMSNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


inv_freq = 1.0 / (10000 ** (torch.arange(0, Dh, 2).float() / Dh))
ang = torch.outer(torch.arange(T).float(), inv_freq)
cos = torch.cat([ang.cos(), ang.cos()], -1)
sin = torch.cat([ang.sin(), ang.sin()], -1)
mask = torch.full((T, T), float("-inf")).triu(1)


def rotate_half(x):
    x1, x2 = x[..., : Dh // 2], x[..., Dh // 2:]
    return torch.cat([-x2, x1], -1)


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (torch.nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, H, Dh).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(Dh) + mask, -1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Expert(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Linear(d, dff, bias=False)
        self.w2 = torch.nn.Linear(dff, d, bias=False)
        self.w3 = torch.nn.Linear(d, dff, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(d, E, bias=False)
        self.experts = torch.nn.ModuleList([Expert() for _ in range(E)])

    def forward(self, hidden):
        b, t, _ = hidden.shape
        x = hidden.view(-1, d)
        logits = self.gate(x)
        probs = F.softmax(logits, dim=1, dtype=torch.float)
        weights, selected = torch.topk(probs, K, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        expert_mask = F.one_hot(selected, num_classes=E).permute(2, 1, 0)
        for e in range(E):
            idx, top_x = torch.where(expert_mask[e])
            if top_x.numel() == 0:
                continue
            out.index_add_(0, top_x, self.experts[e](x[top_x]) * weights[top_x, idx, None])
        # Aux losses as in the demo: HF load_balancing_loss_func (0.01) + router z-loss (0.001).
        f = F.one_hot(selected, E).float().mean(0)
        balance = E * torch.sum(f * probs.mean(0).unsqueeze(0))
        z = torch.logsumexp(logits, -1).pow(2).mean()
        return out.view(b, t, d), 0.01 * balance + 0.001 * z


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(), RMSNorm()
        self.self_attn, self.mlp = Attention(), MoE()

    def forward(self, x):
        h = x + self.self_attn(self.input_layernorm(x))
        m, aux = self.mlp(self.post_attention_layernorm(h))
        return h + m, aux


class LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(V, d)
        torch.nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = torch.nn.ModuleList([Layer() for _ in range(L)])
        self.norm = RMSNorm()

    def forward(self, ids, targets):
        h = self.embed_tokens(ids)
        aux = 0.0
        for layer in self.layers:
            h, a = layer(h)
            aux = aux + a
        logits = self.norm(h) @ self.embed_tokens.weight.t()
        return F.cross_entropy(logits.view(-1, V), targets.view(-1)) + aux


model = LM()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, V, (B, T))
targets = torch.randint(0, V, (B, T))


def train_step():
    opt.zero_grad(set_to_none=True)
    loss = model(ids, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


train_step()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    train_step()
    times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"peer": f"torch {torch.__version__}", "threads": threads, "step_s": times[len(times) // 2],
                  "params": sum(p.numel() for p in model.parameters())}))
