"""krabby-eval end to end: a small grid through the real sim-to-sim loop, its files, determinism, Ray, compare."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("mujoco")

from krabby.parkour.evaluate.cli import main  # noqa: E402
from krabby.parkour.evaluate.grid import SPEC_TRAINING, Grid, NOMINAL, load_grid_toml, training_ranges  # noqa: E402

GRID = ["--terrains", "flat,hurdles", "--seeds", "2", "--perturb", "train", "--duration", "3", "--quiet"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same grid twice: over 2 spawned processes, then in this process."""
    out = tmp_path_factory.mktemp("eval")
    assert main([*GRID, "--workers", "2", "--out", str(out / "a")]) == 0
    assert main([*GRID, "--workers", "1", "--out", str(out / "b")]) == 0
    return out / "a", out / "b"


def test_small_grid_writes_the_card_table_episodes_and_plots(two_runs):
    a, _ = two_runs
    episodes = json.loads((a / "episodes.json").read_text())["episodes"]
    assert [(e["terrain"], e["seed"]) for e in episodes] == [("flat", 0), ("flat", 1), ("hurdles", 0), ("hurdles", 1)]
    for e in episodes:
        assert e["perturbation"] == "train" and e["sim_time_s"] == pytest.approx(3.0) and not e["fell"]
        assert e["commands_missed"] == 0 and e["safety_events"] == 0 and e["distance_m"] > 0.3
        assert -1.0 <= e["base_mass_offset_kg"] <= 3.0 and all(abs(c) <= 0.02 for c in e["base_com_offset_m"])
        assert 0.8 <= e["foot_friction"] <= 1.5  # (1 + U(0.6, 2.0)) / 2
        assert 0.0 <= e["speed_tracking_error_m_s"] < 0.5
    assert len({e["base_mass_offset_kg"] for e in episodes}) == 4  # each cell samples its own values
    table = rows(a / "table.csv")
    assert [(r["terrain"], r["perturbation"], r["episodes"]) for r in table] == [("flat", "train", "2"), ("hurdles", "train", "2")]
    by_terrain = {t: [e for e in episodes if e["terrain"] == t] for t in ("flat", "hurdles")}
    for r in table:
        es = by_terrain[r["terrain"]]
        assert float(r["distance_mean_m"]) == pytest.approx(sum(e["distance_m"] for e in es) / 2, abs=0.006)
        assert float(r["distance_min_m"]) == pytest.approx(min(e["distance_m"] for e in es), abs=0.006)
        assert float(r["success_rate"]) == sum(e["success"] for e in es) / 2 and r["falls"] == "0"
    assert len(rows(a / "episodes.csv")) == 4
    card = (a / "card.md").read_text()
    assert "| flat | 0.00 | train | 2 |" in card and "policies/go2_demo_teacher/model_" in card and "/work/" not in card
    run = json.loads((a / "run.json").read_text())
    assert run["workers"] == 2 and run["sim_s"] == pytest.approx(12.0) and run["sim_s_per_wall_s"] > 0
    for svg in ("success_vs_difficulty.svg", "distance.svg"):
        assert ET.parse(a / svg).getroot().tag.endswith("svg")


def test_same_grid_twice_same_table(two_runs):
    """Processes or not, the same grid gives the same table and the same episodes (lock-step runs are deterministic)."""
    a, b = two_runs
    assert (a / "table.csv").read_text() == (b / "table.csv").read_text()
    assert (a / "episodes.csv").read_text() == (b / "episodes.csv").read_text()


def test_compare_marks_differences(two_runs, tmp_path, capsys):
    a, b = two_runs
    assert main([str(a), str(b), "--out", str(tmp_path)]) == 0
    same = (tmp_path / "compare.md").read_text()
    assert "◆ |" not in same and "0 differing cells" in same
    edited = tmp_path / "edited"
    edited.mkdir()
    text = (b / "table.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[4] = "0.00" if cells[4] != "0.00" else "1.00"  # success_rate of the first row
    (edited / "table.csv").write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    assert main([str(a), str(edited), "--out", str(tmp_path)]) == 0
    diff = (tmp_path / "compare.md").read_text()
    assert diff.count("◆ |") == 1 and f"/ {cells[4]} ◆ |" in diff and "1 differing cells" in diff


def test_ray_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'krabby[ray]')")
    out = tmp_path / "ray"
    from krabby.parkour.evaluate.runner import RayUnavailableError, run_ray

    try:  # can Ray start here at all (sandbox, no /dev/shm, ...)? Then the real command must work
        run_ray([], "local", lambda r: None, 0.5)
    except RayUnavailableError as e:
        pytest.skip(str(e))
    assert not ray.is_initialized()  # run_ray shuts down what it started
    code = main(["--terrains", "flat", "--seeds", "2", "--perturb", "nominal", "--duration", "1", "--quiet",
                 "--ray", "local", "--out", str(out)])
    assert code == 0
    episodes = json.loads((out / "episodes.json").read_text())["episodes"]
    assert [e["seed"] for e in episodes] == [0, 1] and all(e["sim_time_s"] == pytest.approx(1.0) for e in episodes)
    assert json.loads((out / "run.json").read_text())["ray"] == "local"


