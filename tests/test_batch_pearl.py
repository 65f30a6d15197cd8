"""Batch PEARL (baselines spec §2) on hand-computed values, and its training contract.

Networks made constant (zero weights, the output in the last bias) give losses and targets that can
be worked out on paper; the arithmetic is in the comments. Reward scale 5 and gamma 0.9 (the toy
presets') throughout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbml import config as C, io, student as S
from mbml.baselines import batch_pearl as BP
from mbml.nets import MLP
from mbml.transitions import device_data, meta_take, take

OBS, ACT = 2, 2
KEY = jax.random.PRNGKey(0)


def small_config(section: str, **kw) -> C.RunConfig:
    """The toy's smoke preset with a PEARL-like baseline's section (`batch_pearl`, `focal`) made tiny: the
    hand-computed tests' networks and batches; `kw` changes more fields."""
    cfg = C.preset("point-nav", "smoke")
    small = dict(latent_dim=3, encoder_hidden=(8,), hidden=(8,), meta_batch=4, context_size=4, batch_size=8,
                 steps=6, eval_every=2)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{**small, **kw})})


def run_config(**kw) -> C.RunConfig:
    return small_config("batch_pearl", **kw)


CFG = run_config()
BC = CFG.batch_pearl


def constant(params: dict, out) -> dict:
    """An MLP's parameters made to output `out` for every input: zero weights, `out` as the last bias."""
    p = jax.tree.map(jnp.zeros_like, params)
    last = max(p["params"], key=lambda name: int(name.split("_")[1]))
    p["params"][last]["bias"] = jnp.asarray(out, jnp.float32)
    return p


def params_and_batch(b: int = 2, n: int = 3, seed: int = 1):
    """Fresh parameters, a random RL batch [b, n, ...] and contexts [b, C, context_dim]."""
    params = BP.init(CFG, KEY, OBS, ACT)
    r = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)  # noqa: E731
    batch = {"obs": f(b, n, OBS), "actions": jnp.tanh(f(b, n, ACT)), "rewards": f(b, n), "next_obs": f(b, n, OBS),
             "terminals": jnp.asarray(r.integers(0, 2, (b, n)), jnp.float32)}
    return params, batch, f(b, BC.context_size, 2 * OBS + ACT + 1)


