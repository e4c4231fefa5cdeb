#!/usr/bin/env bash
# Writes a settings file with fresh secrets: `scripts/init-env.sh [TARGET [TEMPLATE]]`
# (default: `.env` from `.env.example`, what `docker compose` reads).
#
# Every line of TEMPLATE is copied; a line `NAME=` left empty whose NAME ends in `_PASSWORD` or
# is `FIRST_API_KEY` gets a fresh random value (passwords: 32 characters of [A-Za-z0-9];
# `FIRST_API_KEY`: an API key in the pipeline's own format, `ppk_` and 43 characters of URL-safe
# base64 over 32 random bytes). An existing TARGET is completed, never overwritten: variables it
# already sets keep their values, variables it lacks are appended. TARGET is made readable by its
# owner only. Nothing is printed but the variables it added.
set -euo pipefail

target=${1:-.env}
template=${2:-.env.example}
[[ -r "$template" ]] || { echo "init-env: cannot read $template" >&2; exit 1; }

password() { head -c 1024 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | cut -c1-32; }
api_key() { printf 'ppk_%s' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"; }

umask 077
fresh=false
[[ -s "$target" ]] || fresh=true
touch "$target"
added=()
while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" =~ ^([A-Z][A-Z0-9_]*)=(.*)$ ]]; then
        name=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        grep -q "^${name}=" "$target" && continue
        if [[ -z "$value" && "$name" == FIRST_API_KEY ]]; then
            value=$(api_key)
        elif [[ -z "$value" && "$name" == *_PASSWORD ]]; then
            value=$(password)
        fi
        printf '%s=%s\n' "$name" "$value" >>"$target"
        added+=("$name")
    elif $fresh; then
        # Comments and blank lines only into a new file: a completed one keeps its own.
        printf '%s\n' "$line" >>"$target"
    fi
done <"$template"
chmod 600 "$target"
if ((${#added[@]})); then
    echo "init-env: $target now sets ${added[*]}" >&2
fi
