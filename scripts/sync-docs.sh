#!/usr/bin/env bash
# Copies config/causeway.toml into docs/configuration.md (between its BEGIN/END markers),
# so the configuration reference in the docs is the file the config tests check.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re
doc_path = "docs/configuration.md"
doc = open(doc_path).read()
ref = open("config/causeway.toml").read()
begin = "<!-- BEGIN config/causeway.toml (scripts/sync-docs.sh) -->\n"
end = "<!-- END config/causeway.toml -->"
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc_path, "w").write(head + begin + "```toml\n" + ref + "```\n" + end + tail)
PY
