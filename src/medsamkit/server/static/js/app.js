// The page: holds what is shown (image, plane, objects mirrored from the server) and turns the
// user's gestures into API calls. All segmentation and interaction state lives on the server;
// changes are sent one at a time, in order.

import { api } from "./api.js";
import { attachFiles } from "./files.js";
import { attachKeys, attachPointer } from "./interact.js";
import { promptOverlay } from "./overlay.js";
import { Panels } from "./panels.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);

class App {
  constructor() {
    this.config = null;
    this.info = null;          // the open image (POST /api/images answer)
    this.view = null;          // objects, undo/redo (server state)
    this.axis = 0;
    this.index = 0;
    this.selected = null;      // object id the clicks refine (null: the next click starts one)
    this.hiddenLabels = new Set();
    this.tool = "segment";
    this.positive = true;
    this.showPrompts = true;
    this.dragBox = null;
    this.running = false;      // a propagation runs
    this.job = null;
    this.queue = Promise.resolve();
    this.pending = 0;
    this.viewer = new Viewer($("view"));
    this.viewer.overlays.push(promptOverlay(this));
    this.panels = new Panels(this);
    attachPointer(this, this.viewer);
    attachKeys(this);
    this.files = attachFiles(this);
    for (const b of document.querySelectorAll(".tool[data-tool]")) b.addEventListener("click", () => this.setTool(b.dataset.tool));
    $("polarity").addEventListener("click", () => this.togglePolarity());
    $("undo").addEventListener("click", () => this.undo());
    $("redo").addEventListener("click", () => this.redo());
    $("zoom-fit").addEventListener("click", () => this.fit());
    $("help-button").addEventListener("click", () => this.help());
    this.panels.opacity(this.viewer.opacity);
  }

  async start() {
    try {
      this.config = await api.config();
      $("model-name").textContent = this.config.model;
      $("model-name").classList.add("ok");
      $("open-data").hidden = $("drop-data").hidden = !this.config.data;
    } catch (err) {
      this.toast(err.message);
    }
  }

  get isVolume() { return !!(this.info && this.info.volume); }
  get id() { return this.info && this.info.id; }

