"""The layering in the README's "Who may call whom" table is the code's:
every file of core/ is in the table, and includes only headers of lower
layers (and its own module's). A new include that goes up a layer fails
here.

A module may span files: conn_ws.c and conn_internal.h belong to the conn
module when the table names `conn` and not `conn_ws`; the files of one
module may include each other's headers."""

import re

from conftest import REPO_ROOT

CORE = REPO_ROOT / "core"


def layers():
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- layers: begin -->")[1].split("<!-- layers: end -->")[0]
    out = {}
    for line in block.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                out[name] = int(m.group(1))
    return out


def module_of(stem, table):
    if stem in table:
        return stem
    parts = stem.split("_")
    for i in range(len(parts) - 1, 0, -1):
        head = "_".join(parts[:i])
        if head in table:
            return head
    return None


def includes(path):
    return re.findall(r'#include "(\w+)\.h"', path.read_text())


def test_every_core_file_has_a_layer():
    table = layers()
    modules = {module_of(p.stem, table) or p.stem for p in CORE.glob("*.[ch]")}
    assert modules - set(table) == set(), "files missing from the README table"
    assert set(table) - modules == set(), "README names files that do not exist"


def test_includes_go_down_only():
    table = layers()
    bad = []
    for path in sorted(CORE.glob("*.[ch]")):
        mod = module_of(path.stem, table)
        own = table[mod]
        for inc in includes(path):
            inc_mod = module_of(inc, table)
            if inc_mod is None or inc_mod == mod:
                continue  # its own module's header, or a generated one
            if table[inc_mod] >= own:
                bad.append(f"{path.name} (layer {own}) includes {inc}.h "
                           f"(layer {table[inc_mod]})")
    assert bad == []
