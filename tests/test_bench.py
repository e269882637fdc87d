"""The GPU benchmark (bench/gpu.sh) at tiny sizes on this CPU, as the device would run it (jax,
TensorFlow blocked): its scripts cannot rot between the sessions that have a GPU."""

import json
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, tool_env

BLOCKED_IMPORTS = Path(__file__).parent / "blocked_imports"


def test_gpu_benchmark_smoke_times_the_stage_commands_and_measures_the_components(tmp_path):
    env = {
        "OUT": str(tmp_path),
        "PYTHONPATH": str(BLOCKED_IMPORTS),
        "BLOCKED_IMPORTS": "tensorflow",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # never the user's ~/.cache
    }
    result = subprocess.run(
        ["bash", "bench/gpu.sh", "--smoke"],
        cwd=REPO_ROOT,
        env={**tool_env(), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    stages = json.loads((tmp_path / "pipeline.json").read_text())
    assert list(stages) == [
        "tarball_s",
        "prepare",
        "weights",
        "features",
        "train_head",
        "boundary",
        "fine_tune",
        "evaluate",
    ]
    fit = {"jit(train_step)": 1, "jit(test_step)": 1}
    assert stages["train_head"]["compiled_steps"] == stages["fine_tune"]["compiled_steps"] == fit
    # On a CPU, features also times the run's parts for its expected time (stages/features.py,
    # expected_time.py): its predict step at the timing batch besides the extraction's, and
    # training steps of a throwaway copy (the whole base, its top 1 and top 2 blocks).
    assert stages["features"]["compiled_steps"] == {
        "jit(predict_step)": 2,
        "jit(train_step)": 3,
    }
    assert stages["evaluate"]["compiled_steps"] == {"jit(predict_step)": 2}  # two models
    for name in ("features", "train_head", "fine_tune", "evaluate"):
        row = stages[name]
        assert row["startup_s"] > 0 and row["compile_s"] > 0 and row["work_s"] > 0, name
    assert "left out: export" in result.stdout
    components = json.loads((tmp_path / "gpu.json").read_text())
    assert [row[:2] for row in components["rows"]] == [
        ["extract", "mobilenet_v2"],
        ["extract", "dinov2_small"],  # a KerasHub backbone on the device's path
        ["train", "mobilenet_v2"],
    ]
    assert components["input_overhead"]["fed_ms"] > 0
    assert len(components["projections"]) == 1  # the seed's recipe; the strong one has no rows
