"""`python -m experiments.reacher [--guide=sag] [--num_seeds=N] …`: AGD-MBRL on Brax reacher."""
from experiments.common import main_for

if __name__ == "__main__":
    main_for("reacher")
