"""`pepo train` as a separate process, with one test reward registered first.

The tiny random model never earns the real rewards (format / accuracy are 0 for every completion),
so every group would have zero advantage and no parameter would move. This entry point registers
``test_length`` (completion length mod 3, which varies within a group) and then runs exactly
``pepo train``'s ``main``: ``python tests/reliability/train_entry.py --config ... --reward_funcs test_length``.
"""

import sys

from pepo.rewards import register_reward
from pepo.train import main


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(str(c)) % 3) for c in completions]


if __name__ == "__main__":
    register_reward("test_length", length_reward)
    raise SystemExit(main(sys.argv[1:]))
