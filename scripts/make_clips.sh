#!/usr/bin/env bash
# Test clips for the shot detector, built with ffmpeg from the shared footage and the
# GroceryStoreDataset stills, with their boundaries known to the frame. Writes the clips
# and `truth.json` (boundaries with tolerance windows) into OUT_DIR.
#
# Usage: scripts/make_clips.sh OUT_DIR [DATA_DIR]
#   DATA_DIR holds footage/ and grocery/ (default: data/ if present, else ../shared/data).
#
# Deterministic (fixed sources, offsets, encoder settings and thread count) and
# idempotent: a clip that already exists is kept (unless an edit of this script changed
# the clips); files are written under a temporary name and renamed when complete.
#
# Every clip is 640x360, 25 fps, H.264. Frames are counted from 0. A boundary is the first
# frame of the new shot; its window is the set of frames a detector may name for it: a
# hard cut at frame c gives [c-1, c+1]; a gradual transition over output frames
# [o, o+d) gives [o-1, o+d] (any frame inside the transition, +-1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: make_clips.sh OUT_DIR [DATA_DIR]}
data=${2:-}
if [ -z "$data" ]; then
  if [ -d "$here/data/footage" ]; then data=$here/data; else data=$here/../shared/data; fi
fi
footage=$data/footage
grocery=$data/grocery
for need in "$footage/bottle-detection.mp4" "$grocery/train/Packages"; do
  [ -e "$need" ] || { echo "make_clips: $need is missing" >&2; exit 1; }
