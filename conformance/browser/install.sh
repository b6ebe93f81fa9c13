#!/usr/bin/env bash
# Installs what the browser conformance test needs: Debian's chromium at
# /usr/bin/chromium, Node.js and npm, and this directory's npm dependencies
# (playwright-core, pinned in package-lock.json). Safe to run again: it only
# installs what is missing. The browser comes from Debian, never from a
# test tool's own download.
set -euo pipefail
cd "$(dirname "$0")"

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    as_root=(sudo)
  fi
fi

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install.sh: installing ${need_apt[*]} with apt-get"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "install.sh: playwright-core needs Node.js 20 or later; $(command -v node) is $(node --version)" >&2
  exit 1
fi

# npm ci replaces node_modules; skip it when the locked version is there.
installed_matches_lock() {
  node -e '
    const fs = require("fs");
    const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
    const want = lock.packages["node_modules/playwright-core"].version;
    let have = "";
    try {
      have = JSON.parse(fs.readFileSync("node_modules/playwright-core/package.json", "utf8")).version;
    } catch {}
    process.exit(have === want ? 0 : 1);
  '
}
if installed_matches_lock; then
  echo "install.sh: playwright-core $(node -p 'require("./node_modules/playwright-core/package.json").version') already installed"
else
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
  echo "install.sh: installed playwright-core $(node -p 'require("./node_modules/playwright-core/package.json").version')"
fi
echo "install.sh: $(/usr/bin/chromium --version 2>/dev/null), node $(node --version)"
