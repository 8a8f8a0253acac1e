"""HPO end to end: studies whose trials run on real pilots, pruning through the server, segments,
bad objectives and bad input, agreement with Optuna, and a study surviving lost pilots and a
killed server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hpo_flows as hf
import optuna
import pytest
from harness import kill_a_work_pilot, running_cluster, wait_for

import pilotwave as pw
from pilotwave import hpo

pytestmark = pytest.mark.slow

SPACE_XY = {
    "x": {"type": "float", "low": -4, "high": 4},
    "y": {"type": "float", "low": -4, "high": 4},
}


def sequential_optuna(n_trials: int, seed: int) -> list[dict[str, float]]:
    """The same study run by Optuna alone, one trial after the other."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    study = optuna.create_study(study_name="hpo-study", sampler=sampler)
    study.optimize(
        lambda t: hf.quad.fn(t.suggest_float("x", -4, 4), t.suggest_float("y", -4, 4)),
        n_trials=n_trials,
    )
    return [t.params for t in study.trials]


def test_one_worker_study_is_optunas_own_study(cluster: Any) -> None:
    """With one trial at a time, the distributed study asks exactly what Optuna asks."""
    expected = sequential_optuna(15, seed=11)
    local = hpo.optimize(objective=hf.quad, space=SPACE_XY, n_trials=15, parallel=1, seed=11)
    remote = hpo.optimize.submit(
        objective=hf.quad, space=SPACE_XY, n_trials=15, parallel=1, seed=11
    ).result(timeout=120)
    for result in (local, remote):
        assert [t["params"] for t in result["trials"]] == expected
        assert [t["state"] for t in result["trials"]] == ["complete"] * 15
        best = min(result["trials"], key=lambda t: t["value"])
        assert result["best"]["value"] == best["value"] and result["best"]["job"] == best["job"]
    assert remote["best"]["value"] == local["best"]["value"]


def test_parallel_study_keeps_slots_busy_and_finds_the_minimum(cluster: Any) -> None:
    run = hpo.optimize.submit(objective=hf.quad, space=SPACE_XY, n_trials=40, parallel=4, seed=5)
    result = run.result(timeout=180)
    trials = result["trials"]
    assert [t["number"] for t in trials] == list(range(40))
    assert len({t["job"] for t in trials}) == 40
    assert result["best"]["value"] < 0.5  # the minimum is 0 at (1, -2)
    assert result["directions"] == ["minimize"] and result["objectives"] == ["value"]
    assert all(t["duration_s"] is not None and t["duration_s"] >= 0 for t in trials)
    progress = run.status()["progress"]
    assert progress["segments"][""] == {
        "complete": 40,
        "pruned": 0,
        "failed": 0,
        "running": 0,
        "n_trials": 40,
        "best": result["best"]["value"],
    }


def test_more_parallel_trials_than_slots_just_queue(cluster: Any) -> None:
    result = hpo.optimize.submit(
        objective=hf.quad, space=SPACE_XY, n_trials=12, parallel=10, sampler="random", seed=1
    ).result(timeout=120)
    assert len(result["trials"]) == 12 and {t["state"] for t in result["trials"]} == {"complete"}


def test_pruning_decided_in_the_driver_stops_trials_through_the_server(cluster: Any) -> None:
    run = hpo.optimize.submit(
        objective=hf.curve,
        space={"rate": {"low": 0.1, "high": 2.0}},
        n_trials=16,
        parallel=4,
        pruner={"type": "median", "n_startup_trials": 3},
        seed=3,
    )
    result = run.result(timeout=180)
    states = [t["state"] for t in result["trials"]]
    assert len(states) == 16 and "pruned" in states and "complete" in states
    client = pw.Client()
    for t in result["trials"]:
        reports = client.job_reports(t["job"])
        assert {str(r["step"]): r["value"] for r in reports} == t["intermediate"]
        if t["state"] == "pruned":  # stopped where the driver said stop, not later
            stop_steps = [r["step"] for r in reports if r["stop"]]
            assert stop_steps == [max(r["step"] for r in reports)]
            assert t["value"] == t["intermediate"][str(stop_steps[0])]
        else:
            assert len(reports) == 8 and not any(r["stop"] for r in reports)
    best = result["best"]
    assert best["params"]["rate"] > 1.0  # the final loss is 1/rate


