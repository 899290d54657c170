// Mouse, wheel and keyboard on the image view. Gestures become calls on `app` (app.js):
// drag -> a box (a new object), click -> a foreground point, Alt/right click -> a background
// point, middle drag / Space+drag / pan tool -> pan, Shift+drag / window tool -> window/level.

const DRAG_PX = 4; // a press that moves less than this is a click

export function attachPointer(app, viewer) {
  const canvas = viewer.canvas;
  let gesture = null; // {kind, start, last, button, alt}
  let spaceDown = false;
  let wheelSum = 0;

  const local = (event) => {
    const r = canvas.getBoundingClientRect();
    return { x: event.clientX - r.left, y: event.clientY - r.top };
  };

  canvas.addEventListener("contextmenu", (e) => e.preventDefault());

  canvas.addEventListener("pointerdown", (event) => {
    if (!viewer.plane) return;
    canvas.focus();
    canvas.setPointerCapture(event.pointerId);
    const p = local(event);
    let kind = "segment";
    if (event.button === 1 || spaceDown || app.tool === "pan") kind = "pan";
    else if (event.shiftKey || app.tool === "window") kind = "window";
    else if (event.button === 2) kind = "background";
    gesture = { kind, start: p, last: p, moved: false, alt: event.altKey, button: event.button,
                window: [...viewer.window] };
    if (kind === "pan") canvas.classList.add("panning");
    event.preventDefault();
  });

  canvas.addEventListener("pointermove", (event) => {
    const p = local(event);
    app.hover(viewer.toImage(p.x, p.y));
    if (!gesture) return;
    const dx = p.x - gesture.start.x, dy = p.y - gesture.start.y;
    if (Math.hypot(dx, dy) >= DRAG_PX) gesture.moved = true;
    if (gesture.kind === "pan") {
      viewer.panBy(p.x - gesture.last.x, p.y - gesture.last.y);
    } else if (gesture.kind === "window") {
      const [lo, hi] = gesture.window;
      const span = Math.max(hi - lo, 1e-6);
      const width = Math.max(span * Math.exp(dx / 250), 1e-6);
      const level = (lo + hi) / 2 - (dy / 250) * span;
      app.setWindow(level - width / 2, level + width / 2);
    } else if (gesture.kind === "segment" && gesture.moved) {
      app.dragBox = { a: viewer.toImage(gesture.start.x, gesture.start.y), b: viewer.toImage(p.x, p.y) };
      viewer.draw();
    }
    gesture.last = p;
  });

  const finish = (event) => {
    if (!gesture) return;
    const g = gesture;
    gesture = null;
    canvas.classList.remove("panning");
    const p = local(event);
    if (g.kind === "segment" && g.moved) {
      const a = viewer.toImage(g.start.x, g.start.y), b = viewer.toImage(p.x, p.y);
      app.dragBox = null;
      app.addBox(a, b);
    } else if ((g.kind === "segment" || g.kind === "background") && !g.moved) {
      const q = viewer.toImage(p.x, p.y);
      app.addPoint(q, g.kind === "segment" && !g.alt && app.positive);
    }
    viewer.draw();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", () => { gesture = null; app.dragBox = null; viewer.draw(); });
  canvas.addEventListener("pointerleave", () => app.hover(null));

  canvas.addEventListener("wheel", (event) => {
    if (!viewer.plane) return;
    event.preventDefault();
    const p = local(event);
    if (app.isVolume && !event.ctrlKey && !event.metaKey) {
      // a mouse wheel notch is about 100; trackpads send many small deltas: one slice per 50
      wheelSum += event.deltaMode === 1 ? event.deltaY * 40 : event.deltaY;
      const steps = Math.trunc(wheelSum / 50);
      if (steps) {
        wheelSum -= steps * 50;
        app.stepSlice(-steps);
      }
    } else {
      viewer.zoomAt(Math.exp(-event.deltaY * 0.0015), p.x, p.y);
      app.showZoom();
    }
  }, { passive: false });

  window.addEventListener("keydown", (e) => { if (e.code === "Space" && e.target === canvas) { spaceDown = true; e.preventDefault(); } });
  window.addEventListener("keyup", (e) => { if (e.code === "Space") spaceDown = false; });
}

export function attachKeys(app) {
  window.addEventListener("keydown", (event) => {
    const t = event.target;
    if (t instanceof HTMLInputElement && ["text", "number", "range"].includes(t.type)) return;
    if (document.querySelector("dialog[open]")) return;
    const mod = event.ctrlKey || event.metaKey;
    const key = event.key;
    const done = () => event.preventDefault();
    if (mod && key.toLowerCase() === "z") { done(); return event.shiftKey ? app.redo() : app.undo(); }
    if (mod && key.toLowerCase() === "y") { done(); return app.redo(); }
    if (mod) return;
    switch (key) {
      case "?": done(); return app.help();
      case "o": case "O": done(); return app.openDialog();
      case "n": case "N": done(); return app.select(null);
      case "Delete": case "Backspace": done(); return app.removeSelected();
      case "x": case "X": done(); return app.togglePolarity();
      case "v": case "V": done(); return app.toggleSelectedVisible();
      case "m": case "M": done(); return app.toggleMasks();
      case "[": done(); return app.changeOpacity(-0.1);
      case "]": done(); return app.changeOpacity(0.1);
      case "f": case "F": done(); return app.fit();
      case "+": case "=": done(); return app.zoomBy(1.25);
      case "-": case "_": done(); return app.zoomBy(0.8);
      case "s": case "S": done(); return app.setTool("segment");
      case "h": case "H": done(); return app.setTool("pan");
      case "w": case "W": done(); return app.setTool("window");
      case "p": case "P": done(); return app.propagate();
      case "Escape": done(); return app.escape();
      case "Tab": done(); return app.selectNext(event.shiftKey ? -1 : 1);
      case "ArrowUp": case "PageUp": done(); return app.stepSlice(event.shiftKey ? 10 : 1);
      case "ArrowDown": case "PageDown": done(); return app.stepSlice(event.shiftKey ? -10 : -1);
      default:
        if (/^[1-9]$/.test(key)) { done(); return app.selectIndex(Number(key) - 1); }
    }
    return undefined;
  });
}
