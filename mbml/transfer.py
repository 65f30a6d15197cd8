"""Transfer to an unseen task (spec §8, paper Fig. 8): the learners of online SAC on one new task, started
from the student or from scratch, as pure functions. `mbml.transfer_run` runs them.

The arms (`ARMS`), all on the same task with the same environment-step budget:

- `student`: a tanh-Gaussian policy behaviour-cloned from the student's own episodes on the task
  (`behaviour_clone`), both critics and both target critics set to the student's Q fed the z of its
  last episode, frozen (`init_from_student`), then the modified SAC below;
- `scratch`: the same modified SAC from random initialisation, critics reading s‖a only and all four
  initialised independently, as the authors' `sac_baseline` code does (their README says "identically
  initialized"; the code does not copy weights);
- `sac`: plain SAC as mbml collects data (`mbml.sac` with the run's `sac` settings).

The modified SAC (`update`, the authors' `sac_with_initialization/trainer`): every iteration draws two
independent mini-batches; batch A updates Q1, batch B updates Q2, the policy and the temperature. Both
targets are r + gamma (1 - d) (min(target Q1, target Q2)(s', a') - alpha log pi(a'|s')). After every
step the policy is Polyak-averaged with rate `policy_tau` towards its new parameters: target_policy <-
(1 - policy_tau) target_policy + policy_tau policy, then policy <- target_policy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbml import sac
from mbml.config import TransferConfig
from mbml.nets import MLP, soft_update

ARMS = ("student", "scratch", "sac")
METRICS = ("q1_loss", "q2_loss", "policy_loss", "alpha", "entropy", "q")


class Learner(NamedTuple):
    """The modified SAC's state. `z` is the task variable every critic is fed ([0]: none, the scratch arm)."""

    policy: dict
    q: tuple  # (Q1, Q2) parameters
    target: tuple  # (target Q1, target Q2)
    log_alpha: jax.Array
    opt: tuple  # Adam states of (policy, Q1, Q2, log alpha)
    z: jax.Array


def _critic(cfg: TransferConfig):
    return MLP(cfg.q_hidden, 1)


def q_value(cfg: TransferConfig, params, obs, act, z):
    """Q(s, a, z) for a batch of (s, a) with one z (of any size, 0 included)."""
    zz = jnp.broadcast_to(z, obs.shape[:-1] + z.shape[-1:])
    return _critic(cfg).apply(params, obs, act, zz)[..., 0]


def _actor(cfg: TransferConfig, act_dim: int):
    return sac.Actor(cfg.policy_hidden, act_dim)


def _policy_cfg(cfg: TransferConfig) -> sac.SACConfig:
    """The SACConfig whose `policy_hidden` `sac.sample_action` reads (the rest is unused)."""
    return sac.SACConfig(policy_hidden=cfg.policy_hidden)


def sample_action(cfg: TransferConfig, policy, obs, key, act_dim: int, deterministic: bool = False):
    return sac.sample_action(_policy_cfg(cfg), policy, obs, key, act_dim, deterministic)


def init_policy(cfg: TransferConfig, key, obs_dim: int, act_dim: int) -> dict:
    return _actor(cfg, act_dim).init(key, jnp.zeros((1, obs_dim)))


def init_critic(cfg: TransferConfig, key, obs_dim: int, act_dim: int, z_dim: int) -> dict:
    return _critic(cfg).init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)), jnp.zeros((1, z_dim)))


def _learner(cfg: TransferConfig, policy, q, target, z) -> Learner:
    opt = optax.adam(cfg.lr)
    log_alpha = jnp.zeros((), jnp.float32)  # the authors: log alpha starts at 0
    return Learner(policy, q, target, log_alpha, (opt.init(policy), opt.init(q[0]), opt.init(q[1]), opt.init(log_alpha)),
                   jnp.asarray(z, jnp.float32))


def init_scratch(cfg: TransferConfig, key, obs_dim: int, act_dim: int) -> Learner:
    """Random initialisation: a fresh policy and four independently initialised critics on s‖a."""
    kp, *kq = jax.random.split(key, 5)
    q = [init_critic(cfg, k, obs_dim, act_dim, 0) for k in kq]
    return _learner(cfg, init_policy(cfg, kp, obs_dim, act_dim), (q[0], q[1]), (q[2], q[3]), jnp.zeros(0))


