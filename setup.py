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
        "onnxruntime>=1.17",  # a CPU engine of the network (nvpipe.engine.matting.ort)
        # The CPU path's fastest network engine here (nvpipe.engine.matting.openvino): 53 vs
        # ONNX Runtime's 76 ms per 480x270 frame, 2-core AMD EPYC. Wheels for these machines.
        "openvino>=2024.0; platform_machine == 'x86_64' or platform_machine == 'AMD64'"
        " or platform_machine == 'aarch64' or platform_machine == 'arm64'",
        "tqdm>=4.60",  # the progress bar
        "pillow>=9",  # colour names (PIL.ImageColor), picture outputs, inference_utils, the
        # subject mask's picture and nvpipe preview's sheet
        "watchdog>=4",  # nvpipe run --watch: file events
        "filelock>=4.3",  # output and batch-record locks, on every OS (fcntl is POSIX only)
        # --subject (nvpipe.engine.subject): labelling, distance transforms, the watershed
        "scipy>=1.10",
        "scikit-image>=0.21",
    ],
    extras_require={
        # matplotlib: the benchmark plot's test.
        "test": ["pytest>=7", "onnxruntime>=1.17", "triton>=3.0", "matplotlib>=3.7"],
        "bench": ["matplotlib>=3.7"],
        "cluster": ["ray>=2.10"],  # nvpipe run ... --cluster (nvpipe.app.schedule)
        "gpu": ["pynvvideocodec>=2.2", "triton>=3.0", "nvidia-ml-py>=12"],
    },
    entry_points={"console_scripts": ["nvpipe=nvpipe.app.cli:program"]},
    classifiers=["License :: OSI Approved :: GNU General Public License v3 (GPLv3)"],
)
