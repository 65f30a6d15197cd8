"""Contextual BCQ (mbml.baselines.contextual_bcq, baselines spec §1): sampling, losses, gradient
routing, acting, and the training loop's reproducibility, resumption and model selection."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbml import bcq, io, student as S
from mbml.baselines import contextual_bcq as C
from mbml.config import preset
from mbml.transitions import device_data

OBS, ACT = 2, 2


def tiny_cfg(**kw):
    """The smoke preset's section with tiny nets and a short run."""
    run = preset("point-nav", "smoke")
    c = dataclasses.replace(run.contextual_bcq, latent_dim=3, encoder_hidden=(8,), actor_hidden=(8,),
                            critic_hidden=(8,), vae_hidden=(8,), context_size=5, batch_size=4, steps=6,
                            eval_every=2, **kw)
    return dataclasses.replace(run, contextual_bcq=c)


@pytest.fixture(scope="module")
def data(make_dataset):
    return device_data(make_dataset(k=3, n=24, obs_dim=OBS, act_dim=ACT))


@pytest.fixture(scope="module")
def params():
    return C.init(tiny_cfg(), jax.random.PRNGKey(0), OBS, ACT)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def np_mlp(params, x):
    """A flax `MLP` in numpy: ReLU layers Dense_0 ... then a linear head."""
    layers = [params[f"Dense_{i}"] for i in range(len(params))]
    for layer in layers[:-1]:
        x = np.maximum(x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]), 0.0)
    return x @ np.asarray(layers[-1]["kernel"]) + np.asarray(layers[-1]["bias"])


# ------------------------------------------------------------------------------------------- data


def test_context_with_replacement_and_rl_batch_from_the_unused_indices():
    n, c, b = 12, 8, 600
    ctx, rl = jax.jit(jax.vmap(lambda k: C.draw_indices(k, n, c, b)))(jax.random.split(jax.random.PRNGKey(0), 50))
    ctx, rl = np.asarray(ctx), np.asarray(rl)
    assert any(len(set(row)) < c for row in ctx)  # with replacement: repeats occur
    for cx, r in zip(ctx, rl):
        free = sorted(set(range(n)) - set(cx))
        assert set(r) <= set(free)  # never an index the context used
        counts = np.array([np.sum(r == i) for i in free])
        expected = b / len(free)  # uniform over the free ones: every count within 5 sd of b / |free|
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_rl_batch_from_all_indices_when_the_context_used_them_all():
    ctx, rl = C.draw_indices(jax.random.PRNGKey(0), 2, 16, 200)
    assert set(np.asarray(ctx)) == {0, 1} and set(np.asarray(rl)) == {0, 1}


def test_one_z_per_task_from_the_product_of_gaussians_posterior(params):
    cfg = tiny_cfg().contextual_bcq
    enc = params.encoder
    ctx = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 2 * OBS + ACT + 1))
    key = jax.random.PRNGKey(2)
    z, var = C.latents(cfg, enc, ctx, key, 7)
    assert z.shape == (3, 7, cfg.latent_dim)
    # by hand: per-transition N(mu_t, softplus(pre_t)), product over the context
    out = np_mlp(enc["params"], np.asarray(ctx, np.float64))
    mu_t, var_t = out[..., :3], np.maximum(np.log1p(np.exp(out[..., 3:])), 1e-7)
    var_p = 1.0 / np.sum(1.0 / var_t, axis=1)
    mu_p = var_p * np.sum(mu_t / var_t, axis=1)
    eps = np.asarray(jax.random.normal(key, (3, cfg.latent_dim)))
    np.testing.assert_allclose(var, var_p, rtol=1e-5)
    for j in range(7):  # the same z for every transition of a task
        np.testing.assert_allclose(z[:, j], mu_p + np.sqrt(var_p) * eps, rtol=1e-5, atol=1e-6)
    assert np.all(np.ptp(np.asarray(z[:, 0]), axis=0) > 0)  # and a different one per task