def test_training_ranges_from_env_yaml(tmp_path):
    pytest.importorskip("yaml")
    run = tmp_path / "run"
    (run / "params").mkdir(parents=True)
    (run / "model_10.pt").write_bytes(b"")
    # the shape Isaac Lab's dump_yaml writes: python tuples as tagged sequences
    (run / "params" / "env.yaml").write_text(
        "decimation: 4\nevents:\n"
        "  reset_base:\n    func: isaaclab.envs.mdp.events:reset_root_state_uniform\n"
        "    params:\n      velocity_range:\n        x: !!python/tuple\n        - -9.0\n        - 9.0\n"
        "  randomize_rigid_body_mass:\n    func: isaaclab.envs.mdp.events:randomize_rigid_body_mass\n"
        "    params:\n      mass_distribution_params: !!python/tuple\n      - -0.5\n      - 2.0\n      operation: add\n"
        "  push_by_setting_velocity:\n    interval_range_s: !!python/tuple\n    - 6.0\n    - 6.0\n"
        "    params:\n      velocity_range:\n        x: !!python/tuple\n        - -1.0\n        - 1.0\n")
    r, source = training_ranges(run / "model_10.pt")
    assert r.base_mass_offset_kg == (-0.5, 2.0) and r.push_vel_m_s == 1.0 and r.push_interval_s == 6.0
    assert r.robot_friction == SPEC_TRAINING.robot_friction and "env.yaml" in source
    r, source = training_ranges(tmp_path / "elsewhere.pt")
    assert r == SPEC_TRAINING and source.startswith("spec")


def test_beyond_training_and_grid_toml(tmp_path):
    wide = SPEC_TRAINING.scaled(1.5)
    assert wide.name == "train_x1.5" and wide.base_mass_offset_kg == (-2.0, 4.0) and wide.push_vel_m_s == 0.75
    assert wide.robot_friction == pytest.approx((0.25, 2.35))
    f = tmp_path / "grid.toml"
    f.write_text('terrains = ["steps"]\nseeds = 3\nduration_s = 5\n'
                 '[perturbations.weak]\nbase = "train"\nmotor_strength = [0.8, 1.2]\naction_latency_steps = [0, 1]\n'
                 '[perturbations.weaker]\nbase = "weak"\nscale = 2\n')
    g = load_grid_toml(f, Grid(["flat"]), {"nominal": NOMINAL, "train": SPEC_TRAINING})
    assert g.terrains == ["steps"] and g.seeds == [0, 1, 2] and g.duration_s == 5.0
    assert [p.name for p in g.perturbations] == ["weak", "weaker"]
    assert g.perturbations[0].motor_strength == (0.8, 1.2) and g.perturbations[1].motor_strength == pytest.approx((0.6, 1.4))
    tasks = g.tasks("ckpt", "torch")
    assert len(tasks) == 6 and tasks == g.tasks("ckpt", "torch")  # sampling is seeded by the cell
    f.write_text('[perturbations.x]\nmass = 3\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_grid_toml(f, Grid(["flat"]), {"nominal": NOMINAL})


def test_an_episode_ends_at_the_first_fall():
    """A violent push topples the robot: the record says when, and the episode stops there (no respawn)."""
    from krabby.hal.sim.perturbation import SimPerturbation
    from krabby.parkour.evaluate.grid import EpisodeTask
    from krabby.parkour.evaluate.runner import quiet_krabby_logs, run_task
    from krabby.parkour.sim2sim import default_checkpoint

    shove = SimPerturbation(push_interval_s=0.5, push_vel_m_s=6.0, seed=1)
    task = EpisodeTask(0, str(default_checkpoint()), "torch", "flat", None, 0, "shove", shove, 5.0, 0.5)
    with quiet_krabby_logs():
        r = run_task(task)
    assert r["fell"] and not r["success"] and r["pushes"] >= 1
    assert 0.5 <= r["fall_time_s"] < 5.0 and r["sim_time_s"] == pytest.approx(r["fall_time_s"])


def test_clear_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pt"), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["--perturb", "wild", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "unknown perturbation 'wild'" in capsys.readouterr().err
    assert main(["--terrains", "moon", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "unknown terrain" in capsys.readouterr().err
    assert main(["a.pt", "b.pt", "--backend", "torch,onnx", "--out", str(tmp_path / "o")]) == 2
    assert "give one, or two to compare" in capsys.readouterr().err


def test_an_onnx_export_runs_on_onnxruntime_without_backend_flag(tmp_path):
    """Like every other runner, krabby-eval picks onnx for an ONNX export (before: torch, which refuses it)."""
    pytest.importorskip("onnxruntime")
    from krabby.parkour.onnx_export import export_onnx
    from krabby.parkour.sim2sim import default_checkpoint

    export_onnx(default_checkpoint(), tmp_path / "onnx", verify=False)
    out = tmp_path / "o"
    assert main([str(tmp_path / "onnx"), "--terrains", "flat", "--seeds", "1", "--perturb", "nominal", "--duration", "1",
                 "--workers", "1", "--quiet", "--out", str(out)]) == 0
    data = json.loads((out / "episodes.json").read_text())
    assert data["meta"]["backend"] == "onnx" and {e["backend"] for e in data["episodes"]} == {"onnx"}
