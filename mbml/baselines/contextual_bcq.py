"""Contextual BCQ, the MBML authors' baseline (baselines spec §1, reference §7), as pure functions.

One BCQ agent whose perturbation actor xi(s, a, z), twin critic Q(s, a, z) and VAE (encoder
E(s, a, z), decoder G(s, u, z)) all take the task variable z. z comes from MBML's product-of-Gaussians
context encoder (`mbml.student.encode` / `posterior`). Everything is trained from scratch on every
training task's dataset: no teachers, no distillation, no relabelling, no triplet loss and no KL term
on q(z | c). One gradient step, in the authors' order (spec §1.5):

1. per task, a context of C transitions and an RL batch of B (§1.4); one reparameterised z per task,
   shared by all the task's RL transitions;
2. VAE step on L_VAE = mean (a_hat - a)^2 + 0.5 KL_VAE;
3. target y = r + (1 - d) gamma max_m [lam min(Q1', Q2') + (1 - lam) max(Q1', Q2')](s', a_m, z),
   with a_m decoded by the VAE just updated and perturbed by the target actor; z held fixed;
4. critic step on mse(Q1, y) + mse(Q2, y);
5. encoder step on grad L_VAE + grad L_Q, both through z, with unit weights;
6. actor step on -mean Q1(s, a_gen + phi xi(s, a_gen, z), z), with z detached and the updated VAE and critic;
7. Polyak averaging of the critic and actor targets.
Four Adams (actor, critic, VAE, encoder) at one learning rate.

Where this differs from the authors' code:
* The encoder learns from the VAE and critic losses, as the code does. The paper says the value loss
  only (spec §1.8, first trap).
* The RL batch is drawn, as there, uniformly with replacement from the indices the context did not
  use. We draw it in O(C log C) per task from the context's sorted indices. The authors rebuild an
  array of the whole buffer minus the context every step, which costs O(N) (§1.8). One JAX PRNG
  stream replaces Ray workers seeded 10*seed + 2337 + task, and nothing is prefetched.
* Every net uses flax's default initialisation (LeCun-normal weights, zero biases), like the rest of
  mbml. The authors use PyTorch's `nn.Linear` default, and rlkit's for the context encoder.
* The VAE encoder reads s | z | a and the decoder s | z | u (the authors: s | a | z and s | u | z).
  This only permutes the first layer's input columns, so the function class and the initial
  distribution are the same. It lets `mbml.bcq.VAE` serve unchanged.
* Evaluation and selection follow the module contract (`mbml.methods`). `on_eval` scores the
  parameters after every `eval_every` steps, and the best on the training tasks are returned. The
  authors evaluate every 100-step epoch on the weights from the start of the epoch, keep the last
  weights and plot curves.
* Runs wherever JAX does. The authors' code crashes without CUDA (§1.8).
Kept on purpose, because they are properties of the method as run: with no KL term, the prior z of
the protocol's first episode means nothing to the networks; and the posterior tightens as 1/N, so
the protocol's contexts of up to 5 episodes give z a different spread than the C-transition contexts
of training (§1.8, inferred).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbml import bcq, student as S
from mbml.agents import EncoderAgent
from mbml.config import RunConfig
from mbml.config_baselines import ContextualBCQConfig
from mbml.nets import MLP, mse
from mbml.sac import DoubleQ
from mbml.train_loop import scan_steps, train_keeping_best
from mbml.transitions import draw_indices, take


class ContextualBCQ(NamedTuple):
    """What is saved and acted with: the context encoder, the actor xi, the twin critic and the VAE."""

    encoder: dict
    actor: dict
    critic: dict
    vae: dict


class Learner(NamedTuple):
    """Training state: the parameters, the target actor and critic, and the four Adam states."""

    params: ContextualBCQ
    actor_target: dict
    critic_target: dict
    opt: tuple  # (actor, critic, vae, encoder)


# ------------------------------------------------------------------------------------------ networks


def perturb(cfg: ContextualBCQConfig, act_dim: int, actor, obs, act, z):
    """a' = clip(a + phi * xi(s, a, z), -1, 1), where xi = tanh(.) (max_action = 1)."""
    xi = jnp.tanh(MLP(cfg.actor_hidden, act_dim).apply(actor, obs, act, z))
    return jnp.clip(act + cfg.phi * xi, -1.0, 1.0)


