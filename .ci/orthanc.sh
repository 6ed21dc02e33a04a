#!/usr/bin/env bash
# A private Orthanc for the DICOM node's tests (tests/test_orthanc.py), not the system service.
#
#   eval "$(.ci/orthanc.sh)"          # starts it (or finds it running) and exports the two variables below
#   .ci/orthanc.sh stop               # stops the one this script started
#
# Needs Debian's `orthanc` package (/usr/sbin/Orthanc) and curl. Everything lives in $BONEAGE_ORTHANC_DIR
# (default: $XDG_RUNTIME_DIR/boneage-orthanc, else /tmp/boneage-orthanc-$UID): the JSON configuration, the
# storage, the log and the pid. HTTP on 127.0.0.1:8042 without authentication (remote access off), DICOM on
# port 4242 as AE ORTHANC, any called AE title accepted, unknown SOP classes accepted. Idempotent: a
# second call finds the running instance (by its name in /system) and only prints the variables.
# Stdout carries only the `export` lines; progress and errors go to stderr.
set -euo pipefail

HTTP_PORT="${BONEAGE_ORTHANC_HTTP_PORT:-8042}"
DICOM_PORT="${BONEAGE_ORTHANC_DICOM_PORT:-4242}"
NAME="boneage-ci-orthanc"
DIR="${BONEAGE_ORTHANC_DIR:-${XDG_RUNTIME_DIR:-/tmp}/boneage-orthanc}"
if [ -z "${BONEAGE_ORTHANC_DIR:-}" ] && [ -z "${XDG_RUNTIME_DIR:-}" ]; then DIR="/tmp/boneage-orthanc-$(id -u)"; fi
URL="http://127.0.0.1:${HTTP_PORT}"
ORTHANC="$(command -v Orthanc || echo /usr/sbin/Orthanc)"

ours_running() {
  curl -fsS --max-time 2 "${URL}/system" 2>/dev/null | grep -q "\"Name\" *: *\"${NAME}\""
}

print_exports() {
  echo "export BONEAGE_TEST_ORTHANC=${URL}"
  echo "export BONEAGE_TEST_ORTHANC_DICOM=ORTHANC@127.0.0.1:${DICOM_PORT}"
}

if [ "${1:-}" = "stop" ]; then
  if [ -f "${DIR}/orthanc.pid" ] && kill -0 "$(cat "${DIR}/orthanc.pid")" 2>/dev/null; then
    kill "$(cat "${DIR}/orthanc.pid")"
    echo "orthanc.sh: stopped" >&2
  fi
  rm -f "${DIR}/orthanc.pid"
  exit 0
fi

if ours_running; then
  echo "orthanc.sh: already running at ${URL} (${DIR})" >&2
  print_exports
  exit 0
fi
if [ ! -x "${ORTHANC}" ]; then
  echo "orthanc.sh: no Orthanc binary (apt-get install orthanc)" >&2
  exit 1
fi
if curl -sS --max-time 2 "${URL}/system" >/dev/null 2>&1; then
  echo "orthanc.sh: something else answers at ${URL}; set BONEAGE_ORTHANC_HTTP_PORT" >&2
  exit 1
fi

mkdir -p "${DIR}/storage"
chmod 700 "${DIR}"
cat > "${DIR}/orthanc.json" <<JSON
{
  "Name": "${NAME}",
  "StorageDirectory": "${DIR}/storage",
  "IndexDirectory": "${DIR}/storage",
  "StorageCompression": false,
  "Plugins": [],
  "HttpServerEnabled": true,
  "HttpPort": ${HTTP_PORT},
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "SslEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "ORTHANC",
  "DicomPort": ${DICOM_PORT},
  "DicomCheckCalledAet": false,
  "DicomCheckModalityHost": false,
  "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true,
  "UnknownSopClassAccepted": true,
  "DicomModalities": {},
  "DicomModalitiesInDatabase": false,
  "OrthancPeers": {},
  "ConcurrentJobs": 2,
  "StableAge": 2,
  "SaveJobs": false,
  "LogExportedResources": false,
  "KeepAlive": true
}
JSON

nohup "${ORTHANC}" --logdir="${DIR}" "${DIR}/orthanc.json" >"${DIR}/orthanc.out" 2>&1 &
echo $! >"${DIR}/orthanc.pid"
for _ in $(seq 1 60); do
  if ours_running; then
    echo "orthanc.sh: started at ${URL}, DICOM ORTHANC@127.0.0.1:${DICOM_PORT} (${DIR})" >&2
    print_exports
    exit 0
  fi
  if ! kill -0 "$(cat "${DIR}/orthanc.pid")" 2>/dev/null; then break; fi
  sleep 0.5
done
echo "orthanc.sh: Orthanc did not answer at ${URL}/system; its output:" >&2
tail -n 30 "${DIR}/orthanc.out" >&2 || true
exit 1
