"""FOCAL (Li, Yang & Luo, ICLR 2021; baselines spec §3), as pure functions.

A deterministic context encoder trained only by a distance-metric loss, and PEARL's soft actor-critic
with a V function on the detached z, regularised by BRAC's dual-form KL with an adaptive weight alpha
(the authors' code, FOC `rlkit/torch/sac/sac.py`). Networks (§3.2): a per-transition MLP with a tanh
output, whose mean over a context is z; twin Q(s, a, z); V(s, z) with a Polyak target V'; a
tanh-Gaussian policy pi(a | s, z) with log-std clamped to [-20, 0]; a dual critic c(s, a, z). One
gradient step, in the order the spec proposes (§3.5, as CSRO fixed FOC's):

1. B tasks drawn uniformly *with replacement*; per drawn task a context of C transitions (s, a, s', r)
   and `c_iter` RL batches of N, all with replacement from its whole dataset (`transitions.draw_indices`);
2. encoder step on the distance-metric loss alone (`distance_metric_loss`); z from the encoder before
   this step, detached, is what every other network sees;
3. `c_iter` Adam steps of c on -mean D + GP, the k-th on the k-th RL batch with a fresh a_pi ~ pi(. | s, z),
   D(s) = -softplus(c(s, a, z)) + log(softplus(c(s, a_pi, z)) + 1e-8) + 1 (`dual_kl`);
4. Q step: y = scale r + (1 - d) gamma (V'(s', z) - alpha D) (the penalty only with `value_penalty`),
   held fixed; L = mean (Q1 - y)^2 + mean (Q2 - y)^2;
5. policy loss mean(log pi - min Q(s, a_pi, z) + alpha_sg D(s)) + reg (mean mu^2 + mean (log sigma)^2),
   through the Q networks just stepped and the c of step 3; its a_pi and log pi give the V target
   min Q(s, a_pi, z) - log pi; V step, V' <- (1 - tau) V' + tau V; policy step;
6. alpha <- alpha + alpha_lr (mean D(s) - target_divergence), clipped to [0, alpha_max] only where used.
Adam at `lr` for encoder, Q1, Q2, V and policy, at `c_lr` for c. Acting: the deterministic tanh(mu(s, z)).

Where this differs from FOC (and why):
* Encoder input: (s, a, s', r) for every family (`mbml.student.context`), as MBML's data always hold
  the next state; FOC reads (s, a, r), with s' only for Walker and Hopper.
* Order (§3.5, trap 3): FOC's step backpropagates the policy loss through tensors whose parameters the
  c and encoder steps had changed in place (silent under torch 1.2, an error since 1.5, FOCAL-ICLR#9).
  Here the encoder steps first, c takes its steps on a detached a_pi, then D is recomputed with the
  updated c for the Q target, the policy and alpha (FOC computes the target's and alpha's D before the
  c steps). z is detached for every network but the encoder: FOC's policy and c receive z undetached,
  but their gradient reaches the encoder only after its step, and is zeroed before the next (§3.4c).
* Gradient penalty (trap 1): BRAC's, 5 mean(max(0, ||grad_a c(s, a~, z)|| - 1)^2) at a~ = a_pi +
  u (a - a_pi), u ~ U(0, 1). FOC's port penalises the value instead, sqrt(c(s, a~, z)^2 + 1e-8) in place
  of the gradient's norm: `gradient_penalty="focal_code"`.
* Value penalty's D (trap 4): BRAC takes it at s' with the policy's action and the dataset's next action
  there (`divergence_at="next"`, the default); FOC at s (`"current"`). Where the dataset holds no next
  action (the episode's last stored transition) the penalty is 0 for that transition. Off by default,
  as in every FOC config but its 2-task ant-dir.
* Meta-batch with replacement (trap 2): FOC's `mb_replace` was False until December 2023, which made
  the attracting term identically 0.
* Data (§3.7): context and RL batches uniformly from the task's whole dataset, the RL batches from the
  indices the context did not use (as our other baselines); FOC copies 2000, later 400, random
  transitions per task into buffers refreshed for 5 tasks per iteration. MBML's datasets mark a
  time-limit cut as not terminal; FOC's mark every trajectory file's end terminal (trap 5).
* Evaluation and selection follow the module contract (`mbml.methods`): the library's protocol with
  context collected by the agent, its first episode with z = 0 (FocalAgent.prior_std = 0, FOC's
  `clear_z`), score = mean of episodes 3-5 and `last_episode` beside it; the parameters best on the
  training tasks are kept. FOC conditions on 200 offline test-task transitions per episode and scores
  the 3rd of 3 (§3.8, a protocol that needs test-task datasets MBML's pipeline does not make); its
  training-task "return" sums dataset rewards (trap 6).
* Not carried over: the information-bottleneck ablation (trap 7), FOC's observation normaliser (trap
  10), its configuration holes (8, 9). alpha_lr = 0 keeps alpha fixed (FOC's `train_alpha=False`
  crashes). log pi uses the exact tanh correction (as `batch_pearl`).

Initialisation is rlkit's (`batch_pearl.rlkit_init`): the encoder's and c's last layers U(+-3e-3), the
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
from mbml.baselines import batch_pearl as BP
from mbml.config import RunConfig
from mbml.config_baselines import FOCALConfig
from mbml.nets import MLP, mse
from mbml.train_loop import scan_steps, train_keeping_best
from mbml.transitions import draw_indices, meta_take

LOG_STD_MAX = 0.0  # FOC's TanhGaussianPolicy clamp is [-20, 0] (PEARL's: [-20, 2])
EPS = 1e-8  # BRAC's epsilon in the dual estimate and the penalty's slope
GP_WEIGHT = 5.0  # BRAC's gradient-penalty weight (`gamma` of its `gradient_penalty`)


class FOCAL(NamedTuple):
    """What is saved and acted with: the networks (target V, alpha and the Adam states are training state)."""

    encoder: dict
    q1: dict
    q2: dict
    v: dict
    policy: dict
    c: dict


class Learner(NamedTuple):
    params: FOCAL
    target_v: dict
    alpha: jax.Array  # the raw scalar; clipped to [0, alpha_max] where used
    opt: FOCAL  # one Adam state per network


# ---------------------------------------------------------------------------------------- networks


def init(cfg: RunConfig, key, obs_dim: int, act_dim: int) -> FOCAL:
    """The six networks, rlkit-initialised; deterministic in `key` (also the template for loading)."""
    return _init(cfg.focal, key, obs_dim, act_dim)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init(c: FOCALConfig, key, obs_dim: int, act_dim: int) -> FOCAL:
    ks = jax.random.split(key, 6)
    o, a, z = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)), jnp.zeros((1, c.latent_dim))
    head, sa = MLP(c.hidden, 1), (o, a, z)  # Q1, Q2, c: s | a | z -> 1; V: s | z -> 1
    return FOCAL(BP.rlkit_init(MLP(c.encoder_hidden, c.latent_dim), ks[0], (S.context(o, a, jnp.zeros(1), o),)),
                 BP.rlkit_init(head, ks[1], sa), BP.rlkit_init(head, ks[2], sa), BP.rlkit_init(head, ks[3], (o, z)),
                 BP.rlkit_init(MLP(c.hidden, 2 * act_dim), ks[4], (o, z), BP.POLICY_LAST_INIT),
                 BP.rlkit_init(head, ks[5], sa))


def embed(cfg: FOCALConfig, encoder, ctx, mask=None):
    """z: the mean over the transitions (axis -2) where `mask` holds of the per-transition tanh embeddings
    (§3.3); an empty context gives z = 0, FOC's `clear_z`."""
    e = jnp.tanh(MLP(cfg.encoder_hidden, cfg.latent_dim).apply(encoder, ctx))
    w = jnp.ones(e.shape[:-1]) if mask is None else mask.astype(e.dtype)
    return jnp.sum(w[..., None] * e, -2) / jnp.maximum(jnp.sum(w, -1), 1.0)[..., None]