def q_values(cfg: ContextualBCQConfig, critic, obs, act, z):
    """(Q1, Q2)(s, a, z). `DoubleQ`'s MLPs concatenate their inputs, so (s, a | z) reads s | a | z."""
    return DoubleQ(cfg.critic_hidden).apply(critic, obs, jnp.concatenate([act, z], -1))


def decode(cfg: ContextualBCQConfig, act_dim: int, vae, obs, u, z):
    """G(s, u, z) in [-1, 1]: `mbml.bcq.VAE`'s decoder, with z appended to the state."""
    return bcq.VAE(cfg.vae_hidden, act_dim).apply(vae, jnp.concatenate([obs, z], -1), u, method=bcq.VAE.decode)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def init(cfg: RunConfig, key, obs_dim: int, act_dim: int) -> ContextualBCQ:
    """Fresh parameters, deterministic in `key`. Also the template for loading saved ones (jitted:
    one compilation instead of one per operation)."""
    c = cfg.contextual_bcq
    ks = jax.random.split(key, 5)
    o, a, z = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)), jnp.zeros((1, c.latent_dim))
    return ContextualBCQ(
        encoder=MLP(c.encoder_hidden, 2 * c.latent_dim).init(ks[0], S.context(o, a, jnp.zeros(1), o)),
        actor=MLP(c.actor_hidden, act_dim).init(ks[1], o, a, z),
        critic=DoubleQ(c.critic_hidden).init(ks[2], o, jnp.concatenate([a, z], -1)),
        vae=bcq.VAE(c.vae_hidden, act_dim).init(ks[3], jnp.concatenate([o, z], -1), a, ks[4]))


def start(cfg: ContextualBCQConfig, params: ContextualBCQ) -> Learner:
    """Targets that are exact copies of the online nets (spec §1.2), and fresh Adam states."""
    opt = optax.adam(cfg.lr)
    copy = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731
    return Learner(params, copy(params.actor), copy(params.critic),
                   tuple(opt.init(p) for p in (params.actor, params.critic, params.vae, params.encoder)))


# -------------------------------------------------------------------------------------------- data


def sample_inputs(cfg: ContextualBCQConfig, data: dict, key):
    """Every training task's context [K, C, context_dim] and RL batch (dict of [K, B, ...])."""
    k, n = data["obs"].shape[:2]
    ctx_idx, rl_idx = jax.vmap(lambda kk: draw_indices(kk, n, cfg.context_size, cfg.batch_size))(
        jax.random.split(key, k))
    ctx = take(data, ctx_idx)
    return S.context(ctx["obs"], ctx["actions"], ctx["rewards"], ctx["next_obs"]), take(data, rl_idx)


def latents(cfg: ContextualBCQConfig, encoder, ctx, key, b: int):
    """z for each of a task's b RL transitions, [K, b, L], and the posterior variance [K, L].

    Each task gets one reparameterised draw from the product-of-Gaussians posterior of its context
    (spec §1.3). That draw is repeated for all b transitions.
    """
    mu, var = S.posterior(*S.encode(cfg, encoder, ctx))
    z = mu + jnp.sqrt(var) * jax.random.normal(key, mu.shape)
    return jnp.broadcast_to(z[:, None], (z.shape[0], b, z.shape[1])), var


# ------------------------------------------------------------------------------------------ losses


def vae_loss(cfg: ContextualBCQConfig, act_dim: int, vae, obs, act, z, key):
    """L_VAE = mean (a_hat - a)^2 + 0.5 KL_VAE, with KL_VAE = -1/2 mean(1 + log s^2 - m^2 - s^2) (§1.5 step 2)."""
    recon, mean, log_std = bcq.VAE(cfg.vae_hidden, act_dim).apply(vae, jnp.concatenate([obs, z], -1), act, key)
    kl = -0.5 * jnp.mean(1.0 + 2.0 * log_std - mean**2 - jnp.exp(2.0 * log_std))
    return mse(recon, act) + 0.5 * kl


