"""Does the denoiser use the actions, and do imagined advantages agree with the simulator?
Open-loop prediction with the true vs shuffled actions on replay windows of a run's final checkpoint,
the advantage correlation of its sampler (`adv`), and fresh denoisers trained offline on the same
replay with Config overrides (`train k=v ...`).
usage: python docs/tools/imagination_quality.py RUN [adv] [train updates=50000 every=25000 k=v ...]"""
import os, sys, time, dataclasses, functools, jax, jax.numpy as jnp, numpy as np, optax
jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/agdjax-jax"))
from agdjax import diffusion, envs, normalize, replay as rb
from agdjax.train import make_modules
from agdjax import wm_error
from agdjax.wm_error import load_run

run = sys.argv[1]
cfg, seeds, r = load_run(run)
state = jax.tree.map(lambda x: x[0], r.state)  # seed 0
norm, rep = state.norm, state.replay
obs_dim = rep.data.obs.shape[-1]; act_dim = rep.data.action.shape[-1]
H = cfg.horizon

def windows(key, b):
    w = rb.sample_windows(rep, key, b, H)
    return normalize.pack(norm, w.obs, w.reward, w.terminal), norm.action.normalize(w.action), w

def make_eval(c):
    mods = make_modules(c, act_dim); sched = diffusion.cosine_schedule(c.n_diffusion_steps, c.tau)
    @jax.jit
    def openloop(params, x_true, a, key):
        s0 = x_true[:, 0, :obs_dim]
        k0, kl = jax.random.split(key)
        x = diffusion.inpaint(jax.random.normal(k0, x_true.shape), s0)
        def body(x, inp):
            t_int, k = inp
            t = jnp.full((x.shape[0],), t_int)
            x0_hat = diffusion.inpaint(mods.denoiser.apply(params, x, diffusion.scaled_actions(sched, a, t, c.scale_action_input), t), s0)
            mu, sd = diffusion.posterior(sched, x0_hat, x, t)
            return diffusion.inpaint(mu + sd * jax.random.normal(k, x.shape), s0), None
        ts = jnp.arange(c.n_diffusion_steps - 1, -1, -1)
        x, _ = jax.lax.scan(body, x, (ts, jax.random.split(kl, c.n_diffusion_steps)))
        return x
    return mods, sched, openloop

def report(tag, c, params, key=jax.random.PRNGKey(123), b=2048):
    _, _, openloop = make_eval(c)
    x, a, w = windows(key, b)
    perm = jax.random.permutation(jax.random.PRNGKey(7), b)
    xt = np.asarray(openloop(params, x, a, jax.random.PRNGKey(1)))
    xs = np.asarray(openloop(params, x, a[perm], jax.random.PRNGKey(1)))
    x = np.asarray(x); raw_a = np.asarray(w.action); term = np.asarray(w.terminal)
    alive = (term[:, :-1] == 0)
    mse = lambda p, k: float(((p[:, k, :obs_dim] - x[:, k, :obs_dim]) ** 2).mean())
    rs = float(norm.reward.std[0])
    r_true = x[:, :-1, -2] * rs; r_t = xt[:, :-1, -2] * rs; r_s = xs[:, :-1, -2] * rs
    ctrl = -0.1 * (np.asarray(envs.clip_action(raw_a[:, :-1], c.env_action_bound)) ** 2).sum(-1)  # what the simulator charged
    m = alive.reshape(-1)
    def slope(y):
        X = np.stack([ctrl.reshape(-1)[m], r_true.reshape(-1)[m] - ctrl.reshape(-1)[m], np.ones(m.sum())], 1)
        return np.linalg.lstsq(X, y.reshape(-1)[m], rcond=None)[0][:2]
    st, ss = slope(r_t), slope(r_true)
    print(f"{tag}: state mse k=1 true-a {mse(xt,1):.3f} shuffled-a {mse(xs,1):.3f} | k=H-1 true {mse(xt,H-1):.3f} shuf {mse(xs,H-1):.3f} "
          f"| reward rmse true-a {np.sqrt(((r_t-r_true)**2)[alive].mean()):.3f} shuf {np.sqrt(((r_s-r_true)**2)[alive].mean()):.3f} "
          f"| slope on ctrl {st[0]:.2f} (data {ss[0]:.2f}), on rest {st[1]:.2f}", flush=True)

