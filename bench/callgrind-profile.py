#!/usr/bin/env python3
"""Read callgrind output files (valgrind --tool=callgrind) for bench/instructions.sh.

    callgrind-profile.py totals FILE
        total Ir (the "totals:" line; "summary:" when there is none)
    callgrind-profile.py allocs FILE
        "ALLOCS FREES": calls into the heap allocator from outside it. Allocations are the
        malloc family (malloc, calloc, realloc, memalign, posix_memalign, aligned_alloc, valloc)
        and mimalloc's entry points (mi_malloc*, mi_zalloc*, mi_calloc*, mi_realloc*, ...);
        frees are free / mi_free*. Calls made by the allocator itself are not counted.
    callgrind-profile.py noise LONG SHORT REQUESTS
        Ir per request of the functions that cost less in LONG than in SHORT: work that does not
        grow with requests but varies from run to run (timing-dependent start-up, such as a clock
        calibration loop that runs for a fixed wall time); read the difference as +/- that much.
    callgrind-profile.py profile LONG SHORT REQUESTS [TOP]
        where the instructions of REQUESTS extra requests go: self cost (Ir) per function of LONG
        minus SHORT, divided by REQUESTS, grouped by crate (Rust symbols) or library, then the
        TOP (15) functions.
    callgrind-profile.py allocsites LONG SHORT REQUESTS
        allocator calls per request by call site, from runs made with
        `--separate-callers16=mi_malloc_aligned` (and the same for mi_zalloc_aligned,
        mi_realloc_aligned, malloc, calloc, realloc): each site is the chain of callers above
        the allocator, without the generic allocation frames (alloc::, core::, bytes' own).
"""

import collections
import os
import re
import sys

ALLOC_NAMES = {
    "malloc", "calloc", "realloc", "reallocarray", "memalign", "posix_memalign",
    "aligned_alloc", "valloc", "pvalloc",
}
FREE_NAMES = {"free", "cfree"}
# `<[u8] as Trait>::f`, `<str as Trait>::f`: methods on primitive types belong to std.
PRIMITIVES = {
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    "f32", "f64", "bool", "char", "str", "T",
}


def is_allocator(name):
    return (name in ALLOC_NAMES or name in FREE_NAMES or name.startswith("mi_")
            or name.startswith("_mi_") or name.startswith("__libc_malloc")
            or name.startswith("__libc_free") or name.startswith("_int_"))


def alloc_kind(name):
    if name in FREE_NAMES or name.startswith("mi_free"):
        return "free"
    if name in ALLOC_NAMES:
        return "alloc"
    if re.match(r"mi_(malloc|zalloc|calloc|realloc|rezalloc|recalloc|reallocn|reallocf|"
                r"new|aligned_alloc|posix_memalign|memalign|valloc|strdup|strndup|mallocn)", name):
        return "alloc"
    return None