def target_q(cfg: ContextualBCQConfig, act_dim: int, vae, actor_target, critic_target, z, next_obs, rewards,
             terminals, u):
    """Step 3's target: y = r + (1 - d) gamma max_m [lam min(Q1', Q2') + (1 - lam) max(Q1', Q2')](s', a_m, z).

    a_m = clip(G(s', u_m, z) + phi xi'(s', G(s', u_m, z), z)) uses the target actor, and Q' is the
    target critic. u holds the decoder noise, [..., M, 2 * act_dim] for the transitions [...].
    """
    m = u.shape[-2]
    rep = lambda x: jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (m, x.shape[-1]))  # noqa: E731
    s, zz = rep(next_obs), rep(z)
    cand = perturb(cfg, act_dim, actor_target, s, decode(cfg, act_dim, vae, s, u, zz), zz)
    q1, q2 = q_values(cfg, critic_target, s, cand, zz)
    q = (cfg.lam * jnp.minimum(q1, q2) + (1.0 - cfg.lam) * jnp.maximum(q1, q2)).max(axis=-1)
    return rewards + (1.0 - terminals) * cfg.gamma * q


def critic_loss(cfg: ContextualBCQConfig, critic, obs, act, z, y):
    """L_Q = mse(Q1(s, a, z), y) + mse(Q2(s, a, z), y) (§1.5 step 4)."""
    q1, q2 = q_values(cfg, critic, obs, act, z)
    return mse(q1, y) + mse(q2, y)


def actor_loss(cfg: ContextualBCQConfig, act_dim: int, actor, critic, vae, obs, z, u):
    """L_pi = -mean Q1(s, a_gen + phi xi(s, a_gen, z), z), with a_gen = G(s, u, z) (§1.5 step 6).

    z is detached: the actor loss never reaches the context encoder.
    """
    z = jax.lax.stop_gradient(z)
    a_gen = decode(cfg, act_dim, vae, obs, u, z)
    return -jnp.mean(q_values(cfg, critic, obs, perturb(cfg, act_dim, actor, obs, a_gen, z), z)[0])


def _adam(opt, params, grads, state):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def update(cfg: ContextualBCQConfig, act_dim: int, learner: Learner, ctx, batch: dict, key):
    """One gradient step on every task's context [K, C, .] and RL batch [K, B, .], in the authors' order.

    `key` is split into (z, VAE, target, actor) keys.
    """
    opt = optax.adam(cfg.lr)
    k_z, k_vae, k_tgt, k_act = jax.random.split(key, 4)
    p = learner.params
    o_actor, o_critic, o_vae, o_enc = learner.opt
    obs, act = batch["obs"], batch["actions"]
    z, to_encoder, post_var = jax.vjp(lambda e: latents(cfg, e, ctx, k_z, obs.shape[-2]), p.encoder, has_aux=True)

    l_vae, (g_vae, dz_vae) = jax.value_and_grad(
        lambda v, zz: vae_loss(cfg, act_dim, v, obs, act, zz, k_vae), argnums=(0, 1))(p.vae, z)
    vae, o_vae = _adam(opt, p.vae, g_vae, o_vae)

    u = bcq.sample_latent(k_tgt, obs.shape[:-1] + (cfg.num_candidates, 2 * act_dim))
    y = jax.lax.stop_gradient(target_q(cfg, act_dim, vae, learner.actor_target, learner.critic_target, z,
                                       batch["next_obs"], batch["rewards"], batch["terminals"], u))
    l_q, (g_critic, dz_q) = jax.value_and_grad(
        lambda c, zz: critic_loss(cfg, c, obs, act, zz, y), argnums=(0, 1))(p.critic, z)
    critic, o_critic = _adam(opt, p.critic, g_critic, o_critic)

    (g_enc,) = to_encoder(dz_vae + dz_q)  # grad L_VAE + grad L_Q, no KL (spec §1.5 step 5)
    encoder, o_enc = _adam(opt, p.encoder, g_enc, o_enc)

    u_act = bcq.sample_latent(k_act, obs.shape[:-1] + (2 * act_dim,))
    l_pi, g_actor = jax.value_and_grad(lambda a: actor_loss(cfg, act_dim, a, critic, vae, obs, z, u_act))(p.actor)
    actor, o_actor = _adam(opt, p.actor, g_actor, o_actor)

    new = Learner(ContextualBCQ(encoder, actor, critic, vae),
                  optax.incremental_update(actor, learner.actor_target, cfg.tau),
                  optax.incremental_update(critic, learner.critic_target, cfg.tau),
                  (o_actor, o_critic, o_vae, o_enc))
    z_task = z[:, 0]
    metrics = {"vae_loss": l_vae, "critic_loss": l_q, "actor_loss": l_pi, "target_q": jnp.mean(y),
               "posterior_std": jnp.mean(jnp.sqrt(post_var)),
               "z_spread": jnp.mean(jnp.std(z_task, axis=0))}  # between tasks: is z task-specific?
    return new, metrics


