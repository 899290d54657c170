// Prompts drawn over the image: each object's box (on its own slice), its points (green +
// foreground, red − background), and the box being dragged. Screen space, so lines stay thin
// at any zoom.

import { colorOf } from "./viewer.js";

function drawPoint(ctx, s, positive, selected) {
  const r = selected ? 6 : 5;
  ctx.beginPath();
  ctx.arc(s.x, s.y, r, 0, Math.PI * 2);
  ctx.fillStyle = positive ? "#2f9e44" : "#e03131";
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "#fff";
  ctx.stroke();
  ctx.beginPath();
  ctx.moveTo(s.x - 2.8, s.y);
  ctx.lineTo(s.x + 2.8, s.y);
  if (positive) { ctx.moveTo(s.x, s.y - 2.8); ctx.lineTo(s.x, s.y + 2.8); }
  ctx.stroke();
}

function drawBox(ctx, viewer, box, color, selected, label) {
  const a = viewer.toScreen(box[0], box[1]);
  const b = viewer.toScreen(box[2] + 1, box[3] + 1);
  ctx.lineWidth = selected ? 2 : 1.25;
  ctx.strokeStyle = color;
  ctx.setLineDash(selected ? [] : [5, 4]);
  ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
  ctx.setLineDash([]);
  if (label) {
    ctx.font = "600 11px system-ui, sans-serif";
    const w = ctx.measureText(label).width + 8;
    ctx.fillStyle = color;
    ctx.fillRect(a.x, a.y - 16, w, 16);
    ctx.fillStyle = "#0d1117";
    ctx.fillText(label, a.x + 4, a.y - 4);
  }
}

// The prompts visible on the current plane: 2D all; 3D axial only those on this slice.
export function promptOverlay(app) {
  return (ctx, viewer) => {
    if (!app.showPrompts || !app.view) return;
    const onPlane = (slice) => !app.isVolume || (app.axis === 0 && slice === app.index);
    for (const obj of app.view.objects) {
      if (app.hiddenLabels.has(obj.label)) continue;
      const color = colorOf(obj.label);
      const selected = obj.id === app.selected;
      if (obj.box && onPlane(obj.slice)) drawBox(ctx, viewer, obj.box, color, selected, selected ? obj.name : "");
      for (const p of obj.points) {
        const z = p.length === 4 ? p[2] : null;
        if (app.isVolume && !onPlane(z)) continue;
        drawPoint(ctx, viewer.toScreen(p[0] + 0.5, p[1] + 0.5), p[p.length - 1] === 1, selected);
      }
    }
    if (app.dragBox) {
      const { a, b } = app.dragBox;
      const sa = viewer.toScreen(a.x, a.y), sb = viewer.toScreen(b.x, b.y);
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(sa.x, sa.y, sb.x - sa.x, sb.y - sa.y);
      ctx.setLineDash([]);
    }
  };
}
