#!/usr/bin/env bash
# WMT14 EN-DE recipe: the train step. --help lists the steps and variables, --dry-run prints the commands.
set -euo pipefail
source "$(dirname "$0")/pair.sh"
recipe_main train "$@"
