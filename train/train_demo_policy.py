"""Train the bundled demo policy: a teacher-architecture parkour checkpoint that walks the MuJoCo Go2.

Route: DAgger distillation of a scripted trot (train/scripted_trot.py) into the upstream teacher
``Actor`` (history-encoder path, scan encoder on the height scan) plus its ``DefaultEstimator``,
using Krabby's own deployment pipeline for every sample:

    MujocoBackend.read() -> ObservationBuilder(kind="teacher").build(...)   # obs, as deployed
    obs[185:194] <- estimator(obs[:53])                                    # as upstream play.py
    action -> ActionMapper(teacher, delay 0).step -> ActuatorCommand(POSITION, profile kp/kd)
           -> MujocoBackend.apply -> step_control (4 physics steps, training PD)

Each DAgger iteration rolls out a beta-mixture of expert and student (per step: the expert's action
with probability beta, else the student's), labels every visited state with the expert's action
(a = (target - default) / action_scale, policy order), aggregates, then retrains the estimator
(obs[:53] -> 2 v_body, 0 x 6) and the actor (on observations whose priv_explicit is the
estimator's output, because that is what the runtime feeds it). Episodes randomise the course
(flat, 5 cm hurdles, 5 cm steps; course seeds), the command speed U(0.3, 0.8), the spawn offset
and yaw, and small pushes.

The result is written in the exact upstream format (upstream_format.teacher_checkpoint), with
params/env.yaml (decimation 4, sim dt 0.005) and a README holding the evaluation table. The final
evaluation reloads the saved file with load_policy and runs it exactly as deployment does.

    python train/train_demo_policy.py --out policies/go2_demo_teacher --seed 0 [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scripted_trot import ScriptedTrot, TrotParams  # noqa: E402

from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig  # noqa: E402
from krabby.hal.robot_profile import load_robot_profile  # noqa: E402
from krabby.hal.types import ActuatorCommand, ActuatorMode  # noqa: E402
from krabby.parkour import obs_layout as L  # noqa: E402
from krabby.parkour.actions import ActionMapper  # noqa: E402
from krabby.parkour.networks import Actor, DefaultEstimator  # noqa: E402
from krabby.parkour.observation import ObservationBuilder  # noqa: E402
from krabby.parkour.upstream_format import make_critic, teacher_checkpoint  # noqa: E402

TRAIN_TERRAINS = ("flat", "flat", "hurdles", "steps")  # drawn uniformly: 50 % flat
EVAL_COURSES = (("flat", 0), ("flat", 1), ("hurdles", 0), ("hurdles", 1), ("hurdles", 2), ("steps", 0), ("steps", 1), ("steps", 2))


@dataclass
class Schedule:
    iterations: int = 12  # DAgger iterations after the pure-expert one
    episodes_per_iter: int = 16
    episode_s: float = 12.0
    num_envs: int = 8  # envs stepped in lockstep (batched student inference)
    actor_steps_per_iter: int = 400
    final_actor_steps: int = 1500
    estimator_steps_per_iter: int = 300
    batch_size: int = 1024
    lr: float = 1e-3
    eval_s: float = 20.0


QUICK = Schedule(iterations=2, episodes_per_iter=8, episode_s=6.0, actor_steps_per_iter=150, final_actor_steps=200,
                 estimator_steps_per_iter=100, eval_s=10.0)


def beta_for(iteration: int) -> float:
    """Probability of the expert acting: 1 in iteration 0, then halving, 0 from iteration 4 on."""
    return 0.0 if iteration >= 4 else 0.5**iteration


# ------------------------------------------------------------------------------ episodes


@dataclass
class EpisodeSpec:
    terrain: str
    course_seed: int
    speed_m_s: float
    speed_change_s: float  # time of a command change (inf = none)
    speed2_m_s: float
    y0_m: float
    yaw0_rad: float
    push_times_s: tuple
    push_vel: tuple  # (vx, vy, wz) per push
    friction: float
    settle_s: float  # the default pose is held this long before the episode (as a HAL server does while ARMED)


def episode_spec(seed: int, iteration: int, index: int, duration_s: float) -> EpisodeSpec:
    rng = np.random.default_rng([seed, iteration, index])
    terrain = str(TRAIN_TERRAINS[int(rng.integers(len(TRAIN_TERRAINS)))])
    pushes, t = [], float(rng.uniform(2.0, 4.0))
    while t < duration_s - 1.0:
        pushes.append(t)
        t += float(rng.uniform(2.0, 4.0))
    push_vel = tuple((float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.4, 0.4))) for _ in pushes)
    keep = rng.random(len(pushes)) < 0.5
    return EpisodeSpec(
        terrain=terrain,
        course_seed=int(rng.integers(0, 10_000)),
        speed_m_s=float(rng.uniform(0.3, 0.8)),
        speed_change_s=float(rng.uniform(4.0, duration_s)) if rng.random() < 0.3 else math.inf,
        speed2_m_s=float(rng.uniform(0.3, 0.8)),
        y0_m=float(rng.uniform(-0.15, 0.15)),
        yaw0_rad=float(rng.uniform(-0.25, 0.25)),
        push_times_s=tuple(p for p, k in zip(pushes, keep) if k),
        push_vel=tuple(v for v, k in zip(push_vel, keep) if k),
        friction=float(rng.uniform(0.6, 1.2)),
        settle_s=float(rng.uniform(0.2, 2.0)) if rng.random() < 0.5 else 0.0,
    )


class Env:
    """One simulated robot driven exactly as the deployment loop drives it."""

    def __init__(self, profile, terrain: str, course_seed: int, speed: float, friction: float | None = None):
        self.profile = profile
        self.backend = MujocoBackend(
            MujocoBackendConfig(terrain=terrain, seed=course_seed, forward_speed_m_s=speed, enable_depth=False,
                                foot_friction=friction),
            profile=profile,
        )
        self.backend.connect()
        self.builder = ObservationBuilder(profile, kind="teacher")
        self.mapper = ActionMapper.for_kind(profile, "teacher")
        self.kp = np.asarray(profile.kp_nm_per_rad, dtype=np.float64)
        self.kd = np.asarray(profile.kd_nm_s_per_rad, dtype=np.float64)
        self.fallen = False
        self.last_targets = None  # robot order, what the previous step applied

    def observe(self):
        frame = self.backend.read()
        obs = self.builder.build(frame.state, frame.navigation, last_action_policy=self.mapper.last_raw_action,
                                 height_scan=frame.height_scan)
        return frame, obs

    def act(self, action_policy: np.ndarray) -> None:
        targets = self.mapper.step(action_policy)
        self.last_targets = targets
        self.backend.apply(ActuatorCommand(ActuatorMode.POSITION, targets, self.kp, self.kd))
        self.backend.step_control()
        self.fallen = self.fallen or self.backend.has_fallen


def expert_action(profile, targets_robot: np.ndarray) -> np.ndarray:
    """Joint targets (robot order) -> the raw policy action that ActionMapper maps back onto them."""
    default = profile.to_policy_order(np.asarray(profile.default_pos_rad))
    a = (profile.to_policy_order(targets_robot) - default) / profile.action_scale
    return np.clip(a, -profile.action_clip, profile.action_clip)


def set_spawn(env: Env, y0: float, yaw0: float) -> None:
    b = env.backend
    pos = b.base_pos_w_m
    pos[1] += y0
    pos[2] = b.course.spawn_ground_z_m + env.profile.spawn_base_height_m
    b.set_base_pose(pos, (math.cos(yaw0 / 2), 0.0, 0.0, math.sin(yaw0 / 2)), np.asarray(env.profile.default_pos_rad))


def student_forward(actor: Actor, estimator: DefaultEstimator, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(obs)
        x[:, L.PRIV_EXPLICIT] = estimator(x[:, L.PROPRIO])
        return actor(x, True).numpy().astype(np.float64)


def rollout(profile, specs: list[EpisodeSpec], actor, estimator, beta: float, seed: int, duration_s: float, params: TrotParams):
    """Lockstep rollouts of a beta-mixture; returns (obs, expert actions, per-episode results)."""
    envs, experts = [], []
    for sp in specs:
        e = Env(profile, sp.terrain, sp.course_seed, sp.speed_m_s, sp.friction)
        set_spawn(e, sp.y0_m, sp.yaw0_rad)
        for _ in range(int(round(sp.settle_s / profile.control_dt_s))):
            e.backend.step_control()  # holds the default pose under the training PD
        envs.append(e)
        experts.append(ScriptedTrot(e.backend, params))
    rng = np.random.default_rng([seed, 7919])
    n_steps = int(round(duration_s / profile.control_dt_s))
    obs_buf, act_buf = [], []
    active = list(range(len(envs)))
    for step in range(n_steps):
        if not active:
            break
        t = step * profile.control_dt_s
        obs_now, exp_now = [], []
        for i in active:
            e, sp = envs[i], specs[i]
            v = sp.speed_m_s if t < sp.speed_change_s else sp.speed2_m_s
            e.backend.config.forward_speed_m_s = v
            frame, obs = e.observe()
            q = experts[i].targets(v, frame.navigation.delta_yaw_rad, e.last_targets)
            obs_now.append(obs)
            exp_now.append(expert_action(profile, q))
        obs_now = np.stack(obs_now)
        exp_now = np.stack(exp_now)
        obs_buf.append(obs_now)
        act_buf.append(exp_now.astype(np.float32))
        if beta < 1.0:
            stu = student_forward(actor, estimator, obs_now.copy())
            use_expert = rng.random(len(active)) < beta
            chosen = np.where(use_expert[:, None], exp_now, stu)
        else:
            chosen = exp_now
        for k, i in enumerate(active):
            e, sp = envs[i], specs[i]
            e.act(chosen[k])
            for pt, pv in zip(sp.push_times_s, sp.push_vel):
                if abs(t - pt) < 0.5 * profile.control_dt_s:
                    d = e.backend.data
                    bv = e.backend._base_v
                    d.qvel[bv] += pv[0]
                    d.qvel[bv + 1] += pv[1]
                    d.qvel[bv + 5] += pv[2]
        active = [i for i in active if not envs[i].fallen]
    results = [(sp.terrain, e.backend.progress_m, e.fallen) for sp, e in zip(specs, envs)]
    return np.concatenate(obs_buf), np.concatenate(act_buf), results


# ------------------------------------------------------------------------------ training


def train_estimator(estimator, opt, obs_t: torch.Tensor, priv_t: torch.Tensor, steps: int, batch: int, gen: torch.Generator) -> float:
    n = obs_t.shape[0]
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss = ((estimator(obs_t[idx, : L.NUM_PROPRIO]) - priv_t[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def train_actor(actor, opt, obs_t: torch.Tensor, act_t: torch.Tensor, steps: int, batch: int, gen: torch.Generator, progress=None, task=None) -> float:
    n = obs_t.shape[0]
    ema = None
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss = ((actor(obs_t[idx], True) - act_t[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        opt.step()
        ema = float(loss) if ema is None else 0.95 * ema + 0.05 * float(loss)
        if progress is not None:
            progress.advance(task)
    return float(ema or 0.0)


# ------------------------------------------------------------------------------ evaluation


def evaluate_checkpoint(path: Path, courses, speed: float, duration_s: float, profile, backend: str = "torch") -> list[dict]:
    """Closed loop, exactly the deployment path: load_policy + use_estimator=True (upstream play.py)."""
    from krabby.parkour import load_policy

    policy = load_policy(path, backend=backend)
    rows = []
    for terrain, seed in courses:
        env = Env(profile, terrain, seed, speed)
        policy.reset()
        n = int(round(duration_s / profile.control_dt_s))
        t_fall = None
        for step in range(n):
            _, obs = env.observe()
            action = policy.act(obs[None], use_estimator=True)[0]
            env.act(action)
            if env.fallen:
                t_fall = (step + 1) * profile.control_dt_s
                break
        t_end = t_fall if t_fall is not None else duration_s
        rows.append(dict(course=terrain, seed=seed, distance_m=env.backend.progress_m, fell=t_fall is not None,
                         t_fall_s=t_fall, mean_speed_m_s=env.backend.progress_m / t_end,
                         lateral_m=float(env.backend.base_pos_w_m[1]), yaw_rad=float(env.backend.roll_pitch_yaw_rad[2])))
    return rows


def table_markdown(rows, speed, duration_s) -> str:
    lines = [f"| course | seed | distance in {duration_s:g} s (m) | fell | mean speed (m/s) | lateral (m) | yaw (rad) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        fell = f"yes, at {r['t_fall_s']:.2f} s" if r["fell"] else "no"
        lines.append(f"| {r['course']} | {r['seed']} | {r['distance_m']:.2f} | {fell} | {r['mean_speed_m_s']:.3f} | "
                     f"{r['lateral_m']:+.3f} | {r['yaw_rad']:+.3f} |")
    return "\n".join(lines)


def print_table(rows, title):
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for c in ("course", "seed", "distance (m)", "fell", "mean speed (m/s)", "lateral (m)", "yaw (rad)"):
            t.add_column(c)
        for r in rows:
            t.add_row(r["course"], str(r["seed"]), f"{r['distance_m']:.2f}", "yes" if r["fell"] else "no",
                      f"{r['mean_speed_m_s']:.3f}", f"{r['lateral_m']:+.3f}", f"{r['yaw_rad']:+.3f}")
        Console().print(t)
    except ImportError:
        print(title)
        for r in rows:
            print(r)


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="policies/go2_demo_teacher", help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (does not walk well)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest and steadiest on a shared 2-core box)")
    ap.add_argument("--iterations", type=int, default=None, help="DAgger iterations after the expert-only one (default 12, quick 2)")
    ap.add_argument("--evaluate", metavar="CHECKPOINT", help="only evaluate this checkpoint (no training)")
    ap.add_argument("--eval-backend", choices=("torch", "onnx"), default="torch", help="policy backend of the evaluation")
    ap.add_argument("--speed", type=float, default=0.5, help="evaluation command speed, m/s")
    args = ap.parse_args(argv)

    t_start = time.time()
    torch.set_num_threads(args.threads)
    if args.evaluate:
        duration = (QUICK if args.quick else Schedule()).eval_s
        rows = evaluate_checkpoint(Path(args.evaluate), EVAL_COURSES, args.speed, duration, load_robot_profile("go2"), args.eval_backend)
        print_table(rows, f"closed-loop evaluation ({args.eval_backend}, estimator on), command {args.speed:g} m/s, {duration:g} s")
        print(f"{time.time() - t_start:.0f} s")
        return 0 if all(not r["fell"] for r in rows) else 1
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    sched = QUICK if args.quick else Schedule()
    if args.iterations is not None:
        sched = dataclasses.replace(sched, iterations=args.iterations)
    params = TrotParams()
    profile = load_robot_profile("go2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    actor, estimator = Actor(), DefaultEstimator()
    opt_a = torch.optim.Adam(actor.parameters(), lr=sched.lr)
    opt_e = torch.optim.Adam(estimator.parameters(), lr=sched.lr)
    gen = torch.Generator().manual_seed(args.seed)
    data_obs, data_act = [], []
    log = []

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total_iters = sched.iterations + 1
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TextColumn("{task.fields[info]}")) as progress:
        t_iter = progress.add_task("DAgger", total=total_iters, info="")
        for it in range(total_iters):
            beta = beta_for(it)
            specs = [episode_spec(args.seed, it, j, sched.episode_s) for j in range(sched.episodes_per_iter)]
            results = []
            actor.eval()
            for k in range(0, len(specs), sched.num_envs):
                o, a, r = rollout(profile, specs[k : k + sched.num_envs], actor, estimator, beta, args.seed * 1000 + it * 10 + k,
                                  sched.episode_s, params)
                data_obs.append(o)
                data_act.append(a)
                results += r
            actor.train()
            obs_all = torch.from_numpy(np.concatenate(data_obs))
            act_all = torch.from_numpy(np.concatenate(data_act))
            priv_true = obs_all[:, L.PRIV_EXPLICIT].clone()
            est_loss = train_estimator(estimator, opt_e, obs_all, priv_true, sched.estimator_steps_per_iter, sched.batch_size, gen)
            with torch.no_grad():  # the actor learns on what the runtime feeds it: the estimator's priv_explicit
                obs_all[:, L.PRIV_EXPLICIT] = estimator(obs_all[:, L.PROPRIO])
            last = it == total_iters - 1
            steps = sched.final_actor_steps if last else sched.actor_steps_per_iter
            if last:
                for g in opt_a.param_groups:
                    g["lr"] = sched.lr * 0.3
            t_fit = progress.add_task(f"  fit {it}", total=steps, info=f"{len(obs_all)} samples")
            act_loss = train_actor(actor, opt_a, obs_all, act_all, steps, sched.batch_size, gen, progress, t_fit)
            progress.remove_task(t_fit)
            dist = np.mean([r[1] for r in results])
            falls = sum(r[2] for r in results)
            info = f"beta {beta:.2f} | rollout dist {dist:.2f} m falls {falls}/{len(results)} | loss a {act_loss:.4f} e {est_loss:.4f}"
            log.append(f"iter {it}: {info} | {len(obs_all)} samples")
            progress.console.print(f"iter {it}: {info}")
            progress.update(t_iter, advance=1, info=info)
            del obs_all, act_all, priv_true

    ckpt_path = out / f"model_{total_iters}.pt"
    ckpt = teacher_checkpoint(actor, estimator, make_critic(), iteration=total_iters,
                              infos=None)
    torch.save(ckpt, ckpt_path)
    (out / "params").mkdir(exist_ok=True)
    (out / "params" / "env.yaml").write_text(
        "# Read by krabby.parkour.inference.trained_control_rate_hz: 50 Hz policy, 200 Hz physics.\n"
        "decimation: 4\nsim:\n  dt: 0.005\n")
    t_train = time.time() - t_start
    print(f"saved {ckpt_path} ({ckpt_path.stat().st_size / 1e6:.1f} MB) after {t_train:.0f} s")

    rows = evaluate_checkpoint(ckpt_path, EVAL_COURSES, 0.5, sched.eval_s, profile)
    print_table(rows, f"closed-loop evaluation, load_policy + estimator, command 0.5 m/s, {sched.eval_s:g} s")
    t_total = time.time() - t_start
    write_readme(out, ckpt_path, args, sched, rows, log, t_train, t_total)
    ok = all(not r["fell"] for r in rows) and all(r["distance_m"] >= 7.0 for r in rows if r["course"] == "flat")
    if args.quick:
        print(f"total {t_total:.0f} s; --quick is a smoke run: acceptance (20 s, no falls, flat >= 7 m) not checked")
        return 0
    print(f"total {t_total:.0f} s; acceptance (no falls, flat >= 7 m): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def write_readme(out: Path, ckpt_path: Path, args, sched: Schedule, rows, log, t_train, t_total) -> None:
    cmd = f"python train/train_demo_policy.py --out {args.out} --seed {args.seed}" + (" --quick" if args.quick else "")
    text = f"""# go2_demo_teacher: a bundled demo policy that walks the MuJoCo Go2

