#!/usr/bin/env bash
# The wheels bench/gpu.sh needs on the lent GPU device: Python 3.12 on x86_64 Linux with JAX
# (CUDA), numpy, pandas, pillow, pyyaml and scikit-learn, but no Keras, DVC or DVCLive and no
# network. Downloads the versions installed in this environment into .whl/ (git-ignored; carry
# it) and prints their total size (a call carries at most 64 MiB).
#   bash bench/wheels.sh
# The list is what the stages import there (checked by running bench/gpu_pipeline.py --smoke
# with TensorFlow, matplotlib, pydot and setuptools blocked): Keras and its dependencies, then
# DVCLive, the DVC modules it imports and theirs; KerasHub and the two it imports that the
# device lacks (kagglehub only downloads presets: without it keras_hub still imports).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
PACKAGES=(
    keras optree namex absl-py rich markdown-it-py mdurl pygments h5py packaging
    dvclive dvc dvc-data dvc-http dvc-objects dvc-render dvc-studio-client atpublic attrs
    certifi charset-normalizer colorama diskcache dpath dulwich flatten-dict flufl.lock fsspec
    funcy idna nvidia-ml-py orjson pathspec psutil pygtrie requests ruamel.yaml scmrepo sqltrie
    tabulate tqdm typing_extensions urllib3 voluptuous wcwidth zc.lockfile
    keras-hub regex tokenizers
)
mapfile -t pins < <("$PYTHON" -c '
import importlib.metadata, sys
for name in sys.argv[1:]:
    print(f"{name}=={importlib.metadata.version(name)}")' "${PACKAGES[@]}")
rm -rf .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest .whl \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "${pins[@]}"
echo "$(ls .whl | wc -l) wheels, $(du -cb .whl/*.whl | tail -1 | cut -f1) bytes in .whl/"
