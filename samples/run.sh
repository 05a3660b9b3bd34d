#!/usr/bin/env bash
# The round trip of the README with real commands, against the local emulators.
# Usage: samples/run.sh [WORKDIR]   (default: a new temporary folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work" && cd "$work"
export AIRGAP_PASSPHRASE='sample passphrase, not a secret'
tag='regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53'

airgap --home inside init --role inside --name secure-lab
airgap --home outside init --role outside --name dmz-licensing
airgap --home inside key export -o secure-lab.card
airgap --home outside key export -o dmz-licensing.card
airgap --home inside trust add dmz-licensing.card --yes
airgap --home outside trust add secure-lab.card --yes

# The vendors: local emulators on free ports (their first output line is the URL).
airgap emulate cisco --poll-delay 0.5 > cisco.url 2>/dev/null & cisco_pid=$!
airgap emulate bigiq --task-delay 0.2 > bigiq.url 2>/dev/null & bigiq_pid=$!
trap 'kill $cisco_pid $bigiq_pid 2>/dev/null || true' EXIT
until [ -s cisco.url ] && [ -s bigiq.url ]; do sleep 0.1; done
cisco="$(head -n1 cisco.url)"; bigiq="$(head -n1 bigiq.url)"
airgap --home outside config set cisco.token_url "$cisco/oauth2/default/v1/token"
airgap --home outside config set cisco.api_base "$cisco/services/api/smart-accounts-and-licensing/"
airgap --home outside config set bigiq.url "$bigiq"

# Inside: pack the plan, the UDI captures and the RUM reports; make the handoff sheet.
airgap --home inside inside pack "$here/plan.csv" --udi "$here/captures" --entitlement "$tag:1" \
    --rum "$here/rum" -o request.airgap --encrypt
airgap --home inside inspect request.airgap --html handoff.html

# Outside: process it (demo credentials: the emulators accept any).
AIRGAP_CISCO_CLIENT_ID=sample AIRGAP_CISCO_CLIENT_SECRET=sample-secret \
AIRGAP_BIGIQ_USERNAME=admin AIRGAP_BIGIQ_PASSWORD=sample-password \
    airgap --home outside outside process request.airgap -o response.airgap

# Inside: import the response; per-device files and INSTRUCTIONS.md land in licences/.
airgap --home inside inside import response.airgap --out licences
airgap --home inside audit verify
airgap --home outside audit verify
echo "done: $work/licences"
