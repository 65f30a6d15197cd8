"""FOCAL (baselines spec §3) on hand-computed values, and its training contract.

Linear networks (no hidden layer) and constant ones (zero weights, the output in the last bias) give
losses whose values can be worked out on paper; the arithmetic is in the comments.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbml import config as C, evaluate as E, io
from mbml.baselines import focal as F
from mbml.families import get_family
from mbml.nets import MLP
from mbml.transitions import device_data, take
from test_batch_pearl import constant, small_config, tree_equal

OBS, ACT = 2, 2
KEY = jax.random.PRNGKey(0)


def run_config(**kw) -> C.RunConfig:
    return small_config("focal", **kw)


CFG = run_config()
FC = CFG.focal


def flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def linear_critic(w_obs, w_act, w_z, bias) -> dict:
    """c(s, a, z) = w_obs . s + w_act . a + w_z . z + bias: an MLP with no hidden layer (`hidden=()`)."""
    kernel = jnp.concatenate([jnp.asarray(w, jnp.float32) for w in (w_obs, w_act, w_z)])[:, None]
    return {"params": {"Dense_0": {"kernel": kernel, "bias": jnp.array([bias], jnp.float32)}}}


def softplus(x):
    return np.log1p(np.exp(x))


# -------------------------------------------------------------------------------- distance metric


def test_distance_metric_loss_with_a_repeated_task_by_hand():
    z = jnp.array([[0.0, 0.0], [1.0, 1.0], [0.2, 0.0]])
    # pairs: (0, 1) different tasks, m = mean(1, 1) = 1; (0, 2) the same task, m = mean(0.04, 0) = 0.02;
    # (1, 2) different, m = mean(0.64, 1) = 0.82
    pos = np.sqrt(0.02 + 1e-3) / (1 + 1e-3)
    neg = (1 / (1 + 0.1) + 1 / (0.82 + 0.1)) / (2 + 1e-3)
    got = jax.jit(F.distance_metric_loss, static_argnums=2)(z, jnp.array([4, 7, 4]), 10.0)
    np.testing.assert_allclose(got, 10 * (pos + neg), rtol=1e-5)
    # the attracting term pulls the repeated task's embeddings together, the repelling one pushes others apart
    g = jax.grad(F.distance_metric_loss)(z, jnp.array([4, 7, 4]), 10.0)
    assert float(g[2, 0]) > 0 and float(g[1, 0]) < 0


def test_distance_metric_loss_without_a_repeated_task_has_no_attracting_term():
    z = jnp.array([[0.0, 0.0], [1.0, 1.0], [0.2, 0.0]])
    # three different tasks: no positive pair (its sum 0 over 0 + 1e-3 pairs); (0, 2) now repels
    neg = (1 / 1.1 + 1 / (0.02 + 0.1) + 1 / 0.92) / (3 + 1e-3)
    np.testing.assert_allclose(F.distance_metric_loss(z, jnp.array([0, 1, 2]), 2.0), 2 * neg, rtol=1e-5)


def test_encoder_loss_is_the_weighted_metric_of_the_mean_tanh_embeddings():
    params = F.init(CFG, KEY, OBS, ACT)
    ctx = jax.random.normal(KEY, (3, FC.context_size, 2 * OBS + ACT + 1))
    tasks = jnp.array([0, 1, 0])
    loss, z = F.encoder_loss(FC, params.encoder, ctx, tasks)
    e = np.tanh(np.asarray(MLP(FC.encoder_hidden, FC.latent_dim).apply(params.encoder, ctx)))
    np.testing.assert_allclose(z, e.mean(1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, F.distance_metric_loss(z, tasks, FC.z_loss_weight), rtol=1e-6)
    assert FC.z_loss_weight == 10.0


# ------------------------------------------------------------------------- BRAC: divergence, penalty


def test_dual_kl_on_a_linear_critic_by_hand():
    c_cfg = dataclasses.replace(FC, hidden=())
    c = linear_critic([0.0], [2.0], [0.0], 0.5)  # c(s, a, z) = 2 a + 0.5
    obs, z = jnp.zeros((2, 1)), jnp.zeros((2, 1))
    a_pi, a_data = jnp.array([[0.25], [1.0]]), jnp.array([[-0.25], [0.0]])
    # row 0: c_p = 1, c_b = 0; row 1: c_p = 2.5, c_b = 0.5
    expected = [-softplus(0.0) + np.log(softplus(1.0) + 1e-8) + 1, -softplus(0.5) + np.log(softplus(2.5) + 1e-8) + 1]
    np.testing.assert_allclose(F.divergence(c_cfg, c, obs, a_pi, a_data, z), expected, rtol=1e-6)
    # -softplus(0) + log softplus(1) + 1 = -0.693147 + log 1.313262 + 1 = -0.693147 + 0.272514 + 1
    np.testing.assert_allclose(expected[0], 0.579367, atol=1e-6)


def test_brac_gradient_penalty_on_a_linear_critic():
    """grad_a c = w_act everywhere, whatever the interpolation: slope = ||w_act||."""
    obs, z = jnp.ones((4, 1)), jnp.ones((4, 1))
    a_pi, a_data = jnp.zeros((4, 2)), jnp.ones((4, 2))
    u = jnp.array([0.0, 0.3, 0.7, 1.0])
    brac = dataclasses.replace(FC, hidden=(), gradient_penalty="brac")
    steep = linear_critic([1.0], [3.0, 4.0], [1.0], 2.0)  # slope 5: 5 (5 - 1)^2 = 80
    np.testing.assert_allclose(F.gradient_penalty(brac, steep, obs, a_pi, a_data, z, u), 80.0, rtol=1e-6)
    flat_c = linear_critic([1.0], [0.3, 0.4], [1.0], 2.0)  # slope 0.5 < 1: no penalty, however large c is
    np.testing.assert_allclose(F.gradient_penalty(brac, flat_c, obs, a_pi, a_data, z, u), 0.0, atol=1e-12)


def test_focal_code_penalty_is_on_the_value_at_interpolated_actions():
    obs, z = jnp.ones((4, 1)), jnp.ones((4, 1))
    a_pi, a_data = jnp.zeros((4, 2)), jnp.ones((4, 2))
    u = jnp.array([0.0, 0.3, 0.7, 1.0])
    code = dataclasses.replace(FC, hidden=(), gradient_penalty="focal_code")
    # c(s, a~) = 1 + 0.3 u + 0.4 u + 1 - 2.5 = 0.7 u - 0.5 at a~ = (u, u): -0.5, -0.29, -0.01, 0.2: |c| <= 1, no penalty
    flat_c = linear_critic([1.0], [0.3, 0.4], [1.0], -2.5)
    np.testing.assert_allclose(F.gradient_penalty(code, flat_c, obs, a_pi, a_data, z, u), 0.0, atol=1e-12)
    # c = 7 u - 1 (w_act = (3, 4), bias -3): -1, 1.1, 3.9, 6 -> 5 mean(0, 0.1^2, 2.9^2, 5^2) = 5 (0.01 + 8.41 + 25) / 4
    steep = linear_critic([1.0], [3.0, 4.0], [1.0], -3.0)
    np.testing.assert_allclose(F.gradient_penalty(code, steep, obs, a_pi, a_data, z, u), 5 * 33.42 / 4, rtol=1e-5)
    # BRAC's penalty on the same critic is the constant slope's: 80
    brac = dataclasses.replace(code, gradient_penalty="brac")
    np.testing.assert_allclose(F.gradient_penalty(brac, steep, obs, a_pi, a_data, z, u), 80.0, rtol=1e-6)


def test_dual_critic_loss_is_minus_mean_divergence_plus_penalty():
    c_cfg = dataclasses.replace(FC, hidden=())
    c = linear_critic([0.0], [3.0, 4.0], [0.0], 0.0)  # c = 3 a0 + 4 a1, slope 5
    obs, z = jnp.zeros((1, 1)), jnp.zeros((1, 1))
    a_pi, a_data = jnp.array([[0.1, 0.0]]), jnp.array([[0.0, 0.0]])  # c_p = 0.3, c_b = 0
    d = -softplus(0.0) + np.log(softplus(0.3) + 1e-8) + 1
    got = F.critic_c_loss(c_cfg, c, obs, a_pi, a_data, z, jnp.array([0.5]))
    np.testing.assert_allclose(got, -d + 80.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------- alpha


def test_alpha_steps_towards_the_target_divergence_and_is_clipped_where_used():
    cfg = dataclasses.replace(FC, alpha_lr=1.0, target_divergence=0.05, alpha_max=2000.0)
    # alpha + 1 (mean(0.1, 0.3) - 0.05) = 500.15; below the target it falls
    np.testing.assert_allclose(F.alpha_step(cfg, jnp.float32(500.0), jnp.array([0.1, 0.3])), 500.15, rtol=1e-7)
    np.testing.assert_allclose(F.alpha_step(cfg, jnp.float32(0.02), jnp.array([-0.01])), -0.04, rtol=1e-6)
    assert float(F.used_alpha(cfg, jnp.float32(-0.04))) == 0.0
    assert float(F.used_alpha(cfg, jnp.float32(2500.0))) == 2000.0
    assert float(F.used_alpha(cfg, jnp.float32(7.0))) == 7.0
    assert float(F.alpha_step(dataclasses.replace(cfg, alpha_lr=0.0), jnp.float32(3.0), jnp.array([9.0]))) == 3.0


# ------------------------------------------------------------------------------------------ update


def batches_of(cfg, b: int = 3, n: int = 5, seed: int = 1):
    """Random contexts [b, C, .] and `c_iter` RL batches [c_iter, b, n, .] (with next actions)."""
    r = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)  # noqa: E731
    i = cfg.c_iter
    batches = {"obs": f(i, b, n, OBS), "actions": jnp.tanh(f(i, b, n, ACT)), "rewards": f(i, b, n),
               "next_obs": f(i, b, n, OBS), "terminals": jnp.asarray(r.integers(0, 2, (i, b, n)), jnp.float32),
               "next_actions": jnp.tanh(f(i, b, n, ACT)), "has_next": jnp.asarray(r.integers(0, 2, (i, b, n)),
                                                                                    jnp.float32)}
    return f(b, cfg.context_size, 2 * OBS + ACT + 1), batches


def test_update_steps_in_the_proposed_order():
    """One update, recomputed from the loss functions with optax's Adam: the encoder on the
    distance-metric loss alone; c_iter c steps, one batch each; Q on the target with alpha D' at s'
    from the *updated* c; the policy through the updated Q and c; alpha by its plain step on the
    policy's D. Large steps, so that using a network before its update instead would show."""
    cfg = dataclasses.replace(FC, lr=0.05, c_lr=0.05, value_penalty=True, alpha_init=3.0, alpha_lr=0.5)
    params = F.init(run_config(), KEY, OBS, ACT)
    ctx, batches = batches_of(cfg)
    tasks = jnp.array([0, 1, 0])
    opt, opt_c = optax.adam(cfg.lr), optax.adam(cfg.c_lr)

    def step(o, p, g, s):
        return optax.apply_updates(p, o.update(g, s, p)[0])

    def unit_nu(s):  # the Qs' Adam second moment at 1: a step proportional to the gradient, not to its sign
        return s._replace(nu=jax.tree.map(jnp.ones_like, s.nu)) if isinstance(s, optax.ScaleByAdamState) else s

    @jax.jit
    def recompute(params):
        learner = F.start(cfg, params)
        is_adam = lambda s: isinstance(s, optax.ScaleByAdamState)  # noqa: E731
        q1_opt, q2_opt = (jax.tree.map(unit_nu, s, is_leaf=is_adam) for s in (learner.opt.q1, learner.opt.q2))
        learner = learner._replace(opt=learner.opt._replace(q1=q1_opt, q2=q2_opt))
        new, metrics = F.update(cfg, ACT, learner, tasks, ctx, batches, KEY)
        k_c, k_pi, k_next = jax.random.split(KEY, 3)  # as `update` splits its key
        g_enc, z = jax.grad(lambda e: F.encoder_loss(cfg, e, ctx, tasks), has_aux=True)(params.encoder)
        enc = step(opt, params.encoder, g_enc, learner.opt.encoder)
        zb = jnp.broadcast_to(z[:, None], batches["obs"].shape[1:3] + z.shape[-1:])
        c, o_c = params.c, learner.opt.c
        for b, k in zip(range(cfg.c_iter), jax.random.split(k_c, cfg.c_iter)):
            bb = jax.tree.map(lambda x: x[b], batches)
            k_a, k_u = jax.random.split(k)
            a_pi = F.sample_action(cfg, ACT, params.policy, bb["obs"], zb, k_a)[0]
            u = jax.random.uniform(k_u, bb["obs"].shape[:-1])
            g = jax.grad(lambda cc: F.critic_c_loss(cfg, cc, bb["obs"], a_pi, bb["actions"], zb, u))(c)
            c, o_c = step(opt_c, c, g, o_c), opt_c.update(g, o_c, c)[1]
        b0 = jax.tree.map(lambda x: x[0], batches)

        def q_step(c):  # Q1, Q2 after their step on the target with alpha D' from critic c
            a_next = F.sample_action(cfg, ACT, params.policy, b0["next_obs"], zb, k_next)[0]
            d_next = b0["has_next"] * F.divergence(cfg, c, b0["next_obs"], a_next, b0["next_actions"], zb)
            v_next = F.BP.value(cfg, params.v, b0["next_obs"], zb)
            y = 5.0 * b0["rewards"] + (1 - b0["terminals"]) * cfg.gamma * (v_next - 3.0 * d_next)
            def loss(q1, q2):
                return sum(jnp.mean((q - y) ** 2)
                           for q in F.BP.q_values(cfg, params._replace(q1=q1, q2=q2), b0["obs"], b0["actions"], zb))
            g_q = jax.grad(loss, argnums=(0, 1))(params.q1, params.q2)
            return tuple(step(opt, getattr(params, n), g, getattr(learner.opt, n)) for n, g in zip(("q1", "q2"), g_q))

        q1, q2 = q_step(c)
        p = params._replace(q1=q1, q2=q2, c=c)
        g_pi, (_, _, d) = jax.grad(lambda pi: F.policy_loss(cfg, ACT, pi, p, 3.0, b0["obs"], b0["actions"], zb,
                                                            k_pi), has_aux=True)(params.policy)
        return new, metrics, {"encoder": enc, "c": c, "q1": q1, "q2": q2,
                              "policy": step(opt, params.policy, g_pi, learner.opt.policy)}, d, q_step(params.c)[0]

    new, metrics, expected, d, q1_old_c = recompute(params)
    for name, value in expected.items():
        np.testing.assert_allclose(flat(getattr(new.params, name)), flat(value), atol=1e-6, err_msg=name)
    moved = flat(new.params.q1) - flat(params.q1)
    assert np.abs(flat(q1_old_c) - flat(new.params.q1)).max() > 1e-2 * np.abs(moved).max()  # the old c: another step
    np.testing.assert_allclose(new.alpha, 3.0 + 0.5 * (np.mean(d) - 0.05), rtol=1e-6)
    np.testing.assert_allclose(metrics["divergence"], np.mean(d), rtol=1e-5)
    np.testing.assert_allclose(flat(new.target_v), 0.995 * flat(params.v) + 0.005 * flat(new.params.v), atol=1e-7)
    assert not tree_equal(new.params.c, params.c) and float(metrics["alpha"]) == 3.0


