"""jaxcompress: binary, quantized, searched and distilled networks in JAX/Flax."""
import setuptools

# Bounds are the versions installed and tested on the CI machine (see BENCHMARKS.md for the
# exact set); the upper bounds guard against API breaks in fast-moving JAX libraries.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<5",
    "chex>=0.1.92,<0.2",
    "ml-collections>=1.1.0,<2",
    "grain>=0.2.18,<0.3",
    "numpy>=2.0,<3",
    "pillow>=10",
    "scikit-learn>=1.5,<2",
    "scikit-image>=0.24,<0.27",
    "scipy>=1.13",
    "tensorboardX>=2.6,<3",
    "tqdm>=4.66,<5",
    "absl-py>=2.1",
    "flatbuffers>=24.3",  # jax.export serialization (quant.write_artefact)
]

setuptools.setup(
    name="jaxcompress",
    version="0.1.0",
    description="Train, search, compress and deploy efficient networks in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["jaxcompress", "jaxcompress.*", "launch", "configs", "configs.*"]),
    # The C++ sources of the native CPU kernels, compiled for the host on first use
    # (jaxcompress/ops/native_build.py).
    package_data={"jaxcompress.ops": ["native/*.cc", "native/*.h"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch: the tests that compare against PyTorch transcriptions of the official code.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "jupytext>=1.16", "matplotlib>=3.8", "nbformat>=5.9",
                 "torch==2.13.0", "ruff>=0.17,<0.18"],
        # Building TFDS datasets (download + prepare) needs TensorFlow; training on prepared data does not.
        "prepare": ["tensorflow>=2.16"],
        # Benchmarks compare against PyTorch (CPU build available offline on the CI machine).
        "bench": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": ["jaxcompress=launch.main:run_main"]},
)
