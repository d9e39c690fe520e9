"""Flags and their defaults (the seed's Colab form values), and the named recipes, one of
which (airbench94) names another network than the seed's DavidNet. Framework-free."""
import argparse
import dataclasses
from dataclasses import dataclass

from legacy_eager.cli import Parser, checked, fraction, positive
from legacy_eager.data.common import LAYOUTS
from legacy_eager.errors import UsageError


@dataclass
class Config:
    epochs: int = 24            # airbench94: a number (9.9), its steps ceil(steps per epoch x epochs)
    batch_size: int = 512       # airbench94: 1024, full batches only
    lr: float = 0.4             # peak of the one-cycle schedule, per batch; the optimizer gets lr / batch_size
                                # (airbench94: 11.5 per 1024 examples, decoupled from the momentum)
    momentum: float = 0.9       # Nesterov (airbench94: 0.85)
    weight_decay: float = 5e-4  # per example; the loop adds v * weight_decay * batch_size to the summed-loss gradient
                                # (airbench94: 0.0153 per 1024 examples, decoupled from lr)
    width: int = 64             # channels of the first layer (c); the blocks use 2c, 4c, 8c
    mode: str = "function"      # eager: the seed's loop as written; function: the same step in tf.function; xla: compiled by XLA
    pipeline: str = "fast"      # seed: the seed's tf.data chain; fast: uint8, whole-batch augmentation
    precision: str = "fp32"     # fp32, mixed_float16 (with dynamic loss scaling) or mixed_bfloat16
    wd_loop: str = "intended"   # intended: apply the decay; seed: the seed's no-op loop
    data: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    out: str | None = None
    devices: int = 1             # replicas (GPUs, else logical CPU devices) of MirroredStrategy
    deterministic: bool = False  # op determinism: the same seed gives the same run, bit for bit
    resume: str | None = None    # continue the run in this folder (its own flags)
    cutout: int = 0             # Page's Cutout: an N x N square per training image set to 0 (not in the seed)
    dropout: float = 0.05       # the seed's rate after every conv; 0: the layers pass through (Page's dawn.py has none)
    allow_cpu: bool = False     # train on the CPU although nvidia-smi lists a GPU TensorFlow cannot use
    recipe: str | None = None   # the --recipe that set some of the flags above (RECIPES), if any
    network: str = "davidnet"   # davidnet (legacy_eager) or airbench94 (airbench_tf); set by --recipe

    # How this process runs, not what the run is: --resume takes them anew.
    PER_PROCESS = ("resume", "allow_cpu")

    def to_dict(self):
        return dataclasses.asdict(self)


# The rows of the published-vs-port table, by name. A recipe sets only the flags that
# define it; a flag typed on the command line wins over its recipe.
RECIPES = {
    # the notebook as published: its weight-decay loop assigns to a copy, so changes nothing
    "notebook": {"wd_loop": "seed", "cutout": 0, "dropout": 0.05},
    # this port's default: the seed's recipe with the weight decay it meant to apply
    "default": {"wd_loop": "intended", "cutout": 0, "dropout": 0.05},
    # Page's DAWNBench entry (dawn.py): Cutout 8x8, no dropout
    "dawnbench": {"wd_loop": "intended", "cutout": 8, "dropout": 0.0},
    # Keller Jordan's airbench94.py (airbench_tf): its network, length and decoupled figures
    "airbench94": {"network": "airbench94", "epochs": 9.9, "batch_size": 1024, "lr": 11.5,
                   "momentum": 0.85, "weight_decay": 0.0153},
}
NETWORKS = ("davidnet", "airbench94")
# Flags of the seed's recipe that mean nothing to airbench94's: typed, they are refused.
AIRBENCH_REFUSED = ("wd_loop", "cutout", "dropout", "width", "pipeline", "devices")


def flag_name(field):
    return "--" + field.replace("_", "-")


def describe_recipe(name):
    """`--wd-loop seed --cutout 0 --dropout 0.05`: the flags a recipe sets (and its network,
    which no flag sets)."""
    return " ".join(f"{'network' if k == 'network' else flag_name(k)} "
                    + (f"{v:g}" if isinstance(v, float) else str(v))
                    for k, v in RECIPES[name].items())


