"""`python -m experiments --task=<task> [--flags]`: the same entry point with the task as a flag."""
from absl import flags

from experiments import common
from experiments.common import main_for

if __name__ == "__main__":
    flags.adopt_module_key_flags(common)  # --help lists the project's flags
    main_for(None)
