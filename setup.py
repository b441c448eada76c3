from setuptools import find_packages, setup

setup(
    name="corrsteer",
    version="0.1.0",
    description="CorrSteer: correlation-based SAE feature steering, with fused Triton kernels",
    # kernels/ is a plain folder (no __init__.py): the import name corrsteer_kernels is its subfolder, so a checkout
    # on sys.path never shadows another distribution's top-level `kernels` (Hugging Face's, which transformers uses)
    packages=["corrsteer_kernels"] + find_packages(include=["corrsteer", "corrsteer.*"]),
    package_dir={"corrsteer_kernels": "kernels/corrsteer_kernels"},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "safetensors", "transformers>=4.50", "gguf", "tqdm", "matplotlib",
                      "datasets>=2.19"],
    entry_points={"console_scripts": ["corrsteer=corrsteer.cli.main:main"]},
    extras_require={
        # 3.6: the oldest Triton the interpreter tests run on (the GPU image's); tl.topk and host tensor
        # descriptors are checked at run time (corrsteer_kernels.triton_features)
        "triton": ["triton>=3.6"],
        # sae-lens: the tests check SAEWeights.from_sae_lens against sae-lens's own encode/decode
        "test": ["pytest>=7", "numpy", "triton>=3.6; platform_system == 'Linux'", "sae-lens>=6", "ruff>=0.6"],
        "bench": ["pytest-benchmark"],
    },
)
