"""Policy learners: a2c (the reference imagination learner); gae helpers."""