def rescale_head(q: dict, mul, add=0.0) -> dict:
    """An MLP's parameters with its output multiplied by `mul` and shifted by `add` (exact: the last
    layer is linear)."""
    params = jax.tree.map(jnp.asarray, q)
    inner = params["params"]
    last = sorted(inner, key=lambda name: int(name.split("_")[-1]))[-1]  # Dense_0 ... Dense_n
    head = {"kernel": inner[last]["kernel"] * mul, "bias": inner[last]["bias"] * mul + add}
    return {**params, "params": {**inner, last: head}}


def denormalised_q(student_q: dict, qnorm) -> dict:
    """The student's Q network rescaled to the teachers' return scale: it was trained on targets
    (Q - qnorm[0]) / qnorm[1] (`distill.q_target_scale`), so its output is multiplied by qnorm[1]
    and shifted by qnorm[0]."""
    return rescale_head(student_q, qnorm[1], qnorm[0])


def init_from_agent(cfg: TransferConfig, policy: dict, q1: dict, q2: dict, z) -> Learner:
    """An initialised arm: the behaviour-cloned `policy`; Q1 and its target the agent's first critic `q1`,
    Q2 and its target its second `q2` (MLPs on s | a | z, in reward units), fed the frozen `z`."""
    copy = lambda q: jax.tree.map(lambda x: jnp.array(x, copy=True), q)  # noqa: E731
    return _learner(cfg, policy, (copy(q1), copy(q2)), (copy(q1), copy(q2)), z)


def init_from_student(cfg: TransferConfig, policy: dict, student_q: dict, qnorm, z) -> Learner:
    """The student arm: the behaviour-cloned `policy`, and Q1, Q2 and both targets all the student's Q
    (`denormalised_q`) fed the frozen `z`."""
    q = denormalised_q(student_q, qnorm)
    return init_from_agent(cfg, policy, q, q, z)


# ---------------------------------------------------------------------- behaviour cloning

def bc_loss(cfg: TransferConfig, act_dim: int, policy, obs, actions):
    """The authors' behaviour-cloning loss: mean over the batch of sum over action dimensions of
    (a - mu)^2 / sigma^2 + log sigma^2, with mu, sigma the *pre-tanh* Gaussian's parameters and a the
    executed (squashed) actions."""
    mean, log_std = _actor(cfg, act_dim).apply(policy, obs)
    return jnp.mean(jnp.sum((actions - mean) ** 2 * jnp.exp(-2.0 * log_std) + 2.0 * log_std, axis=-1))


def behaviour_clone(cfg: TransferConfig, key, obs, actions):
    """A fresh policy fitted to (obs, actions) [N, ...] by `cfg.bc_steps` Adam steps on mini-batches of
    `cfg.batch_size`. Returns (policy, the mean loss of the last 100 steps)."""
    act_dim = actions.shape[-1]
    k_init, k_run = jax.random.split(key)
    policy = init_policy(cfg, k_init, obs.shape[-1], act_dim)
    opt = optax.adam(cfg.lr)

    def step(carry, k):
        p, o = carry
        idx = jax.random.randint(k, (cfg.batch_size,), 0, obs.shape[0])
        loss, g = jax.value_and_grad(lambda pp: bc_loss(cfg, act_dim, pp, obs[idx], actions[idx]))(p)
        u, o = opt.update(g, o)
        return (optax.apply_updates(p, u), o), loss

    (policy, _), losses = jax.lax.scan(step, (policy, opt.init(policy)), jax.random.split(k_run, cfg.bc_steps))
    return policy, jnp.mean(losses[-100:])


# ---------------------------------------------------------------------- the modified SAC

def minibatch(buf: dict, size: int, count, key) -> dict:
    """`size` transitions drawn uniformly from the first `count` of a replay buffer {name: [N, ...]}."""
    idx = jax.random.randint(key, (size,), 0, count)
    return {name: v[idx] for name, v in buf.items()}