def tree_equal(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def nonzero(tree) -> bool:
    return any(bool(jnp.any(x != 0)) for x in jax.tree.leaves(tree))


def hand_log_prob(a, mean, log_std):
    """log pi(a) of a tanh-Gaussian from the action alone: pre = artanh(a), change of variables."""
    a, mean, log_std = (np.asarray(x, np.float64) for x in (a, mean, log_std))
    pre = np.arctanh(a)
    gauss = -0.5 * ((pre - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return np.sum(gauss - np.log(1.0 - a**2), axis=-1)


# ------------------------------------------------------------------------------------ targets, losses


def test_q_target_by_hand():
    params, batch, _ = params_and_batch(b=1, n=2)
    batch = {**batch, "rewards": jnp.array([[1.0, -2.0]]), "terminals": jnp.array([[0.0, 1.0]])}
    z = jnp.zeros((1, 2, BC.latent_dim))
    # V'(s', z) = 3 everywhere: y = 5 * 1 + 0.9 * 3 = 7.7; terminal: y = 5 * -2 = -10
    y = jax.jit(BP.q_target, static_argnums=0)(BC, constant(params.v, [3.0]), batch, z)
    np.testing.assert_allclose(y, [[7.7, -10.0]], rtol=1e-6)
    # a random V': the same formula with V'(s', z) evaluated on its own
    v_next = MLP(BC.hidden, 1).apply(params.v, batch["next_obs"], z)[..., 0]
    np.testing.assert_allclose(jax.jit(BP.q_target, static_argnums=0)(BC, params.v, batch, z),
                               5.0 * batch["rewards"] + (1 - batch["terminals"]) * 0.9 * v_next, rtol=1e-6)


def test_critic_loss_is_q_loss_plus_weighted_kl_summed_over_tasks():
    params, batch, ctx = params_and_batch()
    ctx = ctx.at[1].set(ctx[0])  # the same task drawn twice (the meta-batch draws with replacement)
    batch = {**batch, "rewards": jnp.array([[1.0, 0.0, -1.0], [2.0, 0.0, 0.0]]),
             "terminals": jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}
    p = params._replace(q1=constant(params.q1, [1.0]), q2=constant(params.q2, [2.0]))
    c = dataclasses.replace(BC, kl_weight=0.3)
    loss, aux = jax.jit(BP.critic_loss, static_argnums=0)(c, p, constant(params.v, [3.0]), batch, ctx, KEY)
    # y = 5 r + (1 - d) 0.9 * 3 = [[7.7, 0, -2.3], [12.7, 2.7, 0]]
    y = np.array([[7.7, 0.0, -2.3], [12.7, 2.7, 0.0]])
    q_loss = np.mean((1.0 - y) ** 2) + np.mean((2.0 - y) ** 2)
    np.testing.assert_allclose(aux["q_loss"], q_loss, rtol=1e-5)
    # KL(N(mu, var) || N(0, 1)) = 0.5 sum_d (var + mu^2 - 1 - log var), summed over both drawn tasks
    mu, var = (np.asarray(x, np.float64) for x in S.posterior(*S.encode(BC, params.encoder, ctx)))
    per_task = 0.5 * np.sum(var + mu**2 - 1.0 - np.log(var), axis=-1)
    np.testing.assert_allclose(per_task[0], per_task[1], rtol=1e-6)
    np.testing.assert_allclose(aux["kl"], per_task.sum(), rtol=1e-5)
    assert float(aux["kl"]) > 0.01
    np.testing.assert_allclose(loss, q_loss + 0.3 * per_task.sum(), rtol=1e-5)
    # one reparameterised z per drawn task
    assert aux["z"].shape == (2, BC.latent_dim)


def test_v_target_and_value_loss_by_hand():
    params, batch, _ = params_and_batch(b=1, n=2)
    p = params._replace(q1=constant(params.q1, [2.0]), q2=constant(params.q2, [1.0]))
    z = jnp.zeros((1, 2, BC.latent_dim))
    # min(2, 1) - log pi = 1 - [0.5, -1] = [0.5, 2]
    y = jax.jit(BP.v_target, static_argnums=0)(BC, p, batch["obs"], batch["actions"], jnp.array([[0.5, -1.0]]), z)
    np.testing.assert_allclose(y, [[0.5, 2.0]], rtol=1e-6)
    # V = 4: mean((4 - 0.5)^2, (4 - 2)^2) = (12.25 + 4) / 2 = 8.125
    np.testing.assert_allclose(jax.jit(BP.value_loss, static_argnums=0)(BC, constant(params.v, [4.0]), batch["obs"], z, y), 8.125, rtol=1e-6)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean = jnp.array([[0.2, -0.4], [0.0, 0.5]])
    log_std = jnp.array([[-1.0, -0.5], [0.0, -2.0]])
    a, logp = jax.jit(BP.tanh_gaussian)(mean, log_std, KEY)
    assert bool(jnp.all(jnp.abs(a) < 0.99))
    np.testing.assert_allclose(logp, hand_log_prob(a, mean, log_std), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("log_std, clamped", [(-1.0, -1.0), (5.0, 2.0)])
def test_policy_loss_by_hand(log_std, clamped):
    params, batch, _ = params_and_batch()
    c = dataclasses.replace(BC, policy_reg=0.5)
    policy = constant(params.policy, [0.3, 0.3, log_std, log_std])  # mean 0.3, log std (clamped to [-20, 2])
    p = params._replace(q1=constant(params.q1, [2.0]), q2=constant(params.q2, [1.5]))
    z = jnp.zeros(batch["obs"].shape[:2] + (BC.latent_dim,))
    loss, (a, logp) = jax.jit(BP.policy_loss, static_argnums=(0, 1))(c, ACT, policy, p, batch["obs"], z, KEY)
    if clamped < 0:  # the sampled actions stay away from +-1, where artanh of a float32 loses precision
        np.testing.assert_allclose(logp, hand_log_prob(a, 0.3, clamped), rtol=1e-4, atol=1e-4)
    # mean(log pi - min(2, 1.5)) + 0.5 (mean 0.3^2 + mean clamped^2)
    expected = np.mean(np.asarray(logp)) - 1.5 + 0.5 * (0.09 + clamped**2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_encoder_learns_from_q_loss_and_kl_only():
    params, batch, ctx = params_and_batch()
    obs = batch["obs"]

    def z_of(encoder):
        z = BP.critic_loss(BC, params._replace(encoder=encoder), params.v, batch, ctx, KEY)[1]["z"]
        return jnp.broadcast_to(z[:, None], obs.shape[:2] + z.shape[-1:])

    def grad(f):
        return jax.jit(jax.grad(f))(params.encoder)

    assert nonzero(grad(lambda e: BP.critic_loss(BC, params._replace(encoder=e), params.v, batch, ctx, KEY)[1]["q_loss"]))
    assert nonzero(grad(lambda e: BP.critic_loss(BC, params._replace(encoder=e), params.v, batch, ctx, KEY)[1]["kl"]))
    target = jnp.ones(obs.shape[:2])
    assert not nonzero(grad(lambda e: BP.value_loss(BC, params.v, obs, z_of(e), target)))
    assert not nonzero(grad(lambda e: BP.policy_loss(BC, ACT, params.policy, params, obs, z_of(e), KEY)[0]))
    # the same z without the detachment would carry gradient (so the two checks above can fail)
    assert nonzero(grad(lambda e: jnp.mean(BP.value(BC, params.v, obs, z_of(e)))))


def test_update_steps_in_the_authors_order():
    """One update, recomputed from the loss functions with optax's Adam: the encoder and Q networks
    step on the gradient of L_Q + lambda KL; V on that of its loss with the target from the Q networks
    *just updated*; then V' <- (1 - tau) V' + tau V. V's second-moment estimate starts at 1, so its step
    is about proportional to its gradient and a target from the old Q networks would show."""
    params, batch, ctx = params_and_batch()
    c = dataclasses.replace(BC, lr=0.1)  # large Q steps, so the old and the updated Q differ clearly
    opt = optax.adam(c.lr)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731

    def step(p, g, state):
        return optax.apply_updates(p, opt.update(g, state, p)[0])

    @jax.jit
    def one_update(params, batch, ctx):
        learner = BP.start(c, params)
        adam_v, *rest = learner.opt.v
        learner = learner._replace(opt=learner.opt._replace(
            v=(adam_v._replace(nu=jax.tree.map(jnp.ones_like, adam_v.nu)), *rest)))
        new, metrics = BP.update(c, ACT, learner, ctx, batch, KEY)
        k_z, k_pi = jax.random.split(KEY)  # as `update` splits its key
        g, aux = jax.grad(lambda p: BP.critic_loss(c, p, learner.target_v, batch, ctx, k_z), has_aux=True)(params)
        expected = {n: flat(step(getattr(params, n), getattr(g, n), getattr(learner.opt, n)))
                    for n in ("encoder", "q1", "q2")}
        z = jnp.broadcast_to(aux["z"][:, None], batch["obs"].shape[:2] + aux["z"].shape[-1:])

        def v_step(q_params):  # V's change with the target from these Q networks
            _, (a, logp) = BP.policy_loss(c, ACT, params.policy, q_params, batch["obs"], z, k_pi)
            y = BP.v_target(c, q_params, batch["obs"], a, logp, z)
            g_v = jax.grad(lambda v: BP.value_loss(c, v, batch["obs"], z, y))(params.v)
            return flat(step(params.v, g_v, learner.opt.v)) - flat(params.v)

        return new, metrics, expected, v_step(new.params), v_step(params)

    new, metrics, expected, v_new_q, v_old_q = one_update(params, batch, ctx)
    for name in ("encoder", "q1", "q2"):
        np.testing.assert_allclose(flat(getattr(new.params, name)), expected[name], atol=1e-6)
    moved = flat(new.params.v) - flat(params.v)
    np.testing.assert_allclose(moved, v_new_q, rtol=1e-4, atol=1e-7)
    assert np.abs(moved - v_old_q).max() > 1e-2 * np.abs(moved).max()  # the old Q: a different step
    np.testing.assert_allclose(flat(new.target_v), 0.995 * flat(params.v) + 0.005 * flat(new.params.v), atol=1e-7)
    assert set(metrics) >= {"q_loss", "kl", "v_loss", "policy_loss"}


# ---------------------------------------------------------------------------------------- data


def test_meta_batch_reads_the_drawn_tasks(make_dataset):
    data = device_data(make_dataset(k=3, n=16))
    tasks = jnp.array([2, 0, 2, 1])
    idx = jax.random.randint(KEY, (4, 5), 0, 16)
    np.testing.assert_equal(jax.device_get(jax.jit(meta_take)(data, tasks, idx)),
                            jax.device_get(jax.jit(take)(jax.tree.map(lambda x: x[tasks], data), idx)))

    # every context and RL transition is one of its drawn task's, and the context is (s, a, r, s')
    @jax.jit
    def draw(data):
        drawn, ctx, batch = BP.sample_meta_batch(BC, data, KEY)
        rows = take(data, jnp.broadcast_to(jnp.arange(16), (3, 16)))
        return (drawn, ctx, BP.context(batch["obs"], batch["actions"], batch["rewards"], batch["next_obs"]),
                BP.context(rows["obs"], rows["actions"], rows["rewards"], rows["next_obs"]))  # [K, n, d]

    drawn, ctx, mine, every = (np.asarray(x) for x in draw(data))
    for b, t in enumerate(np.asarray(drawn)):
        for x in (np.asarray(ctx[b]), mine[b]):
            assert np.all(np.any(np.all(x[:, None] == every[t][None], -1), -1))
    assert ctx.shape == (BC.meta_batch, BC.context_size, 2 * OBS + ACT + 1)
    assert mine.shape[:2] == (BC.meta_batch, BC.batch_size)


# ----------------------------------------------------------------------------------- agent, init


def test_act_is_the_deterministic_tanh_mean_in_bounds():
    params, batch, _ = params_and_batch()
    agent = BP.agent(CFG, ACT)
    obs, z = batch["obs"][0, 0], jnp.ones(BC.latent_dim)
    act = jax.jit(agent.act)
    a = act(params, obs, z, KEY)
    np.testing.assert_array_equal(a, act(params, obs, z, jax.random.PRNGKey(5)))
    mean, _ = BP.policy_dist(BC, ACT, params.policy, obs, z)
    np.testing.assert_allclose(a, jnp.tanh(mean), rtol=1e-6)
    big = params._replace(policy=constant(params.policy, [50.0, -50.0, 0.0, 0.0]))
    a = act(big, obs, z, KEY)
    assert bool(jnp.all(jnp.abs(a) <= 1.0)) and a.shape == (ACT,)
    np.testing.assert_allclose(a, [1.0, -1.0])


def test_agent_reads_pearl_contexts():
    params, _, _ = params_and_batch()
    agent = BP.agent(CFG, ACT)
    hash(agent)  # a static jit argument
    assert agent.latent_dim == BC.latent_dim and agent.diagnostic_size == BC.context_size
    s, a, r, s2 = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), jnp.array(5.0), jnp.array([6.0, 7.0])
    np.testing.assert_array_equal(agent.context(s, a, r, s2), [1, 2, 3, 4, 5, 6, 7])  # (s, a, r, s')
    ctx = jax.random.normal(KEY, (6, 2 * OBS + ACT + 1))
    mask = jnp.array([True, True, False, True, False, True])
    mu, var = jax.jit(agent.posterior)(params, ctx, mask)
    mu2, var2 = S.posterior(*S.encode(BC, params.encoder, ctx[mask]))
    np.testing.assert_allclose(mu, mu2, rtol=1e-5)
    np.testing.assert_allclose(var, var2, rtol=1e-5)


def test_init_is_rlkits_deterministic_and_round_trips(tmp_path):
    params = BP.init(CFG, KEY, OBS, ACT)
    assert tree_equal(params, BP.init(CFG, KEY, OBS, ACT))
    assert not tree_equal(params, BP.init(CFG, jax.random.PRNGKey(1), OBS, ACT))
    hidden = params.q1["params"]["Dense_0"]  # (s, a, z) = 7 inputs, 8 outputs
    w = np.asarray(hidden["kernel"])
    assert np.abs(w).max() <= 1 / np.sqrt(8) and np.abs(w).max() > 0.3  # U(+-1/sqrt(output width))
    np.testing.assert_array_equal(hidden["bias"], np.float32(0.1))
    for net, bound in ((params.q1, 3e-3), (params.v, 3e-3), (params.encoder, 3e-3), (params.policy, 1e-3)):
        last = net["params"][max(net["params"], key=lambda n: int(n.split("_")[1]))]
        assert all(0 < np.abs(np.asarray(x)).max() <= bound for x in last.values())
    io.save_pytree(tmp_path / "p.msgpack", jax.device_get(params))
    loaded = io.load_pytree(tmp_path / "p.msgpack", BP.init(CFG, jax.random.PRNGKey(3), OBS, ACT))
    assert isinstance(loaded, BP.BatchPEARL) and tree_equal(loaded, params)


# -------------------------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def inputs():
    from conftest import synthetic_dataset
    return {"data": device_data(synthetic_dataset(k=3, n=16))}


def train(inputs, **kw):
    return BP.train(CFG, "batch_pearl", ACT, inputs, KEY, **kw)


@pytest.mark.slow  # a training run; `scripts/test -m slow`
def test_train_is_reproducible_and_resumes_to_the_same_numbers(inputs, tmp_path):
    seen = []
    first = train(inputs, on_eval=lambda p, step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == [2, 4, 6]
    assert all(np.isfinite(list(m.values())).all() and isinstance(m["q_loss"], float) for _, m in seen)
    assert tree_equal(first, train(inputs))
    assert not tree_equal(first, BP.init(CFG, jax.random.split(KEY)[0], OBS, ACT))  # it trained

    ckpt = tmp_path / "ckpt.msgpack"

    def interrupt(p, step, m):
        if step == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(inputs, ckpt=ckpt, on_eval=interrupt)
    assert ckpt.exists()  # holds step 2
    assert tree_equal(first, train(inputs, ckpt=ckpt))


def test_train_returns_the_best_scoring_params(inputs):
    seen = {}

    def on_eval(params, step, metrics):
        seen[step] = jax.device_get(params)  # copied: the next chunk reuses the buffers
        return {2: 1.0, 4: 3.0, 6: 2.0}[step]
    best = train(inputs, on_eval=on_eval)
    assert tree_equal(best, seen[4]) and not tree_equal(best, seen[6])
