"""Claims: which process trains which run of a sweep, when several processes on one or more
machines share the sweep folder (repro --shard K/N). Framework-free; no flock (network
filesystems do not keep it reliably), only operations that NFSv3+ performs atomically on
the server: link(2) and rename(2).

The rule:
- Claim before training. DIR/run-K.claim is created with atomic.create_exclusive (the
  content written to a scratch file, then hard-linked to the name; link fails when the name
  exists), so of any number of processes that find seed K unclaimed at once, exactly one
  makes the file. It names its holder: host, pid, the training child's pid once started, a
  machine id (host, boot id, pid namespace) and a random token. The others say who holds
  it, in one line, and go on to their next seed.
- Heartbeat. While the run trains, a thread of the claiming process reads the claim back
  and, if the token is still its own, touches the file: its modification time is the
  heartbeat, every stale_after / 20 s (30 s for the default limit).
- Stale. A claim is stale when its heartbeat is older than stale_after (STALE_AFTER_S, 600 s
  by default), or when it was made on this very machine by processes that are all gone.
  The limit is long beside what it must absorb: NFS clients cache file attributes (the
  mtime) for up to 60 s, clocks of two machines differ a little, a loaded machine can
  starve the heartbeat thread for seconds, and a holder that dies leaves its child a step
  and a checkpoint to finish. It is short beside a 24-epoch run, which it delays only
  when a process died.
- Takeover. A process that finds a stale claim renames it to a name of its own
  (run-K.claim.stale-TOKEN). Rename moves the name at most once, so of two takers only
  one gets it; that one checks that what it moved is the claim it judged stale (a fresh
  claim made in between is put back with link, under the same inode), deletes it, and
  then claims the seed as above, where again only one process can win. The run resumes
  from its checkpoint.
- Fencing. A holder whose claim now holds another token (taken over), or that has not been
  able to refresh it for half the limit (a lost mount), stops its child at once (SIGTERM:
  the child saves a checkpoint and exits), so that two processes never keep training one
  run. A repro that dies takes its child with it (Linux: the parent-death signal).
- Release. A finished run's claim is deleted, and so is that of a run whose child stopped,
  so that any process may go on with it.
"""
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from legacy_eager.atomic import create_exclusive, write_json

STALE_AFTER_S = 600.0
SUFFIX = ".claim"


def heartbeat_every(stale_after):
    return min(30.0, stale_after / 20)


def machine_id():
    """Where a pid means this process's pid: host, boot and pid namespace. None where that
    cannot be known (then only the heartbeat's age can make a claim stale)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{namespace}"


def running(pid):
    """Whether process `pid` runs on this machine; a zombie (exited, not yet reaped) does not."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Holder:
    """What a claim file says, and its heartbeat (the file's modification time)."""
    host: str | None
    pid: int | None
    child_pid: int | None
    machine: str | None
    token: str | None
    heartbeat: float

    def who(self):
        return f"{self.host or 'an unknown host'} pid {self.pid if self.pid else '?'}"

    def age(self, now=None):
        return max(0.0, (time.time() if now is None else now) - self.heartbeat)

    def stale_reason(self, stale_after, here=None, now=None):
        """Why this claim may be taken over; None while its holder holds it."""
        age = self.age(now)
        if age > stale_after:
            return f"heartbeat {age:.0f} s ago, over the {stale_after:g} s limit"
        here = machine_id() if here is None else here
        if (self.machine and self.machine == here
                and not running(self.pid) and not running(self.child_pid)):
            return f"pid {self.pid} on this machine is gone"
        return None

    def describe(self, stale_after, now=None):
        reason = self.stale_reason(stale_after, now=now)
        if reason:
            return f"stale claim by {self.who()} ({reason})"
        return f"claimed by {self.who()}, heartbeat {self.age(now):.0f} s ago"


