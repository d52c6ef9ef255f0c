"""Train a small CNN on scikit-learn's digits with periodic operator-norm projection.

Every ``--every`` optimiser steps, ``convaudit.torch.project_`` projects each conv onto
{σ_max ≤ bound} for the REAL zero-padded operator on the input size it sees. The log prints, per
conv, σ_max measured by convaudit just before each projection (the drift the optimiser caused)
and just after it. A baseline trained without projection is shown for comparison.

    python examples/train_digits.py [--bound 1.0] [--every 20] [--epochs 20]

Runs in well under a minute on 2 CPU cores; needs only torch and scikit-learn (bundled data).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from convaudit.engine.layer import analyse_layer
from convaudit.engine.projection.layer import certified_sigma
from convaudit.ir import ConvLayer
from convaudit.torch import conv_layer_of, project_

INPUT_SHAPE = (1, 1, 8, 8)


def make_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        # Flatten, not global average pooling: averaging 4x4 cells divides the signal by 4 after
        # convs that may no longer amplify it, and the classifier could not catch up.
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


CONV_INPUTS = {"0": (8, 8), "2": (8, 8), "4": (4, 4)}  # input size each conv sees


def conv_layers(net: nn.Sequential) -> list[ConvLayer]:
    layers = []
    for name, size in CONV_INPUTS.items():
        conv = net.get_submodule(name)
        weight = conv.weight.detach().double().numpy()
        layers.append(dataclasses.replace(conv_layer_of(name, conv, size), kernel=weight))
    return layers


def measured_sigmas(net: nn.Sequential) -> list[float]:
    """convaudit's certified upper bound on σ_max of each conv's zero-padded operator."""
    return [certified_sigma(layer) for layer in conv_layers(net)]


def exact_sigmas(net: nn.Sequential) -> list[float]:
    """The exact σ_max of each conv's zero-padded operator (convaudit's Lanczos, converged)."""
    out = []
    for layer in conv_layers(net):
        norm = analyse_layer(layer, sigma="exact").sigma_max
        assert norm is not None and norm.exact
        out.append(norm.value)
    return out


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    net.train()
    return acc


def train(args: argparse.Namespace, data, project: bool) -> tuple[float, list[float], list[float]]:
    x_train, x_test, y_train, y_test = data
    torch.manual_seed(args.seed)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    for _epoch in range(args.epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            opt.zero_grad()
            loss = loss_fn(net(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            step += 1
            if project and step % args.every == 0:
                drift = measured_sigmas(net)
                project_(net, args.bound, input_shape=INPUT_SHAPE)
                after = measured_sigmas(net)
                print(
                    f"step {step:4d}  loss {loss.item():.3f}  sigma_max before -> after: "
                    + "  ".join(f"{b:.3f}->{a:.3f}" for b, a in zip(drift, after, strict=True))
                )
    if project:  # end on a projection, so the final weights satisfy the bound
        project_(net, args.bound, input_shape=INPUT_SHAPE)
    return accuracy(net, x_test, y_test), measured_sigmas(net), exact_sigmas(net)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bound", type=float, default=1.0)
    parser.add_argument("--every", type=int, default=20, help="project every N optimiser steps")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # Tiny matrices: one thread avoids OpenMP overhead in the batched SVDs.
    torch.set_num_threads(1)

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=args.seed, stratify=y.numpy()
    )
    data = (x_train, x_test, y_train, y_test)
    print(
        f"digits: {len(x_train)} train / {len(x_test)} test images, 8x8; bound {args.bound}, "
        f"projection every {args.every} steps"
    )
    print(
        "sigma_max: convaudit's certified upper bound for each conv's zero-padded operator "
        "on its real input size (convs 8x8, 8x8 stride 2, 4x4)"
    )

    t0 = time.perf_counter()
    acc, sigmas, exact = train(args, data, project=True)
    t_proj = time.perf_counter() - t0
    t0 = time.perf_counter()
    base_acc, base_sigmas, base_exact = train(args, data, project=False)
    t_base = time.perf_counter() - t0

    rows = (
        ("with projection:   ", acc, sigmas, exact, t_proj),
        ("without projection:", base_acc, base_sigmas, base_exact, t_base),
    )
    for label, test_acc, certified, exact_values, seconds in rows:
        fmt = "  ".join(f"{s:.4f}" for s in certified)
        fmt_exact = "  ".join(f"{s:.4f}" for s in exact_values)
        print(
            f"{label} test accuracy {test_acc:.3f}  final sigma_max {fmt}  "
            f"(exact: {fmt_exact})  ({seconds:.1f} s)"
        )
    ok = all(s <= args.bound for s in sigmas)
    print(f"every conv within the bound {args.bound}: {'yes' if ok else 'NO'}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
