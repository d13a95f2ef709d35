#!/usr/bin/env bash
# Run the Kit tests of krabby.hal (or krabby.parkour) inside Isaac Sim 5.1:
#
#   apps/kit-tests.sh <isaac-sim root> [krabby.hal|krabby.parkour]
#
# <isaac-sim root> is the folder with kit/ and exts/ (/isaac-sim in the container). This is the
# command Isaac Sim builds for its own extension tests (IS v5.1.0 premake5-isaacsim.lua:206-227,
# define_ext_test_experience): an empty Kit with omni.kit.test, plus Isaac Sim's exts, extscache,
# extsDeprecated and apps folders. Without those folders `kit --empty` cannot resolve
# isaacsim.core.api / isaacsim.core.prims and fails before any test.
set -euo pipefail
root=${1:?usage: apps/kit-tests.sh <isaac-sim root> [krabby.hal|krabby.parkour]}
ext=${2:-krabby.hal}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "$root/kit/kit" --empty --enable omni.kit.test \
    --/exts/omni.kit.test/testExtEnableProfiler=0 \
    '--/exts/omni.kit.test/testExtArgs/0="--no-window"' \
    '--/exts/omni.kit.test/testExtArgs/1="--allow-root"' \
    --/exts/omni.kit.test/runTestsAndQuit=true \
    "--/exts/omni.kit.test/testExts/0='$ext'" \
    --ext-folder "$root/exts" --ext-folder "$root/extscache" --ext-folder "$root/extsDeprecated" --ext-folder "$root/apps" \
    --ext-folder "$repo/exts" \
    --no-window --allow-root