  // --------------------------------------------------------------- feedback
  toast(message, info = false) {
    const t = $("toast");
    t.textContent = message;
    t.className = "toast" + (info ? " info" : "");
    t.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { t.hidden = true; }, info ? 2500 : 6000);
  }

  busy(text) {
    $("busy").hidden = !text;
    if (text) $("busy-text").textContent = text;
  }

  // one change at a time, in order; errors shown, never thrown
  // true when nothing is queued, sent or propagating (the browser tests wait for this)
  get idle() { return this.pending === 0 && !this.running; }

  run(label, work) {
    this.pending += 1;
    this.queue = this.queue.then(async () => {
      const timer = setTimeout(() => this.busy(label), 150);
      try {
        await work();
      } catch (err) {
        this.toast(err.message);
      } finally {
        clearTimeout(timer);
        this.busy(null);
        this.pending -= 1;
      }
    });
    return this.queue;
  }

  // --------------------------------------------------------------- opening
  async opened(info) {
    if (this.info) api.close(this.info.id).catch(() => {});
    this.info = info;
    this.view = null;
    this.selected = null;
    this.hiddenLabels.clear();
    this.axis = 0;
    this.index = info.volume ? Math.floor(info.shape[0] / 2) : 0;
    this.job = null;
    this.panels.job(null);
    $("drop").hidden = true;
    $("status-hint").hidden = false;
    $("display-panel").hidden = $("export-panel").hidden = false;
    const dims = info.volume ? `${info.shape[2]}×${info.shape[1]}×${info.shape[0]}` : `${info.shape[1]}×${info.shape[0]}`;
    const sp = info.volume ? ` · ${info.spacing.slice().reverse().map((s) => s.toFixed(2)).join("×")} mm` : "";
    $("image-title").innerHTML = "";
    const b = document.createElement("b");
    b.textContent = info.name;
    $("image-title").append(b, `${dims}${sp} · ${info.channels === 3 ? "RGB" : info.dtype}`);
    $("status-scheme").textContent = `model input: ${info.scheme.split(/[,[]/)[0].trim()}`;
    $("status-scheme").title = info.scheme;
    this.viewer.window = info.channels === 1 ? [...info.display_window] : [0, 255];
    this.viewer.fitted = false;
    this.panels.windowControls();
    this.panels.volume();
    this.panels.export();
    await this.loadPlane(false);
    this.view = await api.state(info.id);
    this.refreshPanels();
  }

  async loadPlane(keepView = true) {
    if (!this.info) return;
    const [plane, labels] = await Promise.all([api.pixels(this.id, this.axis, this.index),
      api.labels(this.id, this.axis, this.index)]);
    const sp = this.info.spacing; // z, y, x
    const aspect = this.axis === 0 ? sp[1] / sp[2] : this.axis === 1 ? sp[0] / sp[2] : sp[0] / sp[1];
    this.viewer.setPlane(plane, this.isVolume ? aspect : 1, this.axis !== 0, keepView);
    this.viewer.setLabels(labels);
  }

  async refreshLabels() {
    this.viewer.setLabels(await api.labels(this.id, this.axis, this.index));
  }

  refreshPanels() {
    if (this.view && this.selected !== null && !this.view.objects.some((o) => o.id === this.selected)) this.selected = null;
    this.panels.objects();
    this.viewer.draw();
  }

  async changed(view) {
    this.view = view;
    await this.refreshLabels();
    this.refreshPanels();
  }

  // --------------------------------------------------------------- prompts
  planeIsEditable() {
    if (!this.info) return false;
    if (this.isVolume && this.axis !== 0) {
      this.toast("Draw boxes and click on axial slices (press 1)", true);
      return false;
    }
    if (this.running) {
      this.toast("A propagation is running: wait for it or cancel it (Esc)", true);
      return false;
    }
    return true;
  }

  addBox(a, b) {
    if (!this.planeIsEditable()) return;
    const { width, height } = this.viewer.plane;
    const clampX = (v) => Math.min(width - 1, Math.max(0, Math.floor(v)));
    const clampY = (v) => Math.min(height - 1, Math.max(0, Math.floor(v)));
    const box = [clampX(Math.min(a.x, b.x)), clampY(Math.min(a.y, b.y)), clampX(Math.max(a.x, b.x)), clampY(Math.max(a.y, b.y))];
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return;
    const body = { box, ...this.nextLabel() };
    if (this.isVolume) body.slice = this.index;
    this.run("Segmenting…", async () => {
      const view = await api.addObject(this.id, body);
      this.selected = view.objects[view.objects.length - 1].id;
      await this.changed(view);
    });
  }

  addPoint(q, positive) {
    if (!this.planeIsEditable()) return;
    if (!this.viewer.inside(q.x, q.y)) return;
    const x = Math.floor(q.x), y = Math.floor(q.y);
    const slice = this.isVolume ? this.index : undefined;
    this.run("Refining…", async () => {
      let view;
      if (this.selected === null) {
        if (!positive) { this.toast("Start an object with a box or a foreground click", true); return; }
        view = await api.addObject(this.id, { points: [[x, y, 1]], slice, ...this.nextLabel() });
        this.selected = view.objects[view.objects.length - 1].id;
      } else {
        view = await api.addPoint(this.id, this.selected, { x, y, positive, slice });
      }
      await this.changed(view);
    });
  }

  // the label id typed for the next object (used once), or nothing: the server picks the next free one
  nextLabel() {
    const input = $("next-label");
    const value = Number(input.value);
    input.value = "";
    return Number.isInteger(value) && value >= 1 && value <= 65535 ? { label: value } : {};
  }

  undo() { if (this.info && !this.running) this.run("Undo…", async () => this.changed(await api.undo(this.id))); }
  redo() { if (this.info && !this.running) this.run("Redo…", async () => this.changed(await api.redo(this.id))); }
  clear() { if (this.info && !this.running) this.run("Clearing…", async () => this.changed(await api.clear(this.id))); }
  remove(obj) { if (!this.running) this.run("Removing…", async () => this.changed(await api.remove(this.id, obj))); }
  removeSelected() { if (this.selected !== null) this.remove(this.selected); }
  rename(obj, name) { if (name.trim()) this.run("", async () => { this.view = await api.rename(this.id, obj, name.trim()); this.refreshPanels(); }); }

  setRange(z0, z1) {
    const obj = this.selected, current = this.selectedObject();
    if (obj === null || this.running || !current || (current.target[0] === z0 && current.target[1] === z1)) return;
    this.run("Updating…", async () => this.changed(await api.setRange(this.id, obj, [z0, z1])));
  }

  // --------------------------------------------------------------- objects shown
  selectedObject() {
    return this.view && this.selected !== null ? this.view.objects.find((o) => o.id === this.selected) : null;
  }

  select(id) {
    this.selected = id;
    this.refreshPanels();
    const obj = this.selectedObject();
    if (obj && this.isVolume && this.axis === 0 && obj.slice !== null && obj.slice !== undefined && obj.slice !== this.index) {
      this.setSlice(obj.slice);
    }
  }

  selectIndex(i) { if (this.view && this.view.objects[i]) this.select(this.view.objects[i].id); }

  selectNext(step) {
    if (!this.view || !this.view.objects.length) return;
    const ids = this.view.objects.map((o) => o.id);
    const at = ids.indexOf(this.selected);
    this.select(ids[(at + step + ids.length) % ids.length]);
  }

  toggleVisible(label) {
    if (this.hiddenLabels.has(label)) this.hiddenLabels.delete(label); else this.hiddenLabels.add(label);
    this.viewer.hidden = this.hiddenLabels;
    this.viewer.renderLabels();
    this.refreshPanels();
  }

  toggleSelectedVisible() { const o = this.selectedObject(); if (o) this.toggleVisible(o.label); }
  toggleMasks() { this.viewer.masksVisible = !this.viewer.masksVisible; this.viewer.draw(); }

  // --------------------------------------------------------------- display
  setTool(tool) {
    this.tool = tool;
    for (const b of document.querySelectorAll(".tool[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
    const canvas = this.viewer.canvas;
    canvas.classList.toggle("pan", tool === "pan");
    canvas.classList.toggle("window", tool === "window");
  }

  togglePolarity() {
    this.positive = !this.positive;
    $("polarity").innerHTML = this.positive ? '<span class="plus">+</span>' : '<span class="minus">−</span>';
  }

  setWindow(lo, hi) {
    if (!this.info || this.info.channels !== 1) return;
    this.viewer.setWindow(lo, hi);
    this.panels.windowValues();
  }

  setOpacity(v) {
    this.viewer.opacity = Math.min(1, Math.max(0, v));
    this.panels.opacity(this.viewer.opacity);
    this.viewer.renderLabels();
    this.viewer.draw();
  }

  changeOpacity(d) { this.setOpacity(Math.round((this.viewer.opacity + d) * 20) / 20); }
  setOutline(on) { this.viewer.outline = on; this.viewer.renderLabels(); this.viewer.draw(); }
  setShowPrompts(on) { this.showPrompts = on; this.viewer.draw(); }
  fit() { this.viewer.fit(); this.showZoom(); }

  zoomBy(f) {
    const c = this.viewer.canvas;
    this.viewer.zoomAt(f, c.clientWidth / 2, c.clientHeight / 2);
    this.showZoom();
  }

  showZoom() { $("status-zoom").textContent = `zoom ${Math.round(this.viewer.zoom * 100)} %`; }

  hover(q) {
    if (!q || !this.viewer.inside(q.x, q.y)) { $("status-pos").textContent = "–"; $("status-value").textContent = ""; return; }
    const x = Math.floor(q.x), y = Math.floor(q.y);
    const pos = !this.isVolume ? `x ${x}  y ${y}`
      : this.axis === 0 ? `x ${x}  y ${y}  z ${this.index}`
        : this.axis === 1 ? `x ${x}  y ${this.index}  z ${y}` : `x ${this.index}  y ${x}  z ${y}`;
    $("status-pos").textContent = pos;
    const v = this.viewer.valueAt(q.x, q.y);
    $("status-value").textContent = v === null ? "" : Array.isArray(v) ? `RGB ${v.join(", ")}` : `value ${Number(v.toFixed(2))}`;
  }

  // --------------------------------------------------------------- volumes
  setAxis(axis) {
    if (!this.isVolume || axis === this.axis) return;
    this.axis = axis;
    this.index = Math.floor(this.info.shape[axis] / 2);
    this.panels.volume();
    this.run("", () => this.loadPlane(false));
  }

  setSlice(index) {
    if (!this.isVolume) return;
    const n = this.info.shape[this.axis];
    const next = Math.min(n - 1, Math.max(0, index));
    if (next === this.index) return;
    this.index = next;
    this.panels.volume();
    if (this.sliceQueued) return; // the queued load reads the latest index
    this.sliceQueued = true;
    this.run("", async () => {
      this.sliceQueued = false;
      await this.loadPlane(true);
    });
  }

  stepSlice(d) { this.setSlice(this.index + d); }

  propagate() {
    if (!this.isVolume || this.running || !this.view || !this.view.stale) return;
    this.run("Starting…", async () => {
      const job = await api.propagate(this.id);
      this.running = true;
      this.job = job;
      this.panels.job(job);
      this.refreshPanels();
      this.follow(job.id);
    });
  }

  // the propagation's progress; its result (all slices at once) is shown when it ends
  async follow(jobId) {
    let end = null;
    try {
      await api.follow(this.id, jobId, (kind, status) => {
        this.panels.job(status);
        if (kind === "end") end = status;
      });
    } catch (err) {
      this.toast(err.message);
    }
    if (end && end.state === "error") this.toast(end.message);
    if (end && end.state === "cancelled") this.toast("Propagation cancelled: the objects are as they were", true);
    this.view = await api.state(this.id).catch(() => this.view);
    await this.refreshLabels().catch(() => {});
    this.running = false;
    this.refreshPanels();
  }

  cancel() {
    if (this.running && this.job) api.cancel(this.id, this.job.id).catch((e) => this.toast(e.message));
  }

  escape() {
    if (this.running) this.cancel();
    else if (this.dragBox) { this.dragBox = null; this.viewer.draw(); } else this.select(null);
  }

  // --------------------------------------------------------------- export, dialogs
  downloadLabels() { if (this.info) this.run("Preparing…", () => api.download(`/api/images/${this.id}/download`, this.info.output)); }
  downloadPrompts() { if (this.info) this.run("Preparing…", () => api.download(`/api/images/${this.id}/prompts`, "prompts.json")); }
  openDialog() { this.files.choose(); }
  help() { $("help-dialog").showModal(); }
}

const app = new App();
window.medsamkit = app; // for the browser tests and the console
app.start();
