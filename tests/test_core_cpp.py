"""The C++ core's own tests (csrc/tests), built and run under sanitizers."""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = [shutil.which("cmake"), shutil.which("ninja"), shutil.which("c++") or shutil.which("g++")]


@pytest.mark.skipif(not all(TOOLS), reason="needs cmake, ninja and a C++ compiler")
@pytest.mark.parametrize("sanitizers", ["address,undefined", "thread"])
def test_core_under_sanitizers(tmp_path, sanitizers):
    build = tmp_path / "build"
    subprocess.run(
        [
            "cmake",
            "-S",
            ROOT,
            "-B",
            str(build),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Debug",
            "-DPYLOADER_BUILD_TESTS=ON",
            "-DPYLOADER_WERROR=ON",
            f"-DPYLOADER_SANITIZE={sanitizers}",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    built = subprocess.run(
        ["cmake", "--build", str(build), "--target", "core_tests"], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    # The stand-in CUDA driver, built with the same sanitizers, so that the staging
    # tests run too and their copies' synchronisation is visible to them.
    driver = tmp_path / "libstand_in_cuda.so"
    subprocess.run(
        [
            TOOLS[2],
            "-std=c++17",
            "-g",
            "-O1",
            "-shared",
            "-fPIC",
            "-pthread",
            f"-fsanitize={sanitizers}",
            "-o",
            str(driver),
            os.path.join(ROOT, "tests", "stand_in_cuda", "stand_in_cuda.cpp"),
        ],
        check=True,
        timeout=300,
    )
    env = dict(
        os.environ,
        ASAN_OPTIONS="detect_leaks=1",
        TSAN_OPTIONS="halt_on_error=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        STAND_IN_CUDA_DRIVER=str(driver),
    )
    result = subprocess.run([str(build / "core_tests")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # Every TEST in the file ran (they register themselves), and none failed.
    with open(os.path.join(ROOT, "csrc", "tests", "core_tests.cpp")) as source:
        defined = len(re.findall(r"^TEST\(\w+\)", source.read(), flags=re.M))
    assert defined > 0
    assert f"core tests: {defined} run, 0 failure(s)" in result.stdout
