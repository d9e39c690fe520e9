"""airbench94 in PyTorch on the CPU: the reference for airbench_tf (./run.sh --recipe
airbench94), following the facts of Keller Jordan's airbench94.py (KellerJordan/cifar10-airbench):
its network, whitening initialisation, decoupled Nesterov SGD, triangular schedule,
lookahead EMA, alternating flip and translation, and TTA level 2. Written for this project,
not copied; run with the peers' virtualenv (torch 2.13 CPU), not the project's:

    PYTHONPATH=. /root/peers-venv/bin/python -m bench.peers.airbench94_torch \\
        --data ../shared/data/cifar10-png.tar.gz --seeds 0 1 2 3 4 --precision bf16 --out ref.json

Differences from airbench94.py, each for the CPU or for the same data as the port:
- fp32, or bf16 autocast (--precision bf16) instead of fp16 on a GPU; BatchNorm in float32
  either way (autocast keeps batch_norm in float32, as airbench94 keeps its BatchNorm float).
- The images come from the same archive as the port's, decoded by legacy_eager.data
  (numpy and Pillow only). The image-folder copies list the training images class by
  class, so the whitening uses 5,000 images drawn at random with the seed, as the port
  does, where airbench94 takes the first 5,000 of its (randomly ordered) file.
- Timing with time.perf_counter on the host: training (whitening initialisation included,
  as airbench94 counts it) apart from evaluation; no CUDA events.
Prints a row per epoch and, per seed, a JSON line; --out gets the runs and their statistics.
"""
import contextlib
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# airbench94.py's hyperparameters
EPOCHS, BATCH_SIZE = 9.9, 1024
LR, MOMENTUM, WEIGHT_DECAY = 11.5, 0.85, 0.0153      # lr and wd per 1024 examples
BIAS_SCALER, LABEL_SMOOTHING = 64.0, 0.2
EMA_START, EMA_EVERY, EMA_BASE, EMA_POW = 3, 5, 0.95, 3.0
WHITEN_BIAS_EPOCHS, WHITEN_IMAGES, WHITEN_EPS = 3, 5000, 5e-4
TRANSLATE, BN_MOMENTUM, BN_EPS = 2, 0.6, 1e-12
WIDTHS, SCALE = (64, 256, 256), 1 / 9
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


# ---------------------------------------------------------------- data
def load(path, seed, train_subset=None, test_subset=None):
    """uint8 NHWC arrays from the project's own reader, cut to seeded subsets as the port's
    --train-subset / --test-subset (numpy's generator, seed --seed)."""
    from legacy_eager.data import load_cifar10, random_subset

    data = load_cifar10(path)
    rng = np.random.default_rng(seed)
    train = random_subset(data.x_train, data.y_train, train_subset, rng, "--train-subset")
    test = random_subset(data.x_test, data.y_test, test_subset, rng, "--test-subset")
    return train, test