report(f"checkpoint ema (steps {int(state.diffusion_steps)})", cfg, state.denoiser_ema)

# ---------------------------------------------------------------- imagination quality for the learner
from agdjax import envs
from agdjax.train import make_train
from agdjax.networks import Critic

def adv_corr(tag, c, params, b=1024, key=jax.random.PRNGKey(11)):
    """`wm_error.advantage_corr` of the sampler with denoiser `params` on b replayed start
    states (the sampler's own actions replayed open loop in the simulator), and the
    correlation of the first imagined reward with the simulator's."""
    prog = make_train(dataclasses.replace(c, agent_batch=b))
    env = envs.make_env(c.task, c.backend)
    st = state.replace(denoiser_ema=params)
    @jax.jit
    def go(st, key):
        k_s, _ = jax.random.split(key)
        s0, phys = rb.sample_starts(st.replay, k_s, b)  # the start states `imagine` draws with this key
        im = prog.phases["imagine"](st, key)
        template = jax.tree.map(lambda x: x[0], st.env.state)
        acts = jnp.swapaxes(im.action[:, :-1], 0, 1)
        so, _, sr, sd = envs.rollout(env, template, phys, s0, lambda a, o: a, acts, action_bound=c.env_action_bound)
        V = lambda o: Critic(c.hidden).apply(st.agent.critic, o)
        corr = wm_error.advantage_corr(V, c.gamma, im.obs, im.reward[:, :-1], im.terminal, so, sr, sd)
        return corr, im.reward[:, 0], sr[:, 0]
    corr, ri0, rs0 = map(np.asarray, go(st, key))
    print(f"{tag}: corr(imag adv, sim adv) {float(corr):.3f} | corr r0 {np.corrcoef(ri0, rs0)[0,1]:.3f}", flush=True)

if "adv" in sys.argv:
    adv_corr("checkpoint ema", cfg, state.denoiser_ema)

if "train" in sys.argv:
    kv = dict(a.split("=") for a in sys.argv[sys.argv.index("train") + 1:])
    n_total = int(kv.pop("updates", 40000)); every = int(kv.pop("every", 10000))
    typed = {k: type(getattr(cfg, k))(v) if not isinstance(getattr(cfg, k), bool) else v == "True" for k, v in kv.items()}
    c = dataclasses.replace(cfg, **typed)
    mods, sched, _ = make_evalc = make_eval(c)
    p = mods.denoiser.init(jax.random.PRNGKey(0), jnp.zeros((1, H, obs_dim + 2)), jnp.zeros((1, H, act_dim)), jnp.zeros((1,), jnp.int32))
    tx = optax.adam(c.diffusion_lr); opt = tx.init(p)
    @jax.jit
    def many(p, opt, key):
        def upd(carry, k):
            p, opt = carry
            k_w, k_l = jax.random.split(k)
            x, a, _ = windows(k_w, c.diffusion_batch)
            loss, g = jax.value_and_grad(lambda q: diffusion.x0_loss(lambda xx, aa, tt: mods.denoiser.apply(q, xx, aa, tt), sched, x, a, k_l, obs_dim, c.scale_action_input))(p)
            u, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, u), opt), loss
        (p, opt), l = jax.lax.scan(upd, (p, opt), jax.random.split(key, 1000))
        return p, opt, l.mean()
    t0 = time.time()
    for i in range(n_total // 1000):
        p, opt, l = many(p, opt, jax.random.PRNGKey(1000 + i))
        if (i + 1) * 1000 % every == 0:
            print(f"  [{time.time()-t0:.0f}s] loss {float(l):.4f}", flush=True)
            report(f"fresh {typed} after {(i+1)*1000}", c, p)
            adv_corr(f"fresh {typed} after {(i+1)*1000}", c, p)

