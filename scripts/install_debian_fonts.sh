#!/bin/sh
# Every Debian package whose name starts with fonts- (Debian 12 "bookworm": 496 packages, about
# 1.3 GB to download, 3.8 GB installed), offline from the distribution's own archive: the font
# folders of Stutz et al.'s 1000-font FONTS (docs/datasets.md, "More fonts").
#
#   sh scripts/install_debian_fonts.sh         # prints the command
#   sh scripts/install_debian_fonts.sh --run   # runs it (as root; refuses under 5 GB free on /)
set -e
COMMAND="apt-get update && apt-get install -y \
\$(apt-cache search --names-only '^fonts-' | cut -d' ' -f1)"
if [ "$1" != "--run" ]; then
  echo "$COMMAND"
  exit 0
fi
free_kb=$(df -Pk / | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt $((5 * 1024 * 1024)) ]; then
  echo "only $((free_kb / 1024 / 1024)) GB free on /; the fonts need about 5 GB" >&2
  exit 1
fi
DEBIAN_FRONTEND=noninteractive sh -c "$COMMAND"