def update(cfg: TransferConfig, act_dim: int, ln: Learner, batch_a: dict, batch_b: dict, key):
    """One iteration of the modified SAC (module docstring). Returns (learner, metrics)."""
    opt = optax.adam(cfg.lr)
    k_a, k_b, k_pi = jax.random.split(key, 3)
    alpha = jnp.exp(ln.log_alpha)

    def target(batch, k):
        next_a, next_logp = sample_action(cfg, ln.policy, batch["next_obs"], k, act_dim)
        next_q = jnp.minimum(*(q_value(cfg, t, batch["next_obs"], next_a, ln.z) for t in ln.target))
        return jax.lax.stop_gradient(batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * (next_q - alpha * next_logp))

    def critic_loss(params, batch, y):
        q = q_value(cfg, params, batch["obs"], batch["actions"], ln.z)
        return jnp.mean((q - y) ** 2), q

    (l1, q1), g1 = jax.value_and_grad(critic_loss, has_aux=True)(ln.q[0], batch_a, target(batch_a, k_a))
    (l2, _), g2 = jax.value_and_grad(critic_loss, has_aux=True)(ln.q[1], batch_b, target(batch_b, k_b))

    def policy_loss(policy):
        a, logp = sample_action(cfg, policy, batch_b["obs"], k_pi, act_dim)
        q = jnp.minimum(*(q_value(cfg, p, batch_b["obs"], a, ln.z) for p in ln.q))
        return jnp.mean(alpha * logp - q), logp

    (lp, logp), gp = jax.value_and_grad(policy_loss, has_aux=True)(ln.policy)
    alpha_grad = jax.grad(lambda la: -jnp.mean(la * jax.lax.stop_gradient(logp - act_dim)))(ln.log_alpha)

    o_pi, o_q1, o_q2, o_alpha = ln.opt
    u, o_pi = opt.update(gp, o_pi)
    policy = soft_update(ln.policy, optax.apply_updates(ln.policy, u), cfg.policy_tau)  # the policy's Polyak step
    u, o_q1 = opt.update(g1, o_q1)
    q_1 = optax.apply_updates(ln.q[0], u)
    u, o_q2 = opt.update(g2, o_q2)
    q_2 = optax.apply_updates(ln.q[1], u)
    u, o_alpha = opt.update(alpha_grad, o_alpha)
    log_alpha = optax.apply_updates(ln.log_alpha, u)
    targets = (soft_update(ln.target[0], q_1, cfg.tau), soft_update(ln.target[1], q_2, cfg.tau))
    new = Learner(policy, (q_1, q_2), targets, log_alpha, (o_pi, o_q1, o_q2, o_alpha), ln.z)
    return new, {"q1_loss": l1, "q2_loss": l2, "policy_loss": lp, "alpha": alpha, "entropy": -jnp.mean(logp),
                 "q": jnp.mean(q1)}


def learn_step(cfg: TransferConfig, run_sac: sac.SACConfig, act_dim: int, arm: str, learner, buf: dict, count, key):
    """One learning iteration of any arm on its replay buffer's first `count` transitions."""
    k_a, k_b, k_upd = jax.random.split(key, 3)
    if arm == "sac":
        new, m = sac.update(run_sac, learner, minibatch(buf, run_sac.batch_size, count, k_a), k_upd, act_dim)
        return new, {"q1_loss": m["critic_loss"], "q2_loss": jnp.nan, "policy_loss": m["actor_loss"],
                     "alpha": m["alpha"], "entropy": m["entropy"], "q": m["q"]}
    batch_a = minibatch(buf, cfg.batch_size, count, k_a)
    batch_b = minibatch(buf, cfg.batch_size, count, k_b)  # independent of batch A
    return update(cfg, act_dim, learner, batch_a, batch_b, k_upd)


def policy_of(arm: str, learner) -> dict:
    return learner.actor if arm == "sac" else learner.policy


def act(cfg: TransferConfig, run_sac: sac.SACConfig, act_dim: int, arm: str, learner, obs, key, t):
    """The arm's exploration action at its step t (the plain SAC arm keeps its collector's warm-up)."""
    if arm == "sac":
        return sac.collect_action(run_sac, learner.actor, obs, key, act_dim, t)
    return sample_action(cfg, learner.policy, obs, key, act_dim)[0]


def greedy_action(policy_hidden: tuple, policy, obs, act_dim: int):
    """The deterministic policy the curves evaluate: tanh of the Gaussian's mean."""
    return sac.sample_action(sac.SACConfig(policy_hidden=policy_hidden), policy, obs, jax.random.PRNGKey(0),
                             act_dim, deterministic=True)[0]


def crossing_step(steps: np.ndarray, curve: np.ndarray, level: float) -> float | None:
    """The first step at which `curve` reaches `level` (None if it never does)."""
    hit = np.flatnonzero(np.asarray(curve) >= level)
    return float(np.asarray(steps)[hit[0]]) if len(hit) else None
