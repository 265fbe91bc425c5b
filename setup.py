from setuptools import find_packages, setup

setup(
    name="retina-plugin",
    version="0.1.0",
    description="Focal-loss RetinaNet (Lin et al., 2017) as a Detectron2 plug-in",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # Detectron2's license: the plug-in subclasses and calls Detectron2 and ships beside it.
    # (An SPDX expression; setuptools deprecates "License ::" classifiers in its favour.)
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    python_requires=">=3.9",
    packages=find_packages(include=["retina_plugin", "retina_plugin.*"]),
    # detectron2 is not on PyPI under its own name, so it cannot be a requirement here:
    # `make setup` installs it (README, "Installing").
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.2",
        # COCO evaluation at C++ speed without Detectron2's C++ extension
        # (TEST.FOCAL_RETINA.COCO_EVAL_BACKEND).
        "faster-coco-eval>=1.6",
        "opencv-python>=4.5",
        "numpy",
        "PyYAML>=5.1",
    ],
    extras_require={
        # SLURM submission (tools/submit.py, tools/ablate.py --launcher slurm).
        "slurm": ["submitit>=1.5"],
        # Export and deployment (tools/export_model.py, tools/demo.py --model, the benchmark's
        # onnxruntime row): the dynamo ONNX exporter needs onnx and onnxscript.
        "export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        "dev": [
            "pytest>=7",
            "pytest-random-order>=1.1",
            "pytest-xdist>=3",  # make test runs two test processes (-n 2)
            "ruff>=0.4",
            "submitit>=1.5",
            "onnx>=1.17",
            "onnxscript>=0.5",
            "onnxruntime>=1.20",
        ],
    },
)
