"""Stage weights: the identity of exactly the weights that model.weights names.

features depends on this small file, not on the whole weights/ folder: adding another file or
preset folder there changes nothing features reads, so DVC neither reruns features nor misses
its run-cache when you switch back to weights whose features it holds. Replacing the named
file or a file of the named folder changes the identity and reruns features.

    python -m stages.weights data/weights.json
"""

import argparse
from pathlib import Path

from transfer_pipeline.data.sources import md5_of
from transfer_pipeline.plumbing.errors import PipelineError, exit_on_pipeline_error
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs


def identity(weights) -> dict:
    """``imagenet`` and null as they are; a file's MD5; a folder's files' MD5s by path."""
    if weights is None or weights == "imagenet":
        return {"weights": weights}
    path = Path(weights)
    if path.is_file():
        return {"weights": weights, "md5": md5_of(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"weights": weights, "files": {str(p.relative_to(path)): md5_of(p) for p in files}}
    raise PipelineError(
        f"model.weights names {weights}, which does not exist; copy the weights file or preset "
        f"folder there (and `dvc add` it), or set model.weights to imagenet"
    )


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("identity", type=Path, help="output JSON: what model.weights names")
    args = parser.parse_args()
    weights = load_params("weights")["model"]["weights"]
    outputs = StageOutputs.of_stage("weights", files=[args.identity])
    with outputs:
        outputs.write_json(args.identity, identity(weights))
    print(f"weights: {weights}", flush=True)


if __name__ == "__main__":
    main()