# A number here; DavidNet's recipe then requires a whole one (parse_args).
_epochs = checked(float, "a positive integer (a positive number such as 9.9 with --recipe "
                         "airbench94)", lambda v: 0 < v < 1e6)
_non_negative = checked(float, "a number >= 0", lambda v: v >= 0)


PROG = "python -m legacy_eager.train"


def parser(prog=PROG):
    """The training flags, for `python -m legacy_eager.train` and for the commands that take
    them too (`prog`: export.train_and_export, the parent of export.repro's)."""
    d = Config()
    p = Parser(prog=prog,
                description="Train DavidNet on CIFAR-10 with the seed's recipe (TF 1.x eager "
                            "port). The defaults are the port's recipe (--recipe default): the "
                            "seed's 24 epochs with its weight decay applied; 94% takes flip "
                            "TTA or --recipe dawnbench (docs/reproducing.md). --recipe "
                            "airbench94 trains Keller Jordan's airbench94 network instead; "
                            "--epochs, --batch-size, --lr, --momentum and --weight-decay then "
                            "take its meanings (each flag's help says).",
                epilog="recipes (--recipe NAME sets these flags; a flag you type wins):\n"
                       + "\n".join(f"  {name:10} {describe_recipe(name)}" for name in RECIPES),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=tuple(RECIPES), default=None, metavar="NAME",
                   help="a named recipe: " + ", ".join(RECIPES) + " (listed below); sets "
                        "the flags listed unless you type them")
    p.add_argument("--epochs", type=_epochs, default=d.epochs,
                   help="default %(default)s; airbench94: a number (default 9.9), its run "
                        "takes ceil(full batches per epoch x epochs) steps, the last epoch cut "
                        "short")
    p.add_argument("--batch-size", type=positive(int, "integer"), default=d.batch_size,
                   help="default %(default)s; the last partial batch is kept (airbench94: "
                        "1024, the last partial batch dropped)")
    p.add_argument("--lr", type=positive(float, "number"), default=d.lr,
                   help="peak of the one-cycle schedule, per batch; the optimizer gets "
                        "lr / batch size (default %(default)s). airbench94: the peak of its "
                        "triangle per 1024 examples, decoupled from the momentum: the optimizer "
                        "gets lr / (1024 (1 + 1 / (1 - momentum))), BatchNorm biases 64x (11.5)")
    p.add_argument("--momentum", type=fraction, default=d.momentum,
                   help="Nesterov momentum (default %(default)s; airbench94: 0.85)")
    p.add_argument("--weight-decay", type=_non_negative, default=d.weight_decay,
                   help="per example: the summed loss's gradient gets v * wd * batch size "
                        "(default %(default)s). airbench94: per 1024 examples, decoupled from "
                        "lr: each step shrinks a weight by about wd * batch size / (1024 (1 + "
                        "1 / (1 - momentum))) times the schedule (0.0153)")
    p.add_argument("--width", type=positive(int, "integer"), default=d.width,
                   help="channels of the first layer (the blocks use 2x, 4x, 8x); 64 is the "
                        "blog's network, 16 is for quick checks (default %(default)s)")
    p.add_argument("--mode", choices=("eager", "function", "xla"), default=d.mode,
                   help="eager: the seed's loop as written; function: the same step in "
                        "tf.function; xla: tf.function(jit_compile=True) (default %(default)s)")
    p.add_argument("--pipeline", choices=("seed", "fast"), default=d.pipeline,
                   help="seed: the seed's tf.data chain; fast: uint8 images, whole-batch "
                        "crop/flip/normalise in one compiled gather (default %(default)s)")
    p.add_argument("--precision", choices=("fp32", "mixed_float16", "mixed_bfloat16"),
                   default=d.precision,
                   help="compute precision; variables and exports stay float32; float16 "
                        "uses dynamic loss scaling (default %(default)s)")
    p.add_argument("--wd-loop", choices=("intended", "seed"), default=d.wd_loop,
                   help="intended: apply weight decay; seed: the seed's loop, which changes "
                        "nothing (default %(default)s)")
    p.add_argument("--cutout", type=checked(int, "an integer in 0..32", lambda v: 0 <= v <= 32),
                   default=d.cutout, metavar="N",
                   help="Page's Cutout augmentation: one N x N square per training image, set "
                        "to the mean (fast pipeline only; default 0: none, as in the seed)")
    p.add_argument("--dropout", type=fraction, default=d.dropout, metavar="P",
                   help="dropout rate after every convolution, in [0, 1); 0 turns it off, as in "
                        "Page's DAWNBench recipe (default %(default)s, the seed's)")
    p.add_argument("--data", metavar="PATH", default=d.data,
                   help=f"CIFAR-10 as {LAYOUTS}; default $CIFAR10_DATA, else the seed's "
                        "download (tf.keras.datasets.cifar10)")
    p.add_argument("--train-subset", type=positive(int, "integer"), default=None, metavar="N",
                   help="train on N random training images, drawn with --seed")
    p.add_argument("--test-subset", type=positive(int, "integer"), default=None, metavar="N",
                   help="evaluate on N random test images, drawn with --seed")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seeds the subsets, weight initialisation, shuffling, augmentation (crop, "
                        "flip, cutout; airbench94's flips and translations) and dropout "
                        "(default %(default)s)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="new run folder (default runs/<timestamp>)")
    p.add_argument("--devices", type=positive(int, "integer"), default=d.devices,
                   help="train on N devices with tf.distribute.MirroredStrategy: N GPUs, or N "
                        "logical CPU devices on a machine without GPUs; the global batch is "
                        "still --batch-size (default %(default)s)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic ops: two runs with the same --seed give the same "
                        "metrics and weights (slower on a GPU)")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR from its newest good checkpoint, with "
                        "DIR's own flags (give no others)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="train on the CPU even when nvidia-smi lists a GPU that TensorFlow "
                        "cannot use (without it such a run stops with exit 2)")
    return p


