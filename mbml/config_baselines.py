"""The baselines' config sections (`RunConfig.contextual_bcq`, `.batch_pearl`, `.focal`): frozen
dataclasses, one docstring per field, defaults the authors' (`paper`); the ranges are in
`mbml.config_rules.RULES` like every section's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Penalty = Literal["brac", "focal_code"]
DivergenceAt = Literal["next", "current"]


def _check(section: str, cfg) -> None:
    from mbml.config_rules import _validate  # here: config_rules reads the sections' classes

    _validate(section, cfg)


@dataclass(frozen=True)
class ContextualBCQConfig:
    """Contextual BCQ (baselines spec §1): one BCQ whose nets all take z from the product-of-Gaussians
    encoder, trained from scratch on every task's dataset; the encoder learns from the VAE and critic
    losses (no KL term), the actor sees z detached. Defaults are the authors' (`paper`)."""

    latent_dim: int = 20
    """Size of the task variable z."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Per-transition context encoder (product of Gaussians over a context)."""
    actor_hidden: tuple[int, ...] = (1024,) * 8
    """Perturbation network xi(s, a, z)."""
    critic_hidden: tuple[int, ...] = (1024,) * 9
    """Each of the two critic heads Q(s, a, z)."""
    vae_hidden: tuple[int, ...] = (1024,) * 7
    """VAE encoder and decoder G(s, u, z)."""
    lam: float = 0.75
    """Soft clipped double-Q weight: lam * min + (1 - lam) * max."""
    phi: float = 0.05
    """Perturbation scale: a' = clip(a + phi * xi(s, a, z))."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 5e-3
    """Polyak rate of critic and actor targets."""
    lr: float = 3e-4
    """Adam learning rate of actor, critic, VAE and encoder."""
    context_size: int = 128
    """Context transitions per task per step (drawn with replacement from the task's dataset)."""
    batch_size: int = 128
    """RL transitions per task per step; every training task is in every step."""
    num_candidates: int = 10
    """Decoded candidate actions per state, for targets and action selection."""
    steps: int = 100_000
    """Gradient steps."""
    eval_every: int = 5_000
    """Evaluate (the protocol, on training and test tasks) every this many steps; the best on the
    training tasks is kept, as for the MBML students."""

    def __post_init__(self):
        _check("contextual_bcq", self)


@dataclass(frozen=True)
class BatchPEARLConfig:
    """Batch PEARL (baselines spec §2): PEARL's soft actor-critic with a V function, trained only from
    the fixed datasets; the encoder learns from the Q loss and the KL term. Defaults are the authors'."""

    latent_dim: int = 5
    """Size of the task variable z."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Per-transition context encoder (product of Gaussians over a context)."""
    hidden: tuple[int, ...] = (300, 300, 300)
    """Hidden layers of Q1, Q2, V and the tanh-Gaussian policy."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the Q target (PEARL has no temperature: this sets the entropy trade-off)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 5e-3
    """Polyak rate of the target V network."""
    lr: float = 3e-4
    """Adam learning rate of policy, Q1, Q2, V and encoder."""
    kl_weight: float = 0.1
    """lambda of KL(q(z|c) || N(0, I)), summed over the meta-batch (1.0 for ant-goal)."""
    meta_batch: int = 16
    """Tasks per step, drawn uniformly with replacement from the training tasks."""
    context_size: int = 100
    """Context transitions per drawn task (with replacement from its dataset)."""
    batch_size: int = 256
    """RL transitions per drawn task per step."""
    policy_reg: float = 1e-3
    """Weight of the policy's mean and log-std penalties (each mean of squares)."""
    steps: int = 100_000
    """Gradient steps."""
    eval_every: int = 5_000
    """Evaluate every this many steps; the best on the training tasks is kept."""

    def __post_init__(self):
        _check("batch_pearl", self)


@dataclass(frozen=True)
class FOCALConfig:
    """FOCAL (baselines spec §3): a deterministic tanh encoder trained only by the distance-metric loss,
    and PEARL's SAC with V on the detached z, regularised by BRAC's dual-form KL with an adaptive weight
    alpha. Defaults are the authors' (FOC `configs/default.py`), with BRAC's gradient penalty."""

    latent_dim: int = 20
    """Size of the task variable z (the mean of the per-transition tanh embeddings)."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Per-transition context encoder (tanh output of size latent_dim)."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden layers of Q1, Q2, V, the tanh-Gaussian policy and the dual critic c."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the Q target (no temperature: this sets the entropy trade-off)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 5e-3
    """Polyak rate of the target V network."""
    lr: float = 3e-4
    """Adam learning rate of policy, Q1, Q2, V and encoder."""
    c_lr: float = 1e-4
    """Adam learning rate of the dual critic c."""
    c_iter: int = 3
    """Adam steps of c per gradient step, each on its own RL batch (the first is the SAC step's)."""
    z_loss_weight: float = 10.0
    """Weight of the distance-metric loss, the encoder's only loss."""
    meta_batch: int = 16
    """Tasks per step, drawn uniformly with replacement (so that same-task pairs exist for the loss)."""
    context_size: int = 64
    """Context transitions per drawn task (with replacement from its dataset)."""
    batch_size: int = 256
    """RL transitions per drawn task per step."""
    alpha_init: float = 500.0
    """Initial value of alpha, the weight of the divergence (50 for cheetah-vel and walker)."""
    alpha_max: float = 2000.0
    """alpha is clipped to [0, alpha_max] where it is used (1e4 for walker)."""
    alpha_lr: float = 1.0
    """alpha <- alpha + alpha_lr (mean D - target_divergence) after every step (0: alpha fixed)."""
    target_divergence: float = 0.05
    """The divergence alpha steers towards."""
    value_penalty: bool = False
    """Subtract alpha D from the bootstrapped value in the Q target (BRAC's value penalty)."""
    gradient_penalty: Penalty = "brac"
    """The dual critic's penalty: `brac`, on the norm of grad_a c at interpolated actions (BRAC); or
    `focal_code`, on |c| itself there (what FOC's port computes)."""
    divergence_at: DivergenceAt = "next"
    """Where the value penalty's D is taken: `next`, at s' with the policy's and the dataset's next
    actions (BRAC); or `current`, at s with the policy's and the dataset's actions (FOC)."""
    policy_reg: float = 1e-3
    """Weight of the policy's mean and log-std penalties (each mean of squares)."""
    steps: int = 100_000
    """Gradient steps (MBML's budget for its baselines: 1000 x 100)."""
    eval_every: int = 5_000
    """Evaluate every this many steps; the best on the training tasks is kept."""

    def __post_init__(self):
        _check("focal", self)
