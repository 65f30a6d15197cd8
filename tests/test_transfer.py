"""Transfer to an unseen task (`mbml transfer`, spec §8): the learners on hand-computed values, and the
command on a smoke run of the toy (outputs, resume after a stop, bad input)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbml import io, sac, student as S, transfer as T
from mbml.baselines import batch_pearl as BP
from mbml.cli import main
from mbml.config import DistillConfig, TransferConfig
from mbml.errors import MbmlError
from mbml.transfer_run import parse_task, summarise, transfer


def linear_actor(mean: float, log_std: float) -> dict:
    """A linear tanh-Gaussian policy on 1-D observations (no hidden layer): zero weights, so its mean and
    log-std are the biases whatever the observation."""
    return {"params": {"MLP_0": {"Dense_0": {"kernel": jnp.zeros((1, 2)), "bias": jnp.array([mean, log_std])}}}}


def test_bc_loss_on_hand_computed_values():
    cfg = TransferConfig(policy_hidden=())
    obs = jnp.zeros((2, 1))
    actions = jnp.array([[0.1], [-0.3]])  # executed (squashed) actions, against the pre-tanh mean 0.5
    loss = T.bc_loss(cfg, 1, linear_actor(0.5, np.log(2.0)), obs, actions)
    # mean over the batch of (a - mu)^2 / sigma^2 + log sigma^2, sigma = 2
    expected = ((0.1 - 0.5) ** 2 / 4 + (-0.3 - 0.5) ** 2 / 4) / 2 + np.log(4.0)
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_behaviour_cloning_fits_the_actions():
    cfg = TransferConfig(policy_hidden=(16,), bc_steps=300, batch_size=32, lr=1e-2)
    obs = jax.random.normal(jax.random.PRNGKey(0), (256, 2))
    actions = jnp.tanh(obs[:, :1] - obs[:, 1:])  # a function of the observation
    policy, loss = T.behaviour_clone(cfg, jax.random.PRNGKey(1), obs, actions)
    mean, _ = sac.Actor(cfg.policy_hidden, 1).apply(policy, obs)
    start, _ = sac.Actor(cfg.policy_hidden, 1).apply(T.init_policy(cfg, jax.random.split(jax.random.PRNGKey(1))[0], 2, 1), obs)
    assert float(jnp.mean((mean - actions) ** 2)) < 0.2 * float(jnp.mean((start - actions) ** 2))
    assert np.isfinite(float(loss))


def _student(latent: int = 3):
    dcfg = DistillConfig(latent_dim=latent, encoder_hidden=(8,), q_hidden=(16, 16), g_hidden=(8,), xi_hidden=(8,))
    return dcfg, S.init(dcfg, jax.random.PRNGKey(3), 2, 2)


@pytest.mark.parametrize("qnorm", [(0.0, 1.0), (3.0, 2.5)])
def test_critics_start_as_the_students_q_with_the_frozen_z(qnorm):
    dcfg, student = _student()
    cfg = TransferConfig(q_hidden=dcfg.q_hidden, policy_hidden=(8,))
    z = jnp.array([0.3, -1.2, 0.7])
    policy = T.init_policy(cfg, jax.random.PRNGKey(0), 2, 2)
    ln = T.init_from_student(cfg, policy, student.q, np.array(qnorm, np.float32), z)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
    act = jnp.tanh(jax.random.normal(jax.random.PRNGKey(2), (5, 2)))
    q_student = S.q_value(dcfg, 2, student, obs, act, jnp.broadcast_to(z, (5, 3)))
    for params in (*ln.q, *ln.target):
        q = T.q_value(cfg, params, obs, act, ln.z)
        if qnorm == (0.0, 1.0):
            np.testing.assert_array_equal(np.asarray(q), np.asarray(q_student))  # the same network, exactly
        else:
            np.testing.assert_allclose(np.asarray(q), np.asarray(q_student) * qnorm[1] + qnorm[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["contextual_bcq", "batch_pearl", "focal"])
def test_a_baselines_critics_start_as_its_two_q_networks_in_reward_units(method):
    from mbml import methods as M
    from mbml.presets import preset

    run_cfg = preset("point-nav", "smoke")
    impl = M.get(method).implementation()
    params = impl.init(run_cfg, jax.random.PRNGKey(0), 2, 2)
    q1, q2 = impl.transfer_critics(run_cfg, {"params": params})
    cfg = TransferConfig(q_hidden=impl.critic_hidden(run_cfg), policy_hidden=(8,))
    latent = impl.agent(run_cfg, 2).latent_dim
    z = jax.random.normal(jax.random.PRNGKey(4), (latent,))
    ln = T.init_from_agent(cfg, T.init_policy(cfg, jax.random.PRNGKey(0), 2, 2), q1, q2, z)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
    act = jnp.tanh(jax.random.normal(jax.random.PRNGKey(2), (5, 2)))
    zz = jnp.broadcast_to(z, (5, latent))
    if method == "contextual_bcq":
        want, scale = impl.q_values(run_cfg.contextual_bcq, params.critic, obs, act, zz), 1.0
    else:
        section = getattr(run_cfg, method)
        want, scale = BP.q_values(section, params, obs, act, zz), section.reward_scale
    for i, (q, target) in enumerate(zip(ln.q, ln.target)):
        got = T.q_value(cfg, q, obs, act, ln.z)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want[i]) / scale, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(T.q_value(cfg, target, obs, act, ln.z)), np.asarray(got))
    assert not np.allclose(np.asarray(want[0]), np.asarray(want[1]))  # two different networks, each kept


def test_scratch_critics_are_four_independent_initialisations_on_state_and_action():
    cfg = TransferConfig(q_hidden=(8,), policy_hidden=(8,))
    ln = T.init_scratch(cfg, jax.random.PRNGKey(0), 2, 2)
    kernels = [np.asarray(p["params"]["Dense_0"]["kernel"]) for p in (*ln.q, *ln.target)]
    assert kernels[0].shape == (4, 8) and ln.z.shape == (0,)  # input s‖a, no z
    assert all(not np.array_equal(kernels[i], kernels[j]) for i in range(4) for j in range(i))


def _linear_learner(cfg: TransferConfig) -> T.Learner:
    """Linear critics on (s, a) with zero weights, a linear policy: each step's effect is a sign."""
    zero_q = {"params": {"Dense_0": {"kernel": jnp.zeros((2, 1)), "bias": jnp.zeros(1)}}}
    copy = lambda: jax.tree.map(jnp.copy, zero_q)  # noqa: E731
    return T._learner(cfg, linear_actor(0.0, -1.0), (copy(), copy()), (copy(), copy()), jnp.zeros(0))


