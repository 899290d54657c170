// The side panels: objects, volume (slices, propagation), display (window/level, opacity),
// export. They show the app's state and send the user's changes back to `app`.

import { colorOf } from "./viewer.js";

const $ = (id) => document.getElementById(id);

const EYE = '<svg viewBox="0 0 24 24"><path d="M2 12s4-7 10-7 10 7 10 7-4 7-10 7S2 12 2 12z"/><circle cx="12" cy="12" r="3"/></svg>';
const EYE_OFF = '<svg viewBox="0 0 24 24"><path d="M3 3l18 18M10.6 5.1A10 10 0 0 1 12 5c6 0 10 7 10 7a17 17 0 0 1-3.2 3.9M6.5 6.6C3.8 8.4 2 12 2 12s4 7 10 7a9.6 9.6 0 0 0 4.4-1"/></svg>';
const TRASH = '<svg viewBox="0 0 24 24"><path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13"/></svg>';

function fmt(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(1) : v.toPrecision(2);
}

export class Panels {
  constructor(app) {
    this.app = app;
    $("new-object").addEventListener("click", () => app.select(null));
    $("clear").addEventListener("click", () => app.clear());
    $("opacity").addEventListener("input", (e) => app.setOpacity(Number(e.target.value)));
    $("outline").addEventListener("change", (e) => app.setOutline(e.target.checked));
    $("show-prompts").addEventListener("change", (e) => app.setShowPrompts(e.target.checked));
    $("level").addEventListener("input", () => this.windowFromSliders());
    $("width").addEventListener("input", () => this.windowFromSliders());
    $("slice").addEventListener("input", (e) => app.setSlice(Number(e.target.value)));
    $("propagate").addEventListener("click", () => app.propagate());
    $("cancel").addEventListener("click", () => app.cancel());
    const applyRange = () => app.setRange(Number($("z0").value), Number($("z1").value));
    $("range-apply").addEventListener("click", applyRange);
    $("z0").addEventListener("change", applyRange);
    $("z1").addEventListener("change", applyRange);
    $("download-labels").addEventListener("click", () => app.downloadLabels());
    $("download-prompts").addEventListener("click", () => app.downloadPrompts());
    for (const b of $("axis-buttons").querySelectorAll("button")) {
      b.addEventListener("click", () => app.setAxis(Number(b.dataset.axis)));
    }
  }

  // ------------------------------------------------------------------ objects
  objects() {
    const app = this.app;
    const list = $("objects");
    const objects = app.view ? app.view.objects : [];
    list.replaceChildren();
    for (const obj of objects) {
      const li = document.createElement("li");
      const hidden = app.hiddenLabels.has(obj.label);
      li.className = "object" + (obj.id === app.selected ? " selected" : "") + (hidden ? " hidden-object" : "");
      li.dataset.id = obj.id;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colorOf(obj.label);
      const name = document.createElement("input");
      name.className = "name";
      name.value = obj.name;
      name.title = "Rename";
      name.addEventListener("change", () => app.rename(obj.id, name.value));
      name.addEventListener("keydown", (e) => { if (e.key === "Enter") name.blur(); });
      const meta = document.createElement("span");
      meta.className = "meta";
      const clicks = obj.points.length ? ` · ${obj.points.length} pt` : "";
      meta.textContent = `#${obj.label}${clicks}`;
      meta.title = `label ${obj.label}` + (obj.z_range ? `, slices ${obj.z_range[0]}–${obj.z_range[1]}` : "");
      const eye = document.createElement("button");
      eye.className = "icon";
      eye.title = hidden ? "Show (V)" : "Hide (V)";
      eye.innerHTML = hidden ? EYE_OFF : EYE;
      eye.addEventListener("click", (e) => { e.stopPropagation(); app.toggleVisible(obj.label); });
      const del = document.createElement("button");
      del.className = "icon";
      del.title = "Remove (Del)";
      del.innerHTML = TRASH;
      del.addEventListener("click", (e) => { e.stopPropagation(); app.remove(obj.id); });
      li.append(swatch, name, meta, eye, del);
      li.addEventListener("click", () => app.select(obj.id));
      list.append(li);
    }
    $("object-count").textContent = objects.length ? String(objects.length) : "";
    $("objects-empty").hidden = objects.length > 0;
    $("objects-empty").textContent = app.selected === null && objects.length
      ? "The next click starts a new object." : "Drag a box on the image to segment a structure.";
    if (objects.length) $("objects-empty").hidden = app.selected !== null;
    $("clear").disabled = !objects.length || app.running;
    $("undo").disabled = !(app.view && app.view.can_undo) || app.running;
    $("redo").disabled = !(app.view && app.view.can_redo) || app.running;
    $("download-labels").disabled = !objects.length;
    $("download-prompts").disabled = !objects.length;
    this.range();
  }