def parse(path):
    """Returns (totals, self cost per (object, function), call counts per callee, caller)."""
    names = {}   # "fn" id -> name (fn and cfn share one table)
    objects = {}  # "ob" id -> name (ob and cob share one table)
    self_cost = collections.Counter()
    calls = collections.Counter()  # (caller fn, callee fn) -> count
    totals = summary = None
    ob = fn = ""
    skip_next_cost = False

    def resolve(table, value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
            return m.group(2)
        return table.get(m.group(1), "?")

    cfn = None
    npos = 1  # position columns before the costs ("positions: line", or "instr line")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next_cost:
                    skip_next_cost = False
                    continue
                parts = line.split()
                if len(parts) > npos:
                    self_cost[(ob, fn)] += int(parts[npos])
                continue
            if line.startswith("positions:"):
                npos = len(line.split()) - 1
                continue
            key, _, value = line.partition("=")
            if key == "fn":
                fn = resolve(names, value)
            elif key == "ob":
                ob = resolve(objects, value)
            elif key == "cob":
                resolve(objects, value)
            elif key == "cfn":
                cfn = resolve(names, value)
            elif key == "calls":
                calls[(fn, cfn)] += int(value.split()[0])
                skip_next_cost = True
            elif line.startswith("totals:"):
                totals = int(line.split()[1])
            elif line.startswith("summary:"):
                summary = int(line.split()[1])
    return (totals if totals is not None else summary), self_cost, calls


def count_allocs(calls):
    allocs = frees = 0
    for (caller, callee), n in calls.items():
        if is_allocator(caller):
            continue
        kind = alloc_kind(callee)
        if kind == "alloc":
            allocs += n
        elif kind == "free":
            frees += n
    return allocs, frees


def strip_type_prefix(s):
    while True:
        t = s.lstrip("<&(*[ ")
        for p in ("mut ", "const ", "dyn ", "impl "):
            if t.startswith(p):
                t = t[len(p):]
        if t == s:
            return s
        s = t


def group_of(obj, name):
    base = os.path.basename(obj) or "?"
    if name.startswith("mi_") or name.startswith("_mi_"):
        return "mimalloc"
    if "::" in name:
        # core::ptr::drop_in_place<T>: the crate of the type being dropped.
        m = re.match(r"core::ptr::drop_in_place<(.*)>$", name)
        if m:
            name = m.group(1)
        crate = re.split(r"::|<|>|,| ", strip_type_prefix(name), maxsplit=1)[0]
        if crate in ("core", "alloc", "std", "hashbrown", "compiler_builtins") or crate in PRIMITIVES:
            return "std (core, alloc, std, hashbrown)"
        return crate or "?"
    if base.startswith("libc.so") or base.startswith("libc-"):
        if re.search(r"mem|str|wcs|wmem", name):
            return "libc mem*/str*"
        if alloc_kind(name) or is_allocator(name):
            return "libc malloc"
        return "libc (syscall wrappers, other)"
    if base.startswith("ld-linux") or base.startswith("ld-"):
        return "ld.so"
    if base.startswith("vgpreload"):
        return "valgrind preload"
    if name.startswith("ring_core") or name.startswith("GFp"):
        return "ring"
    if name.startswith("0x"):
        return f"{base} (no symbol)"
    return f"{base} (C/asm)"


def fmt(n):
    return f"{n:,.0f}" if abs(n) >= 10 else f"{n:,.1f}"


def noise(long_path, short_path, requests):
    _, lself, _ = parse(long_path)
    _, sself, _ = parse(short_path)
    diff = collections.Counter(lself)
    diff.subtract(sself)
    return -sum(v for v in diff.values() if v < 0) / requests


def profile(long_path, short_path, requests, top):
    lt, lself, _ = parse(long_path)
    st, sself, _ = parse(short_path)
    diff = collections.Counter(lself)
    diff.subtract(sself)
    per_fn = collections.Counter()
    per_group = collections.Counter()
    for (obj, name), cost in diff.items():
        per_fn[(name, os.path.basename(obj))] += cost
        per_group[group_of(obj, name)] += cost
    total = (lt - st) / requests
    print(f"self cost per request by crate / library ({fmt(total)} Ir/request in all; "
          "negative = start-up noise):")
    print(f"  {'group':<40} {'Ir/request':>12} {'share':>7}")
    for g, cost in sorted(per_group.items(), key=lambda kv: -kv[1]):
        per = cost / requests
        if abs(per) < 0.5:
            continue
        print(f"  {g[:40]:<40} {fmt(per):>12} {(100 * per / total if total else 0):>6.1f}%")
    print()
    print(f"top {top} functions by self cost per request:")
    print(f"  {'Ir/request':>10} {'share':>6}  function (object)")
    for (name, obj), cost in per_fn.most_common(top):
        per = cost / requests
        short = name if len(name) <= 110 else name[:107] + "..."
        print(f"  {fmt(per):>10} {(100 * per / total if total else 0):>5.1f}%  {short} ({obj})")


# Frames that say nothing about who asked for the memory.
GENERIC_FRAME = re.compile(
    r"(__rust_|__rdl_|alloc::|<alloc::|core::|<core::|mi_|_mi_|std::alloc|<mimalloc|"
    r"bytes::bytes_mut::BytesMut::reserve_inner)")


def alloc_sites(long_path, short_path, requests):
    """Allocator calls per request by caller chain (see the module doc)."""
    def sites(path):
        out = collections.Counter()
        for (caller, callee), n in parse(path)[2].items():
            head, *chain = callee.split("'")
            if alloc_kind(head) != "alloc" or is_allocator(caller.split("'")[0]):
                continue
            # The context's first frame is the direct caller; keep the first six that mean something.
            kept = [f for f in chain if not GENERIC_FRAME.match(f)][:6]
            out[" <- ".join(kept) or caller] += n
        return out
    long_sites, short_sites = sites(long_path), sites(short_path)
    rows = [(n - short_sites.get(site, 0), site) for site, n in long_sites.items()]
    rows = [(d / requests, site) for d, site in rows if d / requests >= 0.05]
    for per, site in sorted(rows, reverse=True):
        print(f"  {per:6.2f}  {site}")
    print(f"  {sum(p for p, _ in rows):6.2f}  in all (sites under 0.05 per request left out)")


def main(argv):
    if len(argv) >= 3 and argv[1] == "totals":
        print(parse(argv[2])[0])
    elif len(argv) >= 3 and argv[1] == "allocs":
        allocs, frees = count_allocs(parse(argv[2])[2])
        print(allocs, frees)
    elif len(argv) >= 5 and argv[1] == "noise":
        print(f"{noise(argv[2], argv[3], int(argv[4])):.0f}")
    elif len(argv) >= 5 and argv[1] == "profile":
        top = int(argv[5]) if len(argv) > 5 else 15
        profile(argv[2], argv[3], int(argv[4]), top)
    elif len(argv) >= 5 and argv[1] == "allocsites":
        alloc_sites(argv[2], argv[3], int(argv[4]))
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