_UNTYPED = object()


def typed_fields(argv, p=None):
    """The Config fields whose flags appear in argv, whatever their values: argparse fills
    in a default only where the namespace has no value yet, so the fields left at the
    marker were not typed. `p`: the training parser to read them with (default parser())."""
    fields = [f.name for f in dataclasses.fields(Config)]
    namespace = (p or parser()).parse_args(
        argv, argparse.Namespace(**dict.fromkeys(fields, _UNTYPED)))
    return {k for k in fields if getattr(namespace, k) is not _UNTYPED}


def recipe_record(config):
    """What config.json says of the recipe: its name, the flags it set, and those a typed
    flag overrode; None without --recipe."""
    if config.recipe is None:
        return None
    values = config.to_dict()
    return {"name": config.recipe,
            "set": {k: v for k, v in RECIPES[config.recipe].items() if values[k] == v},
            "overridden": {k: values[k] for k, v in RECIPES[config.recipe].items()
                           if values[k] != v}}


def parse_args(argv=None, p=None):
    """The run's Config from the training flags: `p` (default parser(); a command that takes
    the training flags passes its own) reads them, one line and exit 2 on a bad one; then a
    recipe fills in the flags not typed."""
    p = p or parser()
    args = vars(p.parse_args(argv))
    typed = typed_fields(argv, p)
    if args["resume"]:
        given = sorted(typed - {"resume", *Config.PER_PROCESS})
        if given:
            flags = ", ".join(flag_name(k) for k in given)
            raise UsageError(f"--resume continues a run with its own flags; drop {flags}")
    if args["recipe"]:
        args.update({k: v for k, v in RECIPES[args["recipe"]].items() if k not in typed})
    config = Config(**args)
    check_network_flags(config, typed)
    if float(config.epochs).is_integer():
        config.epochs = int(config.epochs)
    return config


def check_network_flags(config, typed):
    """One line for a flag that means nothing to the run's network, or an --epochs that
    DavidNet's whole-epoch schedule cannot take."""
    if config.network == "davidnet":
        if not float(config.epochs).is_integer():
            raise UsageError(f"--epochs {config.epochs:g}: DavidNet's recipes take a whole number "
                             "of epochs (a fraction such as 9.9 only with --recipe airbench94)")
        return
    refused = [k for k in AIRBENCH_REFUSED if k in typed]
    if refused:
        raise UsageError(f"{flag_name(refused[0])}: a flag of the seed's recipe, which means "
                         f"nothing to --recipe {config.recipe} (its network has no dropout or "
                         "width, its pipeline is its own, it trains on one device)")
    if config.mode == "eager":
        raise UsageError(f"--mode eager: the seed's eager loop; --recipe {config.recipe} runs "
                         "its step in tf.function (--mode function) or XLA (--mode xla)")