done
command -v ffmpeg >/dev/null || { echo "make_clips: ffmpeg is not installed" >&2; exit 1; }
mkdir -p "$out"
# Clips made by another version of this script are made again.
stamp=$(sha256sum "$0" | cut -c1-16)
if [ "$(cat "$out/.make_clips.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -f "$out"/{mixed,flashes,motion,gradual,holdout}.mp4 "$out/truth.json"
fi

FPS=25
NORM="scale=640:360:force_original_aspect_ratio=increase,crop=640:360,setsar=1,fps=$FPS,format=yuv420p"
# Frames to seconds at 25 fps (one frame is exactly 0.04 s).
sec() { printf '%d.%02d' $(($1 / FPS)) $((($1 % FPS) * 4)); }

pkg=$grocery/train/Packages
still_a=$pkg/Milk/Arla-Standard-Milk/Arla-Standard-Milk_005.jpg
still_b=$pkg/Juice/Bravo-Apple-Juice/Bravo-Apple-Juice_003.jpg
still_c=$pkg/Oat-Milk/Oatly-Oat-Milk/Oatly-Oat-Milk_004.jpg
still_d=$pkg/Yoghurt/Arla-Natural-Yoghurt/Arla-Natural-Yoghurt_002.jpg
for f in "$still_a" "$still_b" "$still_c" "$still_d"; do
  [ -f "$f" ] || { echo "make_clips: $f is missing" >&2; exit 1; }
done

# ---- clip builder: shots are added in order, joined by a cut or an xfade transition ----
inputs=()
graph=""
nshots=0
length=0      # frames in the assembled output so far
bounds=()     # JSON objects, one per boundary
flashes=()    # JSON objects, one per flash (not boundaries)
post=""       # filters applied to the assembled output (flashes)
pending_join=""

reset_clip() {
  inputs=(); graph=""; nshots=0; length=0; bounds=(); flashes=(); post=""; pending_join=""
}

# join KIND [FRAMES]: how the next shot joins the previous one (cut, or an xfade name).
join() { pending_join="$1 ${2:-0}"; }

# add_shot FRAMES video FILE START_SECONDS [FILTER]   a stretch of a footage file
# add_shot FRAMES still IMAGE [FILTER]                a still picture
# FILTER runs before the normalisation to 640x360, 25 fps.
add_shot() {
  local frames=$1 source=$2 filter args
  if [ "$source" = video ]; then
    args=(-ss "$4" -t 30 -i "$footage/$3")
    filter=${5:-}
  else
    args=(-loop 1 -framerate "$FPS" -t 20 -i "$3")
    filter=${4:-}
  fi
  # Each shot is one input: its index is the shot's.
  local idx=$nshots
  inputs+=("${args[@]}")
  graph+="[$idx:v]${filter:+$filter,}$NORM,trim=end_frame=$frames,setpts=PTS-STARTPTS[s$idx];"
  if [ "$idx" -eq 0 ]; then
    graph+="[s0]null[a0];"
    length=$frames
  else
    local kind d prev=$((idx - 1))
    read -r kind d <<<"$pending_join"
    if [ "$kind" = cut ]; then
      graph+="[a$prev][s$idx]concat=n=2:v=1:a=0,settb=1/$FPS[a$idx];"
      bounds+=("{\"frame\": $length, \"kind\": \"cut\", \"window\": [$((length - 1)), $((length + 1))]}")
      length=$((length + frames))
    else
      local o=$((length - d))
      graph+="[a$prev][s$idx]xfade=transition=$kind:duration=$(sec "$d"):offset=$(sec "$o")[a$idx];"
      bounds+=("{\"frame\": $((o + d / 2)), \"kind\": \"$kind\", \"window\": [$((o - 1)), $((o + d))]}")
      length=$((length + frames - d))
    fi
  fi
  nshots=$((nshots + 1))
}

# flash FIRST LAST KIND STRENGTH: brighten output frames FIRST..LAST (not a boundary).
flash() {
  local a=$1 b=$2 kind=$3 s=$4 f
  if [ "$kind" = white ]; then
    f="drawbox=x=0:y=0:w=iw:h=ih:color=white@$s:t=fill:enable='between(n,$a,$b)'"
  else
    f="eq=brightness=$s:enable='between(n,$a,$b)'"
  fi
  post+="${post:+,}$f"
  flashes+=("{\"first\": $a, \"last\": $b, \"kind\": \"$kind\", \"strength\": $s}")
}

truth_entries=()
# render NAME DESCRIPTION: encode the assembled clip (unless present) and note its truth.
render() {
  local name=$1 desc=$2 last=$((nshots - 1))
  local target=$out/$name.mp4
  if [ ! -s "$target" ]; then
    local tmp=$out/.$name.tmp.mp4
    ffmpeg -nostdin -hide_banner -loglevel error -y "${inputs[@]}" \
      -filter_complex "${graph}[a$last]${post:-null},trim=end_frame=$length,setpts=PTS-STARTPTS[out]" \
      -map "[out]" -an -c:v libx264 -preset veryfast -crf 18 -g 50 -threads 2 \
      -pix_fmt yuv420p -r $FPS -fflags +bitexact -flags:v +bitexact -map_metadata -1 "$tmp" \
      2> >(grep -v -e 'non-intra slice in an IDR' -e 'decode_slice_header error' >&2)
    mv "$tmp" "$target"
  fi
  local got
  got=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$target")
  if [ "$got" != "$length" ]; then
    echo "make_clips: $name has $got frames, expected $length" >&2
    exit 1
  fi
  local b f
  b=$(IFS=,; echo "${bounds[*]}")
  f=$(IFS=,; echo "${flashes[*]}")
  truth_entries+=("\"$name.mp4\": {\"fps\": $FPS, \"frames\": $length, \"description\": \"$desc\", \"boundaries\": [$b], \"flashes\": [$f]}")
  echo "make_clips: $name.mp4 ($length frames, ${#bounds[@]} boundaries, ${#flashes[@]} flashes)"
}

# A slow zoom over a still, like grocery_shots.mp4.
ZOOM="scale=1280:-2,zoompan=z='min(1+0.002*on,1.4)':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2':d=1:s=640x360:fps=$FPS"

# ---- mixed: dissolves, a fade through black, a wipe, a hard cut and two flashes ----
reset_clip
add_shot 100 video bottle-detection.mp4 5
join fade 25
add_shot 100 video one-by-one-person-detection.mp4 40
join fadeblack 30
add_shot 100 video box.mp4 2
join wipeleft 15
add_shot 100 video cup.mp4 1
join cut
add_shot 100 video car-detection.mp4 2
join dissolve 20
add_shot 100 still "$still_a" "$ZOOM"
flash 40 41 white 0.8
flash 250 252 brightness 0.45
render mixed "dissolve (fade) 25f, fade through black 30f, wipe 15f, hard cut, noise dissolve 20f; a 2-frame white flash and a 3-frame brightness flash"

# ---- flashes: two shots, one cut, six flashes of 1-5 frames ----
reset_clip
add_shot 150 video bottle-detection.mp4 15
join cut
add_shot 125 video box.mp4 6
flash 30 30 brightness 0.5
flash 60 61 white 0.8
flash 90 92 brightness 0.35
flash 118 122 brightness 0.3
flash 170 171 white 0.6
flash 220 220 white 1.0
render flashes "one hard cut at 150; flashes of 1, 2, 3, 5, 2 and 1 frames (eq brightness and white overlay) inside the shots"

# ---- motion: fast pan, fast-moving cars, camera shake, fast zoom; hard cuts only ----
reset_clip
# A fast diagonal pan (up to ~45 px/frame) over one still: content slides in continuously.
add_shot 125 still "$still_d" "scale=1280:-2,crop=640:360:x='(iw-ow)/2*(1-cos(n*0.1))':y='(ih-oh)/2*(1-cos(n*0.07))'"
join cut
add_shot 125 video car-detection.mp4 14
join cut
# A fast pan inside a moving video (up to ~64 px/frame at 640x360), then camera shake.
add_shot 125 video bottle-detection.mp4 20 "crop=320:180:x='160*(1-cos(n*0.2))':y='90+30*sin(n*0.5)'"
join cut
add_shot 125 video bottle-detection.mp4 28 "crop=480:270:x='80+70*sin(n*0.9)':y='45+40*sin(n*1.3)'"
join cut
add_shot 125 video box.mp4 8 "scale=1280:-2,zoompan=z='1.5+0.45*sin(on*0.25)':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2':d=1:s=640x360:fps=$FPS"
render motion "fast diagonal pan over a still, fast cars (12.5 fps source), fast pan inside a video, camera shake, fast zoom in and out; hard cuts at 125, 250, 375, 500"

# ---- gradual: one transition of each kind, 12 to 30 frames ----
reset_clip
add_shot 75 video bottle-detection.mp4 25
join fade 30
add_shot 75 still "$still_b" "$ZOOM"
join fadewhite 20
add_shot 75 video car-detection.mp4 18
join wiperight 25
add_shot 75 video one-by-one-person-detection.mp4 90
join smoothleft 15
add_shot 75 video cup.mp4 3
join circleopen 20
add_shot 75 still "$still_c" "$ZOOM"
join fadeblack 12
add_shot 75 video box.mp4 10
join dissolve 25
add_shot 75 still "$still_d" "$ZOOM"
render gradual "crossfade 30f, fade through white 20f, wipe 25f, soft wipe 15f, circle 20f, fade through black 12f, noise dissolve 25f"

# ---- holdout: other sources, offsets and transition kinds; kept out of the tuning ----
reset_clip
add_shot 80 video one-by-one-person-detection.mp4 100
join fade 18
add_shot 90 video cup.mp4 4
join fadeblack 24
add_shot 70 still "$still_c" "$ZOOM"
join cut
add_shot 80 video bottle-detection.mp4 2
join cut
add_shot 80 video bottle-detection.mp4 32 "crop=400:225:x=200:y=100"
join wipedown 20
add_shot 90 video box.mp4 12
join radial 20
add_shot 80 video car-detection.mp4 6
join fadegrays 16
add_shot 80 still "$still_a" "$ZOOM"
flash 110 113 white 0.7
flash 30 31 brightness 0.4
render holdout "not used for tuning: crossfade 18f, fade through black 24f, cut, cut between two views of one scene, wipe down 20f, radial wipe 20f, fade through grey 16f; a 4-frame white and a 2-frame brightness flash"

{
  echo "{"
  n=${#truth_entries[@]}
  for k in "${!truth_entries[@]}"; do
    sep=","; [ "$k" -eq $((n - 1)) ] && sep=""
    echo "  ${truth_entries[$k]}$sep"
  done
  echo "}"
} >"$out/.truth.json.tmp"
mv "$out/.truth.json.tmp" "$out/truth.json"
echo "$stamp" >"$out/.make_clips.stamp"
echo "make_clips: wrote $out/truth.json"
