"""Fail on a pyloader-native wheel that is not what tools/build_wheels.sh means to ship.

    python tools/check_wheel.py --glibc 2.17 [--arch x86_64] [--import-with PYTHON] WHEEL...

Checks, for each wheel:
  * `auditwheel show` reports the intended manylinux tag (manylinux_<glibc>_<arch>) and the
    file name carries it;
  * the extension (pyloader/_core.<suffix>) is an ELF for the arch, named with the
    extension suffix of the wheel's Python tag and the target arch (not the build machine's);
  * it needs only glibc's own libraries, no GLIBC_ symbol version above --glibc, and
    no GLIBCXX_/CXXABI_/GCC_ version (no libstdc++ or libgcc_s);
  * every undefined symbol is versioned, except Python's own (Py*, _Py*): Zig ships
    only the newest glibc headers, so a call to a function newer than the target glibc links
    silently as an unversioned symbol and fails at import time on an old system;
  * it exports PyInit__core and nothing else (its static libc++ stays private);
  * with --import-with, that interpreter loads the extension from the wheel (torch is not
    needed for that) and finds its entry points.
Needs pyelftools and auditwheel (both in build_wheels.sh's toolchain venv).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection

MACHINES = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
ALLOWED_NEEDED = {
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
}
PYTHON_SYMBOL = re.compile(r"^_?Py")
# Weak references the C runtime's start-up files leave unresolved in every shared object.
CRT_WEAK = {"__gmon_start__", "_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable"}


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def check_elf(path: Path, glibc: str, arch: str) -> list[str]:  # noqa: C901 (one check per ELF property)
    problems: list[str] = []
    limit = version_tuple(glibc)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if elf["e_machine"] != MACHINES[arch]:
            problems.append(f"ELF machine is {elf['e_machine']}, not {MACHINES[arch]}")

        dynamic = next(s for s in elf.iter_sections() if isinstance(s, DynamicSection))
        needed = {t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
        for lib in sorted(needed - ALLOWED_NEEDED):
            problems.append(f"needs {lib} (only glibc's own libraries are allowed)")

        names_by_index: dict[int, str] = {}
        verneed = next((s for s in elf.iter_sections() if isinstance(s, GNUVerNeedSection)), None)
        if verneed is not None:
            for lib, auxes in verneed.iter_versions():
                for aux in auxes:
                    names_by_index[aux.entry.vna_other] = aux.name
                    name = aux.name
                    if name.startswith("GLIBC_") and name[6:][0].isdigit():
                        if version_tuple(name[6:]) > limit:
                            problems.append(f"needs {name} from {lib.name} (target is glibc {glibc})")
                    elif name.startswith(("GLIBCXX_", "CXXABI_", "GCC_")) or not name.startswith("GLIBC_"):
                        problems.append(f"needs symbol version {name} from {lib.name}")

        versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
        dynsym = elf.get_section_by_name(".dynsym")
        exported = []
        for i, sym in enumerate(dynsym.iter_symbols()):
            if i == 0 or not sym.name:
                continue
            bind = sym["st_info"]["bind"]
            if sym["st_shndx"] == "SHN_UNDEF":
                index = versym.get_symbol(i)["ndx"] if versym is not None else "VER_NDX_GLOBAL"
                versioned = index not in ("VER_NDX_LOCAL", "VER_NDX_GLOBAL") and index in names_by_index
                if not versioned and not PYTHON_SYMBOL.match(sym.name):
                    if bind == "STB_WEAK" and sym.name in CRT_WEAK:
                        continue
                    if bind == "STB_WEAK" and sym.name == "__cxa_thread_atexit_impl" and limit < (2, 18):
                        continue  # libc++abi's optional hook (glibc 2.18), checked for null before use
                    problems.append(
                        f"undefined symbol {sym.name} has no version (a glibc function newer than "
                        f"{glibc}, or a library that should not be needed)"
                    )
            elif bind in ("STB_GLOBAL", "STB_WEAK", "STB_GNU_UNIQUE"):
                exported.append(sym.name)
        extra = sorted(set(exported) - {"PyInit__core"})
        if "PyInit__core" not in exported:
            problems.append("does not export PyInit__core")
        if extra:
            shown = ", ".join(extra[:8]) + (f", ... ({len(extra)} in all)" if len(extra) > 8 else "")
            problems.append(f"exports more than PyInit__core: {shown}")
    return problems


def check_wheel(wheel: Path, glibc: str, arch: str, import_with: str | None) -> list[str]:
    problems: list[str] = []
    plat = f"manylinux_{glibc.replace('.', '_')}_{arch}"
    m = re.match(r"^pyloader_native-[^-]+-(cp\d+)-(cp\d+)-(.+)\.whl$", wheel.name)
    if not m:
        return [f"unexpected wheel file name {wheel.name}"]
    py_tag, _, plat_tags = m.groups()
    for tag in plat_tags.split("."):
        t = re.match(rf"^manylinux_(\d+)_(\d+)_{arch}$", tag)
        if not t or version_tuple(f"{t[1]}.{t[2]}") > version_tuple(glibc):
            problems.append(f"file name's platform tag {tag} is not manylinux_X_Y_{arch} with X.Y <= {glibc}")

    show = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True)
    shown = " ".join(show.stdout.split())
    line = re.search(r'consistent with the following platform tag: "([^"]+)"', shown)
    if show.returncode != 0 or not line:
        problems.append(f"auditwheel show failed: {show.stdout}{show.stderr}")
    else:
        print(f"   auditwheel show: {line.group(0)}")
        # The intended tag, or an older one (the extension needs nothing newer than it).
        tag = re.match(rf"^manylinux_(\d+)_(\d+)_{arch}$", line.group(1))
        if not tag or version_tuple(f"{tag[1]}.{tag[2]}") > version_tuple(glibc):
            problems.append(f"auditwheel show reports {line.group(1)}, not {plat} or older")
        elif line.group(1) not in plat_tags.split("."):
            problems.append(f"file name's platform tags {plat_tags} lack {line.group(1)}")

    expected_suffix = f".cpython-{py_tag[2:]}-{arch}-linux-gnu.so"
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        exts = [n for n in zf.namelist() if re.match(r"^pyloader/_core\..*so$", n)]
        libs = [n for n in zf.namelist() if ".libs/" in n]
        if libs:
            problems.append(f"auditwheel grafted libraries into the wheel: {libs}")
        if len(exts) != 1:
            return problems + [f"expected one pyloader/_core extension, found {exts}"]
        ext = exts[0]
        if not ext.endswith(expected_suffix):
            problems.append(f"{ext} does not end with {expected_suffix}")
        path = Path(zf.extract(ext, tmp))
        problems += [f"{ext}: {p}" for p in check_elf(path, glibc, arch)]
        if import_with:
            probe = (
                "import importlib.util, sys\n"
                "spec = importlib.util.spec_from_file_location('pyloader._core', sys.argv[1])\n"
                "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
                "names = [n for n in dir(mod) if not n.startswith('_')]\n"
                "assert names, 'the extension defines nothing'\n"
                "print('   imports under Python %d.%d: %d names' % (sys.version_info[:2] + (len(names),)))\n"
            )
            run = subprocess.run([import_with, "-c", probe, str(path)], capture_output=True, text=True)
            sys.stdout.write(run.stdout)
            if run.returncode != 0:
                problems.append(f"does not import under {import_with}: {run.stderr.strip()}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glibc", required=True, help="the target glibc, e.g. 2.17")
    ap.add_argument("--arch", default="x86_64", choices=sorted(MACHINES))
    ap.add_argument("--import-with", help="an interpreter of the wheel's Python version to load the extension with")
    ap.add_argument("wheels", nargs="+", type=Path)
    args = ap.parse_args()
    failed = 0
    for wheel in args.wheels:
        problems = check_wheel(wheel, args.glibc, args.arch, args.import_with)
        for p in problems:
            print(f"check_wheel: {wheel.name}: {p}", file=sys.stderr)
        failed += bool(problems)
        if not problems:
            print(f"   {wheel.name}: checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
