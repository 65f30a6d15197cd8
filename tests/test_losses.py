"""Every loss and target of the paper with a hand-computed value (the arithmetic is in the comments).

Notation: N(m, v) is a Gaussian with mean m and *variance* v. In 1-D,
KL(N(m1, v1) || N(m2, v2)) = 0.5 * (log(v2 / v1) + (v1 + (m1 - m2)^2) / v2 - 1).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbml import bcq, distill, ensembles, evaluate, student as S
from mbml.config import BCQConfig, DistillConfig, EnsembleConfig
from mbml.transitions import device_data

LOG2 = math.log(2.0)


def g(*pairs):
    """A batch of 1-D Gaussians: g((m, v), (m, v), ...) -> (mu [P, 1], var [P, 1])."""
    return (jnp.array([[m] for m, _ in pairs], jnp.float32), jnp.array([[v] for _, v in pairs], jnp.float32))


def finite_tree(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------------- posterior


def test_posterior_product_of_two_unit_gaussians():
    # N(1, 1) x N(3, 1): precision 1 + 1 = 2 -> var 1/2; mean = 1/2 * (1/1 + 3/1) = 2
    mu, var = S.posterior(jnp.array([[1.0], [3.0]]), jnp.array([[1.0], [1.0]]))
    np.testing.assert_allclose(mu, [2.0], rtol=1e-6)
    np.testing.assert_allclose(var, [0.5], rtol=1e-6)


def test_posterior_unequal_variances_and_independent_dims():
    # dim 0: N(1, 1) x N(3, 1) -> N(2, 0.5) as above
    # dim 1: N(0, 1) x N(3, 2): precision 1 + 1/2 = 3/2 -> var 2/3; mean = 2/3 * (0/1 + 3/2) = 1
    mu = jnp.array([[1.0, 0.0], [3.0, 3.0]])
    var = jnp.array([[1.0, 1.0], [1.0, 2.0]])
    m, v = S.posterior(mu, var)
    np.testing.assert_allclose(m, [2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(v, [0.5, 2.0 / 3.0], rtol=1e-6)


def test_posterior_mask_excludes_transitions():
    mu, var = jnp.array([[1.0], [3.0]]), jnp.array([[1.0], [1.0]])
    # only N(1, 1) counts -> N(1, 1)
    m, v = S.posterior(mu, var, jnp.array([True, False]))
    np.testing.assert_allclose(m, [1.0], rtol=1e-6)
    np.testing.assert_allclose(v, [1.0], rtol=1e-6)
    # only N(3, 1) counts -> N(3, 1)
    m, v = S.posterior(mu, var, jnp.array([False, True]))
    np.testing.assert_allclose(m, [3.0], rtol=1e-6)
    np.testing.assert_allclose(v, [1.0], rtol=1e-6)


def test_posterior_batched_sets_with_masks():
    # set 0: {N(1,1), N(3,1), N(100,1) masked out} -> N(2, 0.5); set 1: {N(5, 2) only} -> N(5, 2)
    mu = jnp.array([[[1.0], [3.0], [100.0]], [[5.0], [-7.0], [9.0]]])
    var = jnp.array([[[1.0], [1.0], [1.0]], [[2.0], [1.0], [1.0]]])
    mask = jnp.array([[True, True, False], [True, False, False]])
    m, v = S.posterior(mu, var, mask)
    np.testing.assert_allclose(m, [[2.0], [5.0]], rtol=1e-6)
    np.testing.assert_allclose(v, [[0.5], [2.0]], rtol=1e-6)


def test_posterior_of_empty_set_is_flat_and_finite():
    # documented: no member -> mu = 0, var = 1 / MIN_VAR
    m, v = S.posterior(jnp.array([[4.0], [5.0]]), jnp.array([[1.0], [1.0]]), jnp.array([False, False]))
    np.testing.assert_allclose(m, [0.0], atol=1e-12)
    np.testing.assert_allclose(v, [1.0 / S.MIN_VAR], rtol=1e-5)


# ---------------------------------------------------------------------------------------- KL


def test_gaussian_kl_hand_computed():
    # KL(N(0, 1) || N(1, 2)) = 0.5 * (log 2 + (1 + 1) / 2 - 1) = 0.5 log 2 = 0.346574
    np.testing.assert_allclose(S.gaussian_kl(*g((0, 1)), *g((1, 2))), [0.5 * LOG2], rtol=1e-6)
    # the reverse direction differs: KL(N(1, 2) || N(0, 1)) = 0.5 * (log 1/2 + (2 + 1) / 1 - 1) = 1 - 0.5 log 2
    np.testing.assert_allclose(S.gaussian_kl(*g((1, 2)), *g((0, 1))), [1.0 - 0.5 * LOG2], rtol=1e-6)


def test_gaussian_kl_sums_over_latent_dims():
    # dim 0: KL(N(0,1) || N(1,2)) = 0.5 log 2; dim 1: KL(N(1,4) || N(0,1)) = 0.5 * (log 1/4 + 5 - 1) = 2 - log 2
    # total = 2 - 0.5 log 2 = 1.653426
    kl = S.gaussian_kl(jnp.array([0.0, 1.0]), jnp.array([1.0, 4.0]), jnp.array([1.0, 0.0]), jnp.array([2.0, 1.0]))
    assert kl.shape == ()
    np.testing.assert_allclose(kl, 2.0 - 0.5 * LOG2, rtol=1e-6)


def test_gaussian_kl_of_a_distribution_with_itself_is_zero():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    mu = jax.random.normal(k1, (5, 3))
    var = jnp.exp(jax.random.normal(k2, (5, 3)))
    kl = S.gaussian_kl(mu, var, mu, var)
    assert kl.shape == (5,)
    np.testing.assert_allclose(kl, np.zeros(5), atol=1e-6)
    # a unit shift of the mean with equal variances: 0.5 * sum_d 1 / var_d
    np.testing.assert_allclose(S.gaussian_kl(mu, var, mu + 1.0, var), 0.5 * jnp.sum(1.0 / var, -1), rtol=1e-5)


def test_prior_kl_hand_computed():
    # KL(N(1, 1) || N(0, 1)) = 0.5 * (log 1 + (1 + 1) / 1 - 1) = 0.5
    np.testing.assert_allclose(S.prior_kl(*g((1, 1))), [0.5], rtol=1e-6)
    # KL(N(0, e) || N(0, 1)) = 0.5 * (log 1/e + e - 1) = 0.5 * (e - 2) = 0.359141
    np.testing.assert_allclose(S.prior_kl(*g((0, math.e))), [0.5 * (math.e - 2)], rtol=1e-6)
    # both as two dims of one Gaussian: 0.5 + 0.5 (e - 2)
    np.testing.assert_allclose(S.prior_kl(jnp.array([1.0, 0.0]), jnp.array([1.0, math.e])),
                               0.5 + 0.5 * (math.e - 2), rtol=1e-6)
    np.testing.assert_allclose(S.prior_kl(jnp.zeros(3), jnp.ones(3)), 0.0, atol=1e-7)


# ----------------------------------------------------------------------------------- triplet


def _four_pairs():
    # pair 0: a N(0,1), p N(0,1), n N(1,1): d_pos 0, d_neg 0.5           -> relu(0 - 0.5 + 2)        = 1.5
    # pair 1: a N(0,1), p N(1,2), n N(0,1): d_pos 0.5 log 2, d_neg 0     -> relu(0.346574 + 2)       = 2.346574
    #         (KL(a || p), not KL(p || a) = 1 - 0.5 log 2: the direction matters)
    # pair 2: a N(0,1), p N(10,1), n N(0,1): d_pos 50, d_neg 0           -> 52, but invalid (nothing accepted)
    # pair 3: a N(0,1), p N(0,1), n N(3,1): d_pos 0, d_neg 4.5           -> relu(-2.5)               = 0
    anchor = g((0, 1), (0, 1), (0, 1), (0, 1))
    positive = g((0, 1), (1, 2), (10, 1), (0, 1))
    negative = g((1, 1), (0, 1), (0, 1), (3, 1))
    return anchor, positive, negative


def test_triplet_loss_hand_computed_and_invalid_pairs_left_out():
    anchor, positive, negative = _four_pairs()
    valid = jnp.array([True, True, False, True])
    loss, (d_pos, d_neg) = S.triplet_loss(anchor, positive, negative, valid, margin=2.0)
    np.testing.assert_allclose(d_pos, [0.0, 0.5 * LOG2, 50.0, 0.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_neg, [0.5, 0.0, 0.0, 4.5], rtol=1e-6, atol=1e-6)
    # mean over the 3 valid pairs: (1.5 + 2.346574 + 0) / 3 = 1.282191
    np.testing.assert_allclose(loss, (1.5 + 2.0 + 0.5 * LOG2) / 3.0, rtol=1e-6)


def test_triplet_loss_margin_zero():
    anchor, positive, negative = _four_pairs()
    # margin 0: relu(-0.5) = 0, relu(0.346574) = 0.346574, relu(-4.5) = 0 -> 0.346574 / 3
    loss, _ = S.triplet_loss(anchor, positive, negative, jnp.array([True, True, False, True]), margin=0.0)
    np.testing.assert_allclose(loss, 0.5 * LOG2 / 3.0, rtol=1e-6)


def test_triplet_loss_gradient_ignores_invalid_pairs():
    anchor, positive, negative = _four_pairs()
    valid = jnp.array([True, True, False, True])
    grads = jax.grad(lambda a, p, n: S.triplet_loss(a, p, n, valid, 2.0)[0], argnums=(0, 1, 2))(
        anchor, positive, negative)
    assert finite_tree(grads)
    for gr in jax.tree.leaves(grads):
        assert float(jnp.abs(gr[2]).max()) == 0.0  # the invalid pair gets no gradient
    # pair 1: d/d mu_p of KL(N(0,1) || N(mu_p, 2)) = (mu_p - 0) / 2 = 0.5, averaged over 3 pairs -> 1/6
    np.testing.assert_allclose(grads[1][0][1], [1.0 / 6.0], rtol=1e-5)


def test_triplet_loss_all_invalid_is_zero_without_nan():
    # empty sets give the flat posterior N(0, 1e7) for anchor, positive and negative alike
    k = jax.random.PRNGKey(1)
    mu_t = jax.random.normal(k, (3, 5, 2))  # 3 pairs x 5 transitions x latent 2
    var_t = jnp.full((3, 5, 2), 0.3)
    empty = jnp.zeros((3, 5), bool)

    def loss(mu, var):
        post = S.posterior(mu, var, empty)
        return S.triplet_loss(post, post, post, jnp.zeros(3, bool), 2.0)[0]

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(mu_t, var_t)
    assert float(value) == 0.0
    assert finite_tree(grads)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in grads)


def test_hard_negative_loss_hand_computed():
    # 2 tasks x 2 sets, 1-D, unit variances: KL = 0.5 (m1 - m2)^2 (symmetric)
    # task 0 means {0, 1}, task 1 means {3, 5}
    # anchor 0: within max(0, 0.5) = 0.5; across min(KL to 3, to 5) = min(4.5, 12.5) = 4.5
    # anchor 1: within 0.5;                across min(2, 8)     = 2
    # anchor 3: within KL(3 || 5) = 2;     across min(4.5, 2)   = 2
    # anchor 5: within 2;                  across min(12.5, 8)  = 8
    mu = jnp.array([[[0.0], [1.0]], [[3.0], [5.0]]])
    var = jnp.ones_like(mu)
    # margin 2: relu(0.5-4.5+2)=0, relu(0.5-2+2)=0.5, relu(2-2+2)=2, relu(2-8+2)=0 -> 2.5 / 4 = 0.625
    np.testing.assert_allclose(S.hard_negative_loss(mu, var, 2.0), 0.625, rtol=1e-6)
    # margin 3: 0 + 1.5 + 3 + 0 -> 4.5 / 4 = 1.125
    np.testing.assert_allclose(S.hard_negative_loss(mu, var, 3.0), 1.125, rtol=1e-6)


def test_hard_negative_loss_uses_kl_from_the_anchor():
    # task 0: A = N(0,1), B = N(0,4); task 1: C = N(2,1), D = N(2,4)
    # KL(A||B) = 0.5 (log 4 + 1/4 - 1) = 0.318147   KL(B||A) = 0.5 (log 1/4 + 4 - 1) = 0.806853
    # KL(A||C) = 0.5 (0 + 5 - 1) = 2                  KL(A||D) = 0.5 (log 4 + 5/4 - 1) = 0.818147
    # KL(B||C) = 0.5 (log 1/4 + 8 - 1) = 2.806853     KL(B||D) = 0.5 (0 + 8/4 - 1) = 0.5
    # anchor A: relu(0.318147 - 0.818147 + m); anchor B: relu(0.806853 - 0.5 + m); C, D mirror A, B
    # m = 0.4: A 0, B 0.706853, C 0, D 0.706853 -> mean 0.353427 (KL(q || anchor) would give 0.109074)
    mu = jnp.array([[[0.0], [0.0]], [[2.0], [2.0]]])
    var = jnp.array([[[1.0], [4.0]], [[1.0], [4.0]]])
    expected = 0.5 * (0.5 * (math.log(0.25) + 3.0) - 0.5 + 0.4)
    np.testing.assert_allclose(S.hard_negative_loss(mu, var, 0.4), expected, rtol=1e-5)


# ---------------------------------------------------------------------------------- BCQ target


def _set(tree, path, index, value):
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]][index] = value


def _known_teacher(cfg: BCQConfig) -> bcq.Teacher:
    """obs_dim = act_dim = 1, hidden (2,). Target networks are set by hand; online ones are arbitrary.

    decoder:   h = relu(u0 + 1) = u0 + 1 (u in [-0.5, 0.5]);  G(s, u) = tanh(h - 1) = tanh(u0)
    actor':    xi = tanh(atanh(0.4)) = 0.4;  perturbed a = clip(tanh(u0) + 0.05 * 0.4) = tanh(u0) + 0.02
    critic':   h = relu(a + 1) = a + 1;  Q1' = 3 h - 2 = 3a + 1;  Q2' = h + 1 = a + 2
    """
    shapes = jax.eval_shape(lambda: bcq.init(cfg, jax.random.PRNGKey(0), 1, 1))
    zero = lambda tree: jax.tree.map(lambda x: np.zeros(x.shape, np.float32), tree)  # noqa: E731
    rng = np.random.default_rng(0)  # the online actor and critic must not be used for the target
    noise = lambda tree: jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), tree)  # noqa: E731
    vae, actor, critic = zero(shapes.vae), zero(shapes.actor_target), zero(shapes.critic_target)
    dec = ("params", "dec")
    _set(vae, (*dec, "Dense_0", "kernel"), (1, 0), 1.0)  # inputs (s, u0, u1): row 1 is u0
    _set(vae, (*dec, "Dense_0", "bias"), 0, 1.0)
    _set(vae, (*dec, "Dense_1", "kernel"), (0, 0), 1.0)
    _set(vae, (*dec, "Dense_1", "bias"), 0, -1.0)
    _set(actor, ("params", "Dense_1", "bias"), 0, math.atanh(0.4))
    for head, (w, b) in (("MLP_0", (3.0, -2.0)), ("MLP_1", (1.0, 1.0))):
        _set(critic, ("params", head, "Dense_0", "kernel"), (1, 0), 1.0)  # inputs (s, a): row 1 is a
        _set(critic, ("params", head, "Dense_0", "bias"), 0, 1.0)
        _set(critic, ("params", head, "Dense_1", "kernel"), (0, 0), w)
        _set(critic, ("params", head, "Dense_1", "bias"), 0, b)
    return bcq.Teacher(noise(shapes.actor), noise(shapes.critic), vae, actor, critic, ())


@pytest.mark.parametrize("lam", [0.75, 0.0, 1.0])
def test_bcq_target_q_hand_computed(lam):
    # 200 candidates: u0 ~ N(0,1) clipped to [-0.5, 0.5] reaches 0.5 in some candidate with probability
    # 1 - 0.6915^200 ~ 1 - 1e-32, so the best candidate is a* = tanh(0.5) + 0.02 = 0.482117 for every state.
    # For a < 0.5: Q1' = 3a + 1 < Q2' = a + 2, so per candidate lam * (3a + 1) + (1 - lam) * (a + 2),
    # increasing in a: the max over candidates is at a*.
    #   lam 0.75: 2.5 a* + 1.25 = 2.455293;  lam 0 (max only): a* + 2 = 2.482117;  lam 1 (min): 3 a* + 1 = 2.446352
    cfg = BCQConfig(actor_hidden=(2,), critic_hidden=(2,), vae_hidden=(2,), num_candidates=200, lam=lam,
                    phi=0.05, gamma=0.99)
    t = _known_teacher(cfg)
    a_star = math.tanh(0.5) + 0.05 * 0.4
    soft = lam * (3 * a_star + 1) + (1 - lam) * (a_star + 2)
    next_obs = jnp.array([[0.3], [-2.0], [5.0], [0.0]])  # the networks ignore s
    rewards = jnp.array([1.0, -0.5, 2.0, 0.25])
    terminals = jnp.array([0.0, 0.0, 1.0, 1.0])
    y = jax.jit(lambda *a: bcq.target_q(cfg, 1, *a))(t, next_obs, rewards, terminals, jax.random.PRNGKey(3))
    # y = r + (1 - done) * 0.99 * soft; done = 1 gives y = r exactly
    np.testing.assert_allclose(y, [1.0 + 0.99 * soft, -0.5 + 0.99 * soft, 2.0, 0.25], rtol=1e-5)
    assert float(y[2]) == 2.0 and float(y[3]) == 0.25


# --------------------------------------------------------------------------- relabelling filter


def test_accept_mask_strict_threshold_and_never_own_task():
    std = np.zeros((2, 2, 3), np.float32)
    std[0, 0] = [0.01, 0.01, 0.01]  # own task: below threshold but never accepted
    std[0, 1] = [0.05, 0.1, 0.2]  # threshold_0 = 0.1 -> [yes, no (not strictly below), no]
    std[1, 0] = [0.15, 0.25, 0.19]  # threshold_1 = 0.2 -> [yes, no, yes]
    std[1, 1] = [0.0, 0.0, 0.0]
    acc = ensembles.accept_mask(std, np.array([0.1, 0.2], np.float32))
    assert acc.dtype == bool and acc.shape == (2, 2, 3)
    np.testing.assert_array_equal(acc[0, 1], [True, False, False])
    np.testing.assert_array_equal(acc[1, 0], [True, False, True])
    assert not acc[0, 0].any() and not acc[1, 1].any()


def test_thresholds_fixed_and_quantile_of_own_data():
    std = np.full((2, 2, 4), 100.0, np.float32)  # off-diagonal values must not matter
    std[0, 0] = [0.4, 0.1, 0.3, 0.2]
    std[1, 1] = [1.0, 5.0, 2.0, 3.0]
    fixed = ensembles.thresholds(EnsembleConfig(std_threshold=0.1), std)
    np.testing.assert_allclose(fixed, [0.1, 0.1], rtol=1e-6)
    # median (linear interpolation) of {0.1, 0.2, 0.3, 0.4} = 0.25, of {1, 2, 3, 5} = 2.5
    med = ensembles.thresholds(EnsembleConfig(std_threshold=0.0, std_quantile=0.5), std)
    np.testing.assert_allclose(med, [0.25, 2.5], rtol=1e-6)
    # 0.9 quantile: position 0.9 * 3 = 2.7 -> 0.3 + 0.7 * 0.1 = 0.37 and 3 + 0.7 * 2 = 4.4
    q9 = ensembles.thresholds(EnsembleConfig(std_threshold=0.0, std_quantile=0.9), std)
    np.testing.assert_allclose(q9, [0.37, 4.4], rtol=1e-5)


# ---------------------------------------------------------------------------------- evaluation


def test_score_is_mean_of_episodes_3_to_5():
    # (3 + 4 + 5) / 3 = 4
    np.testing.assert_allclose(evaluate.score(jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2), 4.0)
    # per task: (-3 - 6 - 9) / 3 = -6; score_from 0 is the plain mean (1 + 2 + 3 + 4 + 5) / 5 = 3
    np.testing.assert_allclose(evaluate.score(jnp.array([[1.0, 2, 3, 4, 5], [0, 0, -3, -6, -9]]), 2), [4.0, -6.0])
    np.testing.assert_allclose(evaluate.score(jnp.array([1.0, 2, 3, 4, 5]), 0), 3.0)


# ------------------------------------------------------------------------------- distillation

K, N, C = 3, 8, 4
TINY = DistillConfig(latent_dim=2, encoder_hidden=(8,), q_hidden=(8,), g_hidden=(8,), xi_hidden=(8,),
                     context_size=C, batch_size=4, hard_negative_sets=3, triplet_margin=2.0)
TINY_BCQ = BCQConfig(actor_hidden=(8,), critic_hidden=(8,), vae_hidden=(8,))


@pytest.fixture(scope="module")
def tiny(make_dataset):
    ds = make_dataset(k=K, n=N, obs_dim=2, act_dim=2, seed=3)
    data = device_data(ds)
    params, teachers = jax.jit(lambda key: (S.init(TINY, key, 2, 2), jax.vmap(lambda kk: bcq.init(TINY_BCQ, kk, 2, 2))(
        jax.random.split(jax.random.fold_in(key, 1), K))))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    reward = jnp.asarray(rng.normal(size=(K, K, N)).astype(np.float32))
    off = ~np.eye(K, dtype=bool)[:, :, None]
    acc_all = np.broadcast_to(off, (K, K, N)).copy()
    acc_gap = acc_all.copy()
    acc_gap[0, 1] = False  # nothing of task 1 accepted for task 0
    return {"ds": ds, "data": data, "params": params, "teachers": teachers, "reward": reward,
            "lab_gap": {"accept": jnp.asarray(acc_gap), "reward": reward},
            "lab_none": {"accept": jnp.zeros((K, K, N), bool), "reward": reward},
            "idx": jnp.asarray(rng.integers(0, N, (K, C)))}


@functools.partial(jax.jit, static_argnums=(0,))
def _encoder_inputs_and_grads(method: str, params, data, lab, idx):
    """relabelled_encoder_inputs and the gradient of trip + sum(mu) + sum(var) w.r.t. the student."""
    def f(p):
        trip, (mu, var), metrics = distill.relabelled_encoder_inputs(TINY, distill.METHODS[method], p, data, lab, idx,
                                                                     jax.random.PRNGKey(7))
        return trip + jnp.sum(mu) + jnp.sum(var), (trip, mu, var, metrics)

    return jax.grad(f, has_aux=True)(params)


def _encoder_inputs(tiny, lab, method="full"):
    return _encoder_inputs_and_grads(method, tiny["params"], tiny["data"], lab, tiny["idx"])


def test_relabelled_inputs_pair_with_nothing_accepted(tiny):
    grads, (trip, mu, var, metrics) = _encoder_inputs(tiny, tiny["lab_gap"])
    assert bool(jnp.isfinite(trip)) and finite_tree((mu, var)) and finite_tree(grads)
    assert mu.shape == (K, TINY.latent_dim) and var.shape == (K, TINY.latent_dim)
    # 6 ordered pairs, (0, 1) has nothing accepted -> 5 / 6 valid
    np.testing.assert_allclose(metrics["valid_pairs"], 5.0 / 6.0, rtol=1e-6)
    # the rewards task 0 would give task 1's transitions are never used: changing them changes nothing ...
    lab = dict(tiny["lab_gap"], reward=tiny["reward"].at[0, 1].add(1000.0))
    _, (trip2, mu2, _, _) = _encoder_inputs(tiny, lab)
    np.testing.assert_allclose(trip2, trip, rtol=1e-6)
    np.testing.assert_allclose(mu2, mu, rtol=1e-6)
    # ... while those of an accepted pair do matter (so the check above can fail)
    lab = dict(tiny["lab_gap"], reward=tiny["reward"].at[0, 2].add(1000.0))
    _, (trip3, mu3, _, _) = _encoder_inputs(tiny, lab)
    assert not np.allclose(mu3[0], mu[0])


def test_relabelled_inputs_nothing_accepted_anywhere(tiny):
    grads, (trip, mu, var, metrics) = _encoder_inputs(tiny, tiny["lab_none"])
    assert float(trip) == 0.0 and float(metrics["valid_pairs"]) == 0.0
    assert finite_tree(grads)
    # the fast context falls back to the C own transitions only
    d = tiny["data"]
    take = lambda a: jax.vmap(lambda x, i: x[i])(a, tiny["idx"])  # noqa: E731
    nxt = np.stack([tiny["ds"].next_obs(t, np.asarray(tiny["idx"][t])) for t in range(K)])
    own = S.context(take(d["obs"]), take(d["actions"]), take(d["rewards"]), jnp.asarray(nxt))
    mu_own, var_own = jax.jit(lambda p, c: S.posterior(*S.encode(TINY, p, c)))(tiny["params"].encoder, own)
    np.testing.assert_allclose(mu, mu_own, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, var_own, rtol=1e-5)


def test_no_triplet_method_reports_but_does_not_use_the_triplet(tiny):
    _, (trip, _, _, metrics) = _encoder_inputs(tiny, tiny["lab_gap"], "no_triplet")
    assert float(trip) == 0.0
    _, (full, _, _, _) = _encoder_inputs(tiny, tiny["lab_gap"], "full")
    assert float(full) > 0.0
    np.testing.assert_allclose(metrics["triplet"], full, rtol=1e-6)


@functools.partial(jax.jit, static_argnums=(0,))
def _loss_and_grads(method: str, params, data, lab, teachers, key):
    m = distill.METHODS[method]
    return jax.value_and_grad(lambda p: distill.loss_fn(TINY, TINY_BCQ, m, 2, p, data, lab, teachers,
                                                        jnp.array([0.0, 1.0]), key), has_aux=True)(params)


@pytest.mark.parametrize("method,lab", [(m, "lab_gap") for m in distill.METHODS] + [("full", "lab_none")])
def test_loss_fn_finite_for_every_method(tiny, method, lab):
    m = distill.METHODS[method]
    lab = None if m.relabel == "none" else tiny[lab]
    (loss, metrics), grads = _loss_and_grads(method, tiny["params"], tiny["data"], lab, tiny["teachers"],
                                             jax.random.PRNGKey(11))
    assert bool(jnp.isfinite(loss)) and finite_tree(metrics) and finite_tree(grads)
    # the total is the sum of its parts (Eq. 10 + KL of Eq. 3)
    trip = metrics["triplet"] if m.triplet != "none" else 0.0
    np.testing.assert_allclose(loss, trip + TINY.kl_weight * metrics["kl"] + metrics["q"] + metrics["g"]
                               + metrics["xi"], rtol=1e-5)
    # the encoder is trained (by Q + KL, plus the triplet where used)
    assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(grads.encoder))
