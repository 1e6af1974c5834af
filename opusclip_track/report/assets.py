"""The page's stylesheet and script, inlined into every report (no network, no CDN).

The script does three things in under 50 lines: the smoothing and log-scale checkboxes (one CSS class on
`<body>` each), and the lock-step clip player: one play/pause, frame stepping and a frame slider drive every
clip of a gallery through the same frame index. Clips never play on their own clocks; each tick seeks every
clip to the middle of frame k and the next tick waits until all of them have finished seeking, so two clips
can never show different frames however slowly one of them decodes.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1240px; margin: 0 auto; padding: 18px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid
var(--line); padding-bottom: 4px; } h3 { font-size: 14px; margin: 16px 0 6px; }
.sub, .note, figcaption .nolog { color: var(--muted); font-size: 12px; }
nav a { margin-right: 12px; color: #0969da; text-decoration: none; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px 4px 0; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; } td.num { white-space: nowrap; }
.scroll { overflow-x: auto; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.badge { padding: 1px 7px; border-radius: 10px; font-size: 12px; background: var(--soft); border: 1px solid
var(--line); } .badge.failed, .badge.unreadable { background: #ffebe9; border-color: #ff8182; color: #a40e26; }
.badge.finished { background: #dafbe1; border-color: #4ac26b; color: #116329; }
.badge.running { background: #fff8c5; border-color: #d4a72c; color: #7d4e00; }
.alerts .alert { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 6px 10px; margin: 4px 0; }
.alerts .alert.error { border-color: #cf222e; background: #ffebe9; }
.alerts .alert.info { border-color: #0969da; background: #ddf4ff; }
.findings { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; }
.findings li { margin: 3px 0; }
.controls { position: sticky; top: 0; background: var(--bg); padding: 6px 0; z-index: 2; }
.controls label { margin-right: 16px; }
.legend span { margin-right: 14px; white-space: nowrap; font-size: 13px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 10px 18px; }
figure.chart { margin: 0; } figure.chart svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; margin-bottom: 2px; }
svg text { font-size: 12.5px; fill: var(--muted); } svg text.label { font-size: 12.5px; }
svg .axis line { stroke: #8c959f; stroke-width: 1; } svg line.grid { stroke: #eaeef2; }
svg path.raw, svg path.smooth { fill: none; stroke-width: 1.6; stroke-linejoin: round; }
svg path.raw { opacity: 0.28; } svg path.raw.exact { opacity: 1; }
body.smooth-off svg path.raw { opacity: 1; } body.smooth-off svg path.smooth { display: none; }
figure.chart .scale-log { display: none; }
body.logy figure.chart[data-log="1"] .scale-log { display: inline; }
body.logy figure.chart[data-log="1"] .scale-lin { display: none; }
.gallery { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin: 8px 0 16px; }
.gallery .clips { display: flex; flex-wrap: wrap; gap: 14px; margin-top: 8px; }
.gallery figure { margin: 0; text-align: center; font-size: 12px; }
.gallery video { display: block; height: 200px; max-width: 100%; image-rendering: pixelated; background: #000; }
.gallery .missing { height: 200px; width: 160px; display: flex; align-items: center; justify-content: center;
                    background: var(--soft); color: var(--muted); padding: 8px; }
.player button { font: inherit; padding: 2px 10px; margin-right: 4px; }
.player input[type=range] { width: 320px; vertical-align: middle; }
.sentence { margin: 4px 0 8px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""

SCRIPT = """
"use strict";
(() => {
  const toggle = (id, cls, on) => {
    const box = document.getElementById(id);
    if (!box) return;
    const apply = () => document.body.classList.toggle(cls, box.checked === on);
    box.addEventListener("change", apply);
    apply();
  };
  toggle("smooth", "smooth-off", false);
  toggle("logy", "logy", true);

  for (const gallery of document.querySelectorAll(".gallery")) {
    const clips = [...gallery.querySelectorAll("video")];
    const slider = gallery.querySelector("input[type=range]");
    const label = gallery.querySelector(".frame-label");
    const play = gallery.querySelector("button.play");
    const fps = Number(gallery.dataset.fps), frames = Number(gallery.dataset.frames);
    let frame = 0, timer = null;
    const show = (next) => {
      frame = ((next % frames) + frames) % frames;
      gallery.dataset.frame = String(frame);
      slider.value = String(frame);
      label.textContent = `frame ${frame + 1} / ${frames}`;
      for (const clip of clips) {
        const own = Math.min(frame, Number(clip.dataset.frames) - 1);
        clip.currentTime = (own + 0.5) / Number(clip.dataset.fps);  // the middle of the frame: no rounding
      }
    };
    const settled = () => clips.every((clip) => !clip.seeking && clip.readyState >= 2);
    const tick = () => {
      if (settled()) show(frame + 1);  // a clip still decoding holds everyone on this frame
      timer = setTimeout(tick, 1000 / fps);
    };
    const stop = () => { clearTimeout(timer); timer = null; play.textContent = "Play"; };
    play.addEventListener("click", () => {
      if (timer !== null) { stop(); return; }
      play.textContent = "Pause";
      timer = setTimeout(tick, 1000 / fps);
    });
    gallery.querySelector("button.prev").addEventListener("click", () => { stop(); show(frame - 1); });
    gallery.querySelector("button.next").addEventListener("click", () => { stop(); show(frame + 1); });
    slider.addEventListener("input", () => { stop(); show(Number(slider.value)); });
    show(0);
  }
})();
"""
