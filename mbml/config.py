"""Configuration as data: frozen dataclasses (one docstring per field) and named presets.

Numbers of the `paper` preset are the authors' (spec Appendix A, §2-§6); smaller presets scale the
budgets and network sizes down for CPUs. The resolved config is written next to every output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from mbml.config_baselines import BatchPEARLConfig, ContextualBCQConfig, FOCALConfig  # noqa: F401 (RunConfig's sections)
from mbml.errors import MbmlError

Lift = Literal["auto", "vmap", "map"]
Critic = Literal["mlp", "layernorm", "crossq"]
Warmup = Literal["policy", "uniform"]


class Method(NamedTuple):
    """A method is a pair of switches of the one distillation code path (spec §5, §7)."""

    relabel: str  # none | ensemble | true
    triplet: str  # none | relabel | hard_negative


METHODS = {
    "full": Method("ensemble", "relabel"),
    "no_relabel": Method("none", "hard_negative"),
    "no_triplet": Method("ensemble", "none"),
    "neither": Method("none", "none"),
    "gt_relabel": Method("true", "relabel"),
}
PRESETS = ("smoke", "demo", "cpu", "paper")
PROTOCOLS = {
    "online": "the paper's (spec §6): z from the prior first, then the posterior of the agent's own episodes; "
              "score = mean return of episodes 3-5",
    "online-last": "PEARL's score: the same episodes, the last one's return",
    "nonprior": "CSRO's: the first episode with uniform random actions, then the posterior of everything "
                "collected; score = mean return of episodes 3-5",
    "offline-context": "FOCAL's: before each episode the context gains H transitions drawn from a dataset of the "
                       "task (`mbml collect-test`), never the agent's own; score = mean return of episodes 3-5",
}
"""The evaluation protocols every method is scored under (`mbml evaluate --protocol`). `online` and
`online-last` are two scores of one set of episodes; `nonprior` and `offline-context` run their own."""


@dataclass(frozen=True)
class SACConfig:
    """Data collection: one SAC learner per training task (spec §2)."""

    policy_hidden: tuple[int, ...] = (256, 256)
    """Hidden layers of the tanh-Gaussian policy."""
    q_hidden: tuple[int, ...] = (1024,) * 7
    """Hidden layers of each of the two Q networks."""
    lr: float = 3e-4
    """Adam learning rate of policy, Q networks and temperature."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 5e-3
    """Polyak rate of the target Q networks, every step."""
    batch_size: int = 256
    """Mini-batch size."""
    warmup_steps: int = 10_000
    """Environment steps collected with the initial policy before learning starts."""
    total_steps: int = 200_000
    """Environment steps per task: the whole replay history becomes that task's dataset."""
    critic: Critic = "mlp"
    """Q networks: `mlp` (the authors': plain ReLU MLPs with Polyak-averaged targets), `layernorm`
    (LayerNorm after every hidden layer, as in DroQ, BRO and SimBa) or `crossq` (CrossQ: batch
    normalisation, no target networks, current and next state-actions in one forward pass)."""
    init_temperature: float = 1.0
    """Initial temperature alpha (the authors: log alpha = 0, so 1.0)."""
    learn_temperature: bool = True
    """Tune alpha towards the target entropy -|A|; false keeps it at `init_temperature`."""
    n_step: int = 1
    """n-step returns: the discounted sum of up to n rewards of one episode, then the bootstrap."""
    warmup: Warmup = "policy"
    """Actions before learning starts: `policy` (the initial policy, as the authors) or `uniform`."""
    adam_b1: float = 0.9
    """Adam's first-moment decay for every SAC optimizer (CrossQ uses 0.5)."""

    def __post_init__(self):
        _validate("sac", self)


@dataclass(frozen=True)
class BCQConfig:
    """One BCQ teacher per task (spec §3)."""

    actor_hidden: tuple[int, ...] = (400, 300)
    """Perturbation network xi(s, a)."""
    critic_hidden: tuple[int, ...] = (400, 300)
    """Each of the two critic heads."""
    vae_hidden: tuple[int, ...] = (750, 750)
    """VAE encoder and decoder (generator G)."""
    lam: float = 0.75
    """Soft clipped double-Q weight: lam * min + (1 - lam) * max."""
    phi: float = 0.05
    """Perturbation scale: a' = clip(a + phi * xi(s, a))."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 5e-3
    """Polyak rate of critic and actor targets."""
    lr: float = 3e-4
    """Adam learning rate of VAE, critic and actor."""
    batch_size: int = 100
    """Mini-batch size (uniform with replacement)."""
    steps: int = 125_000
    """Gradient steps per teacher."""
    num_candidates: int = 10
    """Decoded candidate actions per state, for targets and action selection."""
    eval_every: int = 5_000
    """Online evaluation interval; the best evaluated checkpoint is kept (spec §3)."""
    eval_episodes: int = 10
    """Episodes per online evaluation."""
    dataset_size: int = 0
    """Use the first N transitions of each task's history (0: all)."""

    def __post_init__(self):
        _validate("bcq", self)


