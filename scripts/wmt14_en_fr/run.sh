#!/usr/bin/env bash
# WMT14 EN-FR recipe: all steps selected by STAGES (default: prepare train prune pack generate score). --help lists the steps and variables, --dry-run prints the commands.
set -euo pipefail
source "$(dirname "$0")/pair.sh"
recipe_main all "$@"