def test_segmented_study_shares_slots_and_answers_per_segment(cluster: Any) -> None:
    run = hpo.optimize.submit(
        objective=hf.quad_segment,
        space={"x": {"low": -5.0, "high": 5.0}},
        segments=["a", "b", "c"],
        n_trials=10,
        parallel=3,
        seed=7,
    )
    result = run.result(timeout=180)
    assert set(result["segments"]) == {"a", "b", "c"} and "trials" not in result
    centres = {"a": 0.5, "b": -2.0, "c": 3.0}
    for name, seg in result["segments"].items():
        assert len(seg["trials"]) == 10
        assert abs(seg["best"]["params"]["x"] - centres[name]) < 1.0
    # Fair shares: the first three trials went one to each segment.
    jobs = sorted((t["job"], name) for name, s in result["segments"].items() for t in s["trials"])
    assert {name for _, name in jobs[:3]} == {"a", "b", "c"}


def test_multi_objective_study_returns_the_pareto_front(cluster: Any) -> None:
    result = hpo.optimize.submit(
        objective=hf.two_goals,
        space={"x": {"low": -1.0, "high": 3.0}},
        directions=["minimize", "minimize"],
        n_trials=20,
        parallel=4,
        seed=2,
    ).result(timeout=120)
    assert result["objectives"] == ["value0", "value1"]
    front = result["pareto"]
    points = {t["number"]: t["values"] for t in result["trials"]}

    def dominated(v: list[float]) -> bool:
        return any(
            all(a <= b for a, b in zip(w, v, strict=True)) and w != v for w in points.values()
        )

    assert {p["trial"] for p in front} == {n for n, v in points.items() if not dominated(v)}
    assert all(len(t["values"]) == 2 for t in result["trials"])
    assert result["best"] == min(front, key=lambda p: p["values"][0])


def test_dict_results_keep_extra_metrics(cluster: Any) -> None:
    result = hpo.optimize.submit(
        objective=hf.with_metrics,
        space={"x": {"low": 0.0, "high": 1.0}},
        objectives=["loss"],
        n_trials=6,
        parallel=2,
        seed=1,
    ).result(timeout=120)
    assert all(set(t["metrics"]) == {"accuracy"} for t in result["trials"])
    assert result["best"]["metrics"]["accuracy"] == pytest.approx(
        1 - abs(result["best"]["params"]["x"] - 0.3)
    )