def policy_dist(cfg: FOCALConfig, act_dim: int, policy, obs, z):
    """Mean and log-std of the pre-tanh Gaussian, log-std clamped to [-20, 0] (PEARL's [-20, 2], then 0)."""
    mean, log_std = BP.policy_dist(cfg, act_dim, policy, obs, z)
    return mean, jnp.minimum(log_std, LOG_STD_MAX)


def dual_critic(cfg: FOCALConfig, c, obs, act, z):
    """c(s, a, z), BRAC's dual-critic logit."""
    return MLP(cfg.hidden, 1).apply(c, obs, act, z)[..., 0]


# ------------------------------------------------------------------------------------------ losses


def distance_metric_loss(z, tasks, weight: float):
    """FOC's distance-metric loss (§3.4a) of one z per meta-batch entry, z [B, L], tasks [B].

    For pairs i < j, m_ij = mean_d (z_i - z_j)^2; a same-task pair adds sqrt(m_ij + 1e-3), a
    different-task pair 1 / (m_ij + 0.1); loss = weight (pos sum / (n_pos + 1e-3) + neg sum / (n_neg + 1e-3)).
    """
    m = jnp.mean((z[:, None] - z[None]) ** 2, -1)
    upper = jnp.triu(jnp.ones(m.shape, bool), k=1)
    same = tasks[:, None] == tasks[None]
    pos, neg = upper & same, upper & ~same
    pos_sum = jnp.sum(jnp.where(pos, jnp.sqrt(m + 1e-3), 0.0))
    neg_sum = jnp.sum(jnp.where(neg, 1.0 / (m + 0.1), 0.0))
    return weight * (pos_sum / (jnp.sum(pos) + 1e-3) + neg_sum / (jnp.sum(neg) + 1e-3))


