#!/bin/sh
# Packs the canvas build into the tenant image's context.
set -eu
echo "bundle"