# ----------------------------------------------------------------------------------------- acting


def act(cfg: ContextualBCQConfig, act_dim: int, params: ContextualBCQ, obs, z, key):
    """BCQ action selection for one observation: the argmax of Q1(s, a_m, z) over M decoded, perturbed
    candidates a_m (spec §1.5)."""
    m = cfg.num_candidates
    rep = jnp.broadcast_to(obs, (m, obs.shape[-1]))
    zz = jnp.broadcast_to(z, (m, z.shape[-1]))
    cand = decode(cfg, act_dim, params.vae, rep, bcq.sample_latent(key, (m, 2 * act_dim)), zz)
    cand = perturb(cfg, act_dim, params.actor, rep, cand, zz)
    return cand[jnp.argmax(q_values(cfg, params.critic, rep, cand, zz)[0])]


@dataclass(frozen=True)
class ContextualBCQAgent(EncoderAgent):
    """Contextual BCQ behind the `mbml.agents.Agent` seam: MBML's encoder, BCQ action selection."""

    cfg: ContextualBCQConfig

    def act(self, params, obs, z, key):
        return act(self.cfg, self.act_dim, params, obs, z, key)


def agent(cfg: RunConfig, act_dim: int) -> ContextualBCQAgent:
    return ContextualBCQAgent(cfg.contextual_bcq, act_dim)


# ---------------------------------------------------------------------------------------- training


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def _chunk(cfg: ContextualBCQConfig, act_dim: int, length: int, carry: dict, data: dict) -> dict:
    def one(learner, key):
        k_data, k_step = jax.random.split(key)
        ctx, batch = sample_inputs(cfg, data, k_data)
        return update(cfg, act_dim, learner, ctx, batch, k_step)

    return scan_steps(carry, length, one)


def train(cfg: RunConfig, method: str, act_dim: int, inputs: dict, key, ckpt: Path | None = None,
          progress: Callable[[int, int], None] | None = None,
          on_eval: Callable[[ContextualBCQ, int, dict], float | None] | None = None) -> ContextualBCQ:
    """Train on every task of `inputs["data"]` (`mbml.transitions.device_data`) for `steps` steps.

    After every `eval_every` steps, `on_eval(params, step, metrics)` is called. If it returns a score
    on the training tasks, the best-scoring params are returned; otherwise the last ones. With `ckpt`,
    an interrupted run resumes from its last finished chunk and ends with the same numbers.
    """
    del method  # one method in this module
    c = cfg.contextual_bcq
    data = inputs["data"]
    k_init, k_run = jax.random.split(key)
    params = init(cfg, k_init, data["obs"].shape[-1], act_dim)
    learner = start(c, params)
    metrics0 = jax.eval_shape(lambda: update(c, act_dim, learner, *sample_inputs(c, data, k_run), k_run)[1])
    return train_keeping_best(learner, lambda lr: lr.params, metrics0, k_run, c.steps, c.eval_every,
                              lambda state, done, n: _chunk(c, act_dim, n, state, data), ckpt, progress, on_eval)


def transfer_critics(cfg: RunConfig, saved: dict) -> tuple[dict, dict]:
    """Q1 and Q2 for `mbml transfer`: `DoubleQ`'s two MLPs, which read s | a | z as the transfer's critics do
    (rewards are not scaled here, so they are in reward units already)."""
    critic = saved["params"].critic["params"]
    return {"params": critic["MLP_0"]}, {"params": critic["MLP_1"]}


def critic_hidden(cfg: RunConfig) -> tuple[int, ...]:
    return tuple(cfg.contextual_bcq.critic_hidden)