def encoder_loss(cfg: FOCALConfig, encoder, ctx, tasks):
    """z_loss_weight x the distance-metric loss of the contexts' z [B, L] (returned beside it)."""
    z = embed(cfg, encoder, ctx)
    return distance_metric_loss(z, tasks, cfg.z_loss_weight), z


def dual_kl(logits_p, logits_b):
    """BRAC's dual estimate of KL(pi || pi_b) per state from c's logits at the policy's and the dataset's
    actions: -softplus(c_b) + log(softplus(c_p) + 1e-8) + 1 (§3.4b)."""
    return -jax.nn.softplus(logits_b) + jnp.log(jax.nn.softplus(logits_p) + EPS) + 1.0


def divergence(cfg: FOCALConfig, c, obs, a_pi, a_data, z):
    """D(s) = `dual_kl` of c at (s, a_pi, z) and (s, a_data, z)."""
    return dual_kl(dual_critic(cfg, c, obs, a_pi, z), dual_critic(cfg, c, obs, a_data, z))


def gradient_penalty(cfg: FOCALConfig, c, obs, a_pi, a_data, z, u):
    """5 mean(max(0, slope - 1)^2) at a~ = a_pi + u (a_data - a_pi): slope = ||grad_a c(s, a~, z)|| (BRAC),
    or sqrt(c(s, a~, z)^2 + 1e-8) ("focal_code", FOC's `divergences.py`), each with BRAC's 1e-8."""
    a = a_pi + u[..., None] * (a_data - a_pi)
    if cfg.gradient_penalty == "brac":  # rows are independent: the gradient of the sum is each row's
        g = jax.grad(lambda x: jnp.sum(dual_critic(cfg, c, obs, x, z)))(a)
        slope = jnp.sqrt(EPS + jnp.sum(g**2, -1))
    else:
        slope = jnp.sqrt(EPS + dual_critic(cfg, c, obs, a, z) ** 2)
    return GP_WEIGHT * jnp.mean(jnp.maximum(slope - 1.0, 0.0) ** 2)


