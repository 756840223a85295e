#!/usr/bin/env bash
# WMT14 EN-FR recipe: the prepare step. --help lists the steps and variables, --dry-run prints the commands.
set -euo pipefail
source "$(dirname "$0")/pair.sh"
recipe_main prepare "$@"
