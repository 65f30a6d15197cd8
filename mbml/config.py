"""Configuration as data: frozen dataclasses (one docstring per field) and named presets.

Numbers of the `paper` preset are the authors' (spec Appendix A, §2-§6); smaller presets scale the
budgets and network sizes down for CPUs. The resolved config is written next to every output.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Callable, Literal, NamedTuple

from mbml.errors import MbmlError
from mbml.families import FAMILIES

Lift = Literal["vmap", "map"]
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
    """Ensemble members per task; all see the same mini-batch (diversity from initialisation)."""
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
        _validate("contextual_bcq", self)


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
        _validate("batch_pearl", self)


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
    lift: Lift = "vmap"
    """How per-task learners are lifted over the task axis: `vmap` (parallel) or `map` (sequential lax.map)."""
    overrides: tuple[str, ...] = ()
    """`section.field=value` changes made on top of the preset (`mbml run --set`), as given."""

    def __post_init__(self):
        _validate("", self)


SECTIONS = {"sac": SACConfig, "bcq": BCQConfig, "ensemble": EnsembleConfig, "distill": DistillConfig,
            "eval": EvalConfig, "contextual_bcq": ContextualBCQConfig, "batch_pearl": BatchPEARLConfig}


class Rule(NamedTuple):
    """The allowed values of a config field: `ok(value)`, and the range as an error message says it."""

    ok: Callable[[object], bool]
    says: str


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    """A finite int or float, not a bool (ints are not passed to isfinite: 10**400 has no float)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (isinstance(v, int) or math.isfinite(v))


def at_least(lo: int) -> Rule:
    says = {0: "must be a non-negative integer", 1: "must be a positive integer (at least 1)"}
    return Rule(lambda v: _integer(v) and v >= lo, says.get(lo, f"must be an integer, at least {lo}"))


def between(lo: float, hi: float, low_open: bool = False, high_open: bool = False) -> Rule:
    """A number in [lo, hi], or with an open end."""
    def ok(v):
        return _number(v) and (lo < v if low_open else lo <= v) and (v < hi if high_open else v <= hi)
    return Rule(ok, f"must be in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}")


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(lambda v: isinstance(v, str) and v in choices, f"choose one of {', '.join(choices)}")


POSITIVE, COUNT = at_least(1), at_least(0)
RATE = Rule(lambda v: _number(v) and v > 0, "must be a positive number")
WEIGHT = Rule(lambda v: _number(v) and v >= 0, "must be a non-negative number")
FRACTION = between(0, 1)
DISCOUNT = POLYAK = between(0, 1, low_open=True)  # a Polyak rate of 0 would never move the targets
MOMENT = between(0, 1, high_open=True)  # Adam's beta1; and a held-out fraction (1 would leave nothing to train on)
WIDTHS = Rule(lambda v: isinstance(v, tuple) and all(_integer(w) and w > 0 for w in v),
              "must be a comma list of positive integers (() for a linear network)")
SWITCH = Rule(lambda v: isinstance(v, bool), "must be true or false")