# ----------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("lam", [0.75, 0.0, 1.0])
def test_target_q_hand_computed(lam, params):
    cfg = tiny_cfg(lam=lam, gamma=0.9, phi=0.3).contextual_bcq
    tgt = params  # as the target nets and the VAE
    kb, m, l = (2, 3), 4, cfg.latent_dim
    ks = jax.random.split(jax.random.PRNGKey(6), 5)
    nxt = jax.random.normal(ks[0], kb + (OBS,))
    z = jax.random.normal(ks[1], kb + (l,))
    rew = jax.random.normal(ks[2], kb)
    done = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    u = bcq.sample_latent(ks[3], kb + (m, 2 * ACT))
    y = C.target_q(cfg, ACT, tgt.vae, tgt.actor, tgt.critic, z, nxt, rew, done, u)

    vae, actor, critic = tgt.vae["params"], tgt.actor["params"], tgt.critic["params"]
    want = np.zeros(kb)
    for i in range(kb[0]):
        for j in range(kb[1]):
            s, zz = np.asarray(nxt[i, j], np.float64), np.asarray(z[i, j], np.float64)
            best = -np.inf
            for c in range(m):
                a = np.tanh(np_mlp(vae["dec"], np.concatenate([s, zz, np.asarray(u[i, j, c])])))  # G(s', u, z)
                a = np.clip(a + 0.3 * np.tanh(np_mlp(actor, np.concatenate([s, a, zz]))), -1, 1)  # target xi
                q1, q2 = (np_mlp(critic[h], np.concatenate([s, a, zz]))[0] for h in ("MLP_0", "MLP_1"))
                best = max(best, lam * min(q1, q2) + (1 - lam) * max(q1, q2))
            want[i, j] = float(rew[i, j]) + (1 - float(done[i, j])) * 0.9 * best
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_vae_loss_hand_computed():
    run = tiny_cfg()
    cfg = run.contextual_bcq
    p = C.init(run, jax.random.PRNGKey(0), OBS, ACT)
    ks = jax.random.split(jax.random.PRNGKey(1), 4)
    obs, act = jax.random.normal(ks[0], (2, 3, OBS)), jnp.tanh(jax.random.normal(ks[1], (2, 3, ACT)))
    z = jax.random.normal(ks[2], (2, 3, cfg.latent_dim))
    got = C.vae_loss(cfg, ACT, p.vae, obs, act, z, ks[3])
    enc = np_mlp(p.vae["params"]["enc"], np.concatenate([obs, z, act], -1))
    mean, log_std = enc[..., :2 * ACT], np.clip(enc[..., 2 * ACT:], -4, 15)
    u = mean + np.exp(log_std) * np.asarray(jax.random.normal(ks[3], mean.shape))
    recon = np.tanh(np_mlp(p.vae["params"]["dec"], np.concatenate([obs, z, u], -1)))
    kl = -0.5 * np.mean(1 + 2 * log_std - mean**2 - np.exp(2 * log_std))
    np.testing.assert_allclose(got, np.mean((recon - np.asarray(act)) ** 2) + 0.5 * kl, rtol=1e-5)