@dataclass(frozen=True)
class EnsembleConfig:
    """Reward-prediction ensembles and relabelling (spec §4)."""

    members: int = 20
    """Ensemble members per task; all see the same mini-batch (diversity from initialisation). 1: a single
    reward network, which has no std to filter by, so every relabelled transition is accepted (the
    paper's Fig. 7 comparison)."""
    hidden: tuple[int, ...] = (128,)
    """Hidden layers of each member (s, a) -> r."""
    lr: float = 3e-4
    """Adam learning rate."""
    steps: int = 4_000
    """Gradient steps."""
    batch_size: int = 128
    """Mini-batch size."""
    std_threshold: float = 0.0
    """Accept a relabelled transition iff the ensemble std is below this (0: use std_quantile)."""
    std_quantile: float = 0.9
    """When std_threshold is 0: per-task threshold = this quantile of the ensemble std on its own data."""
    next_state: bool = False
    """Also train next-state ensembles (s, a) -> s' and relabel next states (tasks differing in dynamics: §4.2)."""
    next_state_hidden: tuple[int, ...] = (256,) * 6
    """Hidden layers of each next-state member (s, a) -> s', the absolute next observation."""
    next_state_steps: int = 20_000
    """Gradient steps of the next-state ensembles (same members, lr and batch size as the reward ones)."""
    next_state_std_threshold: float = 0.2
    """Accept only if also the next-state std (over members, mean over obs dims) is below this (0: std_quantile)."""
    next_state_holdout: float = 0.05
    """Fraction of each task's transitions kept out of next-state training, to measure its error (relabel.json)."""
    next_state_store_mb: int = 1024
    """Store the mean predicted next states [K, K, N, obs] if they fit in this many MB, else recompute them per step."""

    def __post_init__(self):
        _validate("ensemble", self)