def test_bad_values_and_crashes_fail_their_trials_and_the_search_goes_on(cluster: Any) -> None:
    bad = hpo.optimize.submit(
        objective=hf.sometimes_bad,
        space={"x": {"low": 0.0, "high": 1.0}},
        n_trials=20,
        parallel=4,
        sampler="random",
        seed=4,
    ).result(timeout=120)
    by_state: dict[str, list[dict[str, Any]]] = {}
    for t in bad["trials"]:
        by_state.setdefault(t["state"], []).append(t)
    assert len(bad["trials"]) == 20 and set(by_state) == {"complete", "failed"}
    for t in by_state["failed"]:
        x = t["params"]["x"]
        reason = "nan, not a finite number" if x > 0.6 else "'not a number', not a number"
        assert t["error"] == f"objective 'value' is {reason}" and t["value"] is None
    assert bad["best"]["params"]["x"] <= 0.3
    # An invalid value is not retried: one attempt each.
    client = pw.Client()
    assert all(client.job(t["job"])["attempts"] == 1 for t in by_state["failed"])

    crash = hpo.optimize.submit(
        objective=hf.crashes_above,
        space={"x": {"low": 0.0, "high": 1.0}},
        n_trials=10,
        parallel=2,
        sampler="random",
        seed=8,
    ).result(timeout=120)
    failed = [t for t in crash["trials"] if t["state"] == "failed"]
    assert len(crash["trials"]) == 10 and failed
    assert all(t["error"].startswith("RuntimeError: diverged at x=") for t in failed)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space": {"x": {"type": "complex", "low": 0, "high": 1}}}, "space.x.type"),
        ({"space": {"x": {"low": 2, "high": 1}}}, "space.x.low: 2.0 is above high 1.0"),
        ({"space": {"x": {"type": "categorical", "choices": []}}}, "space.x.choices"),
        ({"space": {}}, "space"),
        ({"sampler": "annealing"}, "annealing"),
        ({"pruner": "patient-zero"}, "patient-zero"),
        ({"n_trials": 0}, "n_trials: 0 is not an integer >= 1"),
        ({"parallel": -1}, "parallel: -1"),
        ({"segments": []}, "segments"),
        ({"segments": ["a", "a"]}, "segments: names must be unique"),
        ({"directions": ["minimize", "maximize"], "pruner": "median"}, "cannot prune"),
        ({"objective": "python train.py --lr {learning_rate}"}, "{learning_rate}"),
        ({"objective": print}, "objective: pass a @pw.job function"),
    ],
)
def test_bad_input_is_refused_at_submission(kwargs: dict[str, Any], message: str) -> None:
    args = {"objective": hf.quad, "space": SPACE_XY, **kwargs}
    with pytest.raises((ValueError, TypeError)) as info:
        hpo.optimize.submit(**args)  # no server needed: refused before anything is sent
    assert message in str(info.value)


def test_timeout_stops_asking_and_lets_trials_in_flight_finish(
    cluster: Any, tmp_path: Path
) -> None:
    log = str(tmp_path / "evals.log")
    result = hpo.optimize.submit(
        objective=hf.logged_slow,
        space={"x": {"low": 0.0, "high": 1.0}, "log": {"type": "categorical", "choices": [log]}},
        n_trials=100,
        parallel=2,
        timeout_s=1.5,
        seed=1,
    ).result(timeout=120)
    assert result["timed_out"] and 2 <= len(result["trials"]) < 20
    assert {t["state"] for t in result["trials"]} == {"complete"}
    assert len(hf.runs(log)) == len(result["trials"])  # those in flight finished and count


def test_study_survives_a_pilot_killed_mid_trial(pw_home: Path, tmp_path: Path) -> None:
    log = str(tmp_path / "evals.log")
    with running_cluster(pw_home, pilots=3, slots=2) as c:
        client = c.client()
        run = hpo.optimize.submit(
            objective=hf.logged_slow,
            space={
                "x": {"low": 0.0, "high": 1.0},
                "log": {"type": "categorical", "choices": [log]},
            },
            n_trials=16,
            parallel=4,
            seed=9,
        )
        kill_a_work_pilot(client, run, lambda: len(hf.runs(log)) >= 3)
        result = run.result(timeout=180)
        trials = result["trials"]
        assert [t["number"] for t in trials] == list(range(16))
        assert len({t["job"] for t in trials}) == 16 and {t["state"] for t in trials} == {
            "complete"
        }
        retried = [t for t in trials if client.job(t["job"])["attempts"] > 1]
        assert retried  # the killed trial ran again elsewhere and counts once
        assert 16 <= len(hf.runs(log)) <= 16 + len(retried)