def test_the_two_critics_learn_from_independent_mini_batches():
    """Two transitions, rewards +10 and -10, mini-batches of one: after one Adam step each critic's bias
    has moved towards the reward of the transition its batch drew (+-lr). With independent batches the
    two critics disagree for about half the keys; with one batch they never would."""
    cfg = TransferConfig(q_hidden=(), policy_hidden=(), batch_size=1, gamma=0.5)
    buf = {"obs": jnp.zeros((2, 1)), "actions": jnp.zeros((2, 1)), "rewards": jnp.array([10.0, -10.0]),
           "next_obs": jnp.zeros((2, 1)), "terminals": jnp.ones(2)}
    signs = []
    learn = jax.jit(T.learn_step, static_argnums=(0, 1, 2, 3))
    for i in range(40):
        ln, _ = learn(cfg, sac.SACConfig(), 1, "student", _linear_learner(cfg), buf, 2, jax.random.PRNGKey(i))
        b1, b2 = (float(q["params"]["Dense_0"]["bias"][0]) for q in ln.q)
        assert abs(b1) == pytest.approx(cfg.lr, rel=1e-3) and abs(b2) == pytest.approx(cfg.lr, rel=1e-3)
        signs.append((np.sign(b1), np.sign(b2)))
    differ = sum(s1 != s2 for s1, s2 in signs)
    assert 5 <= differ <= 35, differ


def test_the_policy_moves_a_tenth_of_its_adam_step():
    """Policy averaging with rate 0.1 after every step: Adam's first step moves every parameter with a
    gradient by lr, so the averaged policy moves by 0.1 lr, in the same direction as without averaging."""
    cfg = TransferConfig(q_hidden=(), policy_hidden=(), batch_size=4, lr=1e-3, policy_tau=0.1)
    rng = np.random.default_rng(0)
    batch = {"obs": jnp.asarray(rng.normal(size=(4, 1)), jnp.float32),
             "actions": jnp.asarray(rng.uniform(-1, 1, (4, 1)), jnp.float32), "rewards": jnp.ones(4),
             "next_obs": jnp.asarray(rng.normal(size=(4, 1)), jnp.float32), "terminals": jnp.zeros(4)}
    ln = _linear_learner(cfg)
    q = {"params": {"Dense_0": {"kernel": jnp.array([[0.5], [1.5]]), "bias": jnp.zeros(1)}}}  # Q rises with a
    ln = ln._replace(q=(q, q), target=(q, q))
    key = jax.random.PRNGKey(0)
    averaged, _ = T.update(cfg, 1, ln, batch, batch, key)
    raw, _ = T.update(dataclasses.replace(cfg, policy_tau=1.0), 1, ln, batch, batch, key)
    p0, p1, p_avg = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)]) for p in (ln.policy, raw.policy,
                                                                                        averaged.policy))
    np.testing.assert_allclose(np.abs(p1 - p0), cfg.lr, rtol=1e-3)
    # float32 resolution: parameters near 1 (the log-std bias is -1) are stored to about 1.2e-7
    np.testing.assert_allclose(p_avg - p0, 0.1 * (p1 - p0), rtol=0, atol=2e-7)
    assert p_avg[1] > p0[1]  # the mean's bias: towards larger actions, where Q is higher


def test_parse_task():
    from mbml.families import get_family

    fam = get_family("point-nav")
    label, task = parse_task(fam, "test:1")
    assert label == "test1" and np.array_equal(task, fam.test_tasks[1])
    label, task = parse_task(fam, f"{fam.train_tasks[0][0]},{fam.train_tasks[0][1]}")
    np.testing.assert_allclose(task, fam.train_tasks[0])
    for bad, says in (("test:99", "numbered"), ("valid:0", "no 'valid'"), ("9,9", "outside"), ("1", "2 finite"),
                      ("a,b", "expected")):
        with pytest.raises(MbmlError, match=says):
            parse_task(fam, bad)