def test_only_the_metric_loss_reaches_the_encoder():
    """The encoder moves by the Adam step of the distance-metric loss whatever the other losses are:
    the same update with the RL rewards changed leaves it the same, and a zero weight leaves it put."""
    params = F.init(CFG, KEY, OBS, ACT)
    ctx, batches = batches_of(FC)
    tasks = jnp.array([0, 1, 0])
    upd = jax.jit(F.update, static_argnums=(0, 1))
    a = upd(FC, ACT, F.start(FC, params), tasks, ctx, batches, KEY)[0].params
    b = upd(FC, ACT, F.start(FC, params), tasks, ctx, {**batches, "rewards": batches["rewards"] + 100}, KEY)[0].params
    assert tree_equal(a.encoder, b.encoder) and not tree_equal(a.q1, b.q1)
    off = dataclasses.replace(FC, z_loss_weight=0.0)
    assert tree_equal(upd(off, ACT, F.start(off, params), tasks, ctx, batches, KEY)[0].params.encoder, params.encoder)


# ---------------------------------------------------------------------------------------- data


def test_meta_batch_draws_c_iter_batches_and_next_actions(make_dataset):
    ds = make_dataset(k=3, n=16)
    data = device_data(ds)
    cfg = dataclasses.replace(FC, value_penalty=True, divergence_at="next")
    tasks, ctx, batches = jax.jit(F.sample_meta_batch, static_argnums=0)(cfg, data, KEY)
    assert ctx.shape == (cfg.meta_batch, cfg.context_size, 2 * OBS + ACT + 1)
    assert batches["obs"].shape == (cfg.c_iter, cfg.meta_batch, cfg.batch_size, OBS)
    rows = jax.device_get(take(data, jnp.broadcast_to(jnp.arange(16), (3, 16))))
    ends = np.asarray(ds.terminals | ds.timeouts)
    ends[:, -1] = True
    for i, t in enumerate(np.asarray(tasks)):
        for b in range(cfg.c_iter):
            for j in range(cfg.batch_size):
                obs, act = np.asarray(batches["obs"][b, i, j]), np.asarray(batches["actions"][b, i, j])
                row = int(np.flatnonzero(np.all(rows["obs"][t] == obs, -1) & np.all(rows["actions"][t] == act, -1))[0])
                assert float(batches["has_next"][b, i, j]) == (0.0 if ends[t, row] else 1.0)
                if not ends[t, row]:  # BRAC's a2: the action the data took at s'
                    np.testing.assert_array_equal(batches["next_actions"][b, i, j], rows["actions"][t, row + 1])
    assert "next_actions" not in F.sample_meta_batch(FC, data, KEY)[2]  # read only where the penalty needs it