# On PostgreSQL; the search of ``test_active`` is killed on SQLite, and generic workflows
# on both (``test_workflow_durability``): what a study adds is DB-agnostic driver state.
@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_study_survives_a_server_killed_mid_study(
    backend: str, pw_home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("postgres").new_database() if backend == "postgresql" else None
    log = str(tmp_path / "evals.log")
    with running_cluster(pw_home, pilots=2, db=db) as c:
        run = hpo.optimize.submit(
            objective=hf.logged_slow,
            space={
                "x": {"low": 0.0, "high": 1.0},
                "log": {"type": "categorical", "choices": [log]},
            },
            n_trials=16,
            parallel=3,
            pruner=None,
            seed=13,
        )
        wait_for(lambda: len(hf.runs(log)) >= 4, what="a few evaluations")
        c.kill_server()
        time.sleep(1.0)  # trials and the driver keep going, retrying the server
        c.start_server()
        result = run.result(timeout=180)
        trials = result["trials"]
        assert [t["number"] for t in trials] == list(range(16))
        assert len({t["job"] for t in trials}) == 16
        assert {t["state"] for t in trials} == {"complete"}
        assert len(hf.runs(log)) == 16  # every trial evaluated once: nothing counted twice
        client = c.client()
        assert client.workflow(run.id)["counts"] == {"succeeded": 17}


TRAIN = """\
import argparse, json
import pilotwave as pw
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--k")
a = p.parse_args()
print("training with", a.x, a.k)
pw.report(0, a.x)  # a command can report too: it knows its job from the environment
if a.k == "file":
    json.dump({"loss": (a.x - 0.7) ** 2, "acc": 0.9}, open("loss.json", "w"))
elif a.k == "line":
    print("loss follows")
    print((a.x - 0.7) ** 2)
"""


def test_cli_runs_a_command_objective_and_collects_results(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pilotwave.cli.main import app

    (tmp_path / "train.py").write_text(TRAIN)
    config = {
        "name": "cmd-study",
        "objective": {"command": "python train.py --x {x} --k {k}", "loss_file": "loss.json"},
        "space": {
            "x": {"low": 0.0, "high": 1.0},
            "k": {"type": "categorical", "choices": ["file", "none"]},
        },
        "n_trials": 10,
        "parallel": 3,
        "sampler": "random",
        "seed": 3,
        "export": f"sqlite:///{tmp_path}/optuna.db",
    }
    (tmp_path / "study.yaml").write_text(json.dumps(config))  # JSON is YAML
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["hpo", "study.yaml", "--wait", "--out", "res", "--json"])
    assert r.exit_code == 0, r.output
    wid = json.loads(r.stdout)["id"]
    result = json.loads((tmp_path / "res" / "result.json").read_text())
    client = pw.Client()
    states = {t["state"] for t in result["trials"]}
    assert len(result["trials"]) == 10 and states == {"complete", "failed"}
    for t in result["trials"]:
        if t["params"]["k"] == "file":
            assert t["state"] == "complete" and t["metrics"] == {"acc": 0.9}
            assert t["intermediate"] == {"0": t["params"]["x"]}
            assert t["value"] == pytest.approx((t["params"]["x"] - 0.7) ** 2)
        else:  # the trial failed, and its log says why
            assert t["state"] == "failed"
            assert t["error"] == "the command wrote no loss file loss.json"
            log = "".join(c["data"] for c in client.logs(t["job"]))
            assert "training with" in log and "the command wrote no loss file loss.json" in log
    assert (tmp_path / "res" / "history.png").read_bytes()[:4] == b"\x89PNG"
    exported = optuna.load_study(study_name=f"hpo-{wid}", storage=config["export"])
    assert len(exported.trials) == 10
    assert exported.best_value == pytest.approx(result["best"]["value"])

    # The same study later, by id: the results again, and a table for a person.
    r = CliRunner().invoke(app, ["hpo", str(wid), "--out", "again"])
    assert r.exit_code == 0, r.output
    assert "best trials" in r.output and (tmp_path / "again" / "result.json").exists()


def test_a_command_objective_can_print_its_loss_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    result = hpo.optimize(  # in-process: the command runs here, in a private copy of this dir
        objective="python train.py --x {x} --k line",
        space={"x": {"low": 0.0, "high": 1.0}},
        n_trials=4,
        sampler="random",
        seed=1,
    )
    assert result["objectives"] == ["loss"]
    for t in result["trials"]:
        assert t["value"] == pytest.approx((t["params"]["x"] - 0.7) ** 2)
    assert not (tmp_path / "params.json").exists()  # trials wrote into their own directories


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("objective: [1, 2", "not valid YAML"),
        ("- a list", "expected a mapping of settings"),
        ("space: {x: {low: 0, high: 1}}", "objective: missing"),
        ("objective: python t.py\nspace: {x: {low: 0, high: 1}}\nn_trails: 5", "n_trails: unknown"),
        ("objective: {command: x, function: m:f}\nspace: {x: {low: 0, high: 1}}", "exactly one"),
        ("objective: {function: m:f, loss_file: l.json}\nspace: {}", "only a command objective"),
        ("objective: python t.py\nspace: {x: {low: 0, high: 1}}\nexport: study.db", "storage URL"),
        ("objective: python t.py\nspace: {x: {low: 0, high: 1}}\ntrial: 4", "trial: expected"),
    ],
)
def test_cli_refuses_a_bad_config_before_contacting_a_server(
    tmp_path: Path, config: str, message: str
) -> None:
    from typer.testing import CliRunner

    from pilotwave.cli.main import app

    path = tmp_path / "study.yaml"
    path.write_text(config)
    r = CliRunner().invoke(app, ["hpo", str(path)])
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output


