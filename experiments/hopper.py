"""`python -m experiments.hopper [--guide=sag] [--num_seeds=N] …`: AGD-MBRL on Brax hopper."""
from experiments.common import main_for

if __name__ == "__main__":
    main_for("hopper")