def critic_c_loss(cfg: FOCALConfig, c, obs, a_pi, a_data, z, u):
    """-mean D + GP, the dual critic's loss (a_pi and z held fixed)."""
    return -jnp.mean(divergence(cfg, c, obs, a_pi, a_data, z)) + gradient_penalty(cfg, c, obs, a_pi, a_data, z, u)


def sample_action(cfg: FOCALConfig, act_dim: int, policy, obs, z, key):
    return BP.tanh_gaussian(*policy_dist(cfg, act_dim, policy, obs, z), key)


def policy_loss(cfg: FOCALConfig, act_dim: int, policy, params: FOCAL, alpha, obs, act, z, key):
    """mean(log pi - min Q(s, a_pi, z) + alpha D(s)) + reg (mean mu^2 + mean (log sigma)^2) (§3.4b), with
    `params`' Q networks and c and alpha held fixed. Returns (loss, (a_pi, log pi, D))."""
    mean, log_std = policy_dist(cfg, act_dim, policy, obs, z)
    a, logp = BP.tanh_gaussian(mean, log_std, key)
    q = jnp.minimum(*BP.q_values(cfg, params, obs, a, z))
    d = divergence(cfg, params.c, obs, a, act, z)
    reg = cfg.policy_reg * (jnp.mean(mean**2) + jnp.mean(log_std**2))
    return jnp.mean(logp - q + alpha * d) + reg, (a, logp, d)


def alpha_step(cfg: FOCALConfig, alpha, d):
    """One plain gradient step of size alpha_lr on -alpha (mean D - target): alpha + alpha_lr (mean D - target)."""
    return alpha + cfg.alpha_lr * (jnp.mean(d) - cfg.target_divergence)


def used_alpha(cfg: FOCALConfig, alpha):
    """alpha as the losses use it: clipped to [0, alpha_max] (FOC's `get_alpha`)."""
    return jnp.clip(alpha, 0.0, cfg.alpha_max)


# -------------------------------------------------------------------------------------------- data


def sample_meta_batch(cfg: FOCALConfig, data: dict, key):
    """The drawn tasks [B], their contexts [B, C, context_dim] (s, a, s', r) and `c_iter` RL batches
    (dict of [c_iter, B, N, ...]; with `next_actions` and `has_next` where the value penalty reads s')."""
    k, n = data["obs"].shape[:2]
    k_task, k_idx = jax.random.split(key)
    tasks = jax.random.randint(k_task, (cfg.meta_batch,), 0, k)
    ctx_idx, rl_idx = jax.vmap(lambda kk: draw_indices(kk, n, cfg.context_size, cfg.c_iter * cfg.batch_size))(
        jax.random.split(k_idx, cfg.meta_batch))
    c, rl = meta_take(data, tasks, ctx_idx), meta_take(data, tasks, rl_idx)
    if cfg.value_penalty and cfg.divergence_at == "next":  # BRAC's a2_b: the action taken at s' in the data
        rl["next_actions"] = data["actions"][tasks[:, None], jnp.minimum(rl_idx + 1, n - 1)]
        rl["has_next"] = (data["final_slot"][tasks[:, None], rl_idx] < 0).astype(jnp.float32)
    split = lambda x: jnp.moveaxis(x.reshape(x.shape[:1] + (cfg.c_iter, -1) + x.shape[2:]), 1, 0)  # noqa: E731
    return tasks, S.context(c["obs"], c["actions"], c["rewards"], c["next_obs"]), jax.tree.map(split, rl)


# ------------------------------------------------------------------------------------------ update


def start(cfg: FOCALConfig, params: FOCAL) -> Learner:
    """V' an exact copy of V, alpha at alpha_init, fresh Adam states (c's at c_lr)."""
    opt, opt_c = optax.adam(cfg.lr), optax.adam(cfg.c_lr)
    return Learner(params, jax.tree.map(jnp.copy, params.v), jnp.asarray(cfg.alpha_init, jnp.float32),
                   FOCAL(*(opt.init(p) for p in params[:-1]), opt_c.init(params.c)))