  // ------------------------------------------------------------------ volume
  volume() {
    const app = this.app;
    $("volume-panel").hidden = !app.isVolume;
    if (!app.isVolume) return;
    const n = app.info.shape[app.axis];
    const slider = $("slice");
    slider.max = String(n - 1);
    slider.value = String(app.index);
    $("slice-label").textContent = `${app.index}  (0–${n - 1})`;
    for (const b of $("axis-buttons").querySelectorAll("button")) {
      b.classList.toggle("active", Number(b.dataset.axis) === app.axis);
    }
    const badge = $("slice-badge");
    badge.hidden = false;
    badge.textContent = `${["Axial z", "Coronal y", "Sagittal x"][app.axis]} ${app.index} / ${n - 1}`;
    this.range();
  }

  range() {
    const app = this.app;
    const obj = app.selectedObject();
    const row = $("range-row");
    row.hidden = !(app.isVolume && obj && obj.target);
    if (!row.hidden) {
      $("object-range-name").textContent = obj.name;
      const n = app.info.shape[0] - 1;
      for (const [id, v] of [["z0", obj.target[0]], ["z1", obj.target[1]]]) {
        const input = $(id);
        input.max = String(n);
        if (document.activeElement !== input) input.value = String(v);
      }
    }
    $("propagate").disabled = !(app.view && app.view.stale) || app.running;
  }

  job(status) {
    const running = status && status.state === "running";
    $("propagate").hidden = !!running;
    $("cancel").hidden = !running;
    $("progress").hidden = !status;
    if (!status) return;
    const pct = status.total ? Math.round((100 * status.done) / status.total) : 0;
    $("progress-bar").style.width = `${pct}%`;
    const text = running ? `${status.done} / ${status.total} slices · ${pct}%`
      : status.state === "done" ? `Done: ${status.done} slices in ${status.seconds.toFixed(1)} s`
        : status.state === "cancelled" ? `Cancelled after ${status.done} slices` : `Failed: ${status.message}`;
    $("progress-text").textContent = text;
  }

  // ------------------------------------------------------------------ display
  windowControls() {
    const app = this.app;
    const grey = app.info && app.info.channels === 1;
    $("window-controls").hidden = !grey;
    if (!grey) return;
    const [vmin, vmax] = app.info.value_range;
    const span = Math.max(vmax - vmin, 1);
    const level = $("level"), width = $("width");
    level.min = String(vmin - span * 0.1);
    level.max = String(vmax + span * 0.1);
    width.min = String(span / 500);
    width.max = String(span * 2);
    const presets = $("presets");
    presets.replaceChildren();
    const add = (name, lo, hi, title) => {
      const b = document.createElement("button");
      b.textContent = name;
      b.title = title;
      b.dataset.window = `${lo},${hi}`;
      b.addEventListener("click", () => app.setWindow(lo, hi));
      presets.append(b);
    };
    const [d0, d1] = app.info.display_window;
    add("default", d0, d1, "The window the model sees");
    add("full", vmin, vmax, "The whole value range");
    if (app.info.ct || vmin < -100) { // values in Hounsfield units: the CT windows apply
      for (const [name, [l, w]] of Object.entries(app.config.window_presets)) {
        add(name, l - w / 2, l + w / 2, `CT ${name}: level ${l}, width ${w} HU`);
      }
    }
    this.windowValues();
  }

  windowValues() {
    const [lo, hi] = this.app.viewer.window;
    $("level").value = String((lo + hi) / 2);
    $("width").value = String(hi - lo);
    $("level-value").textContent = fmt((lo + hi) / 2);
    $("width-value").textContent = fmt(hi - lo);
    for (const b of $("presets").querySelectorAll("button")) {
      const [a, c] = b.dataset.window.split(",").map(Number);
      b.classList.toggle("active", Math.abs(a - lo) < 1e-6 * Math.max(1, Math.abs(a)) && Math.abs(c - hi) < 1e-6 * Math.max(1, Math.abs(c)));
    }
  }

  windowFromSliders() {
    const level = Number($("level").value), width = Number($("width").value);
    this.app.setWindow(level - width / 2, level + width / 2);
  }

  opacity(value) {
    $("opacity").value = String(value);
    $("opacity-value").textContent = `${Math.round(value * 100)} %`;
  }

  export() {
    const app = this.app;
    const info = app.info;
    if (!info) { $("replay").textContent = "–"; return; }
    const prompts = info.output.replace(/_labels(\.[a-z.]+)$/, "_prompts.json");
    const input = /\.zip$/i.test(info.name) ? info.name.replace(/\.zip$/i, "/") : info.name;
    // one option a line (shell continuations): it reads well in the narrow panel and pastes as is
    const lines = [`medsamkit segment ${input}`, `--boxes-file ${prompts}`];
    if (info.modality) lines.push(`--modality ${info.modality}`);
    if (info.window) lines.push(`--window ${info.window}`);
    lines.push(`-o ${info.output}`);
    $("replay").textContent = lines.join(" \\\n  ");
  }
}
