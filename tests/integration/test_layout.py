"""The layering in the README's "Who may call whom" table is the code's:
every file of core/ is in the table, and includes only headers of lower
layers (and its own). A new include that goes up a layer fails here."""

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


def includes(path):
    return re.findall(r'#include "(\w+)\.h"', path.read_text())


def test_every_core_file_has_a_layer():
    table = layers()
    modules = {p.stem for p in CORE.glob("*.[ch]")}
    assert modules - set(table) == set(), "files missing from the README table"
    assert set(table) - modules == set(), "README names files that do not exist"


def test_includes_go_down_only():
    table = layers()
    bad = []
    for path in sorted(CORE.glob("*.[ch]")):
        own = table[path.stem]
        for inc in includes(path):
            if inc == path.stem or inc not in table:
                continue  # its own header, or a generated one
            if table[inc] >= own:
                bad.append(f"{path.name} (layer {own}) includes {inc}.h "
                           f"(layer {table[inc]})")
    assert bad == []
