#!/usr/bin/python3
"""tests/head_reference.py DIR — PyTorch's LM head cross-entropy on the case
tests/test_ops_head.c writes into DIR, for ag_linear_cross_entropy.

Reads DIR/shape.txt ("S C V"), h.f32 (S, C), w.f32 (V, C), t.i32 (S) and
g.f32 (S) (raw little-endian), computes in float32 as a user of torch would

    nll = F.cross_entropy(h @ w.T, t, reduction='none', ignore_index=-1)

and backward with seed g, and writes nll.f32 (S), dh.f32 (S, C) and
dw.f32 (V, C). Needs Debian's python3-torch (/usr/bin/python3).
"""
import os
import sys

import torch
import torch.nn.functional as F


def load(path, dtype, shape):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=dtype).reshape(shape).clone()


def save(path, t):
    with open(path, "wb") as f:
        f.write(t.detach().contiguous().numpy().astype("<f4").tobytes())


def main():
    d = sys.argv[1]
    S, C, V = (int(x) for x in open(os.path.join(d, "shape.txt")).read().split())
    h = load(os.path.join(d, "h.f32"), torch.float32, (S, C)).requires_grad_(True)
    w = load(os.path.join(d, "w.f32"), torch.float32, (V, C)).requires_grad_(True)
    t = load(os.path.join(d, "t.i32"), torch.int32, (S,)).long()
    g = load(os.path.join(d, "g.f32"), torch.float32, (S,))
    nll = F.cross_entropy(h @ w.T, t, reduction="none", ignore_index=-1)
    nll.backward(g)
    save(os.path.join(d, "nll.f32"), nll)
    save(os.path.join(d, "dh.f32"), h.grad)
    save(os.path.join(d, "dw.f32"), w.grad)
    print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
