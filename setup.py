"""nvpipe: fast human video matting (Robust Video Matting) on NVIDIA GPUs and CPUs."""

from setuptools import find_packages, setup

setup(
    name="nvpipe",
    version="0.1.0",
    description="Human video matting with RVM: NVDEC, Triton kernels, CUDA graphs; CPU fallback",
    license="GPL-3.0-only",
    python_requires=">=3.10",
    # kernels/ sits at the top of the repository and installs as nvpipe.kernels (a PyPI
    # package named `kernels` exists and libraries probe for it). nvpipe/kernels is a link
    # to it, so a checkout on PYTHONPATH imports exactly as an installed package does.
    packages=find_packages(include=["nvpipe", "nvpipe.*", "rvm"]),
    # The CPU kernels' C source: built on first use (kernels/native.py) or by CMakeLists.txt.
    package_data={"nvpipe.kernels": ["cpu/*.c"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "av>=12",
        "onnx>=1.15",  # reading the official ONNX weights
        "tqdm>=4.60",  # the progress bar
        # --subject (nvpipe.engine.subject): labelling, distance transforms, the watershed;
        # the subject mask's picture and nvpipe preview's sheet.
        "scipy>=1.10",
        "scikit-image>=0.21",
        "pillow>=9",
    ],
    extras_require={
        # pillow: tests read PNGs; matplotlib: the benchmark plot's test.
        "test": ["pytest>=7", "onnxruntime>=1.17", "triton>=3.0", "pillow>=9", "matplotlib>=3.7"],
        "bench": ["matplotlib>=3.7"],
        "cluster": ["ray>=2.10"],  # nvpipe run ... --cluster (nvpipe.app.schedule)
        "gpu": ["pynvvideocodec>=2.2", "triton>=3.0", "nvidia-ml-py>=12"],
    },
    entry_points={"console_scripts": ["nvpipe=nvpipe.app.cli:main"]},
    classifiers=["License :: OSI Approved :: GNU General Public License v3 (GPLv3)"],
)