def update(cfg: FOCALConfig, act_dim: int, learner: Learner, tasks, ctx, batches: dict, key):
    """One step of the module docstring's order; returns the new learner and the step's metrics."""
    opt, opt_c = optax.adam(cfg.lr), optax.adam(cfg.c_lr)
    p, o = learner.params, learner.opt
    k_c, k_pi, k_next = jax.random.split(key, 3)
    alpha = used_alpha(cfg, learner.alpha)

    # encoder, on the distance-metric loss alone; the z of the encoder before its step, detached, for the rest
    (l_z, z), g_enc = jax.value_and_grad(lambda e: encoder_loss(cfg, e, ctx, tasks), has_aux=True)(p.encoder)
    encoder, o_enc = BP._adam(opt, p.encoder, g_enc, o.encoder)
    batch = jax.tree.map(lambda x: x[0], batches)
    obs, act = batch["obs"], batch["actions"]
    zb = jnp.broadcast_to(jax.lax.stop_gradient(z)[:, None], obs.shape[:2] + z.shape[-1:])

    # c_iter steps of the dual critic, one RL batch each, a_pi held fixed
    def c_step(carry, xs):
        (c, o_c), (b, k) = carry, xs
        k_a, k_u = jax.random.split(k)
        a_pi = jax.lax.stop_gradient(sample_action(cfg, act_dim, p.policy, b["obs"], zb, k_a)[0])
        u = jax.random.uniform(k_u, b["obs"].shape[:-1])
        loss, g = jax.value_and_grad(lambda cc: critic_c_loss(cfg, cc, b["obs"], a_pi, b["actions"], zb, u))(c)
        return BP._adam(opt_c, c, g, o_c), loss

    (c, o_c), l_c = jax.lax.scan(c_step, (p.c, o.c), (batches, jax.random.split(k_c, cfg.c_iter)))
    p = p._replace(encoder=encoder, c=c)

    # Q1, Q2 on y = scale r + (1 - d) gamma (V'(s', z) - alpha D), D with the updated c
    y = BP.q_target(cfg, learner.target_v, batch, zb)
    if cfg.value_penalty:
        if cfg.divergence_at == "next":
            a_next = sample_action(cfg, act_dim, p.policy, batch["next_obs"], zb, k_next)[0]
            d_pen = batch["has_next"] * divergence(cfg, c, batch["next_obs"], a_next, batch["next_actions"], zb)
        else:  # the policy loss's D: same key, same a_pi
            d_pen = divergence(cfg, c, obs, sample_action(cfg, act_dim, p.policy, obs, zb, k_pi)[0], act, zb)
        y = y - jax.lax.stop_gradient((1.0 - batch["terminals"]) * cfg.gamma * alpha * d_pen)
    l_q, (g_q1, g_q2) = jax.value_and_grad(
        lambda q1, q2: sum(mse(q, y) for q in BP.q_values(cfg, p._replace(q1=q1, q2=q2), obs, act, zb)),
        argnums=(0, 1))(p.q1, p.q2)
    q1, o_q1 = BP._adam(opt, p.q1, g_q1, o.q1)
    q2, o_q2 = BP._adam(opt, p.q2, g_q2, o.q2)
    p = p._replace(q1=q1, q2=q2)

    # policy (its a_pi and log pi also make the V target), through the Q networks and c just stepped
    (l_pi, (a_pi, logp, d)), g_pi = jax.value_and_grad(
        lambda pi: policy_loss(cfg, act_dim, pi, p, alpha, obs, act, zb, k_pi), has_aux=True)(p.policy)
    y_v = BP.v_target(cfg, p, obs, a_pi, logp, zb)
    l_v, g_v = jax.value_and_grad(lambda v: BP.value_loss(cfg, v, obs, zb, y_v))(p.v)
    v, o_v = BP._adam(opt, p.v, g_v, o.v)
    pi, o_pi = BP._adam(opt, p.policy, g_pi, o.policy)

    new = Learner(p._replace(v=v, policy=pi), optax.incremental_update(v, learner.target_v, cfg.tau),
                  alpha_step(cfg, learner.alpha, d), FOCAL(o_enc, o_q1, o_q2, o_v, o_pi, o_c))
    metrics = {"z_loss": l_z, "c_loss": jnp.mean(l_c), "q_loss": l_q, "v_loss": l_v, "policy_loss": l_pi,
               "divergence": jnp.mean(d), "alpha": alpha, "v_target": jnp.mean(y_v), "entropy": -jnp.mean(logp),
               "z_spread": jnp.mean(jnp.std(z, axis=0))}  # between drawn tasks: is z task-specific?
    return new, metrics


