"""The same training step in PyTorch, for `python -m bench peers`; runs in the peers'
virtualenv (torch, no TensorFlow) and prints one JSON line.

    python -m bench.peers.torch_step --precision fp32|bf16 --batch-sizes 256,512
        --warmup 2 --steps 4 --threads 2 --dropout 0.05 [--compile]

The network is the port's (legacy_eager/model.py), layer for layer: 3x3 convolutions
without bias, each followed by dropout at --dropout's rate (at 0 no dropout layer: the
port's then pass their input through), BatchNorm (PyTorch's momentum 0.1 is Keras' 0.9,
epsilon 1e-5) and ReLU; max-pooling after the widening convolutions of blocks 1 to 3;
residual pairs in blocks 1 and 3; a global max-pool and a bias-free linear layer scaled by
0.125. The step is the port's: summed cross-entropy, backward, weight decay v * 5e-4 *
batch added to the gradient, Nesterov SGD with momentum 0.9 on every parameter.
The best CPU settings found: channels_last memory format for the model and the input,
bf16 through torch.autocast (weights stay float32, as the port's Keras policy keeps them),
and optionally torch.compile.
"""
import argparse
import json
import os
import sys
import time


def conv_bn(c_in, c_out, dropout):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.Dropout(dropout) if dropout else nn.Identity(),
                         nn.BatchNorm2d(c_out, momentum=0.1, eps=1e-5), nn.ReLU(inplace=True))


def davidnet(dropout, c=64, weight=0.125):
    import torch.nn as nn

    class Residual(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.res1 = conv_bn(channels, channels, dropout)
            self.res2 = conv_bn(channels, channels, dropout)

        def forward(self, h):
            return h + self.res2(self.res1(h))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                conv_bn(3, c, dropout),
                conv_bn(c, 2 * c, dropout), nn.MaxPool2d(2), Residual(2 * c),
                conv_bn(2 * c, 4 * c, dropout), nn.MaxPool2d(2),
                conv_bn(4 * c, 8 * c, dropout), nn.MaxPool2d(2), Residual(8 * c),
                nn.AdaptiveMaxPool2d(1), nn.Flatten())
            self.linear = nn.Linear(8 * c, 10, bias=False)

        def forward(self, x):
            return self.linear(self.body(x)) * weight
    return Net()


def parameter_shapes(model):
    """[[dims...]] of every trainable parameter."""
    return [list(p.shape) for p in model.parameters() if p.requires_grad]


def measure(batch_size, precision, warmup, steps, compile_, dropout):
    """images/s of `steps` training steps after one untimed step and `warmup` more."""
    import torch

    torch.manual_seed(0)
    model = davidnet(dropout=dropout).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.4 / batch_size, momentum=0.9, nesterov=True,
                          weight_decay=5e-4 * batch_size)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch_size) % 10

    forward = torch.compile(model) if compile_ else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(1 + warmup):  # the first traces (and compiles), the others warm up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return batch_size * steps / (time.perf_counter() - t), parameter_shapes(model)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peers.torch_step")
    p.add_argument("--precision", choices=("fp32", "bf16"), required=True)
    p.add_argument("--batch-sizes", default="256,512")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dropout", type=float, required=True)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = {"engine": "torch", "version": torch.__version__, "precision": args.precision,
              "threads": torch.get_num_threads(), "compiled": args.compile, "dropout": args.dropout,
              "images_per_s": {}}
    for b in map(int, args.batch_sizes.split(",")):
        result["images_per_s"][str(b)], result["parameter_shapes"] = measure(
            b, args.precision, args.warmup, args.steps, args.compile, args.dropout)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
