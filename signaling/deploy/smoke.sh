#!/usr/bin/env bash
# Start signaling/deploy/compose.yaml as README says (replicas, one inference server, HAProxy
# as the one entry), talk to it through HAProxy with the bench client (two sessions: one on
# each replica), and take it down again.
#
#   bash signaling/deploy/smoke.sh                 # Docker Hub reachable
#   VOICE_AGENT_LOCAL_IMAGES=1 bash signaling/deploy/smoke.sh
#
# VOICE_AGENT_LOCAL_IMAGES=1 is for machines that reach a Debian mirror and a package index
# but not Docker Hub: the two images compose.yaml would pull are made from Debian packages
# instead (a Debian 12 base with debootstrap, and Debian's HAProxy 2.6). Behind a proxy that
# signs TLS with its own authority, VOICE_AGENT_EXTRA_CA=FILE (a PEM certificate) puts it in
# that base, for pip in the image build and in the models service.
# COMPOSE="docker-compose" uses Compose v1 (Debian's docker-compose package).
# The bench client runs on this machine: `voice-agent` must be installed here.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
read -r -a compose <<< "${COMPOSE:-docker compose}"
project=voice-agent-smoke
out=${OUT:-/tmp/voice-agent-smoke}
export VOICE_AGENT_TOKEN=${VOICE_AGENT_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
export VOICE_AGENT_PROFILE=${VOICE_AGENT_PROFILE:-small}
export VOICE_AGENT_LLM_GGUF=${VOICE_AGENT_LLM_GGUF:-smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf}

if [ "${VOICE_AGENT_LOCAL_IMAGES:-0}" = 1 ]; then
    if ! docker image inspect voice-agent-base:bookworm > /dev/null 2>&1; then
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian
        tar -C "$rootfs" -c . | docker import - voice-agent-base:bookworm
        rm -rf "$rootfs"
    fi
    context=$(mktemp -d)
    if [ -n "${VOICE_AGENT_EXTRA_CA:-}" ]; then cp "$VOICE_AGENT_EXTRA_CA" "$context/extra-ca.crt"; fi
    cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM voice-agent-base:bookworm
COPY . /usr/local/share/ca-certificates/
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -f /usr/local/share/ca-certificates/Dockerfile && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
DOCKERFILE
    docker build --network host -t voice-agent-base:bookworm-ca "$context"
    rm -rf "$context"
    docker build --network host -t voice-agent-haproxy:2.6 - <<'DOCKERFILE'
FROM voice-agent-base:bookworm-ca
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
DOCKERFILE
    export VOICE_AGENT_BASE_IMAGE=voice-agent-base:bookworm-ca
    export VOICE_AGENT_HAPROXY_IMAGE=voice-agent-haproxy:2.6
fi

run_compose() { "${compose[@]}" -p "$project" -f "$here/compose.yaml" "$@"; }
take_down() {
    run_compose logs --no-color > "$out.compose.log" 2>&1 || true
    run_compose down -v --remove-orphans || true
}
trap take_down EXIT

run_compose up --build -d
echo "waiting for HAProxy to route to a replica (the models service fetches the models first)"
for _ in $(seq 1 900); do
    if curl -fsS http://127.0.0.1:8080/health > /dev/null 2>&1; then break; fi
    sleep 1
done
curl -fsS http://127.0.0.1:8080/health
echo
voice-agent bench --url http://127.0.0.1:8080 --token "$VOICE_AGENT_TOKEN" \
    --sessions 2 --turns 3 --warmup 1 --barge-in 1 --no-floor --no-progress --out "$out"
python3 - "$out/results.json" <<'PY'
import json, sys

turns = [t for run in json.load(open(sys.argv[1]))["runs"] for t in run["turns"]]
measured = [t for t in turns if t["kind"] != "warmup"]
failed = [(t["session"], t["kind"], t["status"]) for t in measured if t["status"] != "ok"]
heard = [t for t in measured if t["kind"] == "turn" and t["mouth_to_ear_ms"] is not None]
print(f"{len(measured)} measured turns, {len(heard)} replies heard, failed: {failed}")
sys.exit(1 if failed or len(heard) < 4 else 0)
PY
echo "smoke test passed: $out/summary.md (compose logs: $out.compose.log)"
