// The image view: one plane of the image with its label map, prompts, zoom and pan.
// Image coordinates are pixels of the plane (x right, y down; pixel i spans [i, i+1)).
// Planes with non-square pixels (coronal/sagittal of an anisotropic volume) are stretched by
// `aspect` (row spacing / column spacing) so the anatomy keeps its shape.

export const PALETTE = ["#3ddc97", "#ff6b6b", "#4dabf7", "#ffd43b", "#da77f2", "#ff922b", "#22d3ee",
  "#f783ac", "#a9e34b", "#748ffc", "#e599f7", "#63e6be"];

export function colorOf(label) {
  return PALETTE[(label - 1) % PALETTE.length];
}

function rgbOf(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.imageLayer = document.createElement("canvas");
    this.labelLayer = document.createElement("canvas");
    this.plane = null;       // {width, height, channels, data}
    this.labels = null;      // {width, height, data: Uint16Array}
    this.aspect = 1;
    this.flipY = false;      // coronal/sagittal: higher slices at the top
    this.window = [0, 255];
    this.opacity = 0.45;
    this.outline = true;
    this.masksVisible = true;
    this.smooth = true;      // interpolate the image (never the labels)
    this.hidden = new Set(); // label ids not drawn
    this.zoom = 1;
    this.pan = [0, 0];       // screen offset (CSS px) of image pixel (0, 0)
    this.overlays = [];      // functions (ctx, viewer) drawing prompts in screen space
    this.resize();
    new ResizeObserver(() => { this.resize(); this.draw(); }).observe(canvas);
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const { clientWidth: w, clientHeight: h } = this.canvas;
    this.canvas.width = Math.max(1, Math.round(w * dpr));
    this.canvas.height = Math.max(1, Math.round(h * dpr));
    this.dpr = dpr;
    if (this.plane && !this.fitted) this.fit();
  }

  setPlane(plane, aspect = 1, flipY = false, keepView = false) {
    const sameSize = this.plane && this.plane.width === plane.width && this.plane.height === plane.height
      && this.aspect === aspect;
    this.plane = plane;
    this.aspect = aspect;
    this.flipY = flipY;
    this.renderImage();
    if (!(keepView && sameSize)) this.fit();
  }

  setWindow(lo, hi) {
    this.window = [lo, Math.max(hi, lo + 1e-6)];
    this.renderImage();
    this.draw();
  }

  setLabels(labels) {
    this.labels = labels;
    this.renderLabels();
    this.draw();
  }

  renderImage() {
    const p = this.plane;
    if (!p) return;
    const layer = this.imageLayer;
    layer.width = p.width;
    layer.height = p.height;
    const lctx = layer.getContext("2d");
    const out = lctx.createImageData(p.width, p.height);
    const px = out.data;
    const [lo, hi] = this.window;
    const scale = 255 / (hi - lo);
    const n = p.width * p.height;
    for (let i = 0; i < n; i++) {
      const src = this.flipY ? (p.height - 1 - Math.floor(i / p.width)) * p.width + (i % p.width) : i;
      const o = i * 4;
      if (p.channels === 3) {
        px[o] = p.data[src * 3]; px[o + 1] = p.data[src * 3 + 1]; px[o + 2] = p.data[src * 3 + 2];
      } else {
        let v = (p.data[src] - lo) * scale;
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        px[o] = px[o + 1] = px[o + 2] = v;
      }
      px[o + 3] = 255;
    }
    lctx.putImageData(out, 0, 0);
  }

  renderLabels() {
    const lab = this.labels;
    const layer = this.labelLayer;
    if (!lab) { layer.width = layer.height = 0; return; }
    layer.width = lab.width;
    layer.height = lab.height;
    const lctx = layer.getContext("2d");
    const out = lctx.createImageData(lab.width, lab.height);
    const px = out.data;
    const w = lab.width, h = lab.height, d = lab.data;
    const fill = Math.round(this.opacity * 255);
    const colors = new Map();
    const at = (x, y) => d[(this.flipY ? h - 1 - y : y) * w + x];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = at(x, y);
        if (v === 0 || this.hidden.has(v)) continue;
        let rgb = colors.get(v);
        if (!rgb) { rgb = rgbOf(colorOf(v)); colors.set(v, rgb); }
        const edge = this.outline && (x === 0 || y === 0 || x === w - 1 || y === h - 1
          || at(x - 1, y) !== v || at(x + 1, y) !== v || at(x, y - 1) !== v || at(x, y + 1) !== v);
        const o = (y * w + x) * 4;
        px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2];
        px[o + 3] = edge ? 255 : fill;
      }
    }
    lctx.putImageData(out, 0, 0);
  }

  // ------------------------------------------------------------------ view transform
  fit() {
    if (!this.plane) return;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (!w || !h) return;
    const iw = this.plane.width, ih = this.plane.height * this.aspect;
    this.zoom = Math.min(w / iw, h / ih) * 0.94;
    this.pan = [(w - iw * this.zoom) / 2, (h - ih * this.zoom) / 2];
    this.fitted = true;
    this.draw();
  }

  zoomAt(factor, sx, sy) {
    const z = Math.min(64, Math.max(0.05, this.zoom * factor));
    const f = z / this.zoom;
    this.pan = [sx - (sx - this.pan[0]) * f, sy - (sy - this.pan[1]) * f];
    this.zoom = z;
    this.draw();
  }

  panBy(dx, dy) {
    this.pan = [this.pan[0] + dx, this.pan[1] + dy];
    this.draw();
  }

  // screen (CSS px in the canvas) <-> plane pixels; y counts rows of the stored plane
  toImage(sx, sy) {
    const x = (sx - this.pan[0]) / this.zoom;
    let y = (sy - this.pan[1]) / (this.zoom * this.aspect);
    if (this.flipY && this.plane) y = this.plane.height - y;
    return { x, y };
  }

  toScreen(x, y) {
    if (this.flipY && this.plane) y = this.plane.height - y;
    return { x: this.pan[0] + x * this.zoom, y: this.pan[1] + y * this.zoom * this.aspect };
  }

  inside(x, y) {
    return this.plane && x >= 0 && y >= 0 && x < this.plane.width && y < this.plane.height;
  }

  valueAt(x, y) {
    const p = this.plane;
    if (!this.inside(x, y)) return null;
    const i = Math.floor(y) * p.width + Math.floor(x);
    return p.channels === 3 ? [p.data[i * 3], p.data[i * 3 + 1], p.data[i * 3 + 2]] : p.data[i];
  }

  draw() {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.plane) return;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const w = this.plane.width * this.zoom, h = this.plane.height * this.zoom * this.aspect;
    ctx.imageSmoothingEnabled = this.smooth;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(this.imageLayer, this.pan[0], this.pan[1], w, h);
    if (this.masksVisible && this.labelLayer.width) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.labelLayer, this.pan[0], this.pan[1], w, h);
    }
    for (const overlay of this.overlays) overlay(ctx, this);
  }
}
