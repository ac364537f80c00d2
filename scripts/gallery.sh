#!/usr/bin/env bash
# Remakes the pictures of docs/gallery/ (shown in the README's Gallery) with the release binary
# and the models of models/: it trains the models whose pictures need trained parameters, then
# draws each picture with `nodec plot`. About two minutes on two cores.
#
#   bash scripts/gallery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
nodec="${CARGO_TARGET_DIR:-target}/release/nodec"
out=docs/gallery
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
size=(--size 720x540)

# The Lorenz system: models/lorenz.node runs to t = 10, which stays on one wing after its
# first loop; the same model run to t = 40 draws both wings of the butterfly.
sed 's/t = \[0, 10\]/t = [0, 40]/' models/lorenz.node >"$work/lorenz.node"
"$nodec" plot "$work/lorenz.node" --kind phase --vars x,y,z "${size[@]}" --out "$out/lorenz-phase.png"

# Van der Pol: the relaxation towards the limit cycle, against time.
"$nodec" plot models/vdp.node --kind series "${size[@]}" --out "$out/vdp-series.png"

# The augmented neural ODE classifier: trained, its decision regions, its training curves, and
# how it moves the plane (the input plane against the augmented coordinate, x[2]).
"$nodec" train models/circles_anode.node --quiet --out "$work/circles.json" --log "$work/circles.csv"
"$nodec" plot models/circles_anode.node --params "$work/circles.json" --kind decision "${size[@]}" --out "$out/circles_anode-decision.png"
"$nodec" plot models/circles_anode.node --log "$work/circles.csv" "${size[@]}" --out "$out/circles_anode-training.png"

# The continuous normalizing flow: trained, its density, and the grid it pushes to a Gaussian.
"$nodec" train models/cnf_moons.node --quiet --out "$work/cnf.json"
"$nodec" plot models/cnf_moons.node --params "$work/cnf.json" --kind density "${size[@]}" --out "$out/cnf_moons-density.png"
"$nodec" plot models/cnf_moons.node --params "$work/cnf.json" --kind grid --vars 'z[0],z[1]' "${size[@]}" --out "$out/cnf_moons-grid.png"

# Crowd motion: trained, the agents' paths over the running cost (the obstacle at the origin).
"$nodec" train models/crowd_motion.node --quiet --out "$work/crowd.json"
"$nodec" plot models/crowd_motion.node --params "$work/crowd.json" --kind trajectories "${size[@]}" --out "$out/crowd_motion-trajectories.png"

ls -l "$out"
