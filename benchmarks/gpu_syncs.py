"""Where a training run makes the host wait for the GPU: `mnist-cnn-train` under torch's sync debug mode.

    python benchmarks/gpu_syncs.py trainer=gpu trainer.max_epochs=1 test=false   # any mnist-cnn-train overrides

torch warns at every call that synchronizes the host with the GPU (`torch.cuda.set_sync_debug_mode`); this
counts the warnings by the line of code that made them and prints the most frequent first, each with the
stack of its first occurrence. A count near the number of training steps is a wait at every step. Without
a GPU nothing synchronizes and the count is 0.
"""

import atexit
import collections
import runpy
import sys
import traceback
import warnings

import torch

counts: collections.Counter[str] = collections.Counter()
first_stacks: dict[str, str] = {}


def record(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: object) -> None:
    """`warnings.showwarning`: count sync warnings by place, pass the others on."""
    if "synchroniz" not in str(message):
        print(f"{category.__name__}: {message} ({filename}:{lineno})", file=sys.stderr)
        return
    place = f"{filename}:{lineno}"
    counts[place] += 1
    first_stacks.setdefault(place, "".join(traceback.format_stack(limit=9)[:-2]))


def report() -> None:
    print(f"\nhost syncs: {sum(counts.values())} in all, by place")
    for place, count in counts.most_common():
        print(f"--- {count}x at {place}\n{first_stacks[place]}")


def main() -> None:
    if torch.cuda.is_available():
        torch.cuda.set_sync_debug_mode("warn")
    warnings.simplefilter("always")
    warnings.showwarning = record
    atexit.register(report)  # the training command ends with sys.exit
    sys.argv = ["mnist-cnn-train", *sys.argv[1:]]
    runpy.run_module("mnist_cnn.train", run_name="__main__")


if __name__ == "__main__":
    main()
