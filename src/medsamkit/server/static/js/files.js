// Opening files: drag and drop anywhere on the page, the file dialog, or the server's --data folder.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function attachFiles(app) {
  const input = $("file-input");
  const drop = $("drop");

  const upload = (file) => app.run(`Opening ${file.name}…`, async () => {
    const info = await api.upload(file);
    await app.opened(info);
  });

  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
    input.value = "";
  });
  const choose = () => input.click();
  $("open-file").addEventListener("click", choose);
  $("drop-open").addEventListener("click", choose);

  let depth = 0;
  window.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; drop.hidden = false; drop.classList.add("over"); });
  window.addEventListener("dragleave", (e) => {
    e.preventDefault();
    if (--depth <= 0) { depth = 0; drop.classList.remove("over"); drop.hidden = !!app.info; }
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    drop.classList.remove("over");
    drop.hidden = !!app.info;
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) upload(file);
  });

  // ------------------------------------------------------------------ --data folder
  const dialog = $("data-dialog");
  const list = $("data-list");

  async function browse(path) {
    try {
      const listing = await api.files(path);
      $("data-path").textContent = listing.path ? `/ ${listing.path}` : "";
      list.replaceChildren();
      if (listing.path) {
        const up = document.createElement("li");
        up.className = "folder";
        up.textContent = "..";
        up.addEventListener("click", () => browse(listing.path.split("/").slice(0, -1).join("/")));
        list.append(up);
      }
      for (const entry of listing.entries) {
        const li = document.createElement("li");
        const name = document.createElement("span");
        name.textContent = entry.name;
        const meta = document.createElement("span");
        meta.className = "muted";
        meta.textContent = entry.folder ? "" : size(entry.size);
        li.append(name, meta);
        if (entry.folder) {
          li.className = "folder";
          li.title = "Show the folder's files";
          const series = document.createElement("button");
          series.type = "button";
          series.className = "btn small ghost";
          series.textContent = "Open as DICOM series";
          series.addEventListener("click", (e) => { e.stopPropagation(); openPath(entry.path); });
          meta.replaceChildren(series);
          li.addEventListener("click", () => browse(entry.path));
        } else {
          li.addEventListener("click", () => openPath(entry.path));
        }
        list.append(li);
      }
    } catch (err) {
      app.toast(err.message);
    }
  }

  function openPath(path) {
    dialog.close();
    app.run(`Opening ${path}…`, async () => app.opened(await api.open(path)));
  }

  const showData = () => { browse(""); dialog.showModal(); };
  $("open-data").addEventListener("click", showData);
  $("drop-data").addEventListener("click", showData);

  return { choose, showData };
}
