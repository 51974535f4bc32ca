"""Policy learners: a2c (the reference imagination learner), ppo and trpo (imagination
learners with a2c's `update` interface, and model-free baselines via `update_batch`);
onpolicy (the batch they share) and gae helpers."""
