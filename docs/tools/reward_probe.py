import os, sys, dataclasses, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/agdjax-jax"))
from agdjax import envs, replay as rb
from agdjax.train import make_train
from agdjax.wm_error import load_run
run = sys.argv[1]
cfg, seeds, r = load_run(run)
state = jax.tree.map(lambda x: x[0], r.state)  # seed 0
prog = make_train(dataclasses.replace(cfg, agent_batch=512))
env = envs.make_env(cfg.task, cfg.backend)
@jax.jit
def probe(state, key):
    k_s, k_im = jax.random.split(key)
    im = prog.phases["imagine"](state, key)
    s0, phys = rb.sample_starts(state.replay, k_s, 512)
    template = jax.tree.map(lambda x: x[0], state.env.state)
    acts = jnp.swapaxes(im.action[:, :-1], 0, 1)
    so, _, sr, _ = envs.rollout(env, template, phys, s0, lambda a, o: a, acts, action_bound=cfg.env_action_bound)
    return im, so, sr
im, so, sr = probe(state, jax.random.PRNGKey(5))
im, so, sr = jax.tree.map(np.asarray, (im, so, sr))
a = np.clip(im.action[:, :-1], -1, 1); ctrl = -0.1 * (a**2).sum(-1)
print("checkpoint env step", r.driver.get("env_steps"))
for k in [0, 1, 4, 8]:
    ri, rs = im.reward[:, k], sr[:, k]
    c = np.corrcoef(ri, rs)[0, 1]
    # regression of reward on control cost term and the start velocity obs[8] of row k
    X = np.stack([ctrl[:, k], im.obs[:, k, 8] if k else so[:, 0, 8], np.ones_like(ri)], 1)
    bi = np.linalg.lstsq(X, ri, rcond=None)[0]; bs = np.linalg.lstsq(X, rs, rcond=None)[0]
    print(f"k={k}: corr(imag r, sim r)={c:.3f}  std imag {ri.std():.3f} sim {rs.std():.3f}  mean imag {ri.mean():.3f} sim {rs.mean():.3f}  "
          f"slope on ctrl: imag {bi[0]:.2f} sim {bs[0]:.2f}")
# action effect: next-state velocity response to action deviation (a - mu)
z = (im.action[:, 0] - im.policy_mean[:, 0])
dv_i = im.obs[:, 1, 8] - im.obs[:, 0, 8]; dv_s = so[:, 1, 8] - so[:, 0, 8]
bi = np.linalg.lstsq(np.c_[z, np.ones(len(z))], dv_i, rcond=None)[0]; bs = np.linalg.lstsq(np.c_[z, np.ones(len(z))], dv_s, rcond=None)[0]
print("d(vel_x)/d(a - mu) per action dim: imag", np.round(bi[:-1], 3), " sim", np.round(bs[:-1], 3))
for j in [8, 11, 14]:
    print(f"obs dim {j}: corr(imag s1, sim s1)={np.corrcoef(im.obs[:,1,j], so[:,1,j])[0,1]:.3f}, corr(imag delta, sim delta)={np.corrcoef(im.obs[:,1,j]-so[:,0,j], so[:,1,j]-so[:,0,j])[0,1]:.3f}")
print("z std per dim", np.round(((im.action[:, :-1]-im.policy_mean[:, :-1])/im.policy_std[:, :-1]).std((0,1)), 2))
mu = im.policy_mean[:, :-1]
print("mean |mu| per dim", np.round(np.abs(mu).mean((0,1)), 2), " frac |mu|>0.9:", float((np.abs(mu) > 0.9).mean()))
print("ctrl cost of mean action per step", float((0.1*(np.clip(mu,-1,1)**2).sum(-1)).mean()), " of sampled actions", float(-ctrl.mean()))
