import json, sys, math, collections
cols = ["eval_return","train_return","policy_std","critic_loss","critic_explained_variance","logprob_change","actor_lr","action_guidance_scale","imagined_advantage","guide_step_ratio","diffusion_loss","wm_state_error_1","wm_state_error_last","wm_reward_error","wm_advantage_corr"]
short = ["eval","train","std","c_loss","c_ev","dlogp","a_lr","delta","im_adv","g_ratio","d_loss","wm1","wmL","wmR","advC"]
every = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
by = collections.defaultdict(list)
for r in rows:
    if r["env_steps"] % every == 0: by[r["env_steps"]].append(r)
print("step   " + " ".join(f"{c:>8}" for c in short))
for st in sorted(by):
    vals = []
    for c in cols:
        v = [r[c] for r in by[st] if c in r and r[c] is not None and not (isinstance(r[c], float) and math.isnan(r[c]))]
        vals.append(f"{sum(v)/len(v):8.3g}" if v else f"{'-':>8}")
    print(f"{st:6d} " + " ".join(vals), "  seeds:", " ".join(f"{r.get('eval_return', float('nan')):.0f}" for r in by[st]))