def read_claim(path):
    """The claim at `path`, or None when there is none. Opening the file makes an NFS client
    fetch its attributes afresh (close-to-open), so the heartbeat read is the server's."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            heartbeat = os.fstat(f.fileno()).st_mtime
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        info = info if isinstance(info, dict) else {}
    except ValueError:
        info = {}  # not ours to judge but by its age
    return Holder(host=info.get("host"), pid=info.get("pid"), child_pid=info.get("child_pid"),
                  machine=info.get("machine"), token=info.get("token"), heartbeat=heartbeat)


class Claim:
    """A claim this process holds."""

    def __init__(self, path, info):
        self.path, self.info = path, info

    def holds(self, recheck_after=1.0):
        """Whether the claim file is still this process's. A missing file is looked at once
        more after a moment: a taker that moved it by mistake puts it back."""
        holder = read_claim(self.path)
        if holder is None and recheck_after:
            time.sleep(recheck_after)
            holder = read_claim(self.path)
        return holder is not None and holder.token == self.info["token"]

    def refresh(self):
        """The heartbeat: touch the file if it is still ours. False when it is not."""
        if not self.holds():
            return False
        os.utime(self.path)
        return True

    def record_child(self, pid):
        """Name the training child, so that a process on this machine can tell when both are
        gone. The file is replaced whole (a fresh claim: nobody can judge it stale yet)."""
        if self.holds(recheck_after=0):
            self.info = dict(self.info, child_pid=pid)
            write_json(self.path, self.info)

    def release(self):
        if self.holds(recheck_after=0):
            os.unlink(self.path)


def _put_aside(path, judged, stale_after):
    """Take a claim judged stale out of the way; True when this process took that very claim
    (only one of several takers can), False when it was gone or proved fresh."""
    aside = f"{path}.stale-{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another taker moved it first
    moved = read_claim(aside)
    if moved is None or moved.token != judged.token or not moved.stale_reason(stale_after):
        try:  # a claim made (or refreshed) since it was judged: put it back, same inode
            os.link(aside, path)
        except FileExistsError:
            pass  # a third process claimed the free name; this one's holder stops its child
        except OSError:
            if not os.path.exists(path):
                os.rename(aside, path)
        if os.path.exists(aside):
            os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def acquire(path, stale_after=STALE_AFTER_S, log=print):
    """A Claim on `path` for this process, or the Holder that keeps it."""
    info = {"host": socket.gethostname(), "pid": os.getpid(), "child_pid": None,
            "machine": machine_id(), "token": uuid.uuid4().hex,
            "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    holder = None
    for _ in range(5):  # each pass: another process released, took over or claimed meanwhile
        if create_exclusive(path, json.dumps(info, indent=2, sort_keys=True) + "\n"):
            return Claim(path, info)
        holder = read_claim(path)
        if holder is None:
            continue  # released in between
        reason = holder.stale_reason(stale_after)
        if reason is None:
            return holder
        if _put_aside(path, holder, stale_after):
            log(f"{path}: took over the stale claim of {holder.who()} ({reason})")
    return read_claim(path) or holder or Holder(None, None, None, None, None, time.time())


class Heartbeat:
    """Refreshes `claim` every `every` seconds in a thread while the block runs. Calls
    `lost(reason)` once, from that thread, when the claim is no longer ours or could not be
    refreshed for `give_up` seconds."""

    def __init__(self, claim, every, give_up, lost, clock=time.monotonic):
        self.claim, self.every, self.give_up = claim, every, give_up
        self.lost, self.clock = lost, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _beat(self):
        refreshed = self.clock()
        while not self._stop.wait(self.every):
            try:
                if not self.claim.refresh():
                    return self.lost("its claim was taken over by another process")
                refreshed = self.clock()
            except OSError as e:
                if self.clock() - refreshed > self.give_up:
                    return self.lost(f"its claim could not be refreshed for {self.give_up:.0f} s "
                                     f"({e.strerror or e})")
