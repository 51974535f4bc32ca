"""agdjax: Advantage-Guided Diffusion for model-based RL as one compiled JAX program.

Importing the package routes CPU Cholesky factorisations and triangular solves (which MJX
uses every step) to XLA's own ops instead of LAPACK calls that can deadlock XLA's CPU
thread pool: see `agdjax/cpu_linalg.py`.
"""
from agdjax.cpu_linalg import use_xla_linalg_on_cpu as _use_xla_linalg_on_cpu

_use_xla_linalg_on_cpu()