# ------------------------------------------------------------------------------------------- agent


@dataclass(frozen=True)
class FocalAgent(EncoderAgent):
    """The `mbml.agents.Agent` of FOCAL: an `EncoderAgent`'s settings and (s, a, s', r) contexts, with
    FOCAL's deterministic posterior in place of the product of Gaussians (the mean tanh embedding, zero
    variance); acts with tanh(mu(s, z)); z = 0 for the protocol's first episode, FOCAL's empty context."""

    cfg: FOCALConfig
    prior_std: float = 0.0

    def posterior(self, params, ctx, mask=None):
        z = embed(self.cfg, params.encoder, ctx, mask)
        return z, jnp.zeros_like(z)

    def act(self, params, obs, z, key):
        return BP.act(self.cfg, self.act_dim, params, obs, z, key)  # tanh(mu): the log-std clamp is unused


def agent(cfg: RunConfig, act_dim: int) -> FocalAgent:
    return FocalAgent(cfg.focal, act_dim)


# ------------------------------------------------------------------------------------------- train


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def _chunk(cfg: FOCALConfig, act_dim: int, length: int, carry: dict, data: dict) -> dict:
    def step(learner, key):
        k_data, k_update = jax.random.split(key)
        return update(cfg, act_dim, learner, *sample_meta_batch(cfg, data, k_data), k_update)

    return scan_steps(carry, length, step)


def train(cfg: RunConfig, method: str, act_dim: int, inputs: dict, key, ckpt: Path | None = None,
          progress: Callable[[int, int], None] | None = None,
          on_eval: Callable[[FOCAL, int, dict], float | None] | None = None) -> FOCAL:
    """Train on `inputs["data"]` (`transitions.device_data`) for `focal.steps` steps; `on_eval`, the
    best-scoring parameters and resuming from `ckpt` as `batch_pearl.train`."""
    del method  # one method in this module
    c = cfg.focal
    data = inputs["data"]
    k_init, k_run = jax.random.split(key)
    learner = start(c, init(cfg, k_init, data["obs"].shape[-1], act_dim))
    metrics0 = jax.eval_shape(lambda: update(c, act_dim, learner, *sample_meta_batch(c, data, k_run), k_run)[1])
    return train_keeping_best(learner, lambda lr: lr.params, metrics0, k_run, c.steps, c.eval_every,
                              lambda state, done, n: _chunk(c, act_dim, n, state, data), ckpt, progress, on_eval)


def transfer_critics(cfg: RunConfig, saved: dict) -> tuple[dict, dict]:
    """Q1 and Q2 for `mbml transfer`: Batch PEARL's networks (MLPs on s | a | z), divided by the reward scale."""
    from mbml.transfer import rescale_head

    p, scale = saved["params"], cfg.focal.reward_scale
    return rescale_head(p.q1, 1.0 / scale), rescale_head(p.q2, 1.0 / scale)


def critic_hidden(cfg: RunConfig) -> tuple[int, ...]:
    return tuple(cfg.focal.hidden)
