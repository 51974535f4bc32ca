"""`python -m experiments.walker2d [--guide=sag] [--num_seeds=N] …`: AGD-MBRL on Brax walker2d."""
from absl import flags

from experiments import common
from experiments.common import main_for

if __name__ == "__main__":
    flags.adopt_module_key_flags(common)  # --help lists the project's flags
    main_for("walker2d")
