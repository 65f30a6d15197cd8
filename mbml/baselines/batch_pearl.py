"""Batch PEARL, the MBML authors' baseline (baselines spec §2), as pure functions.

PEARL's soft actor-critic with a V function, unchanged, trained only from the fixed per-task datasets
(`batch_pearl/rlkit/torch/sac/sac.py:106-197` of the authors' code). Networks: a per-transition
context encoder whose product of Gaussians is q(z | c), twin Q(s, a, z), V(s, z) with a Polyak target
V', and a tanh-Gaussian policy pi(a | s, z). There is no temperature: the reward scale sets the
entropy trade-off. One gradient step, in the authors' code order (§2.4-2.5):

1. B tasks drawn uniformly with replacement; per drawn task, a context of C transitions (s, a, r, s')
   with replacement from its whole dataset and an RL batch of N with replacement from the indices the
   context did not use; one reparameterised z per drawn task, shared by its N RL transitions;
2. Q step: y = scale r + (1 - d) gamma V'(s', z), held fixed; L = mean (Q1 - y)^2 + mean (Q2 - y)^2
   + lambda_KL sum_tasks KL(q(z | c) || N(0, I)); it steps Q1, Q2 and the encoder (the only losses
   the encoder sees);
3. V step on mse(V(s, z_), min(Q1, Q2)(s, a_pi, z_) - log pi(a_pi | s, z_)), with the Q networks the
   Q step just updated, z_ = z detached and a_pi ~ pi(. | s, z_) by reparameterisation; then
   V' <- (1 - tau) V' + tau V;
4. policy step on mean(log pi - min Q(s, a_pi, z_)) + reg (mean mu^2 + mean (log sigma)^2), the same
   a_pi and the updated Q (the pre-tanh penalty has weight 0 there and is left out).
Five Adams (encoder, Q1, Q2, V, policy) at one learning rate.

Acting (§2.6): the deterministic tanh(mu(s, z)); the protocol samples z from the prior, then from the
posterior of everything collected so far on the task.

How the authors' Batch PEARL differs from the PEARL reference (OYS; §2.7), all kept here:
* no environment interaction: context and RL batch both come from the fixed datasets (OYS: online
  prior/posterior rollouts, a context buffer of recent prior-z data cleared every iteration);
* the next state is in the context for every domain (OYS: Walker and Hopper only);
* 100 steps per iteration instead of 2000-4000 (here only the total `steps` counts);
* at test time the posterior is used from episode 2 on (OYS: 2 prior episodes), which is
  `mbml.evaluate.protocol`'s schedule;
* Walker's meta-batch is 16 (OYS: 10), in the `paper` presets.

Where this differs from the authors' code:
* Evaluation and selection follow the module contract (`mbml.methods`): `on_eval` scores the
  parameters every `eval_every` steps and the best on the training tasks are returned. The authors
  keep the last weights and plot smoothed curves. The protocol's score is the mean of episodes 3-5, as
  for MBML; the authors' Batch PEARL reports the last episode only (`Return_all_wd_tasks`), a
  different statistic from the one used for MBML in the same figure (§2.9, first trap). The protocol
  reports both (`score`, `last_episode`), so the comparison can be made on one statistic.
* The protocol runs `eval.episodes` full episodes per task; the authors stop once 1000-5000
  transitions exist, which gives more, shorter episodes in domains that terminate early (§2.9).
* log pi uses the exact log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)) (as `mbml.sac`); rlkit
  subtracts log(1 - tanh(x)^2 + 1e-6), which caps the correction of a saturated action at about
  -13.8 per dimension.
* The RL batch is drawn from the indices the context did not use in O(C log C) (`transitions.draw_indices`,
  shared with Contextual BCQ), not by deleting the context from the index array (O(N)). One JAX PRNG
  stream replaces Ray workers seeded 10 seed + 2337 + task, and nothing is prefetched.
Not carried over (§2.9): the dead `path_collector.py` import, the "final" save that cannot happen
(`run_chunks` checkpoints every chunk and `train` returns the chosen parameters), and the logged
"achieved goals" hard-coded to -1. Evaluation is the caller's (`on_eval`), not inside the training step.

Initialisation is rlkit's (§0, §2.2): hidden weights U(+-1/sqrt(k)) with k the layer's *output* width
(rlkit reads `size[0]` of a PyTorch (out, in) weight), hidden biases 0.1, last layer U(+-3e-3), the
policy's U(+-1e-3).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbml import student as S
from mbml.agents import EncoderAgent
from mbml.config import RunConfig
from mbml.config_baselines import BatchPEARLConfig
from mbml.nets import MLP, mse
from mbml.train_loop import scan_steps, train_keeping_best
from mbml.transitions import draw_indices, meta_take

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's TanhGaussianPolicy clamp
LAST_INIT, POLICY_LAST_INIT = 3e-3, 1e-3  # rlkit's init_w (`networks.py`, `policies.py`)


class BatchPEARL(NamedTuple):
    """What is saved and acted with: the networks (the target V and the Adam states are training state)."""

    encoder: dict
    q1: dict
    q2: dict
    v: dict
    policy: dict


class Learner(NamedTuple):
    params: BatchPEARL
    target_v: dict
    opt: BatchPEARL  # one Adam state per network


# ---------------------------------------------------------------------------------------- networks


def nets(cfg: BatchPEARLConfig, act_dim: int) -> BatchPEARL:
    """The modules, as a BatchPEARL of flax MLPs (Q: s | a | z, V and policy: s | z; §2.2)."""
    return BatchPEARL(MLP(cfg.encoder_hidden, 2 * cfg.latent_dim), MLP(cfg.hidden, 1), MLP(cfg.hidden, 1),
                      MLP(cfg.hidden, 1), MLP(cfg.hidden, 2 * act_dim))


def rlkit_init(module: MLP, key, inputs, last: float = LAST_INIT) -> dict:
    """rlkit's initialisation of an MLP (module docstring): the flax parameter tree, drawn again."""
    shapes = jax.eval_shape(module.init, key, *inputs)["params"]
    layers = len(module.hidden) + 1
    keys = jax.random.split(key, 2 * layers)
    params = {}
    for i in range(layers):
        shape = shapes[f"Dense_{i}"]["kernel"].shape  # (in, out)
        bound = last if i == layers - 1 else 1.0 / jnp.sqrt(shape[1])
        bias = (jax.random.uniform(keys[2 * i + 1], shape[1:], minval=-last, maxval=last) if i == layers - 1
                else jnp.full(shape[1:], 0.1, jnp.float32))
        params[f"Dense_{i}"] = {"kernel": jax.random.uniform(keys[2 * i], shape, minval=-bound, maxval=bound),
                                "bias": bias}
    return {"params": params}


