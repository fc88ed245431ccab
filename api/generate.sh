#!/usr/bin/env bash
# Regenerates the Go code of the protobuf contracts under api/ and checks
# them. Run from anywhere: bash api/generate.sh
#
# 1. buf format -w   the .proto files, in place
# 2. buf lint        the rules in buf.yaml
# 3. buf generate    protoc-gen-go and protoc-gen-connect-go, as pinned in
#                    tools/go.mod (buf.gen.yaml), into api/ beside the .protos
# 4. buf breaking    against the last commit of main, when main has contracts
#
# Generated files are committed and never edited by hand; CI can run this
# script and then `git diff --exit-code -- api` to prove they are current.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

buf() { go tool -modfile=tools/go.mod buf "$@"; }

buf format -w
buf lint

# Start from nothing, so code of a deleted or renamed .proto cannot linger.
# (buf.gen.yaml's clean option would wipe api/ itself, .protos included.)
find api -type f \( -name '*.pb.go' -o -name '*.connect.go' \) -delete
find api -type d -name '*connect' -empty -delete
buf generate

# Compatibility with what is on main (buf.yaml's breaking rules, FILE).
# Skipped where main has no contracts yet (a fresh repository).
if git rev-parse -q --verify 'main^{commit}' >/dev/null &&
  git cat-file -e main:buf.yaml 2>/dev/null; then
  buf breaking --against '.git#ref=main'
fi
