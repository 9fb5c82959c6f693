#!/usr/bin/env bash
# Checks the deployment files as far as this machine allows; .ci/run calls
# it after the build. Any warning fails it.
#
#   deploy/check.sh AGENT_BINARY
set -euo pipefail
agent=$(realpath "$1")
cd "$(dirname "$0")"
work=$(mktemp -d)
# checkov: no network (no guideline download, no version check).
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false ANALYTICS_DISABLED=true
trap 'rm -rf "$work"' EXIT

# systemd: the unit (and the token drop-in merged into it) with the agent
# binary where the unit expects it. `verify` only warns about unknown keys,
# so any output is a failure.
for variant in mtls token; do
  unit="$work/$variant/loadfleet-agent.service"
  mkdir -p "$(dirname "$unit")"
  sed "s#/usr/local/bin/loadfleet-agent#$agent#g" systemd/loadfleet-agent.service >"$unit"
  if [ "$variant" = token ]; then
    # A drop-in's settings follow the unit's; an empty LoadCredential= resets them.
    sed -n '/^\[Service\]/,$p' systemd/token.conf | tail -n +2 >"$work/dropin"
    sed -i "/^\[Service\]/r $work/dropin" "$unit"
  fi
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  if [ -n "$out" ]; then
    echo "systemd-analyze verify ($variant):"
    echo "$out"
    exit 1
  fi
  echo "systemd unit ($variant): verified"
done

# Kubernetes: the example overlay renders with kustomize (kubectl's, when
# this machine has kubectl), and checkov finds nothing in the result.
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize kubernetes/overlays/example >"$work/k8s.yaml"
  echo "kustomize: kubernetes/overlays/example renders $(grep -c '^kind:' "$work/k8s.yaml") objects"
  checkov --skip-download -f "$work/k8s.yaml" --framework kubernetes --compact --quiet
else
  echo "kubectl not found: kustomize render skipped; checking the manifests alone"
  # Unrendered, the bases have no namespace yet (the overlay sets one).
  checkov --skip-download -d kubernetes --framework kubernetes --compact --quiet \
    --skip-check CKV_K8S_21
fi

# The container image definition.
checkov --skip-download -f container/Dockerfile --framework dockerfile --compact --quiet
echo "checkov: kubernetes and Dockerfile clean"

# cloud-init: the user data is valid cloud-config, and the unit it writes is
# byte for byte the unit in systemd/.
cloud-init schema --config-file cloud-init/user-data.yaml
python3 - <<'PY'
import sys, yaml
data = yaml.safe_load(open("cloud-init/user-data.yaml"))
unit = [f for f in data["write_files"] if f["path"] == "/etc/systemd/system/loadfleet-agent.service"]
if len(unit) != 1 or unit[0]["content"] != open("systemd/loadfleet-agent.service").read():
    sys.exit("cloud-init/user-data.yaml: its loadfleet-agent.service differs from systemd/loadfleet-agent.service")
print("cloud-init: writes the same unit as systemd/")
PY

# Terraform: checkov over the module and its example; the user data the
# module renders (its template filled with sample values) is valid
# cloud-config and writes the same unit. No terraform binary is available
# here, so `terraform validate` is not run.
checkov --skip-download -d terraform --framework terraform --compact --quiet
python3 - "$work/rendered.yaml" <<'PY'
import re, sys, yaml
tpl = open("terraform/aws/user-data.tftpl").read()
unit = open("systemd/loadfleet-agent.service").read()
pem = "-----BEGIN X-----\nAAAA\n-----END X-----\n"
values = {"unit": unit, "ca_pem": pem, "cert_pem": pem, "key_pem": pem}
def indent(m):
    text = values[m.group(2)]
    lines = text.splitlines(True)
    return lines[0] + "".join(" " * int(m.group(1)) + l if l.strip() else l for l in lines[1:])
out = re.sub(r"\$\{indent\((\d+), (\w+)\)\}", indent, tpl)
out = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: {"max_users": "100", "ttl_minutes": "60"}.get(m.group(1), "x-" + m.group(1)), out)
out = out.replace("$${", "${")
open(sys.argv[1], "w").write(out)
data = yaml.safe_load(out)
written = [f["content"] for f in data["write_files"] if f["path"] == "/etc/systemd/system/loadfleet-agent.service"]
if written != [unit]:
    sys.exit("terraform/aws/user-data.tftpl renders a unit that differs from systemd/loadfleet-agent.service")
print("terraform: the rendered user data writes the same unit as systemd/")
PY
cloud-init schema --config-file "$work/rendered.yaml"