def init(cfg: RunConfig, key, obs_dim: int, act_dim: int) -> BatchPEARL:
    """The five networks, rlkit-initialised; deterministic in `key` (also the template for loading)."""
    return _init(cfg.batch_pearl, key, obs_dim, act_dim)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init(c: BatchPEARLConfig, key, obs_dim: int, act_dim: int) -> BatchPEARL:
    enc, q1, q2, v, pi = nets(c, act_dim)
    ks = jax.random.split(key, 5)
    o, a, z = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)), jnp.zeros((1, c.latent_dim))
    ctx = context(o, a, jnp.zeros(1), o)
    return BatchPEARL(rlkit_init(enc, ks[0], (ctx,)), rlkit_init(q1, ks[1], (o, a, z)), rlkit_init(q2, ks[2], (o, a, z)),
                      rlkit_init(v, ks[3], (o, z)), rlkit_init(pi, ks[4], (o, z), POLICY_LAST_INIT))


def context(obs, act, rew, next_obs):
    """A transition as PEARL's encoder reads it: (s, a, r, s'), `agent.py`'s order (MBML's is (s, a, s', r))."""
    return jnp.concatenate([obs, act, rew[..., None], next_obs], axis=-1)


def q_values(cfg: BatchPEARLConfig, params: BatchPEARL, obs, act, z):
    return MLP(cfg.hidden, 1).apply(params.q1, obs, act, z)[..., 0], MLP(cfg.hidden, 1).apply(params.q2, obs, act, z)[..., 0]


def value(cfg: BatchPEARLConfig, v_params, obs, z):
    return MLP(cfg.hidden, 1).apply(v_params, obs, z)[..., 0]


