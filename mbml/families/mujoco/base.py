"""A small MuJoCo gymnasium environment shared by the six families (spec §1.2, §1.3).

It reproduces what the authors' stack did, not gymnasium's MujocoEnv defaults:

* actions live in [-1, 1] and are rescaled affinely to the actuator ctrlrange, then clipped, as
  rlkit's `NormalizedBoxEnv` wrapped every env (spec §1.2, "Common wrapper");
* `set_state` runs `mj_forward` (mujoco-py did), while a step runs `frame_skip` `mj_step`s and
  nothing after them, so body positions read after a step (`xpos`, `xipos`, `cinert`, ...) are the
  ones of the last sub-step's start, exactly as gym's `get_body_com` returned them;
* `cfrc_ext` stays zero unless `contact_forces=True`, because MuJoCo 2.0 under mujoco-py 2.0 never
  called `mj_rnePostConstraint` (spec §1.3 item 1); with the option it is called after every step
  and every `set_state`, as MuJoCo 1.5 did inside `mj_forward`;
* no time limit: `Family.horizon` (or the `max_episode_steps` of the registered id) ends episodes,
  as truncation, never termination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from mbml.families.mujoco.tasks import TaskSpace

ASSETS = Path(__file__).with_name("assets")


def load_model(asset: str) -> mujoco.MjModel:
    """Compile one of the XML files in `assets/`."""
    return mujoco.MjModel.from_xml_path(str(ASSETS / asset))


def rescale_action(action: Any, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """NormalizedBoxEnv: a in [-1, 1] -> low + (a + 1)/2 · (high - low), clipped to [low, high].

    Works on one action or a batch; the env and every `true_reward` use this same function so a
    stored action gives the control the simulator received, bit for bit.
    """
    a = np.asarray(action, dtype=np.float64)
    return np.clip(low + (a + 1.0) * 0.5 * (high - low), low, high)


class MujocoTaskEnv(gym.Env):
    """Base class: one MuJoCo model, a task vector, and the authors' stepping conventions.

    Subclasses set `task_space`, and implement `_reset_model` (draw the initial state with
    `self.np_random`), `_observation`, `_before_step` (quantities the reward needs from before the
    step) and `_after_step` (reward, terminated, info). `_apply_task` hooks task changes that touch
    the model (WalkerParam).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    task_space: TaskSpace

    def __init__(self, model: mujoco.MjModel, frame_skip: int, obs_dim: int, task: Any = None, *,
                 contact_forces: bool = False, obs_dtype: type = np.float64,
                 render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.model = model
        self.data = mujoco.MjData(model)
        self.frame_skip = frame_skip
        self.contact_forces = bool(contact_forces)
        self.render_mode = render_mode
        self._renderer: mujoco.Renderer | None = None
        self.ctrl_low, self.ctrl_high = model.actuator_ctrlrange.T.copy()
        self.init_qpos = self.data.qpos.copy()
        self.init_qvel = self.data.qvel.copy()
        self.action_space = spaces.Box(-1.0, 1.0, (model.nu,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), obs_dtype)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}
        self.task = np.zeros(self.task_space.dim)
        self.set_task(task)

    @property
    def dt(self) -> float:
        """Seconds per env step: the physics timestep times the frame skip."""
        return float(self.model.opt.timestep) * self.frame_skip

    # -- task -------------------------------------------------------------------------------
    def set_task(self, task: Any) -> None:
        """Switch task in place: a [P] vector, "train:i" / "test:i" / "ood:i", or None (train:0).

        Reward-only tasks take effect at the next step; call `reset()` to start a fresh episode.
        """
        self.task = self.task_space.resolve(task)
        self._apply_task(self.task)

    def _apply_task(self, task: np.ndarray) -> None:
        """Model changes a task implies (none, except WalkerParam)."""

    # -- simulation -------------------------------------------------------------------------
    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)
        if self.contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)

    def _simulate(self, action: Any) -> np.ndarray:
        """Apply the rescaled action for `frame_skip` physics steps; returns the control used."""
        ctrl = rescale_action(action, self.ctrl_low, self.ctrl_high)
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        if self.contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)
        return ctrl

    def contact_forces_obs(self) -> np.ndarray:
        """External contact forces per body, flattened (zeros unless `contact_forces`)."""
        if self.contact_forces:
            return self.data.cfrc_ext.ravel().copy()
        return np.zeros(self.model.nbody * 6)

    def body_com(self, name: str) -> np.ndarray:
        """gym's `get_body_com`: the body frame origin (`xpos`), as last computed by the simulator."""
        return self.data.body(name).xpos.copy()

    # -- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # Clears warm-start and every other history so a seed fixes the episode bit for bit.
        mujoco.mj_resetData(self.model, self.data)
        self._reset_model()
        return self._observation(), {}

    def step(self, action: Any):
        before = self._before_step()
        ctrl = self._simulate(action)
        obs = self._observation()
        reward, terminated, info = self._after_step(before, ctrl, obs)
        return obs, float(reward), bool(terminated), False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, 480, 480)
        camera = "track" if mujoco.mj_name2id(
            self.model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0 else -1
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- family hooks -----------------------------------------------------------------------
    def _reset_model(self) -> None:
        raise NotImplementedError

    def _observation(self) -> np.ndarray:
        raise NotImplementedError

    def _before_step(self) -> Any:
        return None

    def _after_step(self, before: Any, ctrl: np.ndarray, obs: np.ndarray
                    ) -> tuple[float, bool, dict[str, Any]]:
        raise NotImplementedError
