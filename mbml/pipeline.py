"""The stages of a run: collect -> teachers -> ensembles -> distill/train -> evaluate -> report.

Each stage reads its inputs from the run folder (`mbml.run_folder`), writes its outputs atomically
(the file that marks it done last), and is skipped when already done unless forced. Long stages
checkpoint between chunks, so a killed run continues where it stopped. Methods come from the
registry (`mbml.methods`): the MBML students are distilled from the teachers, the baselines train
from the datasets alone; every one is evaluated through its `Agent` by the same protocol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mbml import bcq, data as D, io, methods as M, rollout
from mbml.collect import collect, episode_returns
from mbml.config import METHODS
from mbml.errors import MbmlError
from mbml.distill import distill
from mbml.ensembles import (heldout, init_members, next_state_relabeller, next_state_target, relabel, relabel_stats,
                            reward_target, train_ensembles, true_rewards)
from mbml.evaluate import evaluate as run_protocol, inference_diagnostic
from mbml.hostenv import collect_host, mean_returns
from mbml.run_folder import (Parts, RunFolder, _append_csv, _tensorboard, family_of_data, first_dataset,  # noqa: F401
                             peak_rss_mb, save_running_stages, versions)
from mbml.steps import (HEARTBEAT, STAGES, Progress, Step, done_marker, seed_steps, stage_key,  # noqa: F401
                        stage_steps)
from mbml.teachers import evaluate_own_tasks, train_teachers
from mbml.train_loop import remove_checkpoint
from mbml.transitions import device_data


class Run(RunFolder):
    """A run folder with its stages."""

    def run_step(self, step: Step, seed: int, force: bool = False) -> None:
        """Run one step of `seed_steps` (skipped when done, unless forced)."""
        if step.method is None:
            getattr(self, step.name)(seed, force)
        else:
            getattr(self, step.stage)(seed, step.method, force)

    def collect(self, seed: int, force: bool = False) -> None:
        self._collect(seed, "train", force)

    def collect_split(self, seed: int, split: str, force: bool = False) -> None:
        """Datasets on split `split`'s tasks (test, ood) with the run's collector, for the offline-context
        protocol: `seed_S/data_SPLIT`, a `collect_SPLIT` stage with its own key, log and timing."""
        self._collect(seed, split, force)

    def _collect(self, seed: int, split: str, force: bool) -> None:
        d, folder = self.seed_dir(seed), self.split_folder(seed, split)
        name = "collect" if split == "train" else f"collect_{split}"
        if self._done(seed, folder / "meta.json", force, name):
            return
        ckpt = d / "ckpt" / f"{name}.msgpack"
        with self.timed(seed, name):
            args = (self.family, self.cfg.sac, self.key(seed, name), self.cfg.lift)
            kw = dict(ckpt=ckpt, progress=self.bar(f"seed {seed} {name}"), tasks=dict(self.splits())[split])
            if self.family.jax_env is not None:
                ds = collect(*args, **kw)
            else:
                log, writer = self.collection_log(seed, name, fresh=not ckpt.exists())
                try:
                    ds = collect_host(*args, **kw, log=log)
                finally:
                    if writer is not None:
                        writer.close()
            ds.meta.update({"seed": seed, "family": self.family.name, "split": split})
            D.save(ds, folder)
            self.loaded = None
        remove_checkpoint(ckpt)

    def collection_log(self, seed: int, name: str, fresh: bool):
        """`collect_host`'s logger: one row per task and progress point in `seed_S/NAME.csv` (NAME:
        collect, or collect_test for the test tasks' datasets; SAC metrics, mean episode return) and
        TensorBoard scalars `NAME/METRIC/task_I` under `seed_S/logs/NAME`. A resumed collection may
        repeat the steps since its last checkpoint; readers keep a (step, task)'s last row."""
        path = self.seed_dir(seed) / f"{name}.csv"
        if fresh:
            path.unlink(missing_ok=True)
        writer = _tensorboard(self.seed_dir(seed) / "logs" / name)

        def log(step: int, rows: dict) -> None:
            for i in range(len(rows["episodes"])):
                row = {metric: float(v[i]) for metric, v in rows.items()}
                _append_csv(path, {"step": step, "task": i, **row})
                if writer is not None:
                    for metric, v in row.items():
                        if np.isfinite(v):
                            writer.add_scalar(f"{name}/{metric}/task_{i}", v, step)
        return log, writer

    def teacher_template(self, k: int):
        return jax.vmap(lambda kk: bcq.init(self.cfg.bcq, kk, self.family.obs_dim, self.family.act_dim))(
            jax.random.split(jax.random.PRNGKey(0), k))

    def teachers(self, seed: int, force: bool = False) -> None:
        d = self.seed_dir(seed)
        if self._done(seed, d / done_marker("teachers"), force, "teachers"):
            return
        ds = self.dataset(seed)
        with self.timed(seed, "teachers"):
            best, curve = train_teachers(self.family, self.cfg.bcq, ds, self.key(seed, "teachers"), self.cfg.lift,
                                         ckpt=d / "ckpt" / "teachers.msgpack", progress=self.bar(f"seed {seed} teachers"))
            io.save_pytree(d / "teachers.msgpack", jax.device_get(best))
            io.write_json(d / "teachers.json", {"eval_curve": curve, "eval_every": self.cfg.bcq.eval_every,
                                                # None: no simulator, the last checkpoint was kept
                                                "best": np.nanmax(curve, axis=0) if len(curve) else None})
        remove_checkpoint(d / "ckpt" / "teachers.msgpack")

    def load_teachers(self, seed: int):
        ds_k = self.family.train_tasks.shape[0]
        path = self.seed_dir(seed) / "teachers.msgpack"
        self.require(seed, "teachers")
        return io.load_pytree(path, self.teacher_template(ds_k))

    def ensembles(self, seed: int, force: bool = False) -> None:
        d = self.seed_dir(seed)
        if self._done(seed, d / done_marker("ensembles"), force, "ensembles", "next_state_ensembles"):
            return
        ds = self.dataset(seed)
        ens = self.cfg.ensemble
        with self.timed(seed, "ensembles"):
            data = device_data(ds)
            members = train_ensembles(ens, reward_target(ens), data, self.key(seed, "ensembles"), self.cfg.lift,
                                      ckpt=d / "ckpt" / "ensembles.msgpack", progress=self.bar(f"seed {seed} reward ensembles"))
            io.save_pytree(d / "ensembles.msgpack", jax.device_get(members))
            next_members, held = self.next_state_ensembles(seed, ds, data) if ens.next_state else (None, None)
            lab = relabel(ens, members, ds, self.family.true_reward, next_members, held,
                          progress=self.bar(f"seed {seed} relabelling"))
            buf = d / "relabel.npz.tmp"
            with open(buf, "wb") as f:
                np.savez(f, **lab)
            buf.replace(d / "relabel.npz")
            io.write_json(d / "relabel.json", relabel_stats(lab))
        for name in ("ensembles", "next_state_ensembles"):
            remove_checkpoint(d / "ckpt" / f"{name}.msgpack")

    def next_state_ensembles(self, seed: int, ds: D.Dataset, data: dict):
        """Train and save the next-state ensembles (spec §4.2) on all but the held-out transitions;
        returns (members, held-out mask [N])."""
        ens, d = self.cfg.ensemble, self.seed_dir(seed)
        held = heldout(ds.num_transitions, ens.next_state_holdout)
        members = train_ensembles(ens, next_state_target(ens, self.family.obs_dim), data,
                                  jax.random.fold_in(self.key(seed, "ensembles"), 1), self.cfg.lift,
                                  ckpt=d / "ckpt" / "next_state_ensembles.msgpack",
                                  progress=self.bar(f"seed {seed} next-state ensembles"), rows=np.flatnonzero(~held))
        io.save_pytree(d / "next_state_ensembles.msgpack", jax.device_get(members))
        return members, held

    def load_next_state_ensembles(self, seed: int, k: int):
        """(target, members [K, members, ...]) of the saved next-state ensembles of K tasks."""
        ens = self.cfg.ensemble
        target = next_state_target(ens, self.family.obs_dim)
        template = init_members(ens, target, k, self.family.obs_dim, self.family.act_dim, jax.random.PRNGKey(0))
        return target, io.load_pytree(self.seed_dir(seed) / "next_state_ensembles.msgpack", template)

    def relabelling(self, seed: int, method: str, ds: D.Dataset) -> dict | None:
        """Accept mask and rewards [K_i, K_j, N] the method relabels with (None without relabelling), and
        with next-state ensembles the mean next states: stored [K_i, K_j, N, obs] or a function
        recomputing them (`ensembles.next_state_relabeller`)."""
        kind = METHODS[method].relabel
        if kind == "none":
            return None
        if kind == "true":
            self.check_family_gives(method)
            k = ds.num_tasks
            accept = np.broadcast_to(~np.eye(k, dtype=bool)[:, :, None], (k, k, ds.num_transitions))
            return {"accept": jnp.asarray(accept), "reward": jnp.asarray(true_rewards(ds, self.family.true_reward))}
        path = self.seed_dir(seed) / "relabel.npz"
        self.require(seed, "ensembles")
        with np.load(path, allow_pickle=False) as z:
            lab = {"accept": jnp.asarray(z["accept"]), "reward": jnp.asarray(z["mean"])}
            if "next_obs" in z.files:
                lab["next_obs"] = jnp.asarray(z["next_obs"])
            elif "next_std" in z.files:
                lab["next_obs"] = next_state_relabeller(*self.load_next_state_ensembles(seed, ds.num_tasks))
        return lab

    def splits(self) -> list[tuple[str, np.ndarray]]:
        """The task splits every method is evaluated on: train, test and, where the family defines
        them, out-of-distribution tasks (spec §1; reported apart from the test tasks)."""
        fam = self.family
        return [("train", fam.train_tasks), ("test", fam.test_tasks),
                *((("ood", fam.ood_tasks),) if fam.ood_tasks is not None and len(fam.ood_tasks) else ())]

    def agent(self, method: str):
        """Method `method`'s `Agent` (how it infers a task and acts), from the registry."""
        return M.get(method).implementation().agent(self.cfg, self.family.act_dim)

    def evaluate_agent(self, method: str, params, tasks, key) -> dict:
        """The evaluation protocol (`eval.repeats` runs per task, averaged) of any method's agent:
        jitted for pure-JAX families, host-stepped otherwise."""
        return run_protocol(self.family, self.agent(method), params, tasks, key, self.cfg.eval)

    def params_template(self, method: str):
        """The shapes of method `method`'s saved parameters (what `load_params` reads into)."""
        impl = M.get(method).implementation()
        return impl.init(self.cfg, jax.random.PRNGKey(0), self.family.obs_dim, self.family.act_dim)

    def distill(self, seed: int, method: str, force: bool = False) -> None:
        """Train method `method`: distil the teachers into a student (the MBML variants), or train a
        baseline from the datasets alone; the checkpoint best on the training tasks is kept."""
        info = M.get(method)
        d = self.seed_dir(seed) / "students"
        if self._done(seed, self.seed_dir(seed) / done_marker("distill", method), force, info.step):
            return
        ds = self.dataset(seed)
        data = device_data(ds)
        log_path = d / f"{method}.csv"
        ckpt = self.seed_dir(seed) / "ckpt" / f"{info.step}.msgpack"
        if not ckpt.exists():
            log_path.unlink(missing_ok=True)
        writer = _tensorboard(self.seed_dir(seed) / "logs" / method)
        key = self.key(seed, "distill" if info.is_student else info.step)

        def on_eval(params, step, metrics):
            k = jax.random.fold_in(key, step)
            train = self.evaluate_agent(method, params, self.family.train_tasks, k)
            test = self.evaluate_agent(method, params, self.family.test_tasks, jax.random.fold_in(k, 1))
            metrics["train_score"] = float(train["score"].mean())  # selects the checkpoint (training tasks only)
            metrics["test_score"] = float(test["score"].mean())  # reported, never used for selection
            _append_csv(log_path, {"step": step, **metrics})
            if writer is not None:
                for name, v in metrics.items():
                    writer.add_scalar(f"{info.section}/{name}", v, step)
            return metrics["train_score"]

        kw = dict(ckpt=ckpt, progress=self.bar(f"seed {seed} {method}"), on_eval=on_eval)
        with self.timed(seed, info.step):
            if info.is_student:
                params, qnorm = distill(self.cfg.distill, self.cfg.bcq, method, self.family.act_dim, data,
                                        self.relabelling(seed, method, ds), self.load_teachers(seed), key, **kw)
                io.save_pytree(d / f"{method}.msgpack", {"params": jax.device_get(params), "qnorm": qnorm})
            else:
                params = info.implementation().train(self.cfg, method, self.family.act_dim, {"data": data}, key, **kw)
                io.save_pytree(d / f"{method}.msgpack", {"params": jax.device_get(params)})
        if writer is not None:
            writer.close()
        remove_checkpoint(ckpt)

    def load_params(self, seed: int, method: str):
        """Method `method`'s trained parameters (`students/M.msgpack`)."""
        return self.load_saved(seed, method)["params"]

    def load_saved(self, seed: int, method: str) -> dict:
        """`students/M.msgpack` whole: {"params"} and, for an MBML student, its Q-target scaling "qnorm"."""
        info = M.get(method)
        self.require(seed, info.step)
        path = self.seed_dir(seed) / "students" / f"{method}.msgpack"
        template = {"params": self.params_template(method)}
        if info.is_student:
            template["qnorm"] = np.zeros(2, np.float32)
        return io.load_pytree(path, template)

    def evaluate(self, seed: int, method: str, force: bool = False) -> None:
        path = self.seed_dir(seed) / done_marker("evaluate", method)
        if self._done(seed, path, force, f"evaluate_{method}"):
            return
        params = self.load_params(seed, method)
        key = self.key(seed, "evaluate")
        diagnose = self.family.true_reward is not None
        splits = self.splits()

        def protocol(i, tasks):
            r = self.evaluate_agent(method, params, tasks, jax.random.fold_in(key, i))
            return {k: v.tolist() for k, v in r.items()}

        def diagnostic():
            ds = self.dataset(seed)
            diag = inference_diagnostic(self.agent(method), params, device_data(ds),
                                        jnp.asarray(true_rewards(ds, self.family.true_reward)),
                                        jax.random.fold_in(key, 99))
            return {k: float(v) for k, v in diag.items()}

        with self.timed(seed, f"evaluate_{method}"):
            parts = Parts(self, seed, f"evaluate_{method}", len(splits) + diagnose, force,
                          made_from=self.seed_dir(seed) / "students" / f"{method}.msgpack")
            out = {split: parts(split, lambda i=i, t=tasks: protocol(i, t)) for i, (split, tasks) in enumerate(splits)}
            if diagnose:
                out["diagnostic"] = parts("diagnostic", diagnostic)
            io.write_json(path, out)
        parts.clear()

    def evaluate_protocol(self, seed: int, method: str, protocol: str, force: bool = False) -> None:
        """Method `method` under another protocol than the paper's (`config.PROTOCOLS`), on every split:
        `eval/M@PROTOCOL.json`. `online` and `online-last` are the `evaluate` stage's own episodes."""
        if protocol in ("online", "online-last"):
            return self.evaluate(seed, method, force)
        path = self.seed_dir(seed) / "eval" / f"{method}@{protocol}.json"
        if path.exists() and not force:
            return
        offline = protocol == "offline-context"
        if offline:
            self.require_split_data(seed)
        params = self.load_params(seed, method)
        key = jax.random.fold_in(self.key(seed, "evaluate"), stage_key(protocol))
        out = {}
        with self.timed(seed, f"evaluate_{method}@{protocol}"):
            for i, (split, tasks) in enumerate(self.splits()):
                kw = dict(offline=device_data(self.split_dataset(seed, split))) if offline else dict(explore=1)
                r = run_protocol(self.family, self.agent(method), params, tasks, jax.random.fold_in(key, i),
                                 self.cfg.eval, **kw)
                out[split] = {k: v.tolist() for k, v in r.items()}
            io.write_json(path, out)

    def require_split_data(self, seed: int) -> None:
        """A one-line MbmlError saying how to collect them, unless every split has its datasets."""
        missing = [s for s, _ in self.splits()[1:] if not (self.split_folder(seed, s) / "meta.json").exists()]
        if missing:
            raise MbmlError(f"no {'/'.join(missing)}-task datasets in {self.seed_dir(seed)} (the offline-context "
                            f"protocol draws its context from them); run `mbml collect-test --out {self.out} "
                            f"--seeds {seed}` first")

    def split_folder(self, seed: int, split: str):
        """Where split `split`'s dataset lives: `data` (the training tasks) or `data_SPLIT` (`collect_split`)."""
        return self.seed_dir(seed) / ("data" if split == "train" else f"data_{split}")

    def split_dataset(self, seed: int, split: str) -> D.Dataset:
        """The dataset of split `split`'s tasks: the training data, or `data_SPLIT` from `collect_split`."""
        if split == "train":
            return self.dataset(seed)
        ds = D.load(self.split_folder(seed, split))
        if not np.allclose(np.asarray(ds.tasks, np.float64), np.asarray(dict(self.splits())[split], np.float64)):
            raise MbmlError(f"{self.split_folder(seed, split)} holds other tasks than the family's {split} tasks")
        return ds

    def references(self, seed: int, force: bool = False) -> None:
        """Teachers on their own tasks (where the run has teachers); oracle and random policies (MuJoCo:
        random and zero actions) on every split of tasks."""
        path = self.seed_dir(seed) / done_marker("references")
        if self._done(seed, path, force, "references"):
            return
        key = jax.random.fold_in(self.key(seed, "evaluate"), 1000)
        fam = self.family

        def own():
            teachers = self.load_teachers(seed)
            return np.asarray(evaluate_own_tasks(fam, self.cfg.bcq, self.cfg.eval.episodes, teachers,
                                                 fam.train_tasks, key)).tolist()

        def reference(k, tasks):
            if fam.jax_env is not None:
                refs = rollout.reference_scores(fam, tasks, k)
            else:  # MuJoCo families have no scripted oracle: a uniform random policy, and zero actions
                rand = lambda obs, kk: jax.random.uniform(kk, obs.shape[:1] + (fam.act_dim,), minval=-1, maxval=1)  # noqa: E731
                still = lambda obs, kk: jnp.zeros(obs.shape[:1] + (fam.act_dim,))  # noqa: E731
                refs = {"random": mean_returns(fam, np.asarray(tasks), rand, k, self.cfg.eval.episodes),
                        "zero_action": mean_returns(fam, np.asarray(tasks), still, k, self.cfg.eval.episodes)}
            return {name: np.asarray(v).tolist() for name, v in refs.items()}

        has_teachers = (self.seed_dir(seed) / done_marker("teachers")).exists()
        splits = self.splits()
        with self.timed(seed, "references"):
            parts = Parts(self, seed, "references", len(splits) + has_teachers, force,
                          made_from=self.seed_dir(seed) / "teachers.msgpack")
            out = {"teachers": {"train": parts("teachers", own)}} if has_teachers else {}
            for i, (split, t) in enumerate(splits):
                refs = parts(split, lambda k=jax.random.fold_in(key, i + 1), t=t: reference(k, t))
                for name, v in refs.items():
                    out.setdefault(name, {})[split] = v
            ds = self.dataset(seed)
            out["dataset_returns"] = episode_returns(ds).mean(0).tolist()
            io.write_json(path, out)
        parts.clear()