def policy_dist(cfg: BatchPEARLConfig, act_dim: int, policy, obs, z):
    """Mean and log-std (clamped to [-20, 2]) of the pre-tanh Gaussian."""
    mean, log_std = jnp.split(MLP(cfg.hidden, 2 * act_dim).apply(policy, obs, z), 2, axis=-1)
    return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian(mean, log_std, key):
    """a = tanh(mean + std eps), reparameterised, and log pi(a) summed over the action's dimensions."""
    pre = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    logp = jnp.sum(-0.5 * ((pre - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    logp -= jnp.sum(2.0 * (jnp.log(2.0) - pre - jax.nn.softplus(-2.0 * pre)), axis=-1)  # log(1 - tanh(pre)^2)
    return jnp.tanh(pre), logp


def act(cfg: BatchPEARLConfig, act_dim: int, params: BatchPEARL, obs, z, key):
    """PEARL's evaluation action: tanh(mu(s, z)), deterministic (`policies.py:103-104`); `key` is unused."""
    return jnp.tanh(policy_dist(cfg, act_dim, params.policy, obs, z)[0])


# -------------------------------------------------------------------------------------------- data


def sample_meta_batch(cfg: BatchPEARLConfig, data: dict, key):
    """The tasks [B], each drawn task's context [B, C, context_dim] and RL batch (dict of [B, N, ...]) (§2.4)."""
    k, n = data["obs"].shape[:2]
    k_task, k_idx = jax.random.split(key)
    tasks = jax.random.randint(k_task, (cfg.meta_batch,), 0, k)
    ctx_idx, rl_idx = jax.vmap(lambda kk: draw_indices(kk, n, cfg.context_size, cfg.batch_size))(
        jax.random.split(k_idx, cfg.meta_batch))
    c = meta_take(data, tasks, ctx_idx)
    return tasks, context(c["obs"], c["actions"], c["rewards"], c["next_obs"]), meta_take(data, tasks, rl_idx)


# ------------------------------------------------------------------------------------------ losses


def q_target(cfg: BatchPEARLConfig, target_v, batch: dict, z):
    """y = scale r + (1 - d) gamma V'(s', z), held fixed (§2.5 step 4)."""
    v_next = value(cfg, target_v, batch["next_obs"], z)
    return jax.lax.stop_gradient(cfg.reward_scale * batch["rewards"] + (1.0 - batch["terminals"]) * cfg.gamma * v_next)


def critic_loss(cfg: BatchPEARLConfig, params: BatchPEARL, target_v, batch: dict, ctx, key):
    """L_Q + lambda_KL KL, the loss of the Q networks and the encoder (§2.5 steps 1-4).

    z is drawn from each task's posterior by reparameterisation and *not* detached, so the encoder
    learns from the Bellman error; KL is summed over the latent dimensions and the meta-batch
    (`agent.py:115-121`). Returns (loss, aux) with aux holding z [B, L], mu and var, and the terms.
    """
    mu, var = S.posterior(*S.encode(cfg, params.encoder, ctx))
    z = mu + jnp.sqrt(var) * jax.random.normal(key, mu.shape)
    zb = jnp.broadcast_to(z[:, None], batch["obs"].shape[:2] + z.shape[-1:])
    y = q_target(cfg, target_v, batch, zb)
    q1, q2 = q_values(cfg, params, batch["obs"], batch["actions"], zb)
    loss_q = mse(q1, y) + mse(q2, y)
    kl = jnp.sum(S.prior_kl(mu, var))
    return loss_q + cfg.kl_weight * kl, {"z": z, "mu": mu, "var": var, "q_loss": loss_q, "kl": kl, "q": jnp.mean(q1)}


def policy_loss(cfg: BatchPEARLConfig, act_dim: int, policy, params: BatchPEARL, obs, z, key):
    """mean(log pi - min Q(s, a_pi, z_)) + reg (mean mu^2 + mean (log sigma)^2) (§2.5 step 6), z_ = z
    detached; `params` supplies the Q networks. Returns (loss, (a_pi, log pi)), for the V target."""
    z = jax.lax.stop_gradient(z)
    mean, log_std = policy_dist(cfg, act_dim, policy, obs, z)
    a, logp = tanh_gaussian(mean, log_std, key)
    q = jnp.minimum(*q_values(cfg, params, obs, a, z))
    reg = cfg.policy_reg * (jnp.mean(mean**2) + jnp.mean(log_std**2))
    return jnp.mean(logp - q) + reg, (a, logp)


def v_target(cfg: BatchPEARLConfig, params: BatchPEARL, obs, a, logp, z):
    """min(Q1, Q2)(s, a_pi, z_) - log pi(a_pi | s, z_), held fixed (§2.5 step 5)."""
    z = jax.lax.stop_gradient(z)
    return jax.lax.stop_gradient(jnp.minimum(*q_values(cfg, params, obs, a, z)) - logp)


def value_loss(cfg: BatchPEARLConfig, v_params, obs, z, target):
    """mse(V(s, z_), target), z_ = z detached (§2.5 step 5)."""
    return mse(value(cfg, v_params, obs, jax.lax.stop_gradient(z)), target)


# ------------------------------------------------------------------------------------------ update


def start(cfg: BatchPEARLConfig, params: BatchPEARL) -> Learner:
    """V' an exact copy of V (`sac.py:67`), and fresh Adam states."""
    opt = optax.adam(cfg.lr)
    return Learner(params, jax.tree.map(jnp.copy, params.v), BatchPEARL(*(opt.init(p) for p in params)))


def _adam(opt, params, grads, state):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def update(cfg: BatchPEARLConfig, act_dim: int, learner: Learner, ctx, batch: dict, key):
    """One step of §2.5 in the authors' order; returns the new learner and the step's metrics."""
    opt = optax.adam(cfg.lr)
    p, o = learner.params, learner.opt
    k_z, k_pi = jax.random.split(key)

    # Q1, Q2 and the encoder, on L_Q + lambda_KL KL
    grads, aux = jax.grad(lambda q: critic_loss(cfg, q, learner.target_v, batch, ctx, k_z), has_aux=True)(p)
    enc, o_enc = _adam(opt, p.encoder, grads.encoder, o.encoder)
    q1, o_q1 = _adam(opt, p.q1, grads.q1, o.q1)
    q2, o_q2 = _adam(opt, p.q2, grads.q2, o.q2)
    p = p._replace(encoder=enc, q1=q1, q2=q2)

    # policy (its a_pi and log pi also make the V target), both through the Q networks just stepped
    obs, z = batch["obs"], jnp.broadcast_to(aux["z"][:, None], batch["obs"].shape[:2] + aux["z"].shape[-1:])
    (loss_pi, (a_pi, logp)), g_pi = jax.value_and_grad(
        lambda pi: policy_loss(cfg, act_dim, pi, p, obs, z, k_pi), has_aux=True)(p.policy)
    y_v = v_target(cfg, p, obs, a_pi, logp, z)
    loss_v, g_v = jax.value_and_grad(lambda v: value_loss(cfg, v, obs, z, y_v))(p.v)
    v, o_v = _adam(opt, p.v, g_v, o.v)
    pi, o_pi = _adam(opt, p.policy, g_pi, o.policy)
    target_v = optax.incremental_update(v, learner.target_v, cfg.tau)

    new = Learner(p._replace(v=v, policy=pi), target_v, BatchPEARL(o_enc, o_q1, o_q2, o_v, o_pi))
    metrics = {"q_loss": aux["q_loss"], "kl": aux["kl"], "v_loss": loss_v, "policy_loss": loss_pi,
               "q": aux["q"], "entropy": -jnp.mean(logp), "posterior_std": jnp.mean(jnp.sqrt(aux["var"]))}
    return new, metrics


# ------------------------------------------------------------------------------------------- agent


@dataclass(frozen=True)
class BatchPEARLAgent(EncoderAgent):
    """The `mbml.agents.Agent` of Batch PEARL: PEARL's encoder and the deterministic tanh-Gaussian mean."""

    cfg: BatchPEARLConfig

    def context(self, obs, act, rew, next_obs):
        return context(obs, act, rew, next_obs)

    def act(self, params, obs, z, key):
        return act(self.cfg, self.act_dim, params, obs, z, key)


def agent(cfg: RunConfig, act_dim: int) -> BatchPEARLAgent:
    return BatchPEARLAgent(cfg.batch_pearl, act_dim)


# ------------------------------------------------------------------------------------------- train


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def _chunk(cfg: BatchPEARLConfig, act_dim: int, length: int, carry: dict, data: dict) -> dict:
    def step(learner, key):
        k_data, k_update = jax.random.split(key)
        _, ctx, batch = sample_meta_batch(cfg, data, k_data)
        return update(cfg, act_dim, learner, ctx, batch, k_update)

    return scan_steps(carry, length, step)


def train(cfg: RunConfig, method: str, act_dim: int, inputs: dict, key, ckpt: Path | None = None,
          progress: Callable[[int, int], None] | None = None,
          on_eval: Callable[[BatchPEARL, int, dict], float | None] | None = None) -> BatchPEARL:
    """Train on `inputs["data"]` (`transitions.device_data`) for `batch_pearl.steps` steps.

    `on_eval(params, step, metrics)` runs after every `eval_every` steps (it must copy what it keeps:
    the next chunk reuses the buffers); the best-scoring parameters are returned, else the last.
    Resumes from `ckpt` to the same numbers.
    """
    c = cfg.batch_pearl
    data = inputs["data"]
    k_init, k_run = jax.random.split(key)
    params = init(cfg, k_init, data["obs"].shape[-1], act_dim)
    learner = start(c, params)
    metrics0 = jax.eval_shape(lambda: update(c, act_dim, learner, *sample_meta_batch(c, data, k_run)[1:], k_run)[1])
    return train_keeping_best(learner, lambda lr: lr.params, metrics0, k_run, c.steps, c.eval_every,
                              lambda state, done, n: _chunk(c, act_dim, n, state, data), ckpt, progress, on_eval)


def transfer_critics(cfg: RunConfig, saved: dict) -> tuple[dict, dict]:
    """Q1 and Q2 for `mbml transfer` (MLPs on s | a | z), divided by the reward scale they were trained
    with (y = scale r + ...), so they are in reward units as the transfer's SAC learns them."""
    from mbml.transfer import rescale_head

    p, scale = saved["params"], cfg.batch_pearl.reward_scale
    return rescale_head(p.q1, 1.0 / scale), rescale_head(p.q2, 1.0 / scale)


def critic_hidden(cfg: RunConfig) -> tuple[int, ...]:
    return tuple(cfg.batch_pearl.hidden)