def test_cli_refuses_a_bad_space_or_objective_before_submitting(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pilotwave.cli.main import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "obj.py").write_text("def f(x):\n    return x\n")
    cases = {
        "objective: python t.py --y {y}\nspace: {x: {low: 0, high: 1}}": "unknown placeholder {y}",
        "objective: python t.py\nspace: {x: {low: 2, high: 1}}": "space.x.low: 2.0 is above high 1.0",
        "objective: {function: obj.py:f}\nspace: {x: {low: 0, high: 1}}": "not a @pw.job function",
        "objective: {function: nowhere:f}\nspace: {x: {low: 0, high: 1}}": "cannot import nowhere",
    }
    for config, message in cases.items():
        (tmp_path / "study.yaml").write_text(config)
        r = CliRunner().invoke(app, ["hpo", "study.yaml"])
        assert r.exit_code == 2 and message in " ".join(r.output.split()), (config, r.output)
    assert pw.Client().workflows() == []  # nothing was submitted


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random", "qmc", "nsga2", "grid"])
def test_every_sampler_drives_a_study(sampler: str) -> None:
    space = {
        "x": {"low": -2.0, "high": 2.0, "step": 0.5},
        "y": {"type": "categorical", "choices": [-2, 0, 2]},
    }
    result = hpo.optimize(objective=hf.quad, space=space, n_trials=30, parallel=4, sampler=sampler)
    seen = [(t["params"]["x"], t["params"]["y"]) for t in result["trials"]]
    if sampler == "grid":  # the grid has 9 x 3 points: each is tried once, then the study ends
        assert len(seen) == 27 and len(set(seen)) == 27
        assert result["best"]["params"] == {"x": 1.0, "y": -2}  # the minimum is on the grid
    else:
        assert len(seen) == 30
    assert {t["state"] for t in result["trials"]} == {"complete"}


def test_a_converged_segment_gives_its_slots_to_the_others() -> None:
    result = hpo.optimize(
        objective=hf.quad_segment,
        space={"x": {"type": "categorical", "choices": [0.5, 1.0]}},
        segments=["a", "b"],
        n_trials=30,
        patience=4,
        sampler="random",
        seed=1,
    )
    for seg in result["segments"].values():  # two choices: nothing improves after a few trials
        assert 5 <= len(seg["trials"]) < 30
