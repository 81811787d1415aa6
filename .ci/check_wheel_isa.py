"""Check that a wheel holds no code built for more than baseline x86-64
(SSE2) outside the dispatched kernel files.

    python .ci/check_wheel_isa.py dist/fusedrnn-*.whl

Only the files under csrc/kernels/avx2/ and csrc/kernels/avx512/ are compiled
with ISA flags, and they run only after cpuid and xgetbv say the CPU and OS
support them (docs/design.md §9). Anything else holding a newer
instruction would crash with SIGILL on an older x86-64 CPU. This disassembles
every shared library in the wheel and attributes each instruction to its
function and each function to its source file through the symbol table:
the linker keeps a FILE symbol before each object's local symbols. The
kernel files' functions are static, so they are among those locals; a
global function has no file in the table and counts as a kernel if its name
says its ISA, as docs/design.md §9 asks kernel names to.

Needs objdump (binutils) and pyelftools (auditwheel's dependency), and an
unstripped library (pyproject's install.strip = false). Exits 1 on a
violation, on a stripped library, and when a kernel file shows no such code
(the scan would be blind to it).
"""

import argparse
import bisect
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

KERNEL_DIRS = ("csrc/kernels/avx2", "csrc/kernels/avx512")
KERNEL_NAME = re.compile(r"_avx2|_avx512")

# Registers only AVX and AVX-512 have.
WIDE_REGISTER = re.compile(r"%(?:ymm|zmm)\d+|%k[0-7]\b")
# In objdump's AT&T syntax every VEX- and EVEX-encoded vector instruction
# (AVX, AVX2, FMA, F16C, AVX-512) starts with "v"; the VEX-encoded integer
# ones (BMI1/2) and the other extensions past SSE2 that compilers emit
# through -m flags are listed by name.
BEYOND_SSE2 = {
    # BMI1, BMI2, LZCNT, POPCNT, MOVBE, ADX
    "andn", "bextr", "blsi", "blsmsk", "blsr", "tzcnt", "bzhi", "mulx", "pdep", "pext",
    "rorx", "sarx", "shlx", "shrx", "lzcnt", "popcnt", "movbe", "adcx", "adox",
    # SSE3, SSSE3
    "addsubps", "addsubpd", "haddps", "haddpd", "hsubps", "hsubpd", "lddqu", "movddup",
    "movshdup", "movsldup", "pabsb", "pabsw", "pabsd", "palignr", "phaddw", "phaddd",
    "phaddsw", "phsubw", "phsubd", "phsubsw", "pmaddubsw", "pmulhrsw", "pshufb", "psignb",
    "psignw", "psignd",
    # SSE4.1, SSE4.2
    "blendps", "blendpd", "blendvps", "blendvpd", "dpps", "dppd", "extractps", "insertps",
    "movntdqa", "mpsadbw", "packusdw", "pblendvb", "pblendw", "pcmpeqq", "pcmpgtq",
    "pextrb", "pextrd", "pextrq", "phminposuw", "pinsrb", "pinsrd", "pinsrq", "pmaxsb",
    "pmaxsd", "pmaxud", "pmaxuw", "pminsb", "pminsd", "pminud", "pminuw", "pmovsxbw",
    "pmovsxbd", "pmovsxbq", "pmovsxwd", "pmovsxwq", "pmovsxdq", "pmovzxbw", "pmovzxbd",
    "pmovzxbq", "pmovzxwd", "pmovzxwq", "pmovzxdq", "pmuldq", "pmulld", "ptest", "roundps",
    "roundpd", "roundss", "roundsd", "crc32", "pcmpestri", "pcmpestrm", "pcmpistri",
    "pcmpistrm",
}
NOT_VECTOR = {"verr", "verw"}  # baseline instructions that happen to start with "v"


def beyond_baseline(mnemonic, operands):
    base = mnemonic.split(".")[0]  # objdump's suffixes such as ".s" (swapped encoding)
    return (WIDE_REGISTER.search(operands) is not None
            or (base.startswith("v") and base not in NOT_VECTOR)
            or base in BEYOND_SSE2)


def functions(path):
    """Sorted (start, end, name, source file or None) of every function symbol."""
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        if symtab is None:
            sys.exit(f"{path.name}: no symbol table (stripped?): cannot attribute code to "
                     "source files; build with install.strip = false")
        found, source = [], None
        for sym in symtab.iter_symbols():
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            if kind == "STT_FILE":
                source = sym.name
            elif kind == "STT_FUNC" and sym["st_size"] and sym["st_shndx"] != "SHN_UNDEF":
                start = sym["st_value"]
                found.append((start, start + sym["st_size"], sym.name,
                              source if bind == "STB_LOCAL" else None))
    return sorted(found)


def instructions(path):
    """(address, mnemonic, operands) of every instruction in the executable sections."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-w", str(path)],
                             capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        match = re.match(r"\s*([0-9a-f]+):\t(\S+)\s*(.*)", line)
        if match:
            yield int(match[1], 16), match[2], match[3]


def scan(path, kernel_files):
    """(kernel functions with wide code, violations as printable lines)."""
    table = functions(path)
    starts = [start for start, *_ in table]
    in_kernels, violations = set(), {}
    for address, mnemonic, operands in instructions(path):
        if not beyond_baseline(mnemonic, operands):
            continue
        i = bisect.bisect_right(starts, address) - 1
        start, end, name, source = table[i] if i >= 0 else (0, 0, "?", None)
        if not start <= address < end:
            name, source = f"code outside any function symbol at {address:#x}", None
        if source in kernel_files or (source is None and KERNEL_NAME.search(name)):
            in_kernels.add(f"{source or 'global'}:{name}")
        else:
            violations.setdefault(f"{name} ({source or 'global symbol'})",
                                  f"{address:#x}: {mnemonic} {operands}")
    return in_kernels, [f"{where}: first at {first}" for where, first in violations.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the source tree, for the names of the kernel files "
                             "(default: this script's repository)")
    args = parser.parse_args(argv)
    kernel_files = {p.name for d in KERNEL_DIRS for p in (args.source / d).glob("*.c")}
    if not kernel_files:
        sys.exit(f"no kernel files under {', '.join(KERNEL_DIRS)} in {args.source}")

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.wheel) as wheel:
        libraries = [Path(wheel.extract(name, tmp)) for name in wheel.namelist()
                     if re.search(r"\.so(\.\d+)*$", name)]
        if not libraries:
            sys.exit(f"{args.wheel.name}: no shared library in the wheel")
        in_kernels, failed = set(), False
        for library in libraries:
            kernels, violations = scan(library, kernel_files)
            in_kernels |= kernels
            for line in violations:
                print(f"{library.name}: beyond baseline x86-64 outside the kernel files: {line}")
            failed |= bool(violations)
    print(f"{args.wheel.name}: kernel files {', '.join(sorted(kernel_files))}; "
          f"{len(in_kernels)} functions in them use AVX2/AVX-512/FMA code")
    # Each kernel file is compiled with its flags whatever the build machine,
    # so each must show up; one that does not means the scan is blind to it.
    silent = kernel_files - {k.split(":")[0] for k in in_kernels}
    if silent:
        print(f"no AVX2/AVX-512 code found in {', '.join(sorted(silent))}: the scan is blind")
        failed = True
    print("FAIL" if failed else "PASS: all other code is baseline x86-64")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
