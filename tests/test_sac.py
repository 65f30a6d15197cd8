"""The collector's SAC variants on hand-computed values: one tiny network, one batch.

Every case: obs and action are 1-D, one transition s=0, a=0, r=1, s'=2, not terminal, gamma 0.5.
The actor's mean is 0 with log-std -20, so the next action is tanh(0 + e^-20 * noise) = 0 (to 1e-9),
and the temperature is fixed at 1e-8, so alpha * log pi (about 1e-7) drops out of the targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbml import sac
from mbml.config import SACConfig
from mbml.errors import MbmlError
from mbml.transitions import gather_n

BATCH = {"obs": jnp.array([[0.0]]), "actions": jnp.array([[0.0]]), "rewards": jnp.array([1.0]),
         "next_obs": jnp.array([[2.0]]), "terminals": jnp.array([0.0])}


def dense(kernel, bias):
    return {"kernel": jnp.array(kernel, jnp.float32), "bias": jnp.array(bias, jnp.float32)}


def state_for(cfg: SACConfig, critic_params: dict) -> sac.SACState:
    state = sac.init(cfg, jax.random.PRNGKey(0), 1, 1)
    actor = {"params": {"MLP_0": {"Dense_0": dense([[0.0, 0.0]], [0.0, -20.0])}}}
    critic = {**state.critic, "params": critic_params}
    target = {} if cfg.critic == "crossq" else jax.tree.map(jnp.copy, critic)
    opt = sac._optimizer(cfg)
    return state._replace(actor=actor, critic=critic, target=target,
                          opt=(opt.init(actor), opt.init({"params": critic_params}), state.opt[2]))


def cfg_for(critic: str, hidden=(), **kw) -> SACConfig:
    return SACConfig(policy_hidden=(), q_hidden=hidden, critic=critic, gamma=0.5, init_temperature=1e-8,
                     learn_temperature=False, **kw)


def linear_q(w0, b):
    """Q(s, a) = w0 * s + b."""
    return {"Dense_0": dense([[w0], [0.0]], [b])}


def test_mlp_critic_loss_and_polyak_target():
    # Q1 = s, Q2 = 2 s + 0.5. Targets (= online at the start) at (s', a') = (2, 0): 2 and 4.5, min 2.
    # y = 1 + 0.5 * 2 = 2; Q1(0, 0) = 0, Q2(0, 0) = 0.5: loss = (0 - 2)^2 + (0.5 - 2)^2 = 6.25
    cfg = cfg_for("mlp", tau=0.1)
    st = state_for(cfg, {"MLP_0": linear_q(1.0, 0.0), "MLP_1": linear_q(2.0, 0.5)})
    new, m = sac.update(cfg, st, BATCH, jax.random.PRNGKey(1), 1)
    np.testing.assert_allclose(m["critic_loss"], 6.25, rtol=1e-5)
    np.testing.assert_allclose(m["q"], 0.0, atol=1e-6)
    # target = 0.9 * old + 0.1 * new online parameters
    old = st.critic["params"]["MLP_0"]["Dense_0"]["bias"]
    online = new.critic["params"]["MLP_0"]["Dense_0"]["bias"]
    np.testing.assert_allclose(new.target["params"]["MLP_0"]["Dense_0"]["bias"], 0.9 * old + 0.1 * online, rtol=1e-6)
    assert float(new.log_alpha) == float(st.log_alpha)  # fixed temperature


def test_n_step_batches_bootstrap_with_their_own_discount():
    # as above with discount 0.25 (two steps summed): y = 1 + 0.25 * 2 = 1.5; loss = 1.5^2 + 1^2 = 3.25
    cfg = cfg_for("mlp")
    st = state_for(cfg, {"MLP_0": linear_q(1.0, 0.0), "MLP_1": linear_q(2.0, 0.5)})
    _, m = sac.update(cfg, st, {**BATCH, "discount": jnp.array([0.25])}, jax.random.PRNGKey(1), 1)
    np.testing.assert_allclose(m["critic_loss"], 3.25, rtol=1e-5)


def test_layernorm_critic_loss():
    # hidden h = [s, -s], LayerNorm, ReLU; out = v . relu(LN(h)) + b.
    # s = 0: h = [0, 0] -> LN 0 -> Q = b.  s' = 2: h = [2, -2] -> LN [1, -1] -> relu [1, 0] -> Q = v0 + b.
    # Q1: v = [3, 0], b = 0 -> Q1 = 0, Q1' = 3.  Q2: v = [1, 0], b = 1 -> Q2 = 1, Q2' = 2.  min' = 2
    # y = 1 + 0.5 * 2 = 2; loss = (0 - 2)^2 + (1 - 2)^2 = 5
    def q(v, b):
        return {"Dense_0": dense([[1.0, -1.0], [0.0, 0.0]], [0.0, 0.0]),
                "LayerNorm_0": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}, "Dense_1": dense([[v[0]], [v[1]]], [b])}

    cfg = cfg_for("layernorm", hidden=(2,))
    st = state_for(cfg, {"NormedQ_0": q((3.0, 0.0), 0.0), "NormedQ_1": q((1.0, 0.0), 1.0)})
    _, m = sac.update(cfg, st, BATCH, jax.random.PRNGKey(1), 1)
    np.testing.assert_allclose(m["critic_loss"], 5.0, rtol=1e-4)


def test_crossq_normalises_current_and_next_together_and_has_no_target():
    # Batch norm over the joint batch [(s, a), (s', a')] = [(0, 0), (2, 0)]: feature 0 has mean 1 and
    # (biased) variance 1 -> [-1, 1]; feature 1 is constant -> 0. Q = w0 * x0_hat + b.
    # Q1: w0 = 1, b = 0 -> Q1 = -1, Q1' = 1.  Q2: w0 = 2, b = 0.5 -> Q2 = -1.5, Q2' = 2.5.  min' = 1
    # y = 1 + 0.5 * 1 = 1.5; loss = (-1 - 1.5)^2 + (-1.5 - 1.5)^2 = 6.25 + 9 = 15.25
    def q(w0, b):
        return {"BatchNorm_0": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}, "Dense_0": dense([[w0], [0.0]], [b])}

    cfg = cfg_for("crossq")
    st = state_for(cfg, {"NormedQ_0": q(1.0, 0.0), "NormedQ_1": q(2.0, 0.5)})
    assert st.target == {}
    new, m = sac.update(cfg, st, BATCH, jax.random.PRNGKey(1), 1)
    np.testing.assert_allclose(m["critic_loss"], 15.25, rtol=1e-4)
    # running statistics: mean 0.99 * 0 + 0.01 * [1, 0]; variance 0.99 * 1 + 0.01 * [1, 0]
    stats = new.critic["batch_stats"]["NormedQ_0"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], [0.01, 0.0], atol=1e-6)
    np.testing.assert_allclose(stats["var"], [1.0, 0.99], atol=1e-6)
    assert new.target == {}


def test_learned_temperature_moves_towards_the_target_entropy():
    # log pi of a near-deterministic action is far above the target entropy's -|A| = -1, so
    # d loss / d log alpha = -(log pi + 1) < 0 and Adam's first step raises log alpha by lr.
    cfg = SACConfig(policy_hidden=(), q_hidden=(), gamma=0.5, init_temperature=0.5, lr=1e-3)
    st = state_for(cfg, {"MLP_0": linear_q(1.0, 0.0), "MLP_1": linear_q(2.0, 0.5)})
    new, m = sac.update(cfg, st, BATCH, jax.random.PRNGKey(1), 1)
    np.testing.assert_allclose(m["alpha"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(new.log_alpha), np.log(0.5) + 1e-3, rtol=1e-4)


def test_gather_n_sums_rewards_within_one_episode():
    # steps 0..3, rewards 1, 2, 3, 4; step 1 ends an episode (time limit), gamma 0.5, n = 3.
    # obs rows: o0..o4 = 10, 11, 12, 13, 14 (row t + 1 follows step t); step 1's true next obs is
    # finals[0] = 99 (the reset came after it).
    buf = {"obs": jnp.array([[10.0], [11.0], [12.0], [13.0], [14.0]]), "actions": jnp.zeros((4, 1)),
           "rewards": jnp.array([1.0, 2.0, 3.0, 4.0]), "terminals": jnp.array([False, False, False, False]),
           "timeouts": jnp.array([False, True, False, False]), "final_slot": jnp.array([-1, 0, -1, -1]),
           "finals": jnp.array([[99.0]])}
    b = gather_n(buf, jnp.array([0, 1, 2, 2]), 3, 0.5, jnp.array([3, 3, 3, 2])[0])
    # idx 0: 1 + 0.5 * 2 = 2, stops at the episode end; discount 0.25; next obs finals[0]
    # idx 1: 2; discount 0.5; next obs 99.   idx 2: 3 + 0.5 * 4 = 5 (only two steps exist); 0.25; o4
    np.testing.assert_allclose(b["rewards"], [2.0, 2.0, 5.0, 5.0])
    np.testing.assert_allclose(b["discount"], [0.25, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(b["next_obs"][:, 0], [99.0, 99.0, 14.0, 14.0])
    # no later than `last`: with last = 2, idx 2 sums only its own reward
    b = gather_n(buf, jnp.array([2]), 3, 0.5, 2)
    np.testing.assert_allclose(b["rewards"], [3.0])
    np.testing.assert_allclose(b["discount"], [0.5])
    np.testing.assert_allclose(b["next_obs"][:, 0], [13.0])


def test_uniform_warmup_then_policy():
    cfg = SACConfig(policy_hidden=(), q_hidden=(), warmup="uniform", warmup_steps=10)
    st = state_for(cfg_for("mlp"), {"MLP_0": linear_q(1.0, 0.0), "MLP_1": linear_q(2.0, 0.5)})
    obs = jnp.zeros((256, 1))
    early = jax.vmap(lambda k: sac.collect_action(cfg, st.actor, obs[0], k, 1, 3))(jax.random.split(jax.random.PRNGKey(0), 256))
    late = sac.collect_action(cfg, st.actor, obs[0], jax.random.PRNGKey(0), 1, 10)
    assert float(jnp.std(early)) > 0.4  # uniform on [-1, 1]: std 0.577
    np.testing.assert_allclose(late, 0.0, atol=1e-6)  # the policy's mean 0 with log-std -20


@pytest.mark.parametrize("change, words", [
    (dict(critic="resnet"), ["sac.critic=resnet", "mlp, layernorm, crossq"]),
    (dict(n_step=0), ["sac.n_step=0", "at least 1"]),
    (dict(warmup="zeros"), ["sac.warmup=zeros", "policy, uniform"]),
    (dict(init_temperature=0.0), ["sac.init_temperature=0.0", "positive"]),
])
def test_unsupported_settings_are_refused(change, words):
    with pytest.raises(MbmlError) as e:
        SACConfig(**change)
    assert all(w in str(e.value) for w in words)
