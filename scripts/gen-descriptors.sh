#!/usr/bin/env bash
# Regenerates proxy/proto/descriptor_set.bin: the protobuf descriptors that `proxy::proto`
# decodes once per process to read and write Envoy's protos as proto3 JSON/YAML.
#
# The set holds exactly the .proto files bundled in the envoy-types crate this workspace
# locks (so descriptors match the Rust types field for field), plus our own small protos in
# proxy/proto/ (TypedStruct and the Istio extension configs).
#
# Run it whenever envoy-types is bumped in Cargo.lock, or a file in proxy/proto/ changes, and
# commit the result. CI and builds never run it, so they need no protoc.
#
# Needs: protoc and the well-known-type protos, e.g. on Debian
#   apt-get install protobuf-compiler libprotobuf-dev
# Set PROTOC_INCLUDE if google/protobuf/*.proto is not under /usr/include.
set -euo pipefail
cd "$(dirname "$0")/.."

out=proxy/proto/descriptor_set.bin
wkt_include=${PROTOC_INCLUDE:-/usr/include}

command -v protoc >/dev/null || {
    echo "gen-descriptors.sh: protoc not found (apt-get install protobuf-compiler libprotobuf-dev)" >&2
    exit 1
}
[ -f "$wkt_include/google/protobuf/any.proto" ] || {
    echo "gen-descriptors.sh: no google/protobuf/any.proto under $wkt_include (set PROTOC_INCLUDE)" >&2
    exit 1
}

# Where cargo unpacked the envoy-types version Cargo.lock pins (run `cargo fetch` first if
# it is missing).
version=$(awk '/^name = "envoy-types"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "gen-descriptors.sh: envoy-types is not in Cargo.lock" >&2; exit 1; }
proto_root=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"envoy-types-$version"; do
    [ -d "$d/proto" ] && proto_root="$d/proto"
done
[ -n "$proto_root" ] || {
    echo "gen-descriptors.sh: envoy-types $version is not unpacked; run \`cargo fetch\` first" >&2
    exit 1
}

# Import roots inside the crate, as its own build uses them.
roots=(
    data-plane-api
    xds
    protoc-gen-validate
    googleapis
    cel-spec/proto
    opentelemetry-proto
    client_model
    ratelimit
)
args=()
files=()
for r in "${roots[@]}"; do
    args+=(-I "$proto_root/$r")
done
args+=(-I proxy/proto -I "$wkt_include")

# Every bundled file, by its import path, in a stable order.
for r in "${roots[@]}"; do
    while IFS= read -r f; do
        files+=("$f")
    done < <(cd "$proto_root/$r" && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
done
while IFS= read -r f; do
    files+=("$f")
done < <(cd proxy/proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)

protoc "${args[@]}" --include_imports -o "$out" "${files[@]}" 2> >(grep -v 'is unused' >&2)
echo "gen-descriptors.sh: wrote $out ($(wc -c <"$out") bytes, ${#files[@]} files from envoy-types $version + proxy/proto)"