# ----------------------------------------------------------------------------------- agent, init


def test_posterior_is_the_masked_mean_embedding_with_zero_variance():
    params = F.init(CFG, KEY, OBS, ACT)
    agent = F.agent(CFG, ACT)
    hash(agent)  # a static jit argument
    assert agent.latent_dim == FC.latent_dim and agent.diagnostic_size == FC.context_size and agent.prior_std == 0.0
    s, a, r, s2 = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), jnp.array(5.0), jnp.array([6.0, 7.0])
    np.testing.assert_array_equal(agent.context(s, a, r, s2), [1, 2, 3, 4, 6, 7, 5])  # (s, a, s', r)
    ctx = jax.random.normal(KEY, (6, 2 * OBS + ACT + 1))
    mask = jnp.array([True, True, False, True, False, True])
    mu, var = jax.jit(agent.posterior)(params, ctx, mask)
    e = np.tanh(np.asarray(MLP(FC.encoder_hidden, FC.latent_dim).apply(params.encoder, ctx)))
    np.testing.assert_allclose(mu, e[np.asarray(mask)].mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(var, 0.0)
    np.testing.assert_array_equal(agent.posterior(params, ctx, jnp.zeros(6, bool))[0], 0.0)  # empty: z = 0
    a = jax.jit(agent.act)(params, s, mu, KEY)
    np.testing.assert_allclose(a, jnp.tanh(F.policy_dist(FC, ACT, params.policy, s, mu)[0]), rtol=1e-6)


@dataclasses.dataclass(frozen=True)
class Probe(F.FocalAgent):
    """FOCAL's agent acting with a = clip(10 z): where an episode ends shows the z it acted with."""

    def act(self, params, obs, z, key):
        return jnp.clip(10.0 * z[:2], -1.0, 1.0)


def test_the_protocols_first_episode_acts_with_z_zero():
    fam, ev = get_family("point-nav"), C.preset("point-nav", "smoke").eval
    params = F.init(CFG, KEY, OBS, ACT)
    tasks = fam.test_tasks[:3]
    out = jax.device_get(E.protocol(fam, Probe(FC, ACT), params, tasks, KEY, ev))
    np.testing.assert_array_equal(out["last_obs"][:, 0], 0.0)  # z = 0: no move from the origin
    np.testing.assert_allclose(out["returns"][:, 0], -fam.horizon, rtol=1e-6)  # distance 1 to the goal each step
    sampled = jax.device_get(E.protocol(fam, Probe(FC, ACT, prior_std=1.0), params, tasks, KEY, ev))
    assert np.all(np.abs(sampled["last_obs"][:, 0]).max(-1) > 0.1)  # N(0, I): it moves
    np.testing.assert_array_equal(sampled["posterior_means"][:, 0], 0.0)


def test_init_is_rlkits_deterministic_and_round_trips(tmp_path):
    params = F.init(CFG, KEY, OBS, ACT)
    assert tree_equal(params, F.init(CFG, KEY, OBS, ACT))
    assert not tree_equal(params, F.init(CFG, jax.random.PRNGKey(1), OBS, ACT))
    np.testing.assert_array_equal(params.c["params"]["Dense_0"]["bias"], np.float32(0.1))
    for net, bound in ((params.encoder, 3e-3), (params.c, 3e-3), (params.v, 3e-3), (params.policy, 1e-3)):
        last = net["params"][max(net["params"], key=lambda n: int(n.split("_")[1]))]
        assert all(0 < np.abs(np.asarray(x)).max() <= bound for x in last.values())
    io.save_pytree(tmp_path / "p.msgpack", jax.device_get(params))
    loaded = io.load_pytree(tmp_path / "p.msgpack", F.init(CFG, jax.random.PRNGKey(3), OBS, ACT))
    assert isinstance(loaded, F.FOCAL) and tree_equal(loaded, params)


def test_log_std_is_clamped_to_minus_20_0():
    params = F.init(CFG, KEY, OBS, ACT)
    policy = constant(params.policy, [0.3, 0.3, 1.5, -30.0])
    _, log_std = F.policy_dist(FC, ACT, policy, jnp.zeros(OBS), jnp.zeros(FC.latent_dim))
    np.testing.assert_array_equal(log_std, [0.0, -20.0])


def test_presets_follow_the_spec_proposal():
    paper = C.preset("halfcheetah-vel", "paper").focal
    assert (paper.alpha_init, paper.alpha_max, paper.context_size, paper.meta_batch) == (50.0, 2000.0, 100, 16)
    walker = C.preset("walker-param", "paper").focal
    assert (walker.alpha_init, walker.alpha_max) == (50.0, 10_000.0)
    ant = C.preset("ant-dir", "cpu").focal
    assert (ant.alpha_init, ant.alpha_max, ant.context_size, ant.hidden) == (500.0, 2000.0, 256, (256,) * 3)
    toy = C.preset("point-nav", "demo")
    assert (toy.focal.steps, toy.focal.context_size, toy.focal.hidden) == (
        toy.batch_pearl.steps, toy.batch_pearl.context_size, toy.batch_pearl.hidden)
    with pytest.raises(C.MbmlError, match="focal.gradient_penalty=grad: choose one of brac, focal_code"):
        C.override(toy, ["focal.gradient_penalty=grad"])


# -------------------------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def inputs():
    from conftest import synthetic_dataset
    return {"data": device_data(synthetic_dataset(k=3, n=16))}


def train(inputs, cfg=CFG, **kw):
    return F.train(cfg, "focal", ACT, inputs, KEY, **kw)


@pytest.mark.slow  # a training run; `scripts/test -m slow`
def test_train_is_reproducible_and_resumes_to_the_same_numbers(inputs, tmp_path):
    cfg = run_config(value_penalty=True)  # every part of the step
    seen = []
    first = train(inputs, cfg, on_eval=lambda p, step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == [2, 4, 6]
    assert all(np.isfinite(list(m.values())).all() and isinstance(m["z_loss"], float) for _, m in seen)
    assert tree_equal(first, train(inputs, cfg))
    assert not tree_equal(first, F.init(cfg, jax.random.split(KEY)[0], OBS, ACT))  # it trained

    ckpt = tmp_path / "ckpt.msgpack"

    def interrupt(p, step, m):
        if step == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(inputs, cfg, ckpt=ckpt, on_eval=interrupt)
    assert ckpt.exists()  # holds step 2
    assert tree_equal(first, train(inputs, cfg, ckpt=ckpt))


@pytest.mark.slow  # a training run; `scripts/test -m slow`
def test_train_returns_the_best_scoring_params(inputs):
    seen = {}

    def on_eval(params, step, metrics):
        seen[step] = jax.device_get(params)  # copied: the next chunk reuses the buffers
        return {2: 1.0, 4: 3.0, 6: 2.0}[step]
    best = train(inputs, on_eval=on_eval)
    assert tree_equal(best, seen[4]) and not tree_equal(best, seen[6])
