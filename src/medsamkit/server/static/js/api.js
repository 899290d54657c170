// The REST API of medsamkit serve, as the page uses it. Every call sends the token (when the
// page was opened with #token=...) and turns an error answer into an Error with the server's
// message (the same one the command line prints).

const TOKEN_KEY = "medsamkit-token";

function readToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

const token = readToken();

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function check(response) {
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) { /* not JSON */ }
  throw new ApiError(response.status, message);
}

async function call(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(body);
  }
  const response = await check(await fetch(path, init));
  return response.status === 204 ? null : response.json();
}

async function binary(path) {
  const response = await check(await fetch(path, { headers: headers() }));
  const shape = (response.headers.get("X-Shape") || "").split(",").map(Number);
  const dtype = response.headers.get("X-Dtype");
  const buffer = await response.arrayBuffer();
  const data = dtype === "float32" ? new Float32Array(buffer)
    : dtype === "uint16" ? new Uint16Array(buffer) : new Uint8Array(buffer);
  return { height: shape[0], width: shape[1], channels: shape[2] || 1, data };
}

export const api = {
  config: () => call("GET", "/api/config"),
  files: (path) => call("GET", `/api/files?path=${encodeURIComponent(path || "")}`),
  async upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await check(await fetch("/api/images", { method: "POST", body: form, headers: headers() }));
    return response.json();
  },
  open: (path) => call("POST", "/api/images/open", { path }),
  close: (id) => call("DELETE", `/api/images/${id}`),
  pixels: (id, axis, index) => binary(`/api/images/${id}/pixels?axis=${axis}&index=${index}`),
  labels: (id, axis, index) => binary(`/api/images/${id}/labels?axis=${axis}&index=${index}`),
  state: (id) => call("GET", `/api/images/${id}/state`),
  addObject: (id, body) => call("POST", `/api/images/${id}/objects`, body),
  addPoint: (id, obj, body) => call("POST", `/api/images/${id}/objects/${obj}/points`, body),
  rename: (id, obj, name) => call("PATCH", `/api/images/${id}/objects/${obj}`, { name }),
  setRange: (id, obj, zRange) => call("PATCH", `/api/images/${id}/objects/${obj}/range`, { z_range: zRange }),
  remove: (id, obj) => call("DELETE", `/api/images/${id}/objects/${obj}`),
  undo: (id) => call("POST", `/api/images/${id}/undo`),
  redo: (id) => call("POST", `/api/images/${id}/redo`),
  clear: (id) => call("POST", `/api/images/${id}/clear`),
  propagate: (id, body) => call("POST", `/api/images/${id}/propagate`, body || {}),
  cancel: (id, job) => call("DELETE", `/api/images/${id}/jobs/${job}`),

  // Server-Sent Events read with fetch (EventSource cannot send the token header).
  async follow(id, job, onEvent, signal) {
    const response = await check(await fetch(`/api/images/${id}/jobs/${job}/events`, { headers: headers(), signal }));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += decoder.decode(value, { stream: true });
      let end;
      while ((end = text.indexOf("\n\n")) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        const kind = /^event: (.*)$/m.exec(block);
        const data = /^data: (.*)$/m.exec(block);
        if (kind && data) onEvent(kind[1], JSON.parse(data[1]));
      }
    }
  },

  async download(path, fallbackName) {
    const response = await check(await fetch(path, { headers: headers() }));
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename="([^"]+)"/.exec(disposition);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = match ? match[1] : fallbackName;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  },
};