@pytest.fixture(scope="module")
def one_update(data, params):
    """One update from online nets unlike their targets (so using the wrong ones would show), and
    the encoder's gradients from each loss on the same inputs, computed apart from `update`."""
    run = tiny_cfg()
    cfg = run.contextual_bcq
    other = C.init(run, jax.random.PRNGKey(9), OBS, ACT)
    fresh = C.start(cfg, params)
    learner = fresh._replace(actor_target=other.actor, critic_target=other.critic)
    ctx, batch = C.sample_inputs(cfg, data, jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    new, metrics = jax.jit(C.update, static_argnums=(0, 1))(cfg, ACT, learner, ctx, batch, key)
    k_z, k_vae, k_tgt, k_act = jax.random.split(key, 4)
    obs, act = batch["obs"], batch["actions"]

    @jax.jit
    def grads(p, vae_after):
        z_of = lambda e: C.latents(cfg, e, ctx, k_z, cfg.batch_size)[0]  # noqa: E731
        z = z_of(p.encoder)
        u = bcq.sample_latent(k_tgt, obs.shape[:2] + (cfg.num_candidates, 2 * ACT))
        y = C.target_q(cfg, ACT, vae_after, learner.actor_target, learner.critic_target, z,
                       batch["next_obs"], batch["rewards"], batch["terminals"], u)  # with the VAE just updated
        u_act = bcq.sample_latent(k_act, obs.shape[:2] + (2 * ACT,))
        a_gen = C.decode(cfg, ACT, p.vae, obs, u_act, z)
        mu_var = lambda e: S.posterior(*S.encode(cfg, e, ctx))  # noqa: E731
        return dict(
            y=y, vae=jax.grad(lambda e: C.vae_loss(cfg, ACT, p.vae, obs, act, z_of(e), k_vae))(p.encoder),
            critic=jax.grad(lambda e: C.critic_loss(cfg, p.critic, obs, act, z_of(e), y))(p.encoder),
            kl=jax.grad(lambda e: jnp.sum(S.prior_kl(*mu_var(e))))(p.encoder),
            actor=jax.grad(lambda e: C.actor_loss(cfg, ACT, p.actor, p.critic, p.vae, obs, z_of(e), u_act))(p.encoder),
            # the actor's objective without the detach: it does depend on z
            undetached=jax.grad(lambda zz: -jnp.mean(C.q_values(cfg, p.critic, obs, C.perturb(
                cfg, ACT, p.actor, obs, a_gen, zz), zz)[0]))(z))

    return dict(cfg=cfg, fresh=fresh, learner=learner, new=new, metrics=metrics,
                grads=grads(learner.params, new.params.vae))


def test_encoder_gradients_come_from_vae_and_critic_losses_only(one_update):
    g = one_update["grads"]
    norm = lambda t: float(optax.tree.norm(t))  # noqa: E731
    assert norm(g["vae"]) > 1e-6 and norm(g["critic"]) > 1e-6
    assert all(np.all(np.asarray(x) == 0.0) for x in jax.tree.leaves(g["actor"]))  # z is detached for the actor
    assert float(jnp.abs(g["undetached"]).max()) > 0.0  # the detach, not a missing input, zeroes it


def test_update_steps_the_encoder_on_vae_plus_critic_gradient_without_kl(one_update):
    """The first Adam step moves each weight by -lr * g / (|g| + eps): its signs give the gradient's."""
    cfg, learner, new, g = (one_update[k] for k in ("cfg", "learner", "new", "grads"))
    np.testing.assert_allclose(one_update["metrics"]["target_q"], g["y"].mean(), rtol=1e-5)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    moved = flat(new.params.encoder) - flat(learner.params.encoder)
    step_sign = lambda *names: -np.sign(sum(flat(g[n]) for n in names))  # noqa: E731
    np.testing.assert_array_equal(np.sign(moved), step_sign("vae", "critic"))
    for wrong in (("vae",), ("critic",), ("vae", "critic", "kl")):  # the check tells these apart
        assert np.any(np.sign(moved) != step_sign(*wrong))
    assert np.all(np.abs(moved) <= cfg.lr * 1.0001)


def test_targets_start_as_copies_and_follow_by_polyak_averaging(one_update):
    cfg, fresh, learner, new = (one_update[k] for k in ("cfg", "fresh", "learner", "new"))
    assert leaves_equal(fresh.actor_target, fresh.params.actor)  # exact copies at the start
    assert leaves_equal(fresh.critic_target, fresh.params.critic)
    tau = cfg.tau
    for t_new, t_old, online in ((new.actor_target, learner.actor_target, new.params.actor),
                                 (new.critic_target, learner.critic_target, new.params.critic)):
        for a, b, o in zip(jax.tree.leaves(t_new), jax.tree.leaves(t_old), jax.tree.leaves(online)):
            np.testing.assert_allclose(a, (1 - tau) * np.asarray(b) + tau * np.asarray(o), rtol=1e-5, atol=1e-7)
        assert not leaves_equal(t_new, t_old)


# ----------------------------------------------------------------------------------------- acting


def test_agent_acts_in_bounds_with_the_best_candidate_and_reads_contexts(params):
    run = tiny_cfg()
    cfg = run.contextual_bcq
    p = params
    ag = C.agent(run, ACT)
    assert hash(ag) == hash(C.agent(run, ACT)) and ag.latent_dim == 3 and ag.diagnostic_size == cfg.context_size
    obs = 5.0 * jax.random.normal(jax.random.PRNGKey(1), (16, OBS))
    z = 5.0 * jax.random.normal(jax.random.PRNGKey(2), (16, 3))
    keys = jax.random.split(jax.random.PRNGKey(3), 16)

    @jax.jit
    def run_all(p):
        a = jax.vmap(ag.act, in_axes=(None, 0, 0, 0))(p, obs, z, keys)
        m = cfg.num_candidates  # the candidates of the first observation, drawn with its key
        rep, zz = jnp.broadcast_to(obs[0], (m, OBS)), jnp.broadcast_to(z[0], (m, 3))
        u = bcq.sample_latent(keys[0], (m, 2 * ACT))
        cand = C.perturb(cfg, ACT, p.actor, rep, C.decode(cfg, ACT, p.vae, rep, u, zz), zz)
        ctx = ag.context(obs[:5], a[:5], jnp.arange(5.0), obs[1:6])
        post = ag.posterior(p, ctx, jnp.array([True, True, False, True, False]))
        want = S.posterior(*S.encode(cfg, p.encoder, ctx[jnp.array([0, 1, 3])]))
        return a, cand, C.q_values(cfg, p.critic, rep, cand, zz)[0], post, want

    a, cand, q1, (mu, var), want = run_all(p)
    assert a.shape == (16, ACT) and bool(jnp.all(jnp.abs(a) <= 1.0))
    np.testing.assert_allclose(a[0], cand[int(jnp.argmax(q1))], rtol=1e-6)  # the largest Q1
    assert len({tuple(np.round(np.asarray(x), 5)) for x in cand}) > 1  # a real choice
    np.testing.assert_allclose(mu, want[0], rtol=1e-5, atol=1e-6)  # the posterior of the masked context
    np.testing.assert_allclose(var, want[1], rtol=1e-5)


def test_init_is_deterministic_and_round_trips(tmp_path, params):
    run = tiny_cfg()
    p = params
    assert leaves_equal(p, C.init(run, jax.random.PRNGKey(0), OBS, ACT))
    assert not leaves_equal(p, C.init(run, jax.random.PRNGKey(1), OBS, ACT))
    io.save_pytree(tmp_path / "p.msgpack", jax.device_get(p))
    back = io.load_pytree(tmp_path / "p.msgpack", C.init(run, jax.random.PRNGKey(1), OBS, ACT))
    assert isinstance(back, C.ContextualBCQ) and leaves_equal(back, p)


# --------------------------------------------------------------------------------------- training


class Stop(Exception):
    pass


def _train(data, key, **kw):
    return C.train(tiny_cfg(), "contextual_bcq", ACT, {"data": data}, jax.random.PRNGKey(key), **kw)


@pytest.mark.slow  # a training run; `scripts/test -m slow`
def test_train_is_reproducible_and_resumes_to_the_same_params(data, tmp_path):
    whole = _train(data, 0)
    assert leaves_equal(whole, _train(data, 0))
    assert not leaves_equal(whole, _train(data, 1))
    assert not leaves_equal(whole, C.init(tiny_cfg(), jax.random.split(jax.random.PRNGKey(0))[0], OBS, ACT))

    ckpt, seen = tmp_path / "ckpt.msgpack", []

    def stop_at_second(params, step, metrics):
        seen.append(step)
        if step == 4:
            raise Stop  # the checkpoint holds the first chunk only

    with pytest.raises(Stop):
        _train(data, 0, ckpt=ckpt, on_eval=stop_at_second)
    assert ckpt.exists()
    resumed = _train(data, 0, ckpt=ckpt, on_eval=lambda p, s, m: seen.append(s))
    assert seen == [2, 4, 4, 6]
    assert leaves_equal(resumed, whole)


def test_train_returns_the_best_scoring_params(data):
    scores, kept, logged = {2: 1.0, 4: 5.0, 6: 2.0}, {}, []

    def on_eval(params, step, metrics):
        kept[step] = jax.device_get(params)
        logged.append(metrics)
        return scores[step]

    best = _train(data, 0, on_eval=on_eval)
    assert leaves_equal(best, kept[4]) and not leaves_equal(best, kept[6])
    assert set(logged[0]) >= {"vae_loss", "critic_loss", "actor_loss"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in logged[-1].values())
    assert leaves_equal(_train(data, 0, on_eval=lambda p, s, m: None), kept[6])  # no score: the last
