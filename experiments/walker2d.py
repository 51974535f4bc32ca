"""`python -m experiments.walker2d [--guide=sag] [--num_seeds=N] …`: AGD-MBRL on Brax walker2d."""
from experiments.common import main_for

if __name__ == "__main__":
    main_for("walker2d")
