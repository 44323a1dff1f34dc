"""Build of the l2s._C extension: C core always, CUDA twins when nvcc is found.

CUDA detection: L2S_CUDA=1 forces it on (fails without nvcc), L2S_CUDA=0 forces it off, unset means
"use nvcc if found" (CUDA_HOME / CUDA_PATH, then nvcc on PATH, then /usr/local/cuda).
L2S_CUDA_ARCHS overrides the gencode list (default: sm_80, sm_90 and compute_90 PTX).
The CUDA runtime is linked statically and cuBLASLt is opened lazily on first GPU use, so importing
l2s._C needs neither a driver nor libcublasLt.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
C_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.c"))
CU_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels").glob("*.cu"))
DEFAULT_ARCHS = "-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90"


def _is_toolkit(home):
    return (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists()


def _ask_nvcc_for_home(nvcc):
    """nvcc on PATH may be a wrapper script: ask the real one where it lives (nvcc --dryrun prints TOP=)."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "TOP=" in line:
            return Path(line.split("TOP=", 1)[1].strip().strip('"')).resolve()
    return None


def find_cuda_home():
    """The CUDA toolkit root (holding bin/nvcc and include/cuda_runtime.h), or None."""
    candidates = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates += [Path(nvcc).resolve().parent.parent, _ask_nvcc_for_home(nvcc)]
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if home is not None and _is_toolkit(home):
            return home
    return None


def cuda_wanted():
    flag = os.environ.get("L2S_CUDA", "").strip().lower()
    home = find_cuda_home()
    if flag in ("0", "off", "false", "no"):
        return None
    if flag in ("1", "on", "true", "yes") and home is None:
        sys.exit("L2S_CUDA=1 but no nvcc was found (set CUDA_HOME)")
    return home


class BuildExtWithCuda(build_ext):
    """Compiles kernels/*.cu with nvcc into build_temp and links the objects into _l2s."""

    def build_extension(self, ext):
        home = cuda_wanted()
        # A build dir left by another configuration (CUDA on/off, other archs) looks "up to date"
        # to setuptools: key the build on the configuration and rebuild when it changes.
        config = f"cuda={home} archs={os.environ.get('L2S_CUDA_ARCHS', DEFAULT_ARCHS)}"
        stamp = Path(self.build_temp) / "l2s-build-config.txt"
        if not stamp.exists() or stamp.read_text() != config:
            self.force = True
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(config)
        if home is not None and CU_SOURCES:
            self.announce(f"l2s: building CUDA kernels with {home}/bin/nvcc", level=2)
            objects = self.compile_cuda(home, ext)
            ext.extra_objects = list(ext.extra_objects or []) + objects
            ext.define_macros = list(ext.define_macros or []) + [("L2S_WITH_CUDA", "1")]
            libdir = home / "lib64" if (home / "lib64").exists() else home / "lib"
            ext.library_dirs = list(ext.library_dirs or []) + [str(libdir)]
            ext.libraries = list(ext.libraries or []) + ["cudart_static", "rt", "pthread", "dl", "stdc++"]
            ext.include_dirs = list(ext.include_dirs or []) + [str(home / "include")]
        else:
            self.announce("l2s: building the CPU-only core (no nvcc, or L2S_CUDA=0)", level=2)
        super().build_extension(ext)

    def compile_cuda(self, home, ext):
        nvcc = str(home / "bin" / "nvcc")
        archs = os.environ.get("L2S_CUDA_ARCHS", DEFAULT_ARCHS).split()
        out_dir = Path(self.build_temp) / "kernels"
        out_dir.mkdir(parents=True, exist_ok=True)
        objects = []
        for src in CU_SOURCES:
            obj = out_dir / (Path(src).stem + ".o")
            deps = [ROOT / src] + list((ROOT / "csrc").glob("*.h")) + list((ROOT / "kernels").glob("*.cuh"))
            if not self.force and obj.exists() and all(obj.stat().st_mtime >= d.stat().st_mtime for d in deps):
                objects.append(str(obj))
                continue
            cmd = [nvcc, "-c", str(ROOT / src), "-o", str(obj), "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                   "-I", str(ROOT / "csrc"), "-DL2S_WITH_CUDA=1", *archs]
            self.announce(" ".join(cmd), level=2)
            subprocess.check_call(cmd)
            objects.append(str(obj))
        return objects


ext = Extension(
    "l2s._C",
    sources=C_SOURCES,
    include_dirs=[str(ROOT / "csrc"), numpy.get_include()],
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wno-missing-braces", "-fno-strict-aliasing"],
    depends=[str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.h")] + CU_SOURCES,
)

DIFFUSERS = ["torch>=2.1", "diffusers>=0.42,<0.43", "transformers>=5.24,<6", "pillow"]
EXTRAS = {
    "torch": ["torch>=2.1"],
    # the shapes world is its own distribution (shapes/), kept beside the library in this repository
    "shapes": [f"l2s-shapes @ {(ROOT / 'shapes').as_uri()}"],
    "diffusers": DIFFUSERS,
    "test": ["pytest>=7", *DIFFUSERS, "matplotlib>=3.7", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6",
             "ipywidgets>=8", "nbmake>=1.5", "gradio>=6", "playwright>=1.50", "accelerate>=1.0"],
    "train": [*DIFFUSERS, "accelerate>=1.0"],      # train-classifier for any pipeline, across processes
    "plots": ["matplotlib>=3.7"],
    "app": ["gradio>=6", "matplotlib>=3.7", "playwright>=1.50"],
    "notebook": ["matplotlib>=3.7", "ipykernel>=6", "ipywidgets>=8"],
}

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExtWithCuda}, extras_require=EXTRAS)
