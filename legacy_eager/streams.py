"""Keys of the run's random streams. Framework-free.

Every stateless random draw is keyed by a pair [key, counter]. Each stream (the shuffle
order, crop/flip, cutout, each dropout layer) gets its own key, a hash of its name, the
run's --seed and its index, so no two streams share a key for any seed (before this,
seed 0 gave the order, the crops and the first dropout layer all [0, n]).
"""
import hashlib

STREAMS = ("shuffle", "augment", "cutout", "dropout", "flip", "translate")


def stream_key(name, seed, index=0):
    """A 56-bit key (room to add a replica id and stay in int64) for stream `name`."""
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; expected one of {STREAMS}")
    digest = hashlib.sha256(f"davidnet/{name}/{int(seed)}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:7], "little")