RULES: dict[str, dict[str, Rule]] = {
    "sac": dict(policy_hidden=WIDTHS, q_hidden=WIDTHS, lr=RATE, gamma=DISCOUNT, tau=POLYAK, batch_size=POSITIVE,
                warmup_steps=COUNT, total_steps=POSITIVE, critic=one_of(typing.get_args(Critic)),
                init_temperature=RATE, learn_temperature=SWITCH, n_step=POSITIVE,
                warmup=one_of(typing.get_args(Warmup)), adam_b1=MOMENT),
    "bcq": dict(actor_hidden=WIDTHS, critic_hidden=WIDTHS, vae_hidden=WIDTHS, lam=FRACTION, phi=WEIGHT,
                gamma=DISCOUNT, tau=POLYAK, lr=RATE, batch_size=POSITIVE, steps=POSITIVE, num_candidates=POSITIVE,
                eval_every=POSITIVE, eval_episodes=POSITIVE, dataset_size=COUNT),
    "ensemble": dict(members=at_least(2),  # the members' std is the unbiased one (ddof 1)
                     hidden=WIDTHS, lr=RATE, steps=POSITIVE, batch_size=POSITIVE, std_threshold=WEIGHT,
                     std_quantile=FRACTION, next_state=SWITCH, next_state_hidden=WIDTHS, next_state_steps=POSITIVE,
                     next_state_std_threshold=WEIGHT, next_state_holdout=MOMENT, next_state_store_mb=COUNT),
    "distill": dict(latent_dim=POSITIVE, encoder_hidden=WIDTHS, q_hidden=WIDTHS, g_hidden=WIDTHS, xi_hidden=WIDTHS,
                    lr=RATE, lr_decay=SWITCH, steps=POSITIVE, context_size=POSITIVE, batch_size=POSITIVE,
                    kl_weight=WEIGHT, triplet_margin=WEIGHT, triplet_weight=WEIGHT,
                    hard_negative_sets=at_least(2),  # Eq. 11's within-task distance compares two sets of a task
                    q_target_scale=WEIGHT, eval_every=POSITIVE),
    "eval": dict(episodes=POSITIVE, score_from=COUNT, num_candidates=POSITIVE, repeats=POSITIVE),
    "contextual_bcq": dict(latent_dim=POSITIVE, encoder_hidden=WIDTHS, actor_hidden=WIDTHS, critic_hidden=WIDTHS,
                           vae_hidden=WIDTHS, lam=FRACTION, phi=WEIGHT, gamma=DISCOUNT, tau=POLYAK, lr=RATE,
                           context_size=POSITIVE, batch_size=POSITIVE, num_candidates=POSITIVE, steps=POSITIVE,
                           eval_every=POSITIVE),
    "batch_pearl": dict(latent_dim=POSITIVE, encoder_hidden=WIDTHS, hidden=WIDTHS, reward_scale=RATE,
                        gamma=DISCOUNT, tau=POLYAK, lr=RATE, kl_weight=WEIGHT, meta_batch=POSITIVE,
                        context_size=POSITIVE, batch_size=POSITIVE, policy_reg=WEIGHT, steps=POSITIVE,
                        eval_every=POSITIVE),
    "": dict(family=Rule(lambda v: v is None or v in FAMILIES,  # None: data imported without a family
                         f"choose one of {', '.join(FAMILIES)} (or null: data without a family)"),
             preset=one_of(PRESETS), lift=one_of(typing.get_args(Lift)),
             overrides=Rule(lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
                            "must be a list of SECTION.FIELD=VALUE strings"),
             **{name: Rule(lambda v, kind=kind: isinstance(v, kind), "must be a table of its fields")
                for name, kind in SECTIONS.items()}),
}
"""The allowed range of every field of every config section ("": RunConfig's own fields), checked by
`_validate` whenever a config is made: a preset, `--set` (`override`), a folder's config.json (`from_dict`)."""


def shown(value) -> str:
    """A value as `--set` takes it (widths as a comma list, () for none), for a one-line error: short,
    and a newline or other unprintable character escaped."""
    text = (",".join(map(str, value)) or "()") if isinstance(value, tuple) else str(value)
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= 40 else text[:37] + "..."


def _validate(section: str, cfg) -> None:
    """A one-line MbmlError `section.field=value: allowed range` for the first field of `cfg` out of range."""
    for name, rule in RULES[section].items():
        value = getattr(cfg, name)
        if not rule.ok(value):
            raise MbmlError(f"{section + '.' if section else ''}{name}={shown(value)}: {rule.says}")


