// Page-side half of the timed-metadata test (tests/web.rs, issue 5.5): plays a stream with
// hls.js (global `Hls`, from /vendor/hls.min.js) with date-range and ID3 metadata cues on,
// and records every metadata TextTrack cue, when each one is entered (with hls.playingDate)
// and the fragments' program date times, into window.meta.
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

function dataOf(v) {
  if (v === undefined || v === null) return null;
  if (v instanceof ArrayBuffer) return { hex: hex(v) };
  if (ArrayBuffer.isView(v)) return { hex: hex(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength)) };
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function describe(cue) {
  const v = cue.value || {};
  return {
    type: cue.type ?? null,
    id: cue.id || null,
    start: cue.startTime,
    end: Number.isFinite(cue.endTime) && cue.endTime < 1e300 ? cue.endTime : null,
    key: v.key ?? null,
    info: v.info ?? null,
    data: dataOf(v.data),
  };
}

export function start(src) {
  const video = document.createElement('video');
  video.muted = true;
  video.autoplay = true;
  document.body.append(video);
  const hls = new Hls({ enableDateRangeMetadataCues: true, enableID3MetadataCues: true });
  const all = [];
  const seen = new Set();
  const enters = [];
  const errors = [];
  hls.on(Hls.Events.ERROR, (_, d) => errors.push(`${d.fatal ? 'fatal ' : ''}${d.details}`));
  hls.loadSource(src);
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((e) => errors.push(`play: ${e.message}`)));
  const poll = () => {
    for (const track of video.textTracks) {
      if (track.kind !== 'metadata') continue;
      for (const cue of track.cues || []) {
        if (seen.has(cue)) continue;
        seen.add(cue);
        all.push(cue);
        cue.addEventListener('enter', () => {
          const d = hls.playingDate;
          enters.push({ ...describe(cue), currentTime: video.currentTime, playingDate: d ? d.getTime() : null });
        });
      }
    }
  };
  setInterval(poll, 20);
  window.meta = {
    hls,
    video,
    summary: () => {
      const details = hls.latestLevelDetails || hls.levels[Math.max(hls.currentLevel, 0)]?.details;
      return {
        cues: all.map(describe),
        enters,
        errors,
        currentTime: video.currentTime,
        playingDate: hls.playingDate ? hls.playingDate.getTime() : null,
        frags: (details?.fragments || []).map((f) => ({
          sn: f.sn, start: f.start, duration: f.duration, pdt: f.programDateTime,
        })),
      };
    },
  };
  return true;
}