@dataclass(frozen=True)
class DistillConfig:
    """The task-conditioned student (spec §5)."""

    latent_dim: int = 20
    """Size of the task variable z."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Per-transition context encoder (product of Gaussians over transitions)."""
    q_hidden: tuple[int, ...] = (1024,) * 9
    """Distilled Q(s, a, z)."""
    g_hidden: tuple[int, ...] = (1024,) * 7
    """Distilled generator G(s, u, z)."""
    xi_hidden: tuple[int, ...] = (1024,) * 8
    """Distilled perturbation xi(s, a, z)."""
    lr: float = 3e-4
    """Adam learning rate (encoder, Q, G and xi each have their own Adam moments)."""
    lr_decay: bool = False
    """Cosine-decay the learning rate to a tenth over `steps` (the authors keep it constant)."""
    steps: int = 100_000
    """Gradient steps."""
    context_size: int = 64
    """Own transitions per task in a context; relabelled ones add as many (128 for methods without relabelling)."""
    batch_size: int = 128
    """(s, a) pairs per task per step for the distillation losses."""
    kl_weight: float = 0.1
    """beta of Eq. 3: weight of KL(q(z|c) || N(0, I)), summed over tasks as in the authors' code."""
    triplet_margin: float = 2.0
    """Margin m of Eq. 8 / Eq. 11."""
    triplet_weight: float = 1.0
    """Weight of the triplet loss in the encoder's objective (the authors add it with weight 1)."""
    hard_negative_sets: int = 10
    """Context sets per task for hard-negative mining (no_relabel, Eq. 11)."""
    q_target_scale: float = 0.0
    """If > 0: standardise the teachers' Q targets (mean and std over all tasks' data) and multiply by this.

    The KL weight only means something relative to the Q loss: the paper's MuJoCo Q values have stds
    of order 100, where beta = 0.1 is negligible beside the Q loss; with small rewards (the toy) the
    same beta collapses the posterior to the prior. Standardising to a fixed scale keeps the paper's
    regime whatever the reward scale; argmax over candidate actions is unchanged. 0: raw targets."""
    eval_every: int = 5_000
    """Evaluate on the test tasks every this many steps (curve of score against steps)."""

    def __post_init__(self):
        _validate("distill", self)


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol on unseen tasks (spec §6)."""

    episodes: int = 5
    """Episodes per task; the posterior is recomputed from all transitions so far after each."""
    score_from: int = 2
    """Episodes before this index are discarded: score = mean return of episodes 3-5."""
    num_candidates: int = 10
    """Candidate actions per state."""
    repeats: int = 1
    """Independent runs of the protocol per task, averaged (the authors run it once; more runs make
    checkpoint selection and per-seed scores less noisy). Posterior means are kept from the first."""

    def __post_init__(self):
        _validate("eval", self)
        if self.score_from >= self.episodes:  # the score would average no episode
            raise MbmlError(f"eval.score_from={self.score_from}: must be less than eval.episodes ({self.episodes})")


@dataclass(frozen=True)
class TransferConfig:
    """Transfer to an unseen task (spec §8, `mbml transfer`): online SAC on one task started from a
    student, against the same SAC from scratch and plain SAC. Not part of a run's config: each transfer
    folder (RUN/transfer/NAME) keeps its own. Defaults are the authors' (`paper`)."""

    steps: int = 360_000
    """Environment steps on the new task per arm, everything counted: the student arm's own episodes
    (`collect_steps`) come out of its budget (the authors: 10K + 350 epochs of 1K)."""
    collect_steps: int = 10_000
    """The student's episodes on the task under the evaluation protocol (whole episodes, at least this
    many steps): the behaviour-cloning data, and the z of the last episode is frozen for the critics."""
    bc_steps: int = 10_000
    """Behaviour-cloning gradient steps of the student arm's fresh policy."""
    init_steps: int = 10_000
    """Environment steps with the initial policy (cloned or random) before learning starts."""
    batch_size: int = 256
    """Each of the two mini-batches per iteration (and behaviour cloning's)."""
    lr: float = 3e-4
    """Adam learning rate of critics, policy, temperature and behaviour cloning."""
    gamma: float = 0.99
    """Discount (the presets take the teachers' discount, which the student's Q was learned with)."""
    tau: float = 5e-3
    """Polyak rate of the target critics."""
    policy_tau: float = 0.1
    """Polyak rate of the policy towards its new parameters after every step (the authors' policy averaging)."""
    q_hidden: tuple[int, ...] = (1024,) * 9
    """Critics of the modified SAC (the student's Q sizes: the student arm's critics are its Q)."""
    policy_hidden: tuple[int, ...] = (256, 256)
    """The tanh-Gaussian policy (the run's SAC policy sizes)."""
    eval_every: int = 1_000
    """Environment steps between evaluations of the deterministic policy (the authors: every 1K)."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    arms: tuple[str, ...] = ("student", "scratch", "sac")
    """Arms to run: student (initialised from the method's student), scratch (the same SAC, random
    initialisation), sac (plain SAC as mbml collects data)."""

    def __post_init__(self):
        _validate("transfer", self)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers, besides the seed."""

    family: str | None = "point-nav"
    """Task family (None: data imported without one; only the stages that need no simulator run)."""
    preset: str = "cpu"
    """Named preset these values came from."""
    sac: SACConfig = field(default_factory=SACConfig)
    bcq: BCQConfig = field(default_factory=BCQConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    contextual_bcq: ContextualBCQConfig = field(default_factory=ContextualBCQConfig)
    batch_pearl: BatchPEARLConfig = field(default_factory=BatchPEARLConfig)
    focal: FOCALConfig = field(default_factory=FOCALConfig)
    lift: Lift = "auto"
    """How per-task learners are lifted over the task axis: `vmap` (parallel), `map` (sequential
    lax.map) or `auto` (`nets.resolve_lift`: by backend and network width; a run folder made with
    another keeps its own)."""
    overrides: tuple[str, ...] = ()
    """`section.field=value` changes made on top of the preset (`mbml run --set`), as given."""

    def __post_init__(self):
        _validate("", self)


SECTIONS = {"sac": SACConfig, "bcq": BCQConfig, "ensemble": EnsembleConfig, "distill": DistillConfig,
            "eval": EvalConfig, "contextual_bcq": ContextualBCQConfig, "batch_pearl": BatchPEARLConfig,
            "focal": FOCALConfig}


def _validate(section: str, cfg) -> None:
    """The ranges of `mbml.config_rules.RULES`, checked by every section's `__post_init__`."""
    from mbml.config_rules import _validate as check  # here: config_rules reads this module's classes

    check(section, cfg)


ELSEWHERE = {**dict.fromkeys(("RULES", "Rule", "at_least", "between", "check_batches", "one_of", "shown"),
                             "mbml.config_rules"),
             **dict.fromkeys(("_SECTIONS", "check_method", "drift", "from_dict", "override", "read", "to_dict"),
                             "mbml.config_io"),
             "preset": "mbml.presets"}
"""Names `mbml.config` also gives (`C.to_dict`, `C.preset`, ...) that live in the modules built on it: the
rules, reading and writing, the presets. Each imports this module, so they resolve on first use, and any
of them may be imported first."""


def __getattr__(name: str):
    if name not in ELSEWHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(ELSEWHERE[name]), name)