def to_tensor(x):
    """uint8 NHWC -> normalised float32 NCHW (channels_last in memory)."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    return ((t - MEAN) / STD).contiguous(memory_format=torch.channels_last)


def translated(padded, r, generator):
    """A random crop of each reflect-padded image: a translation of -r..r on each axis."""
    n, size = len(padded), padded.shape[-1] - 2 * r
    shifts = torch.randint(0, 2 * r + 1, (n, 2), generator=generator)
    out = torch.empty((n, padded.shape[1], size, size), dtype=padded.dtype)
    for sy in range(2 * r + 1):
        for sx in range(2 * r + 1):
            pick = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[pick] = padded[pick, :, sy:sy + size, sx:sx + size]
    return out


class TrainBatches:
    """Alternating flip: a random half mirrored once, then all mirrored in odd epochs;
    translation by up to 2 pixels of the reflect-padded images; full batches only."""

    def __init__(self, images, labels, batch_size, generator):
        self.labels, self.batch_size, self.generator = labels, batch_size, generator
        flip = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        self.padded = F.pad(images, (TRANSLATE,) * 4, mode="reflect")
        self.epoch = 0

    def __len__(self):
        return len(self.labels) // self.batch_size

    def __iter__(self):
        images = translated(self.padded, TRANSLATE, self.generator)
        if self.epoch % 2 == 1:
            images = images.flip(-1)
        self.epoch += 1
        order = torch.randperm(len(images), generator=self.generator)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield images[idx].contiguous(memory_format=torch.channels_last), self.labels[idx]


# ---------------------------------------------------------------- network
class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels):
        super().__init__(channels, eps=BN_EPS, momentum=1 - BN_MOMENTUM)  # torch's momentum is 1 - ours
        self.weight.requires_grad = False  # scale fixed at 1, bias learned


class Conv(nn.Conv2d):
    """3x3 'same' convolution without bias; its first c_in filters start as the identity."""

    def __init__(self, c_in, c_out):
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:c_in])


class ConvGroup(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(c_in, c_out), nn.MaxPool2d(2), BatchNorm(c_out)
        self.conv2, self.norm2, self.activ = Conv(c_out, c_out), BatchNorm(c_out), nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        with torch.no_grad():
            self.whiten.bias.zero_()
        self.groups = nn.Sequential(ConvGroup(24, WIDTHS[0]), ConvGroup(WIDTHS[0], WIDTHS[1]),
                                    ConvGroup(WIDTHS[1], WIDTHS[2]))
        self.pool = nn.MaxPool2d(3)
        self.linear = nn.Linear(WIDTHS[2], 10, bias=False)

    def forward(self, x):
        x = self.pool(self.groups(F.gelu(self.whiten(x))))
        return self.linear(x.flatten(1)) * SCALE


def init_whitening(conv, images):
    """Filters from the eigenvectors of the 2x2 patches' (uncentred) covariance, scaled by
    1/sqrt(eigenvalue + eps), and their negatives."""
    c, (h, w) = images.shape[1], conv.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1)            # N C H' W' h w
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * h * w).double()
    covariance = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(covariance)
    values, vectors = values.flip(0), vectors.T.flip(0)
    filters = (vectors / torch.sqrt(values + WHITEN_EPS)[:, None]).reshape(-1, c, h, w)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([filters, -filters]).float())


# ---------------------------------------------------------------- training
def triangle(steps, start=0.2, peak=0.23, end=0.07):
    return np.interp(np.arange(steps + 1), [0, int(peak * steps), steps], [start, 1.0, end])


def tta_logits(net, images):
    """Level 2: the image and its mirror 1/4 each, the mirrored and unmirrored translations
    by one pixel up-left and down-right 1/8 each."""
    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))
    padded = F.pad(images, (1,) * 4, mode="reflect")
    shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    return 0.5 * mirror(images) + 0.25 * (mirror(shifted[0]) + mirror(shifted[1]))


def evaluate(net, images, labels, autocast, tta=False, batch=2000):
    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad(), autocast():
        for i in range(0, len(images), batch):
            x, y = images[i:i + batch], labels[i:i + batch]
            out = (tta_logits(net, x) if tta else net(x)).float()
            loss += F.cross_entropy(out, y, label_smoothing=LABEL_SMOOTHING, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    return correct / len(images), loss / len(images)


def train_one(seed, data, precision, epochs, log):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = data
    train_images, test_images = to_tensor(x_train), to_tensor(x_test)
    train_labels, test_labels = torch.from_numpy(y_train), torch.from_numpy(y_test)
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16"
                else contextlib.nullcontext)
    loader = TrainBatches(train_images, train_labels, BATCH_SIZE, generator)
    total_steps = math.ceil(len(loader) * epochs)
    factors = triangle(total_steps)

    kilostep_scale = 1024 * (1 + 1 / (1 - MOMENTUM))
    lr = LR / kilostep_scale                     # for the summed loss
    decay = WEIGHT_DECAY * BATCH_SIZE / kilostep_scale
    net = Net().to(memory_format=torch.channels_last)
    norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    lr_bias = lr * BIAS_SCALER
    opt = torch.optim.SGD([dict(params=norm_biases, lr=lr_bias, weight_decay=decay / lr_bias),
                           dict(params=others, lr=lr, weight_decay=decay / lr)],
                          momentum=MOMENTUM, nesterov=True)
    bases = [g["lr"] for g in opt.param_groups]

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 5000])  # the port's draw of the whitening images
    pick = np.sort(rng.choice(len(train_images), min(WHITEN_IMAGES, len(train_images)), replace=False))
    init_whitening(net.whiten, train_images[torch.from_numpy(pick)])
    train_s = time.perf_counter() - t0

    ema, step = None, 0
    for epoch in range(math.ceil(epochs)):
        net.whiten.bias.requires_grad = epoch < WHITEN_BIAS_EPOCHS
        net.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            for g, base in zip(opt.param_groups, bases):
                g["lr"] = base * factors[step]
            with autocast():
                out = net(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=LABEL_SMOOTHING, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum, correct, seen = loss_sum + loss.item(), correct + (out.argmax(1) == y).sum().item(), seen + len(y)
            if epoch >= EMA_START and step % EMA_EVERY == 0:
                state = [t for t in net.state_dict().values() if t.dtype.is_floating_point]
                if ema is None:
                    ema = [t.clone() for t in state]
                else:
                    rho = EMA_BASE ** EMA_EVERY * (step / total_steps) ** EMA_POW
                    for e, t in zip(ema, state):
                        e.lerp_(t, 1 - rho)
                        t.copy_(e)
            if step >= total_steps:
                break
        if ema is not None:  # the network takes the EMA's weights at the end of each epoch
            for e, t in zip(ema, [t for t in net.state_dict().values() if t.dtype.is_floating_point]):
                t.copy_(e)
        epoch_s = time.perf_counter() - t0
        train_s += epoch_s
        t0 = time.perf_counter()
        final = epoch + 1 == math.ceil(epochs)
        val_acc, val_loss = evaluate(net, test_images, test_labels, autocast)
        tta_acc = evaluate(net, test_images, test_labels, autocast, tta=True)[0] if final else None
        eval_s = time.perf_counter() - t0
        log(f"{seed:>4}  {epoch + 1:>5}  {loss_sum / seen:>10.4f}  {correct / seen:>9.4f}  "
            f"{val_loss:>8.4f}  {val_acc:>7.4f}  {'' if tta_acc is None else f'{tta_acc:.4f}':>6}  "
            f"{epoch_s:>7.1f}  {eval_s:>6.1f}")
    return {"seed": seed, "val_acc": val_acc, "val_acc_tta": tta_acc, "train_time_s": train_s,
            "total_steps": total_steps, "precision": precision, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def statistics(runs, target=0.94):
    stats = {}
    for key in ("val_acc", "val_acc_tta", "train_time_s"):
        v = np.array([r[key] for r in runs])
        stats[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      "min": float(v.min()), "max": float(v.max())}
    stats["reached_target_tta"] = int(sum(r["val_acc_tta"] >= target for r in runs))
    return stats


def reference(argv):
    from legacy_eager.atomic import write_json
    from legacy_eager.cli import Parser, positive

    p = Parser(prog="python -m bench.peers.airbench94_torch", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the CIFAR-10 archive or folder the port reads")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=positive(float, "number"), default=EPOCHS)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--train-subset", type=positive(int, "integer"), default=None)
    p.add_argument("--test-subset", type=positive(int, "integer"), default=None)
    p.add_argument("--out", help="JSON file for the runs and their statistics")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}")
    print(f"{'seed':>4}  {'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'val loss':>8}  "
          f"{'val acc':>7}  {'tta':>6}  {'train s':>7}  {'eval s':>6}")
    runs = []
    for seed in args.seeds:
        data = load(args.data, seed, args.train_subset, args.test_subset)  # DataError: one line, exit 2
        run = train_one(seed, data, args.precision, args.epochs, print)
        print(json.dumps(run), flush=True)
        runs.append(run)
    report = {"runs": runs, "statistics": statistics(runs), "argv": sys.argv[1:]}
    s = report["statistics"]
    print(f"TTA accuracy {s['val_acc_tta']['mean']:.4f} +- {s['val_acc_tta']['std']:.4f} "
          f"(min {s['val_acc_tta']['min']:.4f}, max {s['val_acc_tta']['max']:.4f}, "
          f"{s['reached_target_tta']} of {len(runs)} >= 0.94); training "
          f"{s['train_time_s']['mean'] / 60:.1f} min mean")
    if args.out:
        write_json(args.out, report)
    return 0


def main(argv=None):
    from legacy_eager.errors import run_cli

    return run_cli(reference, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