`{ckpt_path.name}` is a **teacher**-architecture Extreme-Parkour checkpoint in the exact upstream
format (`model_state_dict` with `actor.*`, `critic.*` and `std`, `estimator_state_dict`,
`optimizer_state_dict`, `iter`, `infos`), so `load_policy` reads it strictly, and the ONNX export
and the inference client treat it like an upstream teacher. `params/env.yaml` gives the trained
rate (decimation 4, sim dt 0.005 s: 50 Hz).

It is **not** an upstream policy and not trained with RL. It is a scripted trot distilled into the
upstream network, so Krabby has a policy that really walks without the upstream weights. Only the
actor and the estimator are trained. The critic is seeded random weights, `std` is 1.0 and the
Adam state is empty; they are there only because the upstream format has them. A PPO fine-tune
from this file would have to train the critic first.

## How to run it

Run it like upstream play.py runs a teacher: history encoder (`hist_encoding=True`), and
**with the estimator** (`obs[185:194] <- estimator(obs[:53])`). `ParkourInferenceClient` does this by default
for a teacher with an estimator. The actor was trained on the estimator's output in that slot.
With the true velocity there instead it walks too, because the estimator is accurate, but that
path is not what it was trained on.

## How it was trained

Command: `{cmd}` ({t_train / 60:.1f} min of training, {t_total / 60:.1f} min with the evaluation, torch
threads {args.threads}, on the project's 2-core CPU machine).

1. Expert: `train/scripted_trot.py`, the scripted trot of `../shared/research/mujoco_feasibility.md` §2
   (T 0.45 s, duty 0.6, stance height 0.29 m, swing 0.07 m on flat and 0.09 m on obstacle courses,
   gravity target offsets on stance legs through the foot Jacobian, stride gain 1.5 plus a speed
   integral, steering by differential stride on delta_yaw, terrain-aware foot heights from the course).
   It outputs joint targets at 50 Hz; the label is `a = (target - default) / 0.25` in policy order.
2. Every sample comes from Krabby's deployment pipeline: `MujocoBackend.read()` ->
   `ObservationBuilder(kind="teacher")` -> policy -> `ActionMapper` (teacher, delay 0) ->
   `ActuatorCommand(POSITION, kp 40, kd 1)` -> `step_control()`.
3. DAgger, {sched.iterations + 1} iterations: iteration 0 is the expert alone; then each step the expert
   acts with probability beta (0.5, 0.25, 0.125, then 0) and the student otherwise; every visited
   state is labelled by the expert and aggregated. {sched.episodes_per_iter} episodes of {sched.episode_s:g} s per
   iteration: course flat (50 %), 5 cm hurdles or 5 cm steps (25 % each) with a random course seed,
   command U(0.3, 0.8) m/s (30 % of episodes change it once), foot friction U(0.6, 1.2), spawn offset
   +-0.15 m and yaw +-0.25 rad, velocity pushes (+-0.3 m/s, +-0.4 rad/s) every 2-4 s half the time,
   and in half the episodes the default pose held U(0.2, 2) s before the policy starts (as a HAL
   server holds it while ARMED).
4. After each iteration: the estimator is fitted (MSE) to priv_explicit = (2 v_body, 0 x 6) from
   obs[:53]; then obs[185:194] of the whole data set is replaced by the estimator's output and the
   actor is fitted (MSE on the 12 actions, Adam, batch {sched.batch_size}, {sched.actor_steps_per_iter} steps per iteration,
   {sched.final_actor_steps} at the end). The student's rollouts run the estimator too.
5. Seeded: numpy, torch and every episode draw from `--seed`; torch deterministic algorithms.

Training log ("rollout dist" is the mean progress of that iteration's {sched.episode_s:g} s rollouts at their
random speeds and courses; "loss a" is the actor's action MSE, in action units of 0.25 rad; "loss e" the estimator's):

```
{chr(10).join(log)}
```

## Evaluation

Closed loop on the MuJoCo backend (default friction), command 0.5 m/s, {sched.eval_s:g} s, the saved file reloaded
with `load_policy` and run with the estimator, exactly as deployed. Distance is progress along the
course centreline; a fall is training's termination (|roll| or |pitch| > 1.5 rad). To repeat it, or
to run it through onnxruntime:
`python train/train_demo_policy.py --evaluate {ckpt_path} [--eval-backend onnx] [--speed 0.8]`.

{table_markdown(rows, 0.5, sched.eval_s)}

## What it can and cannot do

It **can** walk forward at 0.3-0.8 m/s on flat ground, 5 cm hurdles and 5 cm steps, steering to the
course's goals. It **cannot** cross gaps, climb the parkour boxes or walk the stepping stones: its
expert, a scripted trot, cannot either, so it never learned them. It is a Krabby demo distilled on
this MuJoCo model: its behaviour says the loop works, not that an Isaac-trained policy would
survive MuJoCo's dynamics. Every course: `python bench/demo_policy_courses.py`.
"""
    (out / "README.md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