# ---------------------------------------------------------------------- the command on a smoke run

@pytest.fixture
def smoke_run(smoke_full_run):
    return smoke_full_run


def test_transfer_command_writes_curves_and_summary(smoke_run, capsys):
    main(["transfer", "--out", str(smoke_run), "--task", "test:0", "--quiet"])
    folder = smoke_run / "transfer" / "full-test0"
    res = io.read_json(folder / "results.json")
    cfg = io.read_json(folder / "config.json")["transfer"]
    assert set(res["arms"]) == {"student", "scratch", "sac"}
    student, scratch = res["arms"]["student"], res["arms"]["scratch"]
    assert student["steps"][0] == cfg["collect_steps"] and student["steps"][-1] == cfg["steps"]
    assert scratch["steps"][0] == 0 and scratch["steps"][-1] == cfg["steps"]
    assert all(np.isfinite(v["per_seed"]).all() for v in res["arms"].values())
    eps = io.read_json(folder / "seed_0" / "student_episodes.json")
    assert len(eps["z"]) == 6 and len(eps["episode_returns"]) == cfg["collect_steps"] // 20
    assert (folder / "transfer.png").stat().st_size > 0
    assert "SAC from the student" in capsys.readouterr().out
    rows = (folder / "seed_0" / "student.csv").read_text().splitlines()
    assert len(rows) == 1 + len(student["steps"])
    # the run's report, results.json and `mbml compare` carry it
    assert io.read_json(smoke_run / "results.json")["transfer"]["full-test0"] == res
    assert "figures/transfer-full-test0.png" in (smoke_run / "report.md").read_text()
    main(["compare", str(smoke_run), "--out", str(smoke_run.parent / "cmp")])
    assert "Transfer of `full` to point-nav task test0" in (smoke_run.parent / "cmp" / "compare.md").read_text()


def test_a_stopped_transfer_resumes_to_the_same_curve(smoke_run, tmp_path):
    from mbml.pipeline import Run
    from mbml.transfer_run import run_seed, settings

    run = Run.open(smoke_run, create=False)
    cfg = settings(run)
    task = run.family.test_tasks[1]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run_seed(run, whole, "full", task, cfg, 0)
    calls = []

    def stop_after_first_chunk(label, done, total):
        calls.append(done)
        if done > 0 and label.endswith("scratch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_seed(run, stopped, "full", task, cfg, 0, progress=stop_after_first_chunk)
    assert (stopped / "seed_0" / "ckpt" / "scratch.msgpack").exists()
    run_seed(run, stopped, "full", task, cfg, 0)
    for arm in ("student", "scratch", "sac"):
        assert io.read_json(stopped / "seed_0" / f"{arm}.json") == io.read_json(whole / "seed_0" / f"{arm}.json")
    assert not (stopped / "seed_0" / "ckpt" / "scratch.msgpack").exists()


@pytest.mark.parametrize("args, says", [
    (["--task", "5,5"], "outside"),
    (["--task", "test:0", "--method", "contextual_bcq"], "no contextual_bcq"),
    (["--task", "test:0", "--method", "neither"], "no neither student"),
    (["--task", "test:0", "--steps", "40"], "larger than the student's own episodes"),
    (["--task", "test:0", "--set", "transfer.q_hidden=8"], "critics are full's"),
    (["--task", "test:0", "--set", "distill.steps=3"], "transfer.FIELD=VALUE"),
])
def test_bad_input_is_one_line_and_writes_nothing(smoke_run, capsys, snapshot, args, says):

    before = snapshot(smoke_run)
    with pytest.raises(SystemExit) as e:
        main(["transfer", "--out", str(smoke_run), "--quiet", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert snapshot(smoke_run) == before


def test_a_folder_made_with_other_settings_is_refused(smoke_run, capsys):
    main(["transfer", "--out", str(smoke_run), "--task", "test:2", "--quiet", "--set", "transfer.arms=scratch"])
    with pytest.raises(SystemExit):
        main(["transfer", "--out", str(smoke_run), "--task", "test:2", "--quiet", "--set", "transfer.arms=sac"])
    assert "made with another transfer" in capsys.readouterr().err
    res = summarise(smoke_run / "transfer" / "full-test2")
    assert set(res["arms"]) == {"scratch"} and "gain_vs_scratch" not in res


def test_the_gain_is_computed_as_documented():
    steps = np.array([0, 10, 20, 30, 40])
    assert T.crossing_step(steps, np.array([-5, -3, -1, 0, 2]), -1.0) == 20
    assert T.crossing_step(steps, np.array([-5, -3, -2, -2, -2]), -1.0) is None


def test_transfer_refuses_a_run_folder_without_its_student(tmp_path):
    with pytest.raises(MbmlError, match="not a run folder"):
        transfer(tmp_path / "nothing", "full", "test:0")
