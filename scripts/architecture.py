#!/usr/bin/env python3
"""Checks the shape of the code: no import cycle between modules, no file over
800 lines, no function over 80 lines outside tests.

The module graph is derived from `crate::`, `super::` and `self::` paths (in
`use` statements and inline). An edge between a module and its own ancestor is
how Rust nests modules and is not a cycle; every other edge is lifted to the two
sibling modules under the paths' common ancestor, and each level's sibling graph
must be acyclic. Test-only code (`#[cfg(test)]` modules and files) is left out.

Usage: scripts/architecture.py [--report]   (--report prints the figures and
never fails; the default fails, naming each cycle and each overlong item.)
"""

import os
import re
import sys

CRATES = ["src", "connectors/src"]
MAX_FILE_LINES = 800
MAX_FN_LINES = 80


def strip_noise(text):
    """Blanks comments, string and char literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
            continue
        m = re.match(r'r(#*)"', text[i:]) if c == "r" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) else None
        if m:
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
            continue
        if c == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def block_end(text, open_at):
    """Index just past the brace matching the one at `open_at`."""
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def drop_test_modules(text):
    """Blanks `#[cfg(test)] mod x { ... }` blocks (keeping newlines)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        end = block_end(text, m.end() - 1)
        text = text[: m.start()] + "\n" * text.count("\n", m.start(), end) + text[end:]


def modules(root):
    """Maps module path tuples to (file, cleaned text), following `mod` declarations."""
    found = {}

    def visit(path, file):
        with open(file, encoding="utf-8") as f:
            raw = f.read()
        text = drop_test_modules(strip_noise(raw))
        found[path] = (file, text, raw)
        base = os.path.dirname(file) if os.path.basename(file) in ("mod.rs", "lib.rs", "main.rs") else file[:-3]
        for m in re.finditer(r"(#\[cfg\(test\)\]\s*)?(pub(\([a-z]+\))?\s+)?mod\s+(\w+)\s*;", text):
            if m.group(1):
                continue
            name = m.group(4)
            for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(candidate):
                    visit(path + (name,), candidate)
                    break

    visit((), os.path.join(root, "lib.rs"))
    main = os.path.join(root, "main.rs")
    if os.path.exists(main):  # the binary: its own crate root, held to the same limits
        visit(("<bin>",), main)
    return found


def expand_use(tree):
    """Expands `a::{b, c::{d}}` into ['a::b', 'a::c::d']."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p2 for p in parts if p for p2 in expand_use(prefix + p)]


def references(path, text):
    """Yields (line, absolute module path as tuple) for every crate-relative path."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        line = text.count("\n", 0, m.start()) + 1
        for item in expand_use(m.group(1)):
            resolved = resolve(path, item.split("::"))
            if resolved is not None:
                yield line, resolved
    for m in re.finditer(r"\b(crate|super|self)((::\w+)+)", text):
        line = text.count("\n", 0, m.start()) + 1
        resolved = resolve(path, (m.group(1) + m.group(2)).split("::"))
        if resolved is not None:
            yield line, resolved


def resolve(path, segments, is_mod_file=True):
    if not segments:
        return None
    head = segments[0]
    if head == "crate":
        return tuple(segments[1:])
    if head in ("super", "self"):
        base = list(path)
        rest = list(segments)
        while rest and rest[0] in ("super", "self"):
            if rest.pop(0) == "super":
                base = base[:-1]
        return tuple(base + rest)
    return None


def module_graph(found):
    """Sibling-level edges: {parent: {a: {b: (file, line)}}}."""
    levels = {}
    for path, (file, text, _) in found.items():
        for line, target in references(path, text):
            # the longest known module prefix of the referenced item
            module = next((target[:k] for k in range(len(target), -1, -1) if target[:k] in found), ())
            common = 0
            while common < min(len(path), len(module)) and path[common] == module[common]:
                common += 1
            if common == len(path) or common == len(module):
                continue  # ancestor or descendant: nesting, not a dependency
            a, b = path[: common + 1], module[: common + 1]
            levels.setdefault(path[:common], {}).setdefault(a, {}).setdefault(b, (file, line))
    return levels


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


FN = re.compile(r"^[ \t]*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", re.M)


def long_functions(file, text):
    for m in FN.finditer(text):
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue  # a declaration in a trait
        end = block_end(text, brace)
        first = text.count("\n", 0, m.start()) + 1
        last = text.count("\n", 0, end) + 1
        yield last - first + 1, f"{file}:{first} {m.group(6)}"


def main():
    report = "--report" in sys.argv
    failures = []
    fn_lengths, file_lengths, pub_items = [], [], 0
    for root in CRATES:
        found = modules(root)
        for parent, edges in sorted(module_graph(found).items()):
            for comp in cycles(edges):
                names = [("::".join(c) or "crate") for c in comp]
                where = []
                for a in comp:
                    for b, (file, line) in edges.get(a, {}).items():
                        if b in comp:
                            where.append(f"{'::'.join(a)} -> {'::'.join(b)} ({file}:{line})")
                failures.append(f"{root}: import cycle between {', '.join(names)}: " + "; ".join(sorted(where)))
        for path, (file, text, raw) in found.items():
            lines = raw.count("\n")
            file_lengths.append((lines, file))
            if lines > MAX_FILE_LINES:
                failures.append(f"{file}: {lines} lines, more than {MAX_FILE_LINES}")
            for length, name in long_functions(file, text):
                fn_lengths.append((length, name))
                if length > MAX_FN_LINES:
                    failures.append(f"{name}: {length} lines, more than {MAX_FN_LINES}")
            pub_items += len(re.findall(r"^[ \t]*pub\s+(?:async\s+)?(?:fn|struct|enum|trait|type|const|static|mod|use)\b", text, re.M))
    if report:
        print("largest files:", ", ".join(f"{f} {n}" for n, f in sorted(file_lengths, reverse=True)[:5]))
        print("longest functions:", ", ".join(f"{f} {n}" for n, f in sorted(fn_lengths, reverse=True)[:8]))
        print("pub items (outside tests):", pub_items)
        for f in failures:
            print("  over a limit or cyclic:", f)
        return 0
    for f in failures:
        print(f, file=sys.stderr)
    if failures:
        print(f"architecture check failed: {len(failures)} finding(s)", file=sys.stderr)
        return 1
    print("architecture check: no import cycle, no file over 800 lines, no function over 80 lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
