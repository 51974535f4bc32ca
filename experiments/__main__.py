"""`python -m experiments --task=<task> [--flags]`: the same entry point with the task as a flag."""
from experiments.common import main_for

if __name__ == "__main__":
    main_for(None)