def check_batches(cfg: "RunConfig", n: int, where: str) -> None:
    """Batch and context sizes no larger than the `n` transitions per task of the dataset (`where`) they
    are drawn from; BCQ draws from the first `bcq.dataset_size`."""
    bcq_n = min(cfg.bcq.dataset_size, n) if cfg.bcq.dataset_size else n
    for key, value, limit in (("bcq.batch_size", cfg.bcq.batch_size, bcq_n),
                              ("ensemble.batch_size", cfg.ensemble.batch_size, n),
                              ("distill.batch_size", cfg.distill.batch_size, n),
                              ("distill.context_size", cfg.distill.context_size, n)):
        if value > limit:
            raise MbmlError(f"{key}={value}: must be at most the {limit} transitions per task of {where}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict, where: str = "") -> RunConfig:
    """The RunConfig of `to_dict(cfg)` as read back from JSON (config.json): fields it lacks take their
    defaults; an unknown field or a value out of range (RULES) is a one-line MbmlError starting `where`."""
    def plain(v):  # JSON lists back to tuples
        return tuple(v) if isinstance(v, list) else v

    try:
        if not isinstance(d, dict):
            raise MbmlError(f"expected a table of config fields, got {shown(d)}")
        kw = {}
        for k, v in d.items():
            if k not in {f.name for f in dataclasses.fields(RunConfig)}:
                raise MbmlError(f"unknown config field {k!r}")
            if k in SECTIONS:
                if not isinstance(v, dict):
                    raise MbmlError(f"{k}={shown(v)}: must be a table of its fields")
                unknown = sorted(set(v) - {f.name for f in dataclasses.fields(SECTIONS[k])})
                if unknown:
                    raise MbmlError(f"unknown config field '{k}.{unknown[0]}'")
                v = SECTIONS[k](**{kk: plain(vv) for kk, vv in v.items()})
            kw[k] = plain(v)
        return RunConfig(**kw)
    except MbmlError as e:
        raise MbmlError(f"{where}{e}") from None


def read(path) -> RunConfig:
    """A run folder's config.json, checked as `from_dict` checks it (errors name the file)."""
    from mbml.io import read_json

    return from_dict(read_json(path), f"{path}: ")


def check_method(name: str) -> str:
    if not isinstance(name, str) or name not in METHODS:
        raise MbmlError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    return name


_SECTIONS = tuple(SECTIONS)


def _parse(key: str, text: str, old):
    """`text` as a value of the type of `old` (the preset's value of `key`)."""
    kind = type(old)
    try:
        if isinstance(old, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(old, tuple):  # network widths: 256,256 (or (256, 256); () for none)
            items = [t for t in text.strip("()[] ").replace(" ", "").split(",") if t]
            elem = type(old[0]) if old else int
            return tuple(elem(t) for t in items)
        if old is None or isinstance(old, str):
            return None if text == "None" else text
        if isinstance(old, int):  # 48000, 48_000 or 4.8e4
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        return kind(text)
    except (ValueError, OverflowError):  # OverflowError: int(float("1e999"))
        what = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a comma list of numbers")
        raise MbmlError(f"--set {shown(key)}={shown(text)}: expected {what}, like {old!r}") from None


def override(cfg: RunConfig, items) -> RunConfig:
    """`cfg` with each `section.field=value` of `items` applied (`mbml run --set`), e.g.
    `sac.total_steps=10000`, `distill.q_hidden=128,128`, `lift=map`; recorded in `cfg.overrides`.
    Each section changes once, with all its items, so ranges tying two fields see the values given."""
    changes: dict[str, dict] = {}  # section ("": the top level) -> {field: value}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise MbmlError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. distill.steps=48000")
        section, _, name = key.rpartition(".")
        if section and section not in _SECTIONS:
            raise MbmlError(f"--set {shown(key)}: unknown section {section!r}; choose from: {', '.join(_SECTIONS)}")
        target = getattr(cfg, section) if section else cfg
        names = [f.name for f in dataclasses.fields(target)
                 if section or f.name not in ("family", "preset", "overrides", *_SECTIONS)]
        if name not in names:
            raise MbmlError(f"--set {shown(key)}: unknown field {name!r}; {section or 'the top level'} has: "
                            f"{', '.join(names)}")
        value = _parse(key, text, getattr(target, name))
        if key == "lift" and value not in typing.get_args(Lift):  # the one Literal field
            raise MbmlError(f"--set lift={shown(text)}: choose {' or '.join(typing.get_args(Lift))}")
        changes.setdefault(section, {})[name] = value
    for section, values in changes.items():
        try:
            cfg = dataclasses.replace(cfg, **({section: dataclasses.replace(getattr(cfg, section), **values)}
                                             if section else values))
        except MbmlError as e:  # out of range: the field given, or one whose range a given field sets
            field_name = str(e).partition("=")[0].rpartition(".")[2]
            given = " ".join(shown(i) for i in items if i.partition("=")[0].rpartition(".")[0] == section)
            raise MbmlError(f"--set {e}" if field_name in values else f"--set {given}: {e}") from None
    return dataclasses.replace(cfg, overrides=cfg.overrides + tuple(items)) if items else cfg


def drift(stored: dict) -> list[str]:
    """`section.field=value` for every field where a run's stored config (config.json, or results.json's
    `config`) differs from what its preset, with its `--set` overrides, gives today: how a run made
    before a preset changed differs from a run made now. A field added since the run was made counts
    with its default (what resuming the run uses); fields either side lacks otherwise are skipped."""
    try:
        now = to_dict(override(preset(stored["family"], stored["preset"]), stored.get("overrides", [])))
    except (KeyError, MbmlError):
        return []
    try:  # the stored config as the run uses it: fields it lacks take their defaults
        stored = {**stored, **{k: v for k, v in to_dict(from_dict(stored)).items() if k in SECTIONS}}
    except (MbmlError, TypeError):
        pass
    out = []
    for key, value in stored.items():
        if key in ("family", "preset", "overrides") or key not in now:
            continue
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for name, v in pairs:
            current = now[key] if name is None else now[key].get(name, v)
            if _plain(v) != _plain(current):
                shown = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                out.append(f"{key}.{name}={shown}" if name else f"{key}={shown}")
    return out


def _plain(value):
    """Tuples as lists, as they come back from JSON."""
    return list(value) if isinstance(value, (list, tuple)) else value


from mbml.presets import preset  # noqa: E402 (the presets are RunConfigs: defined after them, re-exported here)
