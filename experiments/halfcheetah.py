"""`python -m experiments.halfcheetah [--guide=sag] [--num_seeds=N] …`: AGD-MBRL on Brax halfcheetah."""
from experiments.common import main_for

if __name__ == "__main__":
    main_for("halfcheetah")
