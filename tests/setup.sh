#!/usr/bin/env bash
# Installs what the test suites need from Debian's packages, when missing.
# Idempotent; needs root (apt-get) only when something is missing.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
# External series engine tests (tests/victoria.rs, tests/grafana.rs).
[ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
# Browser tests (tests/ui_browser.rs): Chromium headless through chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
    echo "tests/setup.sh: installing ${need[*]} from Debian" >&2
    if [ "$(id -u)" != 0 ]; then
        echo "tests/setup.sh: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Python's aiosmtpd: a real SMTP server on loopback for the e-mail tests.
# (pip, not Debian's python3-aiosmtpd: the python3 on PATH may not be Debian's.)
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install --quiet aiosmtpd
# Schemathesis: the API against its OpenAPI document (tests/api_schema.rs).
SCHEMATHESIS=4.32.5
schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS" \
    || python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS"

# Debian's package starts a system mosquitto on port 1883; the tests start their
# own on free ports and the demo's default broker address is 1883, so stop it.
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop mosquitto >/dev/null 2>&1 || true
fi
pkill -x mosquitto >/dev/null 2>&1 || true
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop victoria-metrics >/dev/null 2>&1 || true
fi
