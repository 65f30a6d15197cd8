"""The allowed range of every config field (`RULES`), checked whenever a config is made: a preset,
`--set`, a folder's config.json. A value out of range is a one-line error naming the field."""

from __future__ import annotations

import math
import typing
from typing import Callable, NamedTuple

from mbml.config import PRESETS, SECTIONS, Critic, Lift, RunConfig, Warmup  # noqa: F401 (RunConfig: annotations)
from mbml.config_baselines import DivergenceAt, Penalty
from mbml.errors import MbmlError
from mbml.families import FAMILIES


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
    "ensemble": dict(members=POSITIVE,  # 1: a single network, no std filter (ensembles.thresholds)
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
    "focal": dict(latent_dim=POSITIVE, encoder_hidden=WIDTHS, hidden=WIDTHS, reward_scale=RATE, gamma=DISCOUNT,
                  tau=POLYAK, lr=RATE, c_lr=RATE, c_iter=POSITIVE, z_loss_weight=WEIGHT, meta_batch=POSITIVE,
                  context_size=POSITIVE, batch_size=POSITIVE, alpha_init=WEIGHT, alpha_max=WEIGHT, alpha_lr=WEIGHT,
                  target_divergence=WEIGHT, value_penalty=SWITCH, gradient_penalty=one_of(typing.get_args(Penalty)),
                  divergence_at=one_of(typing.get_args(DivergenceAt)), policy_reg=WEIGHT, steps=POSITIVE,
                  eval_every=POSITIVE),
    "transfer": dict(steps=POSITIVE, collect_steps=POSITIVE, bc_steps=POSITIVE, init_steps=COUNT,
                     batch_size=POSITIVE, lr=RATE, gamma=DISCOUNT, tau=POLYAK, policy_tau=POLYAK, q_hidden=WIDTHS,
                     policy_hidden=WIDTHS, eval_every=POSITIVE, eval_episodes=POSITIVE,
                     arms=Rule(lambda v: isinstance(v, tuple) and len(v) > 0 and len(set(v)) == len(v)
                               and all(a in ("student", "scratch", "sac") for a in v),
                               "must be a comma list of distinct arms: student, scratch, sac")),
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
